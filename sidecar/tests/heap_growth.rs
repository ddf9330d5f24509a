//! Periodic heap snapshots on real .NET 3.1 and 8 workloads: a type that grows in every
//! interval becomes one growth verdict (a `heapGrowth` capture holding the findings document,
//! `/findings`, `/metrics`) naming the type, the workload's own counts and the holder; a full
//! bounded cache and a constant lookup table never do.
//!
//! The test moves in step with the sidecar: after each snapshot (seen in
//! `dumpwatch_heap_snapshots_total`) it reads the workload's ground truth and then changes the
//! heap, so every snapshot sees exactly what the workload says it holds.

mod common;

use std::time::Duration;

use common::*;
use testbed::{Runtime, Value, Workload};

const S: Duration = Duration::from_secs(1);
/// Orders opened after each snapshot of the growing phase (each holds a 512-byte buffer: 3,000
/// of them add 1.6 MiB per interval, and outnumber the cache's 5,000 buffers after two).
const ORDERS_PER_INTERVAL: u64 = 3000;

fn snapshots_taken(sc: &Sidecar, pid: &str) -> u64 {
    sc.metric("dumpwatch_heap_snapshots_total", &[pid, "result=\"success\""]).unwrap_or(0.0) as u64
}

/// Waits for the next snapshot after `seen`, then returns the workload's truth at that moment.
fn after_next_snapshot(sc: &Sidecar, w: &Workload, pid: &str, seen: &mut u64) -> Value {
    let n = sc
        .wait_for("the next periodic heap snapshot", 60 * S, || Some(snapshots_taken(sc, pid)).filter(|&n| n > *seen));
    assert_eq!(n, *seen + 1, "the test missed a snapshot: its heap changes would not be in step");
    *seen = n;
    w.get("/truth")
}

fn growth_captures(sc: &Sidecar) -> Vec<std::path::PathBuf> {
    sc.captures().into_iter().filter(|d| manifest(d)["trigger"]["trigger"] == "heapGrowth").collect()
}

