//! `rhizome-sim`: runs the standard scenarios and prints a table; writes JSON.
//!
//! ```text
//! cargo run --release -p rhizome-sim -- [--peers 10000] [--churn-peers 1000]
//!     [--churn-hours 1] [--seed 1] [--json results/sim.json] [--skip-crash] [--skip-churn]
//!     [--active 5] [--passive 30] [--threshold 3] [--graft-ms 500] [--shuffle-ms 10000]
//!     [--origins K]
//! ```
//!
//! `--active` … `--shuffle-ms` override the overlay defaults, for tuning; `SIM_DEBUG=1` prints the
//! overlays' summed counters on stderr.
//!
//! Scenarios, all in one run so that rhizome and the flooding baseline are compared on
//! the same views:
//! 1. **steady**: `--peers` peers join at 200/s, settle for 30 s, send 10 warm-up
//!    broadcasts (they build the Plumtree), then 30 measured ones, 1 s apart, each from
//!    a random peer (`--origins K`: from K fixed peers in turn).
//! 2. **crash**: from a snapshot of the steady network, 50 %, 60 %, 70 %, 80 % and 90 %
//!    of the peers crash at once; broadcasts are sent at the crash and one and two
//!    membership rounds (shuffle periods) later.
//! 3. **churn**: `--churn-peers` peers with exponential sessions of median 2 h (half
//!    leave cleanly, half crash), replaced at the same rate, for `--churn-hours`.

use std::time::Instant;

use rhizome::wire::MsgId;
use rhizome_sim::report::{summarize, summarize_flood, Dissemination};
use rhizome_sim::{FloodResult, NodeState, Sim, SimConfig};
use serde_json::json;

