//! DHT scenarios for `docs/BENCHMARKS.md` ("DHT"): lookups and direct messages in a
//! steady network and under churn (2-hour median sessions), and record survival after
//! half the peers crash.
//!
//! ```text
//! cargo run --release -p rhizome-sim --example dht -- [--peers 1000] [--churn-minutes 30]
//!     [--records 200] [--seed 1] [--bits 1] [--alpha 8]
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use rhizome::id::PeerId;
use rhizome::overlay::dht::{Command, DhtEvent, Key};
use rhizome::overlay::{Event, Input};
use rhizome_sim::{Sim, SimConfig};

struct Args {
    peers: usize,
    churn_minutes: u64,
    records: usize,
    seed: u64,
    bits: u8,
    alpha: usize,
    steady_seconds: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        peers: 1_000,
        churn_minutes: 30,
        records: 200,
        seed: 1,
        bits: 1,
        alpha: rhizome::overlay::dht::DhtConfig::default().alpha,
        steady_seconds: 120,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let v: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
            eprintln!(
                "usage: dht [--peers N] [--churn-minutes M] [--records R] [--seed S] [--bits B] [--alpha A] [--steady-seconds T]"
            );
            std::process::exit(2)
        });
        match arg.as_str() {
            "--peers" => a.peers = v as usize,
            "--churn-minutes" => a.churn_minutes = v,
            "--records" => a.records = v as usize,
            "--seed" => a.seed = v,
            "--bits" => a.bits = v as u8,
            "--alpha" => a.alpha = v as usize,
            "--steady-seconds" => a.steady_seconds = v,
            _ => {
                eprintln!("unknown argument {arg}");
                std::process::exit(2)
            }
        }
    }
    a
}

#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    exact: u64,
    hops: Vec<u64>,
    latency: Vec<u64>,
}

impl Tally {
    fn line(&mut self, what: &str) {
        self.hops.sort_unstable();
        self.latency.sort_unstable();
        let pct = |v: &[u64], p: f64| -> u64 {
            if v.is_empty() {
                0
            } else {
                v[((v.len() - 1) as f64 * p) as usize]
            }
        };
        let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
        println!(
            "  {what:<22} {:>6} sent  success {:>7.3}%  exact-k {:>7.3}%  hops mean {:.2} p50 {} p99 {} max {}  latency ms mean {:.0} p50 {} p99 {}",
            self.sent,
            100.0 * self.ok as f64 / self.sent.max(1) as f64,
            100.0 * self.exact as f64 / self.sent.max(1) as f64,
            mean(&self.hops),
            pct(&self.hops, 0.5),
            pct(&self.hops, 0.99),
            self.hops.last().copied().unwrap_or(0),
            mean(&self.latency),
            pct(&self.latency, 0.5),
            pct(&self.latency, 0.99),
        );
    }
}

enum Sent {
    Lookup { at: u64, key: Key, from: usize },
    Direct { at: u64 },
}

struct Probe {
    next_id: u64,
    sent: BTreeMap<u64, Sent>,
    lookups: Tally,
    directs: Tally,
    failures: BTreeMap<String, u64>,
    /// Why lookups missed the responsible peer.
    misses: BTreeMap<&'static str, u64>,
    /// One line per "responsible peer not found": what the network knew of that peer.
    diagnoses: Vec<String>,
    /// When each peer started (the base network's peers: `i * 5` ms).
    started: BTreeMap<usize, u64>,
}

impl Probe {
    fn new() -> Self {
        Probe {
            next_id: 1,
            sent: BTreeMap::new(),
            lookups: Tally::default(),
            directs: Tally::default(),
            failures: BTreeMap::new(),
            misses: BTreeMap::new(),
            diagnoses: Vec::new(),
            started: BTreeMap::new(),
        }
    }

