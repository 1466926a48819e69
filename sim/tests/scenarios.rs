//! Scenario tests: small simulated networks, each proving one behaviour of the overlay.
//! Sizes are small so the suite stays fast in a debug build.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use rhizome::overlay::{Event, Misbehaviour};
use rhizome::wire::{self, Gossip, Message, MsgId};
use rhizome_sim::{NodeState, Sim, SimConfig};

fn network(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(
        SimConfig {
            seed,
            ..SimConfig::default()
        },
        n,
    );
    for i in 0..n {
        sim.start_at(i, i as u64 * 50);
    }
    sim.run_until(n as u64 * 50 + 15_000);
    sim
}

/// The 40-peer network most scenarios start from, built once and cloned per test (the
/// simulator is `Clone`), which keeps the debug-build suite fast.
fn base() -> Sim {
    static BASE: OnceLock<Sim> = OnceLock::new();
    BASE.get_or_init(|| network(40, 1)).clone()
}

/// Online peers that delivered broadcast `id` (the origin counts as delivered).
fn receivers(sim: &Sim, id: MsgId) -> BTreeSet<usize> {
    let t = &sim.broadcasts[&id];
    let mut got = t.delivered_by.clone();
    got.insert(t.origin);
    got
}

fn assert_everyone_online_got(sim: &Sim, id: MsgId) {
    let got = receivers(sim, id);
    let missing: Vec<usize> = sim
        .online()
        .into_iter()
        .filter(|i| !got.contains(i))
        .collect();
    assert!(missing.is_empty(), "peers {missing:?} missed the broadcast");
}

/// No online peer keeps a crashed or departed peer in its active view.
fn views_hold_only_live_peers(sim: &Sim) -> bool {
    sim.online().into_iter().all(|i| {
        let v = sim.overlay(i).active_view();
        !v.is_empty()
            && v.iter().all(|p| {
                sim.index_of(p)
                    .is_some_and(|j| sim.state(j) == NodeState::Online)
            })
    })
}

fn connected(sim: &Sim) -> bool {
    sim.active_views_connected()
}

#[test]
fn active_views_stay_symmetric() {
    let mut sim = base();
    sim.run_for(10_000);
    assert_eq!(sim.asymmetric_pairs(), vec![]);
    assert!(connected(&sim), "the overlay is partitioned");
    let cap = sim.cfg.overlay.active_view_capacity;
    for i in sim.online() {
        let n = sim.overlay(i).active_view().len();
        assert!(n >= 2 && n <= cap, "peer {i} has {n} neighbours");
    }
}

#[test]
fn an_isolated_peer_rejoins() {
    let mut sim = base();
    let x = 0;
    let doomed: BTreeSet<usize> = sim
        .overlay(x)
        .active_view()
        .iter()
        .copied()
        .chain(sim.overlay(x).passive_view())
        .filter_map(|p| sim.index_of(&p))
        .collect();
    for d in &doomed {
        sim.crash(*d);
    }
    sim.run_for(25_000);
    assert!(!sim.overlay(x).active_view().is_empty());
    assert!(views_hold_only_live_peers(&sim));
    let id = sim.broadcast(x, b"back".to_vec()).unwrap();
    sim.run_for(5_000);
    assert_everyone_online_got(&sim, id);

    // Isolated with nobody knowing it: a newcomer whose every contact dies before it
    // connects has only the signaling server left.
    let y = sim.add_node();
    sim.start_at(y, sim.now());
    sim.run_for(1);
    let contacts: Vec<usize> = sim
        .overlay(y)
        .passive_view()
        .filter_map(|p| sim.index_of(&p))
        .collect();
    assert!(!contacts.is_empty());
    for c in contacts {
        sim.crash(c);
    }
    sim.run_for(20_000);
    assert!(
        sim.overlay(y).stats().bootstraps >= 1,
        "the isolated peer never asked the server"
    );
    assert!(!sim.overlay(y).active_view().is_empty());
    let id = sim.broadcast(y, b"joined at last".to_vec()).unwrap();
    sim.run_for(5_000);
    assert_everyone_online_got(&sim, id);
}

#[test]
fn a_broadcast_reaches_every_survivor_after_half_the_network_crashes() {
    let mut sim = base();
    let warm = sim.broadcast(7, b"warm-up".to_vec()).unwrap();
    sim.run_for(5_000);
    assert_everyone_online_got(&sim, warm);
    let online = sim.online();
    for i in online.iter().step_by(2) {
        sim.crash(*i);
    }
    // Two membership rounds.
    sim.run_for(2 * sim.cfg.overlay.shuffle_interval_ms);
    let origin = sim.online()[3];
    let id = sim.broadcast(origin, b"after the crash".to_vec()).unwrap();
    sim.run_for(5_000);
    assert_everyone_online_got(&sim, id);
    assert!(views_hold_only_live_peers(&sim));
}