struct Args {
    peers: usize,
    churn_peers: usize,
    churn_hours: f64,
    seed: u64,
    json: String,
    crash: bool,
    churn: bool,
    /// Steady state: broadcasts rotate over this many fixed origins (0: a random peer each).
    origins: usize,
    overlay: rhizome::overlay::Config,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        peers: 10_000,
        churn_peers: 1_000,
        churn_hours: 1.0,
        seed: 1,
        json: "results/sim.json".into(),
        crash: true,
        churn: true,
        origins: 0,
        overlay: rhizome::overlay::Config::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--peers" => a.peers = val()?.parse().map_err(|e| format!("--peers: {e}"))?,
            "--churn-peers" => {
                a.churn_peers = val()?.parse().map_err(|e| format!("--churn-peers: {e}"))?
            }
            "--churn-hours" => {
                a.churn_hours = val()?.parse().map_err(|e| format!("--churn-hours: {e}"))?
            }
            "--seed" => a.seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--json" => a.json = val()?,
            "--active" => {
                a.overlay.active_view_capacity =
                    val()?.parse().map_err(|e| format!("--active: {e}"))?
            }
            "--passive" => {
                a.overlay.passive_view_capacity =
                    val()?.parse().map_err(|e| format!("--passive: {e}"))?
            }
            "--threshold" => {
                a.overlay.optimization_threshold =
                    val()?.parse().map_err(|e| format!("--threshold: {e}"))?
            }
            "--graft-ms" => {
                a.overlay.graft_timeout_ms =
                    val()?.parse().map_err(|e| format!("--graft-ms: {e}"))?
            }
            "--shuffle-ms" => {
                a.overlay.shuffle_interval_ms =
                    val()?.parse().map_err(|e| format!("--shuffle-ms: {e}"))?
            }
            "--skip-crash" => a.crash = false,
            "--skip-churn" => a.churn = false,
            "--origins" => a.origins = val()?.parse().map_err(|e| format!("--origins: {e}"))?,
            "-h" | "--help" => {
                return Err(
                    "usage: rhizome-sim [--peers N] [--churn-peers N] [--churn-hours H] \
                            [--seed S] [--json PATH] [--skip-crash] [--skip-churn] \
                            [--active N] [--passive N] [--threshold HOPS] [--graft-ms MS] \
                            [--shuffle-ms MS] [--origins K]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let cfg = SimConfig {
        seed: args.seed,
        overlay: args.overlay.clone(),
        ..SimConfig::default()
    };
    let mut out = json!({ "model": model_json(&cfg) });

    let t = Instant::now();
    let (steady_sim, steady) = steady(&cfg, args.peers, args.origins);
    let steady_secs = t.elapsed().as_secs_f64();
    println!(
        "\n== steady state: {} peers (simulated {:.0} s, wall {:.1} s) ==",
        args.peers,
        steady_sim.now() as f64 / 1000.0,
        steady_secs
    );
    print_table(&[("rhizome", &steady.rhizome), ("flooding", &steady.flood)]);
    println!(
        "control msgs/peer/s {:.2} | connections opened/peer during join {:.2} | mean active view {:.2}",
        steady.control_per_peer_s, steady.pcs_per_peer, steady.mean_active
    );
    out["steady"] = json!({
        "peers": args.peers,
        "wall_seconds": steady_secs,
        "simulated_seconds": steady_sim.now() as f64 / 1000.0,
        "rhizome": steady.rhizome,
        "flooding": steady.flood,
        "warmup_rhizome": steady.warmup,
        "control_msgs_per_peer_per_s": steady.control_per_peer_s,
        "connections_per_peer_during_join": steady.pcs_per_peer,
        "mean_active_view": steady.mean_active,
    });

    if args.crash {
        let round = cfg.overlay.shuffle_interval_ms;
        println!(
            "\n== crash: fraction of peers crashed at once (membership round = {} s) ==",
            round / 1000
        );
        println!(
            "{:>6} | {:>13} {:>13} {:>13} | {:>13} | {:>9} {:>9} | {:>9} {:>8}",
            "crash",
            "t0 by 2 rnds",
            "sent +1 rnd",
            "sent +2 rnd",
            "flood t0",
            "repair s",
            "mean view",
            "bootstrap",
            "wall s"
        );
        let mut curve = Vec::new();
        for pct in [50u32, 60, 70, 80, 90] {
            let t = Instant::now();
            let c = crash(steady_sim.clone(), pct as f64 / 100.0, round);
            let wall = t.elapsed().as_secs_f64();
            println!(
                "{:>5}% | {:>12.4}% {:>12.4}% {:>12.4}% | {:>12.4}% | {:>9} {:>9} | {:>9} {:>8.1}",
                pct,
                100.0 * c.t0_within_two_rounds,
                100.0 * c.after_one_round.delivery_ratio,
                100.0 * c.after_two_rounds.delivery_ratio,
                100.0 * c.flood_t0.delivery_ratio,
                fmt_opt(c.repair_s),
                format!("{:.2}", c.mean_view_end),
                c.bootstraps,
                wall
            );
            curve.push(json!({
                "crashed_percent": pct,
                "survivors": c.survivors,
                "t0_broadcast_delivered_within_two_rounds": c.t0_within_two_rounds,
                "t0_broadcast_delivered_within_1s": c.t0_within_1s,
                "broadcast_at_crash": c.at_crash,
                "broadcast_after_one_round": c.after_one_round,
                "broadcast_after_two_rounds": c.after_two_rounds,
                "flooding_at_crash": c.flood_t0,
                "time_to_repair_s": c.repair_s,
                "time_to_99pct_full_views_s": c.full99_s,
                "mean_active_view_at_end": c.mean_view_end,
                "bootstraps": c.bootstraps,
                "wall_seconds": wall,
            }));
        }
        out["crash"] = json!({ "membership_round_ms": round, "curve": curve });
    }

    if args.churn {
        let t = Instant::now();
        let c = churn(&cfg, args.churn_peers, args.churn_hours);
        let wall = t.elapsed().as_secs_f64();
        println!(
            "\n== churn: {} peers, median session 2 h, {} h simulated (wall {:.1} s) ==",
            args.churn_peers, args.churn_hours, wall
        );
        print_table(&[("rhizome", &c.rhizome), ("flooding", &c.flood)]);
        println!(
            "connections opened/peer/hour {:.2} | control msgs/peer/s {:.2} | joins {} | leaves {} | crashes {} | via overlay {} via server {}",
            c.pcs_per_peer_hour, c.control_per_peer_s, c.joins, c.leaves, c.crashes, c.via_overlay, c.via_server
        );
        out["churn"] = json!({
            "peers": args.churn_peers,
            "hours": args.churn_hours,
            "wall_seconds": wall,
            "rhizome": c.rhizome,
            "flooding": c.flood,
            "connections_opened_per_peer_per_hour": c.pcs_per_peer_hour,
            "control_msgs_per_peer_per_s": c.control_per_peer_s,
            "joins": c.joins, "leaves": c.leaves, "crashes": c.crashes,
            "connects_via_overlay": c.via_overlay, "connects_via_server": c.via_server,
        });
    }

    if let Some(dir) = std::path::Path::new(&args.json).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match serde_json::to_string_pretty(&out) {
        Ok(s) => match std::fs::write(&args.json, s) {
            Ok(()) => println!("\nwrote {}", args.json),
            Err(e) => eprintln!("could not write {}: {e}", args.json),
        },
        Err(e) => eprintln!("could not encode JSON: {e}"),
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("never".into(), |s| format!("{s:.1}"))
}

fn model_json(cfg: &SimConfig) -> serde_json::Value {
    json!({
        "seed": cfg.seed,
        "link_latency_ms": [cfg.latency_ms.0, cfg.latency_ms.1],
        "retransmit_probability": cfg.loss,
        "server_latency_ms": cfg.server_latency_ms,
        "ice_ms": cfg.ice_ms,
        "transport_timeout_ms": cfg.transport_timeout_ms,
        "crash_detect_ms": [cfg.crash_detect_ms.0, cfg.crash_detect_ms.1],
        "contacts": cfg.contacts,
        "overlay": format!("{:?}", cfg.overlay),
    })
}

fn print_table(rows: &[(&str, &Dissemination)]) {
    println!(
        "{:<10} {:>6} {:>10} {:>10} {:>8} {:>8} {:>6} {:>8} {:>8}",
        "protocol", "bcasts", "delivery", "min deliv", "RMR", "LDH avg", "LDH", "p50 ms", "p99 ms"
    );
    for (name, d) in rows {
        println!(
            "{:<10} {:>6} {:>9.4}% {:>9.4}% {:>8.3} {:>8.2} {:>6} {:>8} {:>8}",
            name,
            d.broadcasts,
            100.0 * d.delivery_ratio,
            100.0 * d.min_delivery_ratio,
            d.rmr,
            d.ldh_mean,
            d.ldh_max,
            d.p50_ms,
            d.p99_ms
        );
    }
}

fn random_online(sim: &mut Sim) -> Option<usize> {
    let online = sim.online();
    if online.is_empty() {
        return None;
    }
    let i = sim.rand_below(online.len());
    Some(online[i])
}

/// Sends a broadcast from the next of `origins` in turn (a random online peer if there
/// are none) and records the flood baseline.
fn send_one(sim: &mut Sim, floods: &mut Vec<FloodResult>, origins: &[usize]) -> Option<MsgId> {
    let origin = match origins {
        [] => random_online(sim)?,
        _ => origins[floods.len() % origins.len()],
    };
    floods.push(sim.flood(origin));
    sim.broadcast(origin, b"rhizome-sim broadcast".to_vec())
}

struct Steady {
    rhizome: Dissemination,
    warmup: Dissemination,
    flood: Dissemination,
    control_per_peer_s: f64,
    pcs_per_peer: f64,
    mean_active: f64,
}

fn steady(cfg: &SimConfig, n: usize, origins: usize) -> (Sim, Steady) {
    let mut sim = Sim::new(cfg.clone(), n);
    for i in 0..n {
        sim.start_at(i, i as u64 * 5);
    }
    let joined = n as u64 * 5;
    sim.run_until(joined + 30_000);
    let pcs_per_peer = sim.counters.pcs_created as f64 / n as f64;
    debug_dump("join", &sim);
    let mut floods = Vec::new();
    let mut warm = Vec::new();
    let origins: Vec<usize> = (0..origins)
        .filter_map(|_| random_online(&mut sim))
        .collect();
    for _ in 0..10 {
        warm.extend(send_one(&mut sim, &mut floods, &origins));
        sim.run_for(1_000);
    }
    sim.run_for(5_000);
    sim.reset_counters();
    floods.clear();
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.extend(send_one(&mut sim, &mut floods, &origins));
        sim.run_for(1_000);
    }
    sim.run_for(10_000);
    let control_per_peer_s =
        sim.counters.control_frames as f64 / (sim.peer_ms() as f64 / 1000.0).max(1.0);
    let tracks: Vec<_> = ids.iter().filter_map(|id| sim.broadcasts.get(id)).collect();
    let rhizome = summarize(&tracks);
    let wt: Vec<_> = warm
        .iter()
        .filter_map(|id| sim.broadcasts.get(id))
        .collect();
    let warmup = summarize(&wt);
    let flood = summarize_flood(&floods);
    let online = sim.online();
    let mean_active = online
        .iter()
        .map(|i| sim.overlay(*i).active_view().len())
        .sum::<usize>() as f64
        / online.len().max(1) as f64;
    (
        sim,
        Steady {
            rhizome,
            warmup,
            flood,
            control_per_peer_s,
            pcs_per_peer,
            mean_active,
        },
    )
}

struct Crash {
    survivors: usize,
    at_crash: Dissemination,
    t0_within_two_rounds: f64,
    t0_within_1s: f64,
    after_one_round: Dissemination,
    after_two_rounds: Dissemination,
    flood_t0: Dissemination,
    repair_s: Option<f64>,
    full99_s: Option<f64>,
    mean_view_end: f64,
    bootstraps: u64,
}

/// Survivors whose active view holds no crashed peer and is not empty.
fn repaired(sim: &Sim) -> (bool, f64) {
    let online = sim.online();
    let cap = sim.cfg.overlay.active_view_capacity;
    let mut all_ok = true;
    let mut full = 0usize;
    for &i in &online {
        let view = sim.overlay(i).active_view();
        let ok = !view.is_empty()
            && view.iter().all(|p| {
                sim.index_of(p)
                    .is_some_and(|j| sim.state(j) == NodeState::Online)
            });
        all_ok &= ok;
        if ok && view.len() >= cap {
            full += 1;
        }
    }
    (all_ok, full as f64 / online.len().max(1) as f64)
}

fn crash(mut sim: Sim, fraction: f64, round: u64) -> Crash {
    let online = sim.online();
    let k = (online.len() as f64 * fraction).round() as usize;
    let mut pool = online.clone();
    for x in 0..k {
        let j = x + sim.rand_below(pool.len() - x);
        pool.swap(x, j);
        sim.crash(pool[x]);
    }
    sim.reset_counters();
    let t0 = sim.now();
    let survivors = sim.online().len();
    let mut floods = Vec::new();
    let id0 = send_one(&mut sim, &mut floods, &[]);
    // The baseline from nine more random survivors over the same post-crash views.
    for _ in 0..9 {
        if let Some(o) = random_online(&mut sim) {
            floods.push(sim.flood(o));
        }
    }
    let (mut repair_s, mut full99_s) = (None, None);
    let mut within_1s = 0.0;
    let mut ids1 = Vec::new();
    let mut ids2 = Vec::new();
    let mut ignored = Vec::new();
    for s in 1..=(2 * round / 1000 + 30) {
        sim.run_until(t0 + s * 1000);
        if s == 1 {
            within_1s = delivered_fraction(&sim, id0);
        }
        let (ok, full) = repaired(&sim);
        if ok && repair_s.is_none() {
            repair_s = Some(s as f64);
        }
        if full >= 0.99 && full99_s.is_none() {
            full99_s = Some(s as f64);
        }
        // Five broadcasts right after one and two rounds.
        if (round / 1000..round / 1000 + 5).contains(&s) {
            ids1.extend(send_one(&mut sim, &mut ignored, &[]));
        }
        if (2 * round / 1000..2 * round / 1000 + 5).contains(&s) {
            ids2.extend(send_one(&mut sim, &mut ignored, &[]));
        }
    }
    let t0_within_two_rounds = {
        let t = id0.and_then(|id| sim.broadcasts.get(&id));
        t.map_or(0.0, |t| {
            let by = t.latencies.iter().filter(|l| **l <= 2 * round).count();
            by as f64 / t.online_at_send.max(1) as f64
        })
    };
    let get = |ids: &[MsgId]| -> Dissemination {
        let tracks: Vec<_> = ids.iter().filter_map(|id| sim.broadcasts.get(id)).collect();
        summarize(&tracks)
    };
    Crash {
        survivors,
        at_crash: get(&id0.into_iter().collect::<Vec<_>>()),
        t0_within_two_rounds,
        t0_within_1s: within_1s,
        after_one_round: get(&ids1),
        after_two_rounds: get(&ids2),
        flood_t0: summarize_flood(&floods),
        repair_s,
        full99_s,
        mean_view_end: {
            let online = sim.online();
            online
                .iter()
                .map(|i| sim.overlay(*i).active_view().len())
                .sum::<usize>() as f64
                / online.len().max(1) as f64
        },
        bootstraps: sim.counters.bootstraps,
    }
}

fn delivered_fraction(sim: &Sim, id: Option<MsgId>) -> f64 {
    id.and_then(|id| sim.broadcasts.get(&id)).map_or(0.0, |t| {
        t.delivered_by.len() as f64 / t.online_at_send.max(1) as f64
    })
}

struct Churn {
    rhizome: Dissemination,
    flood: Dissemination,
    pcs_per_peer_hour: f64,
    control_per_peer_s: f64,
    joins: u64,
    leaves: u64,
    crashes: u64,
    via_overlay: u64,
    via_server: u64,
}

fn churn(cfg: &SimConfig, n: usize, hours: f64) -> Churn {
    let mut sim = Sim::new(cfg.clone(), n);
    for i in 0..n {
        sim.start_at(i, i as u64 * 20);
    }
    sim.run_until(n as u64 * 20 + 60_000);
    sim.reset_counters();
    // Exponential sessions with a 2-hour median: mean = 2 h / ln 2.
    let mean_s = 7200.0 / std::f64::consts::LN_2;
    let p_depart = 1.0 - (-1.0 / mean_s).exp();
    let arrivals_per_s = n as f64 / mean_s;
    let (mut joins, mut leaves, mut crashes) = (0u64, 0u64, 0u64);
    let mut floods = Vec::new();
    let mut ids = Vec::new();
    let mut carry = 0.0;
    let secs = (hours * 3600.0) as u64;
    for s in 0..secs {
        for i in sim.online() {
            if sim.rand_unit() < p_depart {
                if sim.rand_unit() < 0.5 {
                    sim.leave(i);
                    leaves += 1;
                } else {
                    sim.crash(i);
                    crashes += 1;
                }
            }
        }
        carry += arrivals_per_s;
        while carry >= 1.0 {
            carry -= 1.0;
            let i = sim.add_node();
            let at = sim.now() + sim.rand_below(1000) as u64;
            sim.start_at(i, at);
            joins += 1;
        }
        if s % 30 == 0 {
            ids.extend(send_one(&mut sim, &mut floods, &[]));
        }
        sim.run_for(1_000);
    }
    sim.run_for(10_000);
    debug_dump("churn", &sim);
    let tracks: Vec<_> = ids.iter().filter_map(|id| sim.broadcasts.get(id)).collect();
    let peer_hours = sim.peer_ms() as f64 / 3_600_000.0;
    Churn {
        rhizome: summarize(&tracks),
        flood: summarize_flood(&floods),
        pcs_per_peer_hour: sim.counters.pcs_created as f64 / peer_hours.max(1e-9),
        control_per_peer_s: sim.counters.control_frames as f64
            / (sim.peer_ms() as f64 / 1000.0).max(1.0),
        joins,
        leaves,
        crashes,
        via_overlay: sim.counters.connects_via_overlay,
        via_server: sim.counters.connects_via_server,
    }
}

/// With `SIM_DEBUG` set, prints the overlays' summed counters to stderr.
fn debug_dump(phase: &str, sim: &Sim) {
    if std::env::var_os("SIM_DEBUG").is_none() {
        return;
    }
    let mut tot = rhizome::overlay::Stats::default();
    for i in 0..sim.len() {
        let s = sim.overlay(i).stats();
        tot.connects += s.connects;
        tot.connections_up += s.connections_up;
        tot.evictions += s.evictions;
        tot.refused += s.refused;
        tot.failed_connects += s.failed_connects;
        tot.declared_dead += s.declared_dead;
        tot.bootstraps += s.bootstraps;
        tot.relayed += s.relayed;
    }
    eprintln!(
        "[{phase}] overlay totals: {tot:?}\n[{phase}] sim counters {:?}",
        sim.counters
    );
}
