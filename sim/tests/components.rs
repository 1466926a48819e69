//! Components that must merge: peers that join at once and cannot reach the rest of the
//! room for a while (their connections to it fail) end up joined to one another only, a
//! component of their own. HyParView has nothing that merges two components: each peer
//! repairs from its passive view, which holds only peers of its own component once the
//! failed ones are dropped. The signaling server, which knows the whole room, must.
//!
//! The demo's "add 5 peers in this tab" did this once in a loaded CI run: the five new
//! in-tab peers formed their own component for a minute.

use rhizome::overlay::dht::Mode;
use rhizome_sim::{Sim, SimConfig};

/// Three peers settle; five newcomers then join within 50 ms, introduced by the server
/// to the whole room, but none of them can connect to the first three for 20 s. Returns
/// the simulation 60 s after the connections start working.
fn newcomers_cut_off_for_a_while(seed: u64, mode: Mode) -> Sim {
    let mut cfg = SimConfig {
        seed,
        latency_ms: (1, 5),
        server_latency_ms: 2,
        contacts: 8,
        ..SimConfig::default()
    };
    cfg.overlay.mode = mode;
    let mut sim = Sim::new(cfg, 8);
    for i in 0..3 {
        sim.start_at(i, i as u64 * 1_000);
    }
    sim.run_until(8_000);
    for newcomer in 3..8 {
        for old in 0..3 {
            sim.block(newcomer, old);
        }
        sim.start_at(newcomer, 8_000 + newcomer as u64 * 10);
    }
    sim.run_until(28_000);
    for newcomer in 3..8 {
        for old in 0..3 {
            sim.unblock(newcomer, old);
        }
    }
    sim.run_for(60_000);
    sim
}

#[test]
fn newcomers_that_formed_a_component_of_their_own_merge_with_the_room() {
    for mode in [Mode::Unstructured, Mode::Hybrid] {
        for seed in 1..=25 {
            let sim = newcomers_cut_off_for_a_while(seed, mode);
            let views: Vec<usize> = (0..8).map(|i| sim.overlay(i).active_view().len()).collect();
            assert!(
                sim.active_views_connected(),
                "{mode:?} seed {seed}: still partitioned (active views {views:?})"
            );
        }
    }
}
