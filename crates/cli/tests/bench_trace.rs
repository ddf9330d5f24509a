//! What a 30 s CPU trace costs the traced app, on both runtimes: the same CPU-bound workload
//! run alone and beside `dumpwatch trace --duration 30s`, in paired rounds. Ignored by default
//! (minutes per runtime, and it wants a quiet machine); `scripts/bench-trace` runs it in release
//! mode and prints the figures.

use std::process::{Command, Stdio};
use std::time::Duration;

use testbed::{Runtime, Value, Workload};

/// One thread that runs a short computation and bumps a counter under an uncontended lock, as
/// long as the request says: CPU-bound app code whose throughput is plain ops/s. (Two threads
/// on one lock measured lock hand-offs, not app work: a sampler's pauses changed the hand-off
/// pattern and made the traced side *faster*.) The second core is left to the tracer, as on a
/// node where the app does not own every core.
const WORK: &str = "/contend?threads=1&work=2000";
const SECONDS: u64 = 30;
const ROUNDS: usize = 4;

fn ops_per_sec(w: &Workload, secs: u64) -> f64 {
    let r = testbed::http_get(w.port, &format!("{WORK}&ms={}", secs * 1000), Duration::from_secs(secs + 120))
        .expect("the /contend request answers");
    let v: Value = serde_json::from_str(&r.1).unwrap();
    v["ops_per_sec"].as_f64().unwrap()
}

/// One round with the trace: the trace starts first (its session is up within a few ms), the
/// work runs for the trace's whole duration, and the trace's own figures come back.
fn ops_per_sec_while_traced(w: &Workload, dir: &std::path::Path) -> (f64, Value) {
    let out = dir.join("bench");
    let trace = Command::new(env!("CARGO_BIN_EXE_dumpwatch"))
        .args(["trace", &w.pid.to_string(), "--duration", &format!("{SECONDS}s"), "--json", "-o"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dumpwatch trace");
    let ops = ops_per_sec(w, SECONDS);
    let done = trace.wait_with_output().unwrap();
    assert!(done.status.success(), "dumpwatch trace failed: {}", String::from_utf8_lossy(&done.stderr));
    let mut summary: Value = serde_json::from_slice(&done.stdout).unwrap();
    summary["nettrace_bytes"] = std::fs::metadata(dir.join("bench.nettrace")).map(|m| m.len()).unwrap_or(0).into();
    (ops, summary)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: scripts/bench-trace"]
fn bench_cpu_trace_overhead_on_both_runtimes() {
    for runtime in Runtime::ALL {
        let w = Workload::start(runtime, "DiagScenarios", &[]);
        let dir = tempfile::tempdir().unwrap();
        ops_per_sec(&w, 3); // warm up (tiering)
        let (mut without, mut with, mut samples, mut bytes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // ABBA: which arm goes first alternates, so a drift of the shared machine during a
            // round pair cannot pose as a cost or a gain.
            if round % 2 == 0 {
                without.push(ops_per_sec(&w, SECONDS));
            }
            let (ops, t) = ops_per_sec_while_traced(&w, dir.path());
            with.push(ops);
            samples.push(t["samples"].as_f64().unwrap_or(0.0));
            bytes.push(t["nettrace_bytes"].as_f64().unwrap());
            if round % 2 == 1 {
                without.push(ops_per_sec(&w, SECONDS));
            }
        }
        let mut ratios: Vec<f64> = with.iter().zip(&without).map(|(a, b)| a / b).collect();
        ratios.sort_by(f64::total_cmp);
        let k = |v: &[f64]| v.iter().map(|x| format!("{:.0}", x / 1e3)).collect::<Vec<_>>().join(" ");
        println!(
            "BENCH cpu trace overhead, {runtime:?} ({WORK}, {SECONDS} s each, {ROUNDS} paired rounds ABBA): median {:.0} k ops/s \
             alone, {:.0} k ops/s traced; median paired loss {:.1}% (range {:.1}% .. {:.1}%); trace: median {:.0} samples, \
             {:.1} MB nettrace; rounds (k ops/s) alone [{}] traced [{}]",
            median(&without) / 1e3,
            median(&with) / 1e3,
            (1.0 - ratios[ROUNDS / 2]) * 100.0,
            (1.0 - ratios[ROUNDS - 1]) * 100.0,
            (1.0 - ratios[0]) * 100.0,
            median(&samples),
            median(&bytes) / 1e6,
            k(&without),
            k(&with),
        );
    }
}
