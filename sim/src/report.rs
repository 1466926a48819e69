//! Turning simulated broadcasts into the numbers of the report: delivery ratio, relative
//! message redundancy (RMR), last delivery hop (LDH) and dissemination latency, for
//! rhizome (Plumtree) and for the flooding baseline alike.
//!
//! Definitions follow the Plumtree paper: for one broadcast reaching `n` peers (origin
//! included) with `m` payload messages, RMR = m / (n − 1) − 1 (0 means every peer got
//! the payload exactly once); LDH is the largest hop count of any delivery.

use serde::Serialize;

use crate::{BroadcastTrack, FloodResult};

/// Aggregated numbers over a set of broadcasts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Dissemination {
    /// Broadcasts measured.
    pub broadcasts: usize,
    /// Mean over broadcasts of delivered / online peers (origin excluded).
    pub delivery_ratio: f64,
    /// Lowest per-broadcast delivery ratio.
    pub min_delivery_ratio: f64,
    /// Relative message redundancy over all of them.
    pub rmr: f64,
    /// Mean over broadcasts of the last delivery hop.
    pub ldh_mean: f64,
    /// Largest last delivery hop.
    pub ldh_max: u16,
    /// Median delivery latency, ms.
    pub p50_ms: u64,
    /// 99th percentile delivery latency, ms.
    pub p99_ms: u64,
}

/// Percentile `q` (0..=1) of `v` (sorted in place).
pub fn percentile(v: &mut [u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Summarises rhizome's broadcasts. `online` gives, per broadcast, the peers that count
/// (by default those online at send time, origin excluded).
pub fn summarize(tracks: &[&BroadcastTrack]) -> Dissemination {
    let mut d = Dissemination {
        broadcasts: tracks.len(),
        min_delivery_ratio: 1.0,
        ..Default::default()
    };
    if tracks.is_empty() {
        return d;
    }
    let (mut frames, mut delivered) = (0u64, 0u64);
    let mut lat = Vec::new();
    let mut ratio_sum = 0.0;
    let mut ldh_sum = 0.0;
    for t in tracks {
        let ratio = if t.online_at_send == 0 {
            1.0
        } else {
            t.delivered_by.len() as f64 / t.online_at_send as f64
        };
        ratio_sum += ratio.min(1.0);
        d.min_delivery_ratio = d.min_delivery_ratio.min(ratio.min(1.0));
        frames += t.payload_frames;
        delivered += t.delivered_by.len() as u64;
        let ldh = t.hops.iter().copied().max().unwrap_or(0);
        ldh_sum += ldh as f64;
        d.ldh_max = d.ldh_max.max(ldh);
        lat.extend_from_slice(&t.latencies);
    }
    d.delivery_ratio = ratio_sum / tracks.len() as f64;
    d.rmr = if delivered == 0 {
        0.0
    } else {
        frames as f64 / delivered as f64 - 1.0
    };
    d.ldh_mean = ldh_sum / tracks.len() as f64;
    d.p50_ms = percentile(&mut lat, 0.5);
    d.p99_ms = percentile(&mut lat, 0.99);
    d
}

/// Summarises the flooding baseline.
pub fn summarize_flood(floods: &[FloodResult]) -> Dissemination {
    let mut d = Dissemination {
        broadcasts: floods.len(),
        min_delivery_ratio: 1.0,
        ..Default::default()
    };
    if floods.is_empty() {
        return d;
    }
    let (mut frames, mut delivered) = (0u64, 0u64);
    let mut lat = Vec::new();
    let mut ratio_sum = 0.0;
    let mut ldh_sum = 0.0;
    for f in floods {
        let ratio = if f.online == 0 {
            1.0
        } else {
            f.reached as f64 / f.online as f64
        };
        ratio_sum += ratio;
        d.min_delivery_ratio = d.min_delivery_ratio.min(ratio);
        frames += f.messages;
        delivered += f.reached as u64;
        let ldh = f.hops.iter().copied().max().unwrap_or(0);
        ldh_sum += ldh as f64;
        d.ldh_max = d.ldh_max.max(ldh);
        lat.extend_from_slice(&f.latencies);
    }
    d.delivery_ratio = ratio_sum / floods.len() as f64;
    d.rmr = if delivered == 0 {
        0.0
    } else {
        frames as f64 / delivered as f64 - 1.0
    };
    d.ldh_mean = ldh_sum / floods.len() as f64;
    d.p50_ms = percentile(&mut lat, 0.5);
    d.p99_ms = percentile(&mut lat, 0.99);
    d
}
