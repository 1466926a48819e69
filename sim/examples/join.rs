//! Connections opened while a network forms (the join phase), per joining peer.
//!
//! ```text
//! cargo run --release -p rhizome-sim --example join [-- --seeds 5]
//! ```
//!
//! For 8, 32 and 1,000 peers, in unstructured (HyParView + Plumtree only) and hybrid
//! (plus DHT links) mode: peers start one after another (8 and 32: 50 ms apart, as a page
//! starting nodes in a loop; 1,000: 5 ms apart, the steady scenario's 200/s), the
//! network settles for 30 s, and every RTCPeerConnection each peer created is counted
//! (both sides of every attempt). Median and p95 are over all peers of all seeds.

use rhizome::overlay::dht::Mode;
use rhizome_sim::SimConfig;

fn main() {
    let mut seeds = 5u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--seeds", Some(v)) => seeds = v,
            _ => {
                eprintln!("usage: join [--seeds N]");
                std::process::exit(2);
            }
        }
    }
    println!("| mode | peers | created per peer: mean | median | p95 | max | links per peer | unhealthy runs |");
    println!("|---|---|---|---|---|---|---|---|");
    let big = std::env::var_os("JOIN_SMALL").is_none();
    for mode in [Mode::Unstructured, Mode::Hybrid] {
        for (n, interval) in [(8usize, 50u64), (32, 50), (1_000, 5)] {
            if n >= 1_000 && !big {
                continue;
            }
            let runs = if n >= 1_000 { 1 } else { seeds };
            let mut created = 0u64;
            let mut links = 0usize;
            let mut unhealthy = 0;
            let mut per: Vec<u64> = Vec::new();
            let mut max = 0;
            for seed in 1..=runs {
                let mut cfg = SimConfig {
                    seed,
                    ..SimConfig::default()
                };
                cfg.overlay.mode = mode;
                let sim = rhizome_sim::join::run(&cfg, n, interval, 30_000);
                let c = rhizome_sim::join::measure(&sim);
                created += c.created;
                links += c.links;
                max = max.max(c.max);
                unhealthy += usize::from(!c.healthy);
                per.extend(rhizome_sim::join::per_peer(&sim));
                if std::env::var_os("SIM_DEBUG").is_some() {
                    let (mut connects, mut evictions, mut refused, mut failed) = (0, 0, 0, 0);
                    for i in 0..sim.len() {
                        let s = sim.overlay(i).stats();
                        connects += s.connects;
                        evictions += s.evictions;
                        refused += s.refused;
                        failed += s.failed_connects;
                    }
                    eprintln!(
                        "{mode:?} n={n} seed={seed}: connects {connects} evictions {evictions} \
                         refused {refused} failed {failed} links {} | {:?}",
                        c.links, sim.counters
                    );
                }
            }
            per.sort_unstable();
            let q = |f: f64| per[((per.len() - 1) as f64 * f).round() as usize];
            let peers = (n as u64 * runs) as f64;
            println!(
                "| {mode:?} | {n} | {:.1} | {} | {} | {max} | {:.2} | {unhealthy} of {runs} |",
                created as f64 / peers,
                q(0.5),
                q(0.95),
                links as f64 / peers,
            );
        }
    }
}
