//! Plumtree under concurrent broadcasts from several origins: each origin's messages must
//! keep travelling its eager tree instead of leaving peers to wait for GRAFT timeouts.
//!
//! With one eager/lazy split shared by all origins, these scenarios lost the tree within
//! seconds: 35–44 % of deliveries waited for `graft_timeout_ms` (500 ms) or twice that,
//! on a LAN as over the Internet model (p99 1.0–1.3 s against flood paths of 4–141 ms).

use rhizome::wire::MsgId;
use rhizome_sim::{Sim, SimConfig};

/// `loss`: the share of frames that need a retransmission (three more latencies, holding
/// back the frames behind them on that link): the uneven delays under which first
/// arrivals change paths from one message to the next.
fn network(n: usize, latency_ms: (u64, u64), loss: f64, seed: u64) -> Sim {
    let mut sim = Sim::new(
        SimConfig {
            seed,
            latency_ms,
            loss,
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

/// Sends `count` broadcasts, one every `every_ms`, from `origins` in turn; returns their
/// ids once everything has settled.
fn rotate(sim: &mut Sim, origins: &[usize], count: usize, every_ms: u64) -> Vec<MsgId> {
    let mut ids = Vec::new();
    for k in 0..count {
        let origin = origins[k % origins.len()];
        ids.extend(sim.broadcast(origin, format!("m{k}").into_bytes()));
        sim.run_for(every_ms);
    }
    sim.run_for(5_000);
    ids
}

#[derive(Debug)]
struct Latency {
    deliveries: usize,
    missed: usize,
    p99: u64,
    /// Deliveries slower than the GRAFT timeout.
    over: usize,
    /// The slowest path a flood would take from any origin (shortest paths over the
    /// views): what a healthy tree approaches but cannot beat.
    flood: u64,
}

/// 400 broadcasts from 4 rotating origins of an `n`-peer overlay, one every `every_ms`.
fn rotating_origins(n: usize, latency_ms: (u64, u64), loss: f64, every_ms: u64) -> Latency {
    rotating_origins_seeded(n, latency_ms, loss, every_ms, 3)
}

fn rotating_origins_seeded(
    n: usize,
    latency_ms: (u64, u64),
    loss: f64,
    every_ms: u64,
    seed: u64,
) -> Latency {
    let mut sim = network(n, latency_ms, loss, seed);
    let origins = [1, n / 4, n / 2, 3 * n / 4];
    // Warm-up: two messages from each origin build its tree.
    rotate(&mut sim, &origins, 8, 200);
    let flood = origins
        .iter()
        .filter_map(|o| sim.flood(*o).latencies.into_iter().max())
        .max()
        .unwrap_or(0);
    let ids = rotate(&mut sim, &origins, 400, every_ms);
    let graft_ms = sim.cfg.overlay.graft_timeout_ms;
    let mut all = Vec::new();
    let mut missed = 0;
    for id in &ids {
        let t = &sim.broadcasts[id];
        missed += t.online_at_send - t.delivered_by.len();
        all.extend(t.latencies.iter().copied());
    }
    all.sort_unstable();
    let l = Latency {
        deliveries: all.len(),
        missed,
        p99: all.get(all.len() * 99 / 100).copied().unwrap_or(0),
        over: all.iter().filter(|l| **l > graft_ms).count(),
        flood,
    };
    eprintln!(
        "{n} peers, links {latency_ms:?} ms, {loss} retransmitted, every {every_ms} ms, seed {seed}: {l:?}"
    );
    assert_eq!(l.deliveries, 400 * (n - 1));
    assert_eq!(l.missed, 0, "broadcasts were lost");
    l
}

#[test]
fn rotating_origins_at_100_per_second_are_delivered_along_the_tree_on_a_lan() {
    // Links of 1–3 ms, as between tabs or machines of one network.
    let l = rotating_origins(24, (1, 3), 0.3, 10);
    assert_eq!(l.over, 0, "deliveries waited for a GRAFT timeout");
    assert!(
        l.p99 < 100,
        "p99 {} ms, the slowest flood path {} ms",
        l.p99,
        l.flood
    );
}

#[test]
fn rotating_origins_at_50_per_second_are_delivered_along_the_tree_on_uneven_links() {
    // Whether any delivery at all waits for a GRAFT depends on the network's draw: over
    // seeds 1–8, 0–32 of 12,400 did (a few networks each, different ones whenever the
    // DHT's traffic changed), so the share is taken over four networks.
    let (mut over, mut deliveries) = (0, 0);
    for seed in 1..=4 {
        let l = rotating_origins_seeded(32, (1, 20), 0.05, 20, seed);
        assert!(
            l.p99 < 250,
            "seed {seed}: p99 {} ms, the slowest flood path {} ms",
            l.p99,
            l.flood
        );
        over += l.over;
        deliveries += l.deliveries;
    }
    assert!(
        over * 1_000 < deliveries,
        "over 0.1 % of deliveries waited for a GRAFT timeout: {over} of {deliveries}"
    );
}

#[test]
fn rotating_origins_at_50_per_second_mostly_travel_the_tree_over_the_internet() {
    // The simulator's default latency model (10–100 ms one way). Not yet perfect: a few
    // percent of deliveries still wait for a GRAFT (one origin's tree at one peer breaks
    // for about a second at a time, when concurrent optimisations or PRUNEs of the
    // same origin cross); with one shared tree it was a third of them. How many varies
    // with the network's draw (1.8–10 % over seeds 1–6), so the share is taken over
    // twelve networks: one seed alone passed or failed with unrelated changes elsewhere,
    // and so did six (4.2 % before the DHT's answers took their query's path back, 5.1 %
    // after, while seeds 7–18 went from 4.0 to 3.3 %; 4.1 % over 1–12).
    let (mut over, mut deliveries) = (0, 0);
    for seed in 1..=12 {
        let l = rotating_origins_seeded(32, (10, 100), 0.02, 20, seed);
        assert!(l.p99 < 1_000, "seed {seed}: {l:?}");
        over += l.over;
        deliveries += l.deliveries;
    }
    assert!(
        over * 20 < deliveries,
        "over 5 % of deliveries waited for a GRAFT: {over} of {deliveries}"
    );
}