    fn send(&mut self, sim: &mut Sim) {
        let online = sim.online();
        if online.len() < 2 {
            return;
        }
        let a = online[sim.rand_below(online.len())];
        let mut key = [0u8; 32];
        for b in key.iter_mut() {
            *b = sim.rand_below(256) as u8;
        }
        let key = Key(key);
        let id = self.next_id;
        self.next_id += 2;
        self.sent.insert(
            id,
            Sent::Lookup {
                at: sim.now(),
                key,
                from: a,
            },
        );
        self.lookups.sent += 1;
        sim.input(a, Input::Dht(Command::Lookup { id, key }));
        let b = loop {
            let b = online[sim.rand_below(online.len())];
            if b != a {
                break b;
            }
        };
        let to = sim.peer_id(b);
        self.sent.insert(id + 1, Sent::Direct { at: sim.now() });
        self.directs.sent += 1;
        sim.input(
            a,
            Input::Dht(Command::SendDirect {
                id: id + 1,
                to,
                payload: vec![0; 64],
            }),
        );
    }

    fn collect(&mut self, sim: &mut Sim, k: usize) {
        let log = sim.log.replace(Vec::new()).unwrap_or_default();
        for (at, _, e) in log {
            let Event::Dht(e) = e else { continue };
            match e {
                DhtEvent::LookupDone {
                    id, closest, hops, ..
                } => {
                    if let Some(Sent::Lookup { at: t0, key, from }) = self.sent.remove(&id) {
                        let truth = sim.closest_online(&key, k);
                        // Success: the peer responsible for the key (the closest live
                        // one) was found; exact: the whole k-set matches brute force.
                        if closest.first() == truth.first() {
                            self.lookups.ok += 1;
                        } else {
                            let online = |p: &PeerId| {
                                sim.index_of(p)
                                    .is_some_and(|i| sim.state(i) == rhizome_sim::NodeState::Online)
                            };
                            let why = if closest.is_empty() {
                                "empty result"
                            } else if closest.first().is_some_and(|p| !online(p)) {
                                "first result went offline"
                            } else if truth.first().is_some_and(|t| closest.contains(t)) {
                                "responsible peer found, not first"
                            } else if truth.first().is_some_and(|t| {
                                let i = sim.index_of(t).unwrap_or(0);
                                self.started.get(&i).is_some_and(|s| *s > t0)
                            }) {
                                "responsible peer started after the lookup"
                            } else {
                                if let Some(t) = truth.first() {
                                    let started = |i: usize| {
                                        let s = self.started.get(&i).copied();
                                        s.unwrap_or(i as u64 * 5)
                                    };
                                    let ti = sim.index_of(t).unwrap_or(0);
                                    let ages = (
                                        t0 as f64 / 1e3 - started(ti) as f64 / 1e3,
                                        (at - started(from).min(at)) as f64 / 1e3,
                                    );
                                    let d = diagnose(sim, &key, t, &truth, &closest, from, ages);
                                    self.diagnoses.push(d);
                                }
                                "responsible peer not found"
                            };
                            *self.misses.entry(why).or_default() += 1;
                        }
                        if closest == truth {
                            self.lookups.exact += 1;
                        }
                        self.lookups.hops.push(u64::from(hops));
                        self.lookups.latency.push(at - t0);
                    }
                }
                DhtEvent::Delivered { id, hops, .. } => {
                    if let Some(Sent::Direct { at: t0 }) = self.sent.remove(&id) {
                        self.directs.ok += 1;
                        self.directs.exact += 1;
                        self.directs.hops.push(u64::from(hops));
                        self.directs.latency.push(at - t0);
                    }
                }
                DhtEvent::Failed { id, error } => {
                    if let Some(Sent::Direct { .. }) = self.sent.remove(&id) {
                        *self.failures.entry(error.to_string()).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Why a lookup for `key` missed the responsible peer `r`: who knew it, and its links.
/// `ages`: how long before the lookup the responsible peer started (negative: after),
/// and the asking peer's age, in seconds.
fn diagnose(
    sim: &Sim,
    key: &Key,
    r: &PeerId,
    truth: &[PeerId],
    got: &[PeerId],
    from: usize,
    ages: (f64, f64),
) -> String {
    let knows = |p: &PeerId| {
        sim.index_of(p)
            .is_some_and(|i| sim.overlay(i).dht_known_peers().contains(r))
    };
    let online_knowers = sim
        .online()
        .iter()
        .filter(|&&i| sim.overlay(i).dht_known_peers().contains(r))
        .count();
    let truth_know = truth.iter().skip(1).filter(|p| knows(p)).count();
    let got_know = got.iter().filter(|p| knows(p)).count();
    let got_in_truth = got.iter().filter(|p| truth.contains(p)).count();
    let ri = sim.index_of(r).unwrap_or(0);
    let o = sim.overlay(ri);
    let kr = Key::of_peer(r);
    let cpl_r = kr.common_prefix_len(key);
    let cpl_got = got
        .first()
        .map(|p| Key::of_peer(p).common_prefix_len(key))
        .unwrap_or(0);
    let f = sim.overlay(from);
    format!(
        "responsible started {:.1} s before the lookup, asker up {:.0} s with {} connections and {} peers known; cpl(key, responsible) {cpl_r} vs first result {cpl_got}; responsible known by {online_knowers} online peers, by {truth_know} of the other true k closest, by {got_know} of the {} returned ({got_in_truth} of them truly among the k closest); its connections {} (DHT links {}), its table {} peers",
        ages.0,
        ages.1,
        f.connections().count(),
        f.dht_known_peers().len(),
        got.len(),
        o.connections().count(),
        o.dht_links().len(),
        o.dht_known_peers().len()
    )
}

fn connections(sim: &Sim) -> (f64, f64, usize) {
    let online = sim.online();
    let n = online.len().max(1) as f64;
    let conns: usize = online
        .iter()
        .map(|&i| sim.overlay(i).connections().count())
        .sum();
    let links: usize = online
        .iter()
        .map(|&i| sim.overlay(i).dht_links().len())
        .sum();
    let max = online
        .iter()
        .map(|&i| sim.overlay(i).connections().count())
        .max()
        .unwrap_or(0);
    (conns as f64 / n, links as f64 / n, max)
}

/// Counters summed over every peer ever created (departed ones included).
fn totals(sim: &Sim) -> [u64; 13] {
    let mut t = [0u64; 13];
    for i in 0..sim.len() {
        let o = sim.overlay(i);
        let d = o.dht_stats();
        let v = [
            o.stats().connects,
            d.link_attempts,
            d.links_refused,
            d.links_swapped,
            d.links_failed,
            d.links_down,
            d.links_taken,
            d.links_spared,
            d.stalls,
            d.queries_failed,
            d.lookups_closest_failed,
            d.retries,
            d.bucket_refreshes,
        ];
        for (a, b) in t.iter_mut().zip(v) {
            *a += b;
        }
    }
    t
}

fn print_totals(before: [u64; 13], after: [u64; 13], peer_hours: f64) {
    let names = [
        "connects",
        "DHT link attempts",
        "inbound links refused",
        "links offered for closing at the budget",
        "link attempts failed",
        "link ends down",
        "link ends taken by the overlay",
        "links spared",
        "routing stalls",
        "lookup queries failed",
        "lookups whose closest candidate failed",
        "direct retries",
        "bucket-refresh lookups",
    ];
    let parts: Vec<String> = names
        .iter()
        .zip(before.iter().zip(after))
        .map(|(n, (b, a))| format!("{n} {:.1}", (a - b) as f64 / peer_hours.max(1e-9)))
        .collect();
    println!("  per peer-hour: {}", parts.join(", "));
}

fn main() {
    let args = parse_args();
    let mut cfg = SimConfig {
        seed: args.seed,
        ..SimConfig::default()
    };
    cfg.overlay.dht.bits_per_hop = args.bits;
    cfg.overlay.dht.alpha = args.alpha;
    let k = cfg.overlay.dht.k;
    let replicas = cfg.overlay.dht.replicas;
    let n = args.peers;
    let t = Instant::now();
    let mut sim = Sim::new(cfg.clone(), n);
    for i in 0..n {
        sim.start_at(i, i as u64 * 5);
    }
    sim.run_until(n as u64 * 5 + 90_000);
    let target = ((n as f64).log2() / f64::from(args.bits)).ceil() as u64 + 1;
    println!(
        "== DHT: {n} peers, k = {k}, b = {}, hop target ceil(log2 N / b) + 1 = {target} (built in {:.1} s wall) ==",
        args.bits,
        t.elapsed().as_secs_f64()
    );
    let (c, l, max) = connections(&sim);
    println!("  open connections per peer: mean {c:.1} (DHT links {l:.1}), max {max}");
    let base = sim.clone();

    // Steady: one lookup and one direct message per second for 2 minutes.
    if args.steady_seconds > 0 {
        let before = totals(&sim);
        let (frames0, peer_ms0, cpu0) =
            (sim.counters.control_frames, sim.peer_ms(), Instant::now());
        sim.log = Some(Vec::new());
        let mut probe = Probe::new();
        for _ in 0..args.steady_seconds {
            probe.send(&mut sim);
            sim.run_for(1_000);
            probe.collect(&mut sim, k);
        }
        sim.run_for(20_000);
        probe.collect(&mut sim, k);
        println!("steady:");
        probe.lookups.line("lookups");
        probe.directs.line("direct messages");
        println!("  direct message failures: {:?}", probe.failures);
        println!("  lookup misses: {:?}", probe.misses);
        for d in probe.diagnoses.iter().take(20) {
            println!("    not found: {d}");
        }
        let after = totals(&sim);
        println!(
            "  counters over the steady phase: lookup queries failed {}, lookups whose closest candidate failed {}, routing stalls {}, bucket-refresh lookups {}",
            after[9] - before[9],
            after[10] - before[10],
            after[8] - before[8],
            after[12] - before[12]
        );
        let peer_s = (sim.peer_ms() - peer_ms0) as f64 / 1_000.0;
        println!(
            "  control messages per peer-second (overlay + DHT): {:.2}; {:.1} s wall",
            (sim.counters.control_frames - frames0) as f64 / peer_s.max(1e-9),
            cpu0.elapsed().as_secs_f64()
        );
    }

    // Churn: exponential sessions with a 2-hour median (half leave, half crash),
    // replaced at the same rate, as in the overlay's churn scenario.
    if args.churn_minutes > 0 {
        let mut sim = base.clone();
        sim.log = Some(Vec::new());
        sim.reset_counters();
        let before = totals(&sim);
        let mut probe = Probe::new();
        let mean_s = 7200.0 / std::f64::consts::LN_2;
        let p_depart = 1.0 - (-1.0 / mean_s).exp();
        let arrivals_per_s = n as f64 / mean_s;
        let mut carry = 0.0;
        let (mut joins, mut departures) = (0u64, 0u64);
        let t = Instant::now();
        for _ in 0..args.churn_minutes * 60 {
            for i in sim.online() {
                if sim.rand_unit() < p_depart {
                    departures += 1;
                    if sim.rand_unit() < 0.5 {
                        sim.leave(i);
                    } else {
                        sim.crash(i);
                    }
                }
            }
            carry += arrivals_per_s;
            while carry >= 1.0 {
                carry -= 1.0;
                let i = sim.add_node();
                let at = sim.now() + sim.rand_below(1000) as u64;
                sim.start_at(i, at);
                probe.started.insert(i, at);
                joins += 1;
            }
            probe.send(&mut sim);
            sim.run_for(1_000);
            probe.collect(&mut sim, k);
        }
        sim.run_for(20_000);
        probe.collect(&mut sim, k);
        println!(
        "churn ({} min, median session 2 h: {joins} joins, {departures} departures; {:.1} s wall):",
        args.churn_minutes,
        t.elapsed().as_secs_f64()
    );
        probe.lookups.line("lookups");
        let late = probe
            .misses
            .get("responsible peer started after the lookup")
            .copied()
            .unwrap_or(0);
        println!(
            "  lookup success not counting misses whose responsible peer started after the lookup: {:.3}%",
            100.0 * (probe.lookups.ok + late) as f64 / probe.lookups.sent.max(1) as f64
        );
        probe.directs.line("direct messages");
        println!("  direct message failures: {:?}", probe.failures);
        println!("  lookup misses: {:?}", probe.misses);
        for d in probe.diagnoses.iter().take(20) {
            println!("    not found: {d}");
        }
        let peer_hours = sim.peer_ms() as f64 / 3_600_000.0;
        println!(
        "  RTCPeerConnections created per peer-hour under churn (both sides, overlay + DHT): {:.1}",
        sim.counters.pcs_created as f64 / peer_hours.max(1e-9)
    );
        println!(
            "  control messages per peer-second under churn (overlay + DHT): {:.2}",
            sim.counters.control_frames as f64 / (peer_hours * 3_600.0).max(1e-9)
        );
        print_totals(before, totals(&sim), peer_hours);
        let (c, l, max) = connections(&sim);
        println!(
            "  open connections per peer after churn: mean {c:.1} (DHT links {l:.1}), max {max}"
        );
    }

    // Records: put from random writers, crash half the peers, get from random readers.
    if args.records == 0 {
        return;
    }
    let mut sim = base;
    sim.log = Some(Vec::new());
    let mut writers = Vec::new();
    for r in 0..args.records {
        let online = sim.online();
        let w = online[sim.rand_below(online.len())];
        let name = format!("record-{r}").into_bytes();
        sim.input(
            w,
            Input::Dht(Command::Put {
                id: r as u64,
                name: name.clone(),
                value: vec![r as u8; 100],
                seq: None,
                ttl_ms: 3_600_000,
            }),
        );
        writers.push((sim.peer_id(w), name));
        sim.run_for(100);
    }
    sim.run_for(20_000);
    let stored = sim
        .log
        .replace(Vec::new())
        .unwrap_or_default()
        .into_iter()
        .filter(
            |(_, _, e)| matches!(e, Event::Dht(DhtEvent::PutDone { stored, .. }) if *stored >= replicas),
        )
        .count();
    // Where each record's holders rank among the online peers by distance to its key.
    let ranks = |sim: &Sim, key: &Key| -> Vec<usize> {
        let all = sim.closest_online(key, sim.online().len());
        all.iter()
            .enumerate()
            .filter(|(_, p)| {
                sim.index_of(p)
                    .is_some_and(|i| sim.overlay(i).stored_record(key).is_some())
            })
            .map(|(r, _)| r)
            .collect()
    };
    let keys: Vec<Key> = writers
        .iter()
        .map(|(w, name)| Key::for_record(w, name))
        .collect();
    let ranks_before: Vec<Vec<usize>> = keys.iter().map(|k| ranks(&sim, k)).collect();
    let mut order = sim.online();
    for i in (1..order.len()).rev() {
        let j = sim.rand_below(i + 1);
        order.swap(i, j);
    }
    for &i in order.iter().take(order.len() / 2) {
        sim.crash(i);
    }
    sim.run_for(30_000);
    let online = sim.online();
    let replicated = writers
        .iter()
        .filter(|(w, name)| {
            let key = Key::for_record(w, name);
            online
                .iter()
                .any(|&i| sim.overlay(i).stored_record(&key).is_some())
        })
        .count();
    for (r, (writer, name)) in writers.iter().enumerate() {
        let online = sim.online();
        let reader = online[sim.rand_below(online.len())];
        sim.input(
            reader,
            Input::Dht(Command::Get {
                id: 1_000_000 + r as u64,
                writer: *writer,
                name: name.clone(),
            }),
        );
        sim.run_for(100);
    }
    sim.run_for(30_000);
    let mut found = 0;
    let mut missed = BTreeMap::new();
    for (_, _, e) in sim.log.take().unwrap_or_default() {
        match e {
            Event::Dht(DhtEvent::GetDone { .. }) => found += 1,
            Event::Dht(DhtEvent::Failed { id, error }) if id >= 1_000_000 => {
                missed.insert((id - 1_000_000) as usize, error.to_string());
            }
            _ => {}
        }
    }
    for (r, error) in &missed {
        println!(
            "  record {r} not read back ({error}): holders ranked {:?} among the online peers by distance before the crash, {:?} after",
            ranks_before[*r],
            ranks(&sim, &keys[*r])
        );
    }
    println!(
        "records: {} put ({stored} stored on all {replicas} replicas); after 50% of peers crashed, {replicated} still held by a live peer, {found} / {} read back ({:.1}%)",
        args.records,
        args.records,
        100.0 * found as f64 / args.records.max(1) as f64
    );
}
