//! A signaling-server restart at scale, for `docs/BENCHMARKS.md` ("Server restart"): a
//! settled room, the server away for some minutes (a tenth of the peers leave meanwhile),
//! then back with an empty room while newcomers join (see `rhizome_sim::restart`).
//!
//! ```text
//! cargo run --release -p rhizome-sim --example restart -- [--peers 1000]
//!     [--newcomers 200] [--down-minutes 5] [--seeds 1]
//! ```

use std::time::Instant;

use rhizome::overlay::dht::Mode;
use rhizome_sim::restart::{restart, Restart};

fn main() {
    let (mut peers, mut newcomers, mut down_minutes, mut seeds) = (1_000, 200, 5, 1);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--peers" => peers = value as usize,
            "--newcomers" => newcomers = value as usize,
            "--down-minutes" => down_minutes = value,
            "--seeds" => seeds = value,
            _ => panic!("unknown flag {flag}"),
        }
    }
    println!(
        "{peers} peers settle, server down {down_minutes} min ({} leave), {newcomers} newcomers over 10 s after it returns",
        peers.div_ceil(10)
    );
    println!("| mode | seed | one component after | all registered after | peak joins/s | merge probes | PCs per survivor |");
    println!("|---|---|---|---|---|---|---|");
    for mode in [Mode::Unstructured, Mode::Hybrid] {
        for seed in 1..=seeds {
            let t0 = Instant::now();
            let o = restart(&Restart {
                seed,
                mode,
                settled: peers,
                newcomers,
                down_ms: down_minutes * 60_000,
                watch_ms: 90_000,
            });
            let secs =
                |t: Option<u64>| t.map_or("never (90 s)".into(), |t| format!("{} s", t / 1_000));
            println!(
                "| {mode:?} | {seed} | {} | {} | {} | {} | {:.2} |",
                secs(o.merged_after_ms),
                secs(o.all_registered_after_ms),
                o.peak_joins_per_s,
                o.merge_probes,
                o.pcs_per_survivor
            );
            eprintln!(
                "  ({mode:?} seed {seed}: {:.0} s wall)",
                t0.elapsed().as_secs_f64()
            );
        }
    }
}
