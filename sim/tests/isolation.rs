//! Isolation with the signaling server gone: a peer whose last neighbour goes has nobody
//! to carry the signals of a new connection, so the overlay must keep it from getting
//! there (HyParView's repair keeps looking while a peer has fewer than `MIN_ACTIVE`
//! neighbours) and, in hybrid mode, bring it back over the DHT links it still has.

use rhizome::overlay::dht::Mode;
use rhizome::overlay::membership::MIN_ACTIVE;
use rhizome_sim::{Sim, SimConfig};

fn config(seed: u64, mode: Mode) -> SimConfig {
    let mut cfg = SimConfig {
        seed,
        ..SimConfig::default()
    };
    cfg.overlay.mode = mode;
    cfg
}

/// `n` peers joining 50 ms apart, run for 15 s after the last.
fn settled(n: usize, seed: u64, mode: Mode) -> Sim {
    let mut sim = Sim::new(config(seed, mode), n);
    for i in 0..n {
        sim.start_at(i, i as u64 * 50);
    }
    sim.run_until(n as u64 * 50 + 15_000);
    sim
}

/// `n` peers joining 50 ms apart, run only until every peer has a neighbour and the
/// active views form one connected, symmetric graph: the moment the browser tests
/// (`tests/web_node.rs`) start cutting links.
fn just_formed(n: usize, seed: u64, mode: Mode) -> Sim {
    let mut sim = Sim::new(config(seed, mode), n);
    for i in 0..n {
        sim.start_at(i, i as u64 * 50);
    }
    sim.run_until(n as u64 * 50);
    while !(connected(&sim) && sim.asymmetric_pairs().is_empty()) {
        sim.run_for(100);
        assert!(sim.now() < 60_000, "the overlay never formed");
    }
    sim
}

/// Every online peer has a neighbour and the active views connect them all.
fn connected(sim: &Sim) -> bool {
    let online = sim.online();
    if online
        .iter()
        .any(|i| sim.overlay(*i).active_view().is_empty())
    {
        return false;
    }
    sim.active_views_connected()
}

fn neighbours(sim: &Sim, i: usize) -> Vec<usize> {
    sim.overlay(i)
        .active_view()
        .iter()
        .filter_map(|p| sim.index_of(p))
        .collect()
}

/// Broadcasts from `origin` and runs `ms`; whether every online peer delivered it.
fn broadcast_reaches_everyone(sim: &mut Sim, origin: usize, ms: u64) -> bool {
    let id = sim
        .broadcast(origin, b"after".to_vec())
        .expect("origin online");
    sim.run_for(ms);
    let got = &sim.broadcasts[&id].delivered_by;
    sim.online()
        .into_iter()
        .all(|i| i == origin || got.contains(&i))
}

#[test]
fn with_the_server_down_a_peer_whose_neighbours_all_crash_comes_back_over_a_dht_link() {
    let mut sim = settled(40, 1, Mode::Hybrid);
    sim.set_server(false);
    let x = (0..40)
        .find(|i| !sim.overlay(*i).dht_links().is_empty())
        .expect("some peer has a DHT link");
    let doomed = neighbours(&sim, x);
    for d in &doomed {
        sim.crash(*d);
    }
    // The failure detector notices within ~10 s; the peer then has no neighbour, no
    // server, and only its DHT links: one of them becomes a neighbour.
    sim.run_for(20_000);
    assert!(
        !sim.overlay(x).active_view().is_empty(),
        "peer {x} is isolated (DHT links {:?})",
        sim.overlay(x).dht_links().len()
    );
    assert!(connected(&sim), "the overlay is partitioned");
    let origin = sim.online().into_iter().find(|i| *i != x).unwrap();
    assert!(broadcast_reaches_everyone(&mut sim, origin, 5_000));
}

#[test]
fn with_the_server_down_a_peer_left_with_one_neighbour_finds_another_before_losing_it() {
    for mode in [Mode::Unstructured, Mode::Hybrid] {
        let mut sim = settled(40, 2, mode);
        sim.set_server(false);
        let x = 0;
        let mut left = neighbours(&sim, x);
        let last = left.pop().expect("a neighbour");
        for d in left {
            sim.crash(d);
        }
        sim.run_for(20_000);
        let n = sim.overlay(x).active_view().len();
        assert!(n >= MIN_ACTIVE, "{mode:?}: peer {x} has {n} neighbour(s)");
        sim.leave(last);
        sim.run_for(5_000);
        assert!(connected(&sim), "{mode:?}: the overlay is partitioned");
        assert!(broadcast_reaches_everyone(&mut sim, x, 5_000), "{mode:?}");
    }
}

/// The browser test's case, over many seeds: right after the overlay forms, the server
/// goes and one link (any) is cut; nobody may end up isolated.
#[test]
fn with_the_server_down_cutting_any_link_of_a_young_overlay_isolates_no_peer() {
    let mut cuts = 0;
    for seed in 1..=20 {
        let mut sim = just_formed(8, seed, Mode::Hybrid);
        sim.run_for(1_000);
        sim.set_server(false);
        for a in 0..8 {
            for b in neighbours(&sim, a) {
                if b < a {
                    continue;
                }
                cuts += 1;
                let mut s = sim.clone();
                s.cut(a, b);
                s.cut(b, a);
                s.run_for(20_000);
                assert!(
                    connected(&s),
                    "seed {seed}: cutting {a}-{b} partitioned the overlay"
                );
            }
        }
    }
    assert!(cuts > 200, "only {cuts} links cut");
}
