//! Sidecar benchmarks against real workloads. Ignored by default (they take minutes and want
//! a quiet machine); `scripts/bench-sidecar` runs them in release mode and prints the figures.

mod common;

use std::time::{Duration, Instant};

use common::*;
use testbed::Runtime;

const S: Duration = Duration::from_secs(1);
const ROUNDS: usize = 15;

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are 12 and 13 after the state field.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find(|l| l.starts_with(key)).unwrap()[key.len()..].split_whitespace().next().unwrap().parse().unwrap()
}

fn ticks_per_sec() -> f64 {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(100.0)
}

#[test]
#[ignore = "benchmark: scripts/bench-sidecar"]
fn bench_rss_and_cpu_watching_two_processes() {
    // Contention tracing on (a deadlock trigger), counters every second, /metrics scraped
    // every 5 s as Prometheus would.
    let policy = "mode: connect\ncounterInterval: 1s\ntriggers: [{type: deadlock}]\n";
    let sc = Sidecar::start_with_scan("bench-rss", policy, 1000);
    let a = start(&sc, Runtime::Net8, true, false, &[]);
    let b = start(&sc, Runtime::Net31, true, false, &[]);
    for w in [&a, &b] {
        let pid = format!("pid=\"{}\"", w.pid);
        sc.wait_for("both watched", 30 * S, || sc.metric("dotnet_cpu_usage_ratio", &[&pid]));
    }
    std::thread::sleep(3 * S);
    let pid = sc.child.id();
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    let window = 60;
    for _ in 0..window / 5 {
        std::thread::sleep(5 * S);
        assert!(!sc.metrics().is_empty());
    }
    let cpu = (cpu_ticks(pid) - c0) as f64 / ticks_per_sec() / t0.elapsed().as_secs_f64();
    let rss = status_kib(pid, "VmRSS:") as f64 / 1024.0;
    let hwm = status_kib(pid, "VmHWM:") as f64 / 1024.0;
    println!(
        "BENCH sidecar watching 2 processes (.NET 8 + 3.1) at 1 s for {window} s: CPU {:.2}% of one core, RSS {rss:.1} MiB (peak {hwm:.1} MiB)",
        cpu * 100.0
    );
}

/// Lock-heavy shapes of /contend (see e2e/workloads/DiagScenarios/Scenarios.cs). On .NET 8 a
/// waiter spins before it blocks, and only a blocking wait emits ContentionStart/Stop (with a
/// stack): so the cost of tracing depends on how often waiters block, and each shape is reported
/// with its contention rate.
const CONTENTION_PROFILES: [(&str, &str); 3] = [
    ("cpu-bound lock, 4 threads, short holds", "threads=4&inside=500&work=500"),
    ("lock held across a ~50 us syscall, 4 threads", "threads=4&sleep_us=50&work=5000"),
    ("bare counter++ under the lock, 2 threads pinned to 2 cores", "threads=2&pin=1"),
];

#[test]
#[ignore = "benchmark: scripts/bench-sidecar"]
fn bench_contention_tracing_overhead() {
    // The same workload, rounds alternating without and with the sidecar's session, so
    // machine noise hits both sides alike.
    let policy = "mode: connect\ncounterInterval: 1s\ntriggers: [{type: deadlock}]\n";
    let mut sc = Sidecar::start("bench-contend", policy);
    let w = start(&sc, Runtime::Net8, false, false, &[]);
    let pid = format!("pid=\"{}\"", w.pid);
    sc.kill();
    let only = std::env::var("CONTENTION_PROFILE").ok();
    for (name, query) in CONTENTION_PROFILES {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let contend = || w.get(&format!("/contend?{query}&ms=2000"));
        contend(); // warm up (tiering)
        let (mut without, mut with, mut waits, mut events) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Alternate which arm goes first (ABBA), so an order effect (a session just torn
            // down, a sidecar just started) cannot pose as a cost or a gain.
            if round % 2 == 0 {
                without.push(contend()["ops_per_sec"].as_f64().unwrap());
            }
            sc.restart();
            sc.wait_for("watching", 30 * S, || sc.metric("dumpwatch_contention_events_total", &[&pid]));
            let before = sc.metric("dumpwatch_contention_events_total", &[&pid]).unwrap_or(0.0);
            let r = contend();
            with.push(r["ops_per_sec"].as_f64().unwrap());
            waits.push(r["contentions_per_sec"].as_f64().unwrap());
            // The session delivers events in batches: give the last ones a moment to arrive.
            std::thread::sleep(S);
            let after = sc.metric("dumpwatch_contention_events_total", &[&pid]).unwrap_or(0.0);
            events.push((after - before) / r["elapsed_ms"].as_f64().unwrap() * 1000.0);
            sc.kill();
            if round % 2 == 1 {
                without.push(contend()["ops_per_sec"].as_f64().unwrap());
            }
        }
        report_overhead(name, query, &without, &with, &waits, &events);
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Paired rounds (each "with" beside its own "without") cancel slow drifts of a shared
/// machine; the median of the per-pair ratios is the figure.
fn report_overhead(name: &str, query: &str, without: &[f64], with: &[f64], waits: &[f64], events: &[f64]) {
    let mut ratios: Vec<f64> = with.iter().zip(without).map(|(w, wo)| w / wo).collect();
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    let m = |v: &[f64]| v.iter().map(|x| format!("{:.1}", x / 1e3)).collect::<Vec<_>>().join(" ");
    println!(
        "BENCH contention tracing, {name} (/contend?{query}&ms=2000), {n} paired rounds (ABBA): median {:.1} k ops/s without, \
         {:.1} k ops/s with the sidecar's session; median paired loss {:.1}% (quartiles {:.1}% .. {:.1}%); \
         blocking waits {:.0}/s, ContentionStart seen by the sidecar {:.0}/s; rounds (k ops/s) without [{}] with [{}]",
        median(without) / 1e3,
        median(with) / 1e3,
        (1.0 - ratios[n / 2]) * 100.0,
        (1.0 - ratios[n * 3 / 4]) * 100.0,
        (1.0 - ratios[n / 4]) * 100.0,
        median(waits),
        median(events),
        m(without),
        m(with)
    );
}

#[test]
#[ignore = "benchmark: scripts/bench-sidecar"]
fn bench_deadlock_detection_latency() {
    let sc = Sidecar::start("bench-dl", "mode: connect\ncounterInterval: 1s\n");
    let w = start(&sc, Runtime::Net8, true, false, &[]);
    let pid = format!("pid=\"{}\"", w.pid);
    sc.wait_for("watching", 30 * S, || sc.metric("dotnet_cpu_usage_ratio", &[&pid]));
    std::thread::sleep(2 * S);
    let raw = |sc: &Sidecar| sc.findings().iter().filter(|f| f["symbolized"] == false).count();
    let mut ms = Vec::new();
    for trial in 0..20 {
        let before = raw(&sc);
        w.get("/deadlock?waiters=1");
        // The workload answers 200 ms after every thread is about to block: the deadlock
        // exists from (at the latest) the answer on.
        let answered = Instant::now();
        sc.wait_for("the finding", 10 * S, || (raw(&sc) > before).then_some(()));
        ms.push(answered.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(raw(&sc), trial + 1);
    }
    ms.sort_by(f64::total_cmp);
    let p95 = ms[(ms.len() * 95).div_ceil(100) - 1];
    println!(
        "BENCH deadlock answered → finding at /findings, 20 trials: p95 {p95:.0} ms (min {:.0}, median {:.0}, max {:.0}); confirm window 500 ms",
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
}
