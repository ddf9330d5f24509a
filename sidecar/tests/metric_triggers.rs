//! `metric`, `startup` and per-trigger `processes` against real .NET 8 and 3.1 workloads: the
//! DiagScenarios app sets its own EventCounter (`DiagScenarios.Queue/queue-length`) and, on
//! .NET 6+, its own Meter (`DiagScenarios.App`: gauge `queue-length`, histogram
//! `request-duration`) to known values; each trigger either fires (once) or does not.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use testbed::{Runtime, Value, Workload};

const S: Duration = Duration::from_secs(1);

/// Trigger index → what it watches; the ones marked `false` must never fire.
const POLICY: &str = r#"mode: connect
counterInterval: 1s
capture: {kinds: [stacks]}
limits: {cooldown: 1s, maxPerHour: 1000}
triggers:
  - {type: metric, metric: {provider: DiagScenarios.Queue, counter: queue-length}, above: 40, for: 2s}
  - {type: metric, metric: {provider: DiagScenarios.Queue, counter: queue-length}, above: 50}
  - {type: metric, metric: {provider: DiagScenarios.Queue, counter: queue-length}, below: 5, for: 3s}
  - {type: metric, metric: {meter: DiagScenarios.App, instrument: queue-length}, below: 5, for: 3s}
  - {type: metric, metric: {meter: DiagScenarios.App, instrument: request-duration, percentile: 95}, above: 200}
  - {type: metric, metric: {meter: DiagScenarios.App, instrument: request-duration, percentile: 95}, above: 300}
  - {type: startup}
  - {type: metric, metric: {provider: DiagScenarios.Queue, counter: queue-length}, above: 1, processes: ["Billing*"]}
  - {type: startup, processes: ["*--no-such-flag*"]}
  - {type: metric, metric: {meter: DiagScenarios.App, instrument: queue-length}, above: 40, processes: ["DiagScenarios"]}
"#;

/// How many times each trigger index fired for `pid`, from the sidecar's log (every firing is
/// logged, also one the limits then refuse to capture).
fn fired(sc: &Sidecar, pid: u32) -> BTreeMap<u64, u32> {
    let mut n = BTreeMap::new();
    for f in sc.logged("trigger fired").into_iter().filter(|f| f["pid"] == pid) {
        let index = f["index"].as_str().and_then(|s| s.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok());
        *n.entry(index.expect("a policy trigger's firing names its index")).or_insert(0) += 1;
    }
    n
}

fn wait_fired(sc: &Sidecar, pid: u32, index: u64, timeout: Duration) {
    sc.wait_for(&format!("trigger {index} to fire"), timeout, || fired(sc, pid).contains_key(&index).then_some(()));
}

fn start_workload(sc: &Sidecar, runtime: Runtime) -> Workload {
    let w = start(sc, runtime, false, false, &["--app-metrics", "1"]);
    // At once, before the sidecar's session reads a value: a queue of 0 would fire `below` later.
    let set = w.get("/app-metrics?queue=42");
    assert_eq!(set["queue_length"], 42);
    w
}

