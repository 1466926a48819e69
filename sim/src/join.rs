//! The join phase's connection cost: how many RTCPeerConnections peers open while a
//! network forms.
//!
//! A browser page can afford only a few hundred RTCPeerConnections in its lifetime, and
//! each costs an offer/answer exchange and ICE, so a join that makes its neighbours open,
//! drop and reopen connections (HyParView's forward-join walks displacing neighbours)
//! is paid in seconds and in that budget. [`join_cost`] starts `n` peers one after
//! another, lets the overlay settle, and counts every RTCPeerConnection each peer created
//! (both sides of every attempt, as [`crate::Sim`] does) against the links that remain.

use crate::{NodeState, Sim, SimConfig};

/// Connections opened while `n` peers joined.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinCost {
    /// Peers that joined.
    pub peers: usize,
    /// RTCPeerConnections created by all peers, both sides counted.
    pub created: u64,
    /// Mean created per peer (`created / peers`).
    pub mean: f64,
    /// Median over peers of the RTCPeerConnections each created.
    pub median: u64,
    /// 95th percentile over peers.
    pub p95: u64,
    /// Largest number any one peer created.
    pub max: u64,
    /// Links open at the end (each is one RTCPeerConnection per side).
    pub links: usize,
    /// Mean active view at the end.
    pub mean_active: f64,
    /// Whether every peer ended with a non-empty active view and the views form one
    /// connected, symmetric graph.
    pub healthy: bool,
}

/// Starts `n` peers `interval_ms` apart (each through the server's sample), runs
/// `settle_ms` more, and counts the RTCPeerConnections they created.
pub fn join_cost(cfg: &SimConfig, n: usize, interval_ms: u64, settle_ms: u64) -> JoinCost {
    measure(&run(cfg, n, interval_ms, settle_ms))
}

/// The network of [`join_cost`], for a closer look.
pub fn run(cfg: &SimConfig, n: usize, interval_ms: u64, settle_ms: u64) -> Sim {
    let mut sim = Sim::new(cfg.clone(), n);
    for i in 0..n {
        sim.start_at(i, i as u64 * interval_ms);
    }
    sim.run_until(n as u64 * interval_ms + settle_ms);
    sim
}

/// RTCPeerConnections created by each peer that started, sorted.
pub fn per_peer(sim: &Sim) -> Vec<u64> {
    let mut per: Vec<u64> = (0..sim.len())
        .filter(|i| sim.state(*i) != NodeState::Idle)
        .map(|i| sim.pcs_created(i))
        .collect();
    per.sort_unstable();
    per
}

/// The [`JoinCost`] of the peers of `sim` so far.
pub fn measure(sim: &Sim) -> JoinCost {
    let peers: Vec<usize> = (0..sim.len())
        .filter(|i| sim.state(*i) != NodeState::Idle)
        .collect();
    let per = per_peer(sim);
    let created: u64 = per.iter().sum();
    let pick = |q: f64| -> u64 {
        if per.is_empty() {
            return 0;
        }
        let i = ((per.len() - 1) as f64 * q).round() as usize;
        per[i.min(per.len() - 1)]
    };
    let mut links = 0;
    let mut active = 0;
    for &i in &peers {
        let v = sim.overlay(i).active_view();
        active += v.len();
        links += v
            .iter()
            .filter_map(|p| sim.index_of(p))
            .filter(|j| *j > i && sim.linked(i, *j))
            .count();
    }
    let n = peers.len().max(1);
    JoinCost {
        peers: peers.len(),
        created,
        mean: created as f64 / n as f64,
        median: pick(0.5),
        p95: pick(0.95),
        max: per.last().copied().unwrap_or(0),
        links,
        mean_active: active as f64 / n as f64,
        healthy: healthy(sim, &peers),
    }
}

fn healthy(sim: &Sim, peers: &[usize]) -> bool {
    let Some(&start) = peers.first() else {
        return true;
    };
    for &i in peers {
        let v = sim.overlay(i).active_view();
        if v.is_empty() {
            return false;
        }
        let me = sim.peer_id(i);
        for p in v {
            let Some(j) = sim.index_of(p) else {
                return false;
            };
            if !sim.overlay(j).active_view().contains(&me) {
                return false;
            }
        }
    }
    let mut seen = vec![false; sim.len()];
    seen[start] = true;
    let mut stack = vec![start];
    let mut reached = 1;
    while let Some(i) = stack.pop() {
        for p in sim.overlay(i).active_view() {
            if let Some(j) = sim.index_of(p) {
                if !seen[j] {
                    seen[j] = true;
                    reached += 1;
                    stack.push(j);
                }
            }
        }
    }
    reached == peers.len()
}