#[test]
fn a_connection_to_a_passive_peer_is_signalled_through_the_overlay_with_no_server() {
    let mut sim = base();
    sim.set_server(false);
    sim.reset_counters();
    // Crash three peers: their neighbours must repair from their passive views.
    for i in [5, 11, 20] {
        sim.crash(i);
    }
    sim.run_for(30_000);
    assert_eq!(sim.counters.server_relays, 0);
    assert!(
        sim.counters.connects_via_overlay > 0,
        "no connection was signalled through the overlay"
    );
    assert!(sim.counters.links_opened > 0, "no repair connection opened");
    assert!(views_hold_only_live_peers(&sim));
    let cap = sim.cfg.overlay.active_view_capacity as f64;
    let online = sim.online();
    let mean = online
        .iter()
        .map(|i| sim.overlay(*i).active_view().len())
        .sum::<usize>() as f64
        / online.len() as f64;
    assert!(mean >= cap - 1.0, "views were not repaired: mean {mean}");
    let id = sim.broadcast(0, b"no server".to_vec()).unwrap();
    sim.run_for(5_000);
    assert_everyone_online_got(&sim, id);
}

/// Picks a peer and one of its active neighbours.
fn victim_and_neighbour(sim: &Sim) -> (usize, usize) {
    let v = 3;
    let m = sim
        .index_of(&sim.overlay(v).active_view()[0])
        .expect("a known neighbour");
    (v, m)
}

fn reports_against(sim: &Sim, v: usize, m: usize) -> Vec<Misbehaviour> {
    let mid = sim.peer_id(m);
    sim.log
        .as_ref()
        .map(|log| {
            log.iter()
                .filter_map(|(_, i, e)| match e {
                    Event::Misbehaving { peer, reason } if *i == v && *peer == mid => {
                        Some(reason.clone())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_forged_broadcast_is_dropped() {
    let mut sim = base();
    sim.log = Some(Vec::new());
    let (v, m) = victim_and_neighbour(&sim);
    let o = (0..40).find(|i| *i != v && *i != m).unwrap();
    // An "origin" o that never said this: signed by m, claiming to be from o.
    let origin = sim.peer_id(o);
    let payload = b"forged".to_vec();
    let sig = sim.identity(m).sign(
        rhizome::overlay::broadcast::BROADCAST_CONTEXT,
        &rhizome::overlay::broadcast::signed_bytes(1, &payload),
    );
    let forged = Message::Gossip(Gossip {
        id: MsgId { origin, seq: 1 },
        round: 1,
        payload,
        sig,
    });
    sim.inject_frame(m, v, wire::encode(&forged).unwrap());
    // An altered one: o's real signature over another payload.
    let sig = sim.identity(o).sign(
        rhizome::overlay::broadcast::BROADCAST_CONTEXT,
        &rhizome::overlay::broadcast::signed_bytes(2, b"genuine"),
    );
    let altered = Message::Gossip(Gossip {
        id: MsgId { origin, seq: 2 },
        round: 1,
        payload: b"altered".to_vec(),
        sig,
    });
    let (w, n) = (8, sim.index_of(&sim.overlay(8).active_view()[0]).unwrap());
    sim.inject_frame(n, w, wire::encode(&altered).unwrap());
    sim.run_for(5_000);

    let log = sim.log.as_ref().unwrap();
    assert!(
        !log.iter()
            .any(|(_, _, e)| matches!(e, Event::Broadcast { id, .. } if id.origin == origin)),
        "a forged or altered broadcast was delivered"
    );
    assert!(reports_against(&sim, v, m)
        .iter()
        .any(|r| matches!(r, Misbehaviour::ForgedBroadcast(p) if *p == origin)));
    assert!(reports_against(&sim, w, n)
        .iter()
        .any(|r| matches!(r, Misbehaviour::ForgedBroadcast(_))));
    assert!(!sim.overlay(v).active_view().contains(&sim.peer_id(m)));
    assert!(!sim.overlay(w).active_view().contains(&sim.peer_id(n)));
}

#[test]
fn garbage_frames_get_the_sender_reported_and_dropped() {
    let mut sim = base();
    sim.log = Some(Vec::new());
    let (v, m) = victim_and_neighbour(&sim);
    sim.inject_frame(m, v, vec![wire::WIRE_VERSION, 0xff, 0xff, 0xff, 0x07]);
    let (w, n) = (9, sim.index_of(&sim.overlay(9).active_view()[0]).unwrap());
    sim.inject_frame(n, w, vec![]);
    sim.run_for(10_000);
    assert!(reports_against(&sim, v, m)
        .iter()
        .any(|r| matches!(r, Misbehaviour::BadFrame(_))));
    assert!(reports_against(&sim, w, n)
        .iter()
        .any(|r| matches!(r, Misbehaviour::BadFrame(_))));
    assert!(!sim.overlay(v).active_view().contains(&sim.peer_id(m)));
    // The victims keep working.
    let id = sim.broadcast(v, b"still here".to_vec()).unwrap();
    sim.run_for(5_000);
    assert_everyone_online_got(&sim, id);
}

#[test]
fn the_simulator_is_deterministic() {
    let run = || {
        let mut sim = network(10, 7);
        let id = sim.broadcast(1, b"x".to_vec()).unwrap();
        sim.run_for(3_000);
        (
            sim.counters.control_frames,
            sim.counters.pcs_created,
            sim.broadcasts[&id].latencies.clone(),
        )
    };
    assert_eq!(run(), run());
}