#[test]
fn net8_event_counter_and_meter_triggers_fire_exactly_where_the_values_say() {
    let sc = Sidecar::start("metric8", POLICY);
    let w = start_workload(&sc, Runtime::Net8);
    assert_eq!(w.get("/app-metrics")["meter"], "DiagScenarios.App", "the meter exists on .NET 8");
    let pid = w.pid;
    wait_fired(&sc, pid, 6, 30 * S);
    // 42 for 2 s: above 40 fires (both the EventCounter and the Meter gauge), above 50 never.
    wait_fired(&sc, pid, 0, 30 * S);
    wait_fired(&sc, pid, 9, 10 * S);
    // Request durations of 250 ms: p95 above 200 fires, above 300 does not.
    let set = w.get("/app-metrics?duration_ms=250");
    assert_eq!(set["request_duration_ms"], 250);
    wait_fired(&sc, pid, 4, 15 * S);
    // The queue drains: `below: 5` fires on both paths after its 3 s.
    w.get("/app-metrics?queue=0");
    wait_fired(&sc, pid, 2, 15 * S);
    wait_fired(&sc, pid, 3, 15 * S);
    // Let every trigger see a few more intervals, then count: each fired once, the rest never.
    std::thread::sleep(4 * S);
    let n = fired(&sc, pid);
    let want: BTreeMap<u64, u32> = [(0, 1), (2, 1), (3, 1), (4, 1), (6, 1), (9, 1)].into_iter().collect();
    assert_eq!(n, want, "trigger index → firings");
    // What a firing records: the observed value and the threshold.
    let logged = sc.logged("trigger fired");
    let first = logged.iter().find(|f| f["index"] == "Some(0)").unwrap();
    assert_eq!((first["value"].as_f64(), first["threshold"].as_str()), (Some(42.0), Some("Some(40.0)")), "{first}");
    assert_eq!(first["detail"], "DiagScenarios.Queue/queue-length above 40 for 2s");
    let gauge = logged.iter().find(|f| f["index"] == "Some(9)").unwrap();
    assert_eq!(gauge["value"].as_f64(), Some(42.0), "the Meter's gauge: {gauge}");
    let drained = logged.iter().find(|f| f["index"] == "Some(3)").unwrap();
    assert_eq!(drained["value"].as_f64(), Some(0.0), "{drained}");
    let p95 = logged.iter().find(|f| f["index"] == "Some(4)").unwrap();
    let v = p95["value"].as_f64().unwrap();
    // The runtime's histogram quantiles are approximate (exponential buckets).
    assert!((v - 250.0).abs() <= 250.0 * 0.05, "p95 {v} of recordings all 250 ms");
    // At least one metric firing was captured with its manifest.
    let dir = sc.wait_for("a metric capture", 60 * S, || {
        sc.captures().into_iter().find(|d| manifest(d)["trigger"]["trigger"] == "metric")
    });
    let m = manifest(&dir);
    assert_eq!(m["process"]["pid"], pid);
    assert!(m["trigger"]["threshold"].as_f64().is_some(), "{m:#}");
    assert!(
        sc.metrics().contains(&format!(
            "dumpwatch_triggers_total{{pid=\"{pid}\",process=\"DiagScenarios\",trigger=\"startup\"}} 1"
        )),
        "{}",
        sc.metrics()
    );

    // A reload that watches one more instrument restarts the session with it; the runtime is the
    // same, so its startup trigger does not fire again.
    let more = format!(
        "{POLICY}  - {{type: metric, metric: {{meter: DiagScenarios.App, instrument: queue-length}}, below: 1}}\n"
    );
    std::fs::write(&sc.policy, more).unwrap();
    wait_fired(&sc, pid, 10, 30 * S);
    assert_eq!(fired(&sc, pid).get(&6), Some(&1), "startup fired once for this runtime");
}

#[test]
fn net31_event_counter_triggers_fire_and_meter_triggers_say_they_cannot() {
    let sc = Sidecar::start("metric31", POLICY);
    let w = start_workload(&sc, Runtime::Net31);
    let truth = w.get("/app-metrics");
    assert_eq!(truth["meter"], Value::Null, "no System.Diagnostics.Metrics on 3.1: {truth}");
    let pid = w.pid;
    wait_fired(&sc, pid, 6, 30 * S);
    wait_fired(&sc, pid, 0, 30 * S);
    w.get("/app-metrics?duration_ms=250");
    w.get("/app-metrics?queue=0");
    wait_fired(&sc, pid, 2, 15 * S);
    std::thread::sleep(4 * S);
    let n = fired(&sc, pid);
    let want: BTreeMap<u64, u32> = [(0, 1), (2, 1), (6, 1)].into_iter().collect();
    assert_eq!(n, want, "trigger index → firings; meter triggers (3, 4, 9) cannot fire on 3.1");
    let said = sc.logged("meter triggers need .NET 6 or later (System.Diagnostics.Metrics does not exist before); they never fire for this process");
    assert!(said.iter().any(|f| f["pid"] == pid), "the sidecar says why meter triggers are silent");
}
