//! A signaling-server restart, as a room lives through it: the server goes away for a
//! while (some peers leave meanwhile), comes back with an empty room, and newcomers join.
//!
//! The server is bootstrap only, so the room carries on while it is away; but a restarted
//! server knows nobody, and newcomers it introduces only to each other would form a room
//! of their own. [`restart`] measures how long after the server's return the active views
//! form one component again, how fast the peers register again (a restart must not be a
//! thundering herd), and what the reconnection costs in RTCPeerConnections.

use std::collections::BTreeMap;

use rhizome::overlay::dht::Mode;

use crate::{Sim, SimConfig};

/// The scenario's shape.
#[derive(Debug, Clone)]
pub struct Restart {
    /// Seed of the simulation.
    pub seed: u64,
    /// Overlay mode of every peer.
    pub mode: Mode,
    /// Peers that join (over 20 s) and settle (60 s) before the server goes away.
    pub settled: usize,
    /// Peers that join over the 10 s after the server is back.
    pub newcomers: usize,
    /// How long the server is away, ms. One settled peer in ten leaves meanwhile.
    pub down_ms: u64,
    /// How long to watch after the server is back, ms.
    pub watch_ms: u64,
}

/// What [`restart`] measured.
#[derive(Debug)]
pub struct RestartOutcome {
    /// Peers registered with the server at the end.
    pub registered: usize,
    /// Peers online at the end (survivors and newcomers).
    pub online: usize,
    /// Ms after the server came back until the active views formed one component
    /// (checked every second once every newcomer has started), if they did.
    pub merged_after_ms: Option<u64>,
    /// Registrations (joins and re-bootstraps) the server saw in its busiest second.
    pub peak_joins_per_s: usize,
    /// Ms after its return until every online peer was registered again, if they were.
    pub all_registered_after_ms: Option<u64>,
    /// RTCPeerConnections created per survivor after the server came back.
    pub pcs_per_survivor: f64,
    /// Merge probes sent (connections to a peer the overlay knew nothing of).
    pub merge_probes: u64,
}

/// Runs the scenario (see the module documentation).
pub fn restart(r: &Restart) -> RestartOutcome {
    let mut cfg = SimConfig {
        seed: r.seed,
        contacts: 8,
        ..SimConfig::default()
    };
    cfg.overlay.mode = r.mode;
    let n = r.settled + r.newcomers;
    let mut sim = Sim::new(cfg, n);
    for i in 0..r.settled {
        sim.start_at(i, (i as u64 * 20_000) / r.settled.max(1) as u64);
    }
    sim.run_until(80_000);
    sim.set_server(false);
    for i in (0..r.settled).step_by(10) {
        sim.leave(i);
    }
    sim.run_for(r.down_ms);
    let survivors: Vec<usize> = sim.online();
    let pcs_before: u64 = survivors.iter().map(|&i| sim.pcs_created(i)).sum();
    let probes_before: u64 = survivors
        .iter()
        .map(|&i| sim.overlay(i).stats().merge_probes)
        .sum();
    sim.set_server(true);
    let back = sim.now();
    let joins_before = sim.server_joins().len();
    for (k, i) in (r.settled..n).enumerate() {
        sim.start_at(
            i,
            back + 1 + (k as u64 * 10_000) / r.newcomers.max(1) as u64,
        );
    }
    let mut merged_after_ms = None;
    let mut all_registered_after_ms = None;
    let mut t = 0;
    while t < r.watch_ms {
        t += 1_000;
        sim.run_until(back + t);
        if all_registered_after_ms.is_none() && sim.registered() == sim.online().len() {
            all_registered_after_ms = Some(t);
        }
        if merged_after_ms.is_none() && t > 10_000 && sim.active_views_connected() {
            merged_after_ms = Some(t);
        }
    }
    let mut per_second = BTreeMap::<u64, usize>::new();
    for at in &sim.server_joins()[joins_before..] {
        *per_second.entry((at - back) / 1_000).or_default() += 1;
    }
    let pcs_after: u64 = survivors.iter().map(|&i| sim.pcs_created(i)).sum();
    let probes_after: u64 = survivors
        .iter()
        .map(|&i| sim.overlay(i).stats().merge_probes)
        .sum();
    RestartOutcome {
        online: sim.online().len(),
        merged_after_ms,
        peak_joins_per_s: per_second.values().copied().max().unwrap_or(0),
        all_registered_after_ms,
        pcs_per_survivor: (pcs_after - pcs_before) as f64 / survivors.len().max(1) as f64,
        merge_probes: probes_after - probes_before,
        registered: sim.registered(),
    }
}