fn verdict_names_the_growing_type_and_nothing_for_the_cache_or_the_table(runtime: Runtime, name: &str) {
    let sc = Sidecar::start(name, "mode: connect\nheapSnapshots: {every: 2s, keep: 6}\n");
    let w = Workload::start_with(runtime, "LeakPatterns", &[], &sc.isolation(true, false));
    let pid = format!("pid=\"{}\"", w.pid);
    // Loaded at start and constant: a 50,000-row table; a bounded cache filled to its 5,000.
    assert_eq!(w.get("/table?rows=50000")["rows"], 50000);
    assert_eq!(w.get("/lru?ops=30000&keys=20000")["entries"], 5000);

    // Steady phase: the cache keeps working (evicting, inserting), the table is read-only.
    let mut seen = 0;
    for _ in 0..5 {
        let truth = after_next_snapshot(&sc, &w, &pid, &mut seen);
        assert_eq!((truth["lru_entries"].as_u64(), truth["table_rows"].as_u64()), (Some(5000), Some(50000)));
        w.get("/lru?ops=10000&keys=20000");
    }
    assert!(growth_captures(&sc).is_empty(), "a full cache and a constant table are not a leak");
    assert!(sc.metric("dumpwatch_heap_growth_suspected", &[&pid]).is_none(), "{}", sc.metrics());

    // Growing phase: orders opened and never closed, the cache still busy.
    let mut open_at_snapshot = Vec::new();
    let verdict = loop {
        let truth = after_next_snapshot(&sc, &w, &pid, &mut seen);
        open_at_snapshot.push(truth["open_orders"].as_u64().unwrap());
        // The metrics are out when the snapshot is counted; the capture is committed after.
        if sc.metric("dumpwatch_heap_growth_suspected", &[&pid]).is_some() {
            break sc.wait_for("the heapGrowth capture", 10 * S, || growth_captures(&sc).first().cloned());
        }
        assert!(open_at_snapshot.len() <= 5, "no verdict after {open_at_snapshot:?} open orders");
        w.get(&format!("/orders?count={ORDERS_PER_INTERVAL}"));
        w.get("/lru?ops=10000&keys=20000");
    };
    // The verdict came with the fourth snapshot of the run: 0, 3,000, 6,000, 9,000 orders.
    assert_eq!(open_at_snapshot, [0, 3000, 6000, 9000]);
    let m = manifest(&verdict);
    let files: Vec<&str> = m["files"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(files, ["finding.json"], "a finding alone: no snapshot is kept");
    let finding: Value = serde_json::from_slice(&std::fs::read(verdict.join("finding.json")).unwrap()).unwrap();
    assert_eq!(finding["schema"], "dumpwatch.findings");
    assert_eq!(finding["source"]["kind"], "heap_snapshots");
    let verdicts = finding["growth_verdicts"].as_array().unwrap();
    let names: Vec<&str> = verdicts.iter().map(|v| v["type_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["LeakPatterns.Order"], "one verdict, for the orders only: {finding:#}");
    let v = &verdicts[0];
    assert_eq!(
        (v["intervals"].as_u64(), v["first_count"].as_u64(), v["last_count"].as_u64()),
        (Some(3), Some(0), Some(9000))
    );
    let holder = v["holder"].as_str().unwrap();
    assert!(
        holder.contains("Dictionary<System.Int32,LeakPatterns.Order>") && holder.ends_with(" → LeakPatterns.Order"),
        "{holder}"
    );
    // The buffers the orders hold count towards their bytes (9,000 × 512 at least).
    assert!(v["bytes_growth"].as_i64().unwrap() >= 9000 * 512, "{v}");
    let suspect = &finding["leak_suspects"][0];
    assert_eq!((suspect["pattern"].as_str(), suspect["instances"].as_u64()), (Some("growth"), Some(9000)));
    assert_eq!(suspect["reason"], v["reason"]);
    assert_eq!(m["trigger"]["detail"], v["reason"]);
    println!("{runtime:?} verdict: {}", v["reason"].as_str().unwrap());
    // The same document is live at /findings, and the metrics say it.
    assert!(sc.findings().iter().any(|f| f["growth_verdicts"][0]["type_name"] == "LeakPatterns.Order"));
    let order = [pid.as_str(), "type=\"LeakPatterns.Order\""];
    assert_eq!(sc.metric("dumpwatch_heap_growth_suspected", &order), Some(1.0));
    assert_eq!(sc.metric("dotnet_heap_type_growth_objects", &order), Some(9000.0), "oldest kept has none");
    let window = sc.metric("dumpwatch_heap_growth_window_seconds", &[&pid]).unwrap();
    assert!(window >= 5.0 * 2.0, "six snapshots at least 2 s apart: {window}");
    for steady in ["LeakPatterns.CacheEntry", "LeakPatterns.Country"] {
        let t = format!("type=\"{steady}\"");
        assert!(sc.metric("dumpwatch_heap_growth_suspected", &[&pid, &t]).is_none());
        assert!(
            sc.metric("dotnet_heap_type_growth_objects", &[&pid, &t]).is_none_or(|n| n == 0.0),
            "{steady} did not grow"
        );
    }
    // Still growing: the standing verdict is not reported again.
    w.get(&format!("/orders?count={ORDERS_PER_INTERVAL}"));
    after_next_snapshot(&sc, &w, &pid, &mut seen);
    std::thread::sleep(S);
    assert_eq!(growth_captures(&sc).len(), 1, "one report per run of growth");
}

#[test]
fn net8_growth_verdict_names_the_leak_not_the_cache() {
    verdict_names_the_growing_type_and_nothing_for_the_cache_or_the_table(Runtime::Net8, "growth8");
}

#[test]
fn net31_growth_verdict_names_the_leak_not_the_cache() {
    verdict_names_the_growing_type_and_nothing_for_the_cache_or_the_table(Runtime::Net31, "growth31");
}
