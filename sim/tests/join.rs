//! Joining costs few RTCPeerConnections: a page can afford only a few hundred in its
//! lifetime, and each costs an offer/answer exchange and ICE.
//!
//! Every link is one RTCPeerConnection per side, so a network whose peers end with about
//! five neighbours costs about five per peer at the least. Before the newcomer waited for
//! its JOIN's walks (instead of forcing high-priority connections on its contacts while
//! the JOIN was still under way, and blindly asking full peers for room right after),
//! 8 peers created 7.9 each on average and 32 peers 11.6 (`cargo run --release -p
//! rhizome-sim --example join`).

use rhizome::overlay::dht::Mode;
use rhizome_sim::join::{join_cost, JoinCost};
use rhizome_sim::SimConfig;

fn unstructured(seed: u64) -> SimConfig {
    let mut cfg = SimConfig {
        seed,
        ..SimConfig::default()
    };
    cfg.overlay.mode = Mode::Unstructured;
    cfg
}

fn check(c: &JoinCost, mean: f64, max: u64) {
    assert!(c.healthy, "views not connected and symmetric: {c:?}");
    assert!(c.mean_active >= 4.0, "views too thin: {c:?}");
    assert!(
        c.mean <= mean,
        "{:.1} RTCPeerConnections per peer: {c:?}",
        c.mean
    );
    assert!(c.max <= max, "one peer created {}: {c:?}", c.max);
}

#[test]
fn eight_peers_joining_one_after_another_open_little_more_than_one_connection_per_link() {
    for seed in 1..=3 {
        let c = join_cost(&unstructured(seed), 8, 50, 30_000);
        // Measured 4.8 (max 6) over 5 seeds, against 4.7 for the links alone.
        check(&c, 6.0, 8);
    }
}

#[test]
fn thirty_two_peers_joining_open_a_few_connections_each() {
    for seed in 1..=2 {
        let c = join_cost(&unstructured(seed), 32, 50, 30_000);
        // Measured 6.8 (p95 10, max 14) over 5 seeds.
        check(&c, 8.5, 18);
    }
}
