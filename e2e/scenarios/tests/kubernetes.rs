//! From `kubectl apply` of a DumpPolicy to a firing alert, on real components (see the crate
//! docs for what stands in for a container runtime). One test runs the scenarios in order on
//! one cluster: they share loopback ports, as pods on one node share a network here.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use harness::{Value, free_port};
use scenarios::{APP_NET8, APP_NET31, Cluster, containers};

const S: Duration = Duration::from_secs(1);

fn tids(v: &Value, key: &str) -> BTreeSet<u64> {
    v.as_array().into_iter().flatten().filter_map(|t| t[key].as_u64()).collect()
}

/// Figures a user cares about, printed at the end (`cargo test -p scenarios -- --nocapture`).
#[derive(Default)]
struct Figures(Vec<(String, Duration)>);

impl Figures {
    fn note(&mut self, what: &str, d: Duration) {
        eprintln!("FIGURE {what}: {:.1} s", d.as_secs_f64());
        self.0.push((what.into(), d));
    }
}

#[test]
fn from_kubectl_apply_to_a_firing_alert() {
    let cluster = Cluster::start().expect("cluster with dumpwatch installed");
    let mut figures = Figures::default();
    figures.note("cluster + chart installed, operator ready", cluster.started.elapsed());
    let mut dashboards = Dashboards::shipped();
    deadlock_on_net8(&cluster, &mut figures, &mut dashboards);
    capture_failing(&cluster, &mut figures, &mut dashboards);
    leak_on_demand_and_retention(&cluster, &mut figures, &mut dashboards);
    deadlock_on_net31_by_stall(&cluster, &mut figures, &mut dashboards);
    crash_on_net8(&cluster, &mut figures);
    webhook_down(&cluster, &mut figures);
    dashboards.all_answered();
    every_shipped_alert_fired(&cluster);
    figures.note("total", cluster.started.elapsed());
}

/// Every alert of the shipped rules fired at some point of the run, by Prometheus' own record
/// (`ALERTS`), so an alert whose expression can never be true here does not go unnoticed.
fn every_shipped_alert_fired(c: &Cluster) {
    let never: Vec<String> = chart_tests::rule_exprs()
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| {
            let expr = format!("last_over_time(ALERTS{{alertname=\"{name}\",alertstate=\"firing\"}}[1h])");
            c.prometheus.wait_for_samples(&expr, 3 * S).is_err()
        })
        .collect();
    assert!(never.is_empty(), "shipped alerts that never fired: {never:?}");
}

/// .NET 8: the sidecar sees the cycle live; a DumpSnapshot with the deadlock, a DeadlockDetected
/// Event on the pod, the metric in Prometheus and the shipped alert in Alertmanager.
fn deadlock_on_net8(c: &Cluster, figures: &mut Figures, dashboards: &mut Dashboards) {
    let ns = "orders";
    c.opted_in_namespace(ns).unwrap();
    c.cp.apply(&format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {{name: orders, namespace: {ns}}}\n\
         spec:\n  selector: {{matchLabels: {{app: orders}}}}\n  mode: listen\n  counterInterval: 1s\n\
         \x20 triggers: [{{type: deadlock}}]\n  capture: {{kinds: [stacks]}}\n  {}\n",
        c.s3_storage()
    ))
    .unwrap();
    let port = free_port();
    c.wait_for_injection(ns, "orders", 60 * S).unwrap();
    c.deploy_app(ns, "orders", APP_NET8, port, &[]).unwrap();
    let pod = c
        .running_pod(ns, "orders", 120 * S)
        .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", c.pod_log(ns, "dumpwatch-sidecar")));
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    c.wait_for_app(port, 60 * S).unwrap();
    assert_eq!(
        containers(&pod),
        ["app", "dumpwatch-sidecar"],
        "the webhook injected the sidecar\napiserver: {}\noperator log:\n{}",
        c.cp.log("kube-apiserver").lines().filter(|l| l.contains("webhook")).collect::<Vec<_>>().join("\n"),
        c.pod_log(scenarios::NAMESPACE, "operator")
    );
    assert_eq!(pod["metadata"]["annotations"]["dumpwatch.dev/injected"], "orders");

    // Watched: the runtime connected to the sidecar's socket and its metrics are scraped.
    c.wait_for_series("dotnet_gc_heap_size_bytes", 60 * S)
        .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", c.pod_log(ns, "dumpwatch-sidecar")));

    let truth = testbed::http_get(port, "/deadlock?waiters=3", 30 * S).expect("the workload answers");
    let formed = Instant::now();
    let truth: Value = serde_json::from_str(&truth.1).unwrap();
    let owners = tids(&truth["owners"], "os_tid");
    assert_eq!(owners.len(), 2, "{truth}");

    // A DumpSnapshot naming the two owners.
    let snapshot = harness::wait_for("a DumpSnapshot with the deadlock", 30 * S, || {
        let snaps = c.items(ns, "dumpsnapshots")?;
        Ok(snaps.into_iter().find(|s| s["status"]["findings"]["deadlocks"].as_u64().unwrap_or(0) > 0))
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nsnapshots: {:#}\nsidecar log:\n{}\noperator log:\n{}",
            c.cp.kubectl_json(&["get", "dsnap", "-n", ns]).unwrap_or_default(),
            c.pod_log(ns, "dumpwatch-sidecar"),
            c.pod_log(scenarios::NAMESPACE, "operator")
        )
    });
    figures.note("deadlock formed -> DumpSnapshot with the finding", formed.elapsed());
    let text = snapshot["status"].to_string();
    for tid in &owners {
        assert!(text.contains(&tid.to_string()), "owner thread {tid} named in the snapshot: {text}");
    }
    assert_eq!(snapshot["spec"]["pod"], pod_name.as_str());

    // The Event on the pod.
    let event = harness::wait_for("a DeadlockDetected Event on the pod", 30 * S, || {
        Ok(c.items(ns, "events")?
            .into_iter()
            .find(|e| e["reason"] == "DeadlockDetected" && e["involvedObject"]["name"] == pod_name.as_str()))
    })
    .unwrap();
    figures.note("deadlock formed -> DeadlockDetected Event", formed.elapsed());
    eprintln!("Event: {}", event["message"]);
    // Where they are stuck, from the stacks captured with the live finding.
    assert!(event["message"].as_str().unwrap_or("").contains(" in DeadlockFunc"), "{event}");

    c.wait_for_series("dumpwatch_deadlocked_threads > 0", 30 * S).unwrap();
    figures.note("deadlock formed -> dumpwatch_deadlocked_threads > 0 in Prometheus", formed.elapsed());
    let alert = c.wait_for_alert("DotnetDeadlockDetected", 90 * S).unwrap();
    figures.note("deadlock formed -> DotnetDeadlockDetected firing in Alertmanager", formed.elapsed());
    eprintln!("Alert: {}", alert["annotations"]["summary"]);
    // Labelled with the pod (from discovery, as the PodMonitor does) and the process's name.
    let labels = &alert["labels"];
    assert_eq!((labels["namespace"].as_str(), labels["pod"].as_str()), (Some(ns), Some(pod_name.as_str())), "{alert}");
    assert_eq!(labels["process"], "DiagScenarios", "{alert}");
    assert!(formed.elapsed() < 120 * S);
    // The admission of this pod is on the operator's /metrics.
    c.wait_for_series("dumpwatch_operator_webhook_duration_seconds_count > 0", 30 * S).unwrap();
    dashboards.check(c, ".NET 8 deadlock");
    c.delete_app(ns, "orders").unwrap();
}

/// A capture that cannot be taken: the disk guard refuses the dump (`limits.minFreeDisk` far above
/// the free space). The on-demand snapshot is `Failed` within seconds with the reason (not at the
/// operator's 600 s capture timeout), a CaptureFailed Event on the pod, the failure counted and
/// the shipped DumpwatchCaptureFailing alert firing on the pod's first failure.
fn capture_failing(c: &Cluster, figures: &mut Figures, dashboards: &mut Dashboards) {
    let began = Instant::now();
    let ns = "payments";
    c.opted_in_namespace(ns).unwrap();
    c.cp.apply(&format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {{name: payments, namespace: {ns}}}\n\
         spec:\n  selector: {{matchLabels: {{app: payments}}}}\n  mode: listen\n  counterInterval: 1s\n\
         \x20 triggers: [{{type: onDemand}}]\n  capture: {{kinds: [dump], dumpType: mini}}\n\
         \x20 limits: {{minFreeDisk: 1000Ti, maxBytes: 100Gi}}\n  {}\n",
        c.s3_storage()
    ))
    .unwrap();
    let port = free_port();
    c.wait_for_injection(ns, "payments", 60 * S).unwrap();
    c.deploy_app(ns, "payments", APP_NET8, port, &[]).unwrap();
    let pod = c.running_pod(ns, "payments", 120 * S).unwrap();
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    c.wait_for_app(port, 60 * S).unwrap();
    // Published at 0 before any failure: a series born at 1 shows no increase() to the alert.
    c.wait_for_series(
        &format!("dumpwatch_captures_total{{pod=\"{pod_name}\",kind=\"dump\",result=\"failure\"}} == 0"),
        60 * S,
    )
    .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", tail(&c.pod_log(ns, "dumpwatch-sidecar"), 40)));

    let requested = Instant::now();
    c.cp.apply(&format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpSnapshot\nmetadata: {{name: refused, namespace: {ns}}}\n\
         spec: {{pod: {pod_name}, policy: payments, trigger: onDemand}}\n"
    ))
    .unwrap();
    let failed = wait_for_snapshot(c, ns, "the on-demand snapshot Failed", 60 * S, |s| {
        s["metadata"]["name"] == "refused" && matches!(phase(s), "Failed" | "Uploaded" | "Analyzed")
    });
    figures.note("capture failing: kubectl create dsnap -> Failed", requested.elapsed());
    assert_eq!(phase(&failed), "Failed", "{failed:#}");
    let message = failed["status"]["message"].as_str().unwrap_or_default();
    eprintln!("Failed: {message}");
    assert!(
        message.contains("disk guard: ") && message.contains("limits.minFreeDisk keeps 1000.0 TiB free"),
        "{failed:#}"
    );
    assert!(requested.elapsed() < 30 * S, "promptly, not at the capture timeout");

    let event = harness::wait_for("a CaptureFailed Event on the pod", 30 * S, || {
        Ok(c.items(ns, "events")?
            .into_iter()
            .find(|e| e["reason"] == "CaptureFailed" && e["involvedObject"]["name"] == pod_name.as_str()))
    })
    .unwrap();
    figures.note("capture failing: kubectl create dsnap -> CaptureFailed Event", requested.elapsed());
    eprintln!("Event: {}", event["message"]);
    assert_eq!(event["type"], "Warning", "{event}");
    assert!(event["message"].as_str().unwrap_or_default().contains("disk guard: "), "{event}");

    c.wait_for_series(&format!("dumpwatch_captures_total{{pod=\"{pod_name}\",result=\"failure\"}} > 0"), 30 * S)
        .unwrap();
    let alert = c.wait_for_alert("DumpwatchCaptureFailing", 60 * S).unwrap();
    figures.note("capture failing: kubectl create dsnap -> DumpwatchCaptureFailing firing", requested.elapsed());
    eprintln!("Alert: {}", alert["annotations"]["summary"]);
    let labels = &alert["labels"];
    assert_eq!((labels["pod"].as_str(), labels["kind"].as_str()), (Some(pod_name.as_str()), Some("dump")), "{alert}");
    dashboards.check(c, "capture failing");
    c.delete_app(ns, "payments").unwrap();
    figures.note("capture failing: whole scenario", began.elapsed());
}

/// Every panel query of the shipped dashboards must return data from the scenarios'
/// Prometheus in at least one scenario (a deadlock panel has data while a deadlock lives, the
/// .NET 3.1 panel while a 3.1 process is watched). The heap growth panels are the exception: they
/// need a policy with `heapSnapshots` and an app whose heap keeps rising for several intervals,
/// which these scenarios' apps do not do; `chart-tests`' dashboards test runs those queries on a
/// real Prometheus fed the sidecar's growth metrics.
struct Dashboards {
    pending: Vec<chart_tests::PanelQuery>,
    total: usize,
}

const HEAP_GROWTH_METRICS: &[&str] =
    &["dotnet_heap_type_growth_", "dumpwatch_heap_growth_", "dumpwatch_heap_snapshots_total"];

impl Dashboards {
    fn shipped() -> Self {
        let pending: Vec<_> = chart_tests::dashboards()
            .unwrap()
            .iter()
            .flat_map(|(file, d)| chart_tests::panel_queries(file, d))
            .filter(|q| !HEAP_GROWTH_METRICS.iter().any(|m| q.expr.contains(m)))
            .collect();
        Self { total: pending.len(), pending }
    }

    fn check(&mut self, c: &Cluster, during: &str) {
        let before = self.pending.len();
        self.pending.retain(|q| {
            let expr = chart_tests::substitute_variables(&q.expr, ".*", ".*");
            c.prometheus.wait_for_samples(&expr, 3 * S).is_err()
        });
        eprintln!("dashboards: {} more panel queries answered during {during}", before - self.pending.len());
    }

    fn all_answered(&self) {
        let left: Vec<String> =
            self.pending.iter().map(|q| format!("{} / {}: {}", q.dashboard, q.panel, q.expr)).collect();
        assert!(left.is_empty(), "panel queries that never returned data:\n{}", left.join("\n"));
        eprintln!("dashboards: all {} panel queries returned data", self.total);
    }
}

/// The snapshot `name` in `ns` once `done` says so; the snapshots and logs in the error.
fn wait_for_snapshot(c: &Cluster, ns: &str, what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    harness::wait_for(what, timeout, || Ok(c.items(ns, "dumpsnapshots")?.into_iter().find(|s| done(s)))).unwrap_or_else(
        |e| {
            panic!(
                "{e}\nsnapshots: {:#}\nsidecar log:\n{}\noperator log:\n{}\nanalysis log:\n{}",
                c.cp.kubectl_json(&["get", "dsnap", "-n", ns]).unwrap_or_default(),
                tail(&c.pod_log(ns, "dumpwatch-sidecar"), 40),
                tail(&c.pod_log(scenarios::NAMESPACE, "operator"), 40),
                tail(&c.pod_log(ns, "analyze"), 40),
            )
        },
    )
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn phase(s: &Value) -> &str {
    s["status"]["phase"].as_str().unwrap_or("")
}

/// A leak grows the heap until the trigger fires: a heap dump and a heap snapshot go to S3
/// (zstd, SHA-256), the analysis Job names `Customer` held through `CustomerCache`, a
/// MemoryLeakSuspected Event, the heap-growth alert. Then an on-demand snapshot by `kubectl
/// create`, and retention (maxCount 1) deleting the older snapshot and its stored artifacts.
fn leak_on_demand_and_retention(c: &Cluster, figures: &mut Figures, dashboards: &mut Dashboards) {
    let ns = "catalog";
    c.opted_in_namespace(ns).unwrap();
    c.cp.apply(&format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {{name: catalog, namespace: {ns}}}\n\
         spec:\n  selector: {{matchLabels: {{app: catalog}}}}\n  mode: listen\n  counterInterval: 1s\n\
         \x20 triggers: [{{type: gcHeapBytes, above: 48Mi, for: 2s}}, {{type: onDemand}}]\n\
         \x20 capture: {{kinds: [dump, gcdump], dumpType: heap}}\n\
         \x20 limits: {{cooldown: 10m, maxPerHour: 10}}\n  retention: {{maxCount: 1, maxAge: 1d}}\n  {}\n",
        c.s3_storage()
    ))
    .unwrap();
    let port = free_port();
    c.wait_for_injection(ns, "catalog", 60 * S).unwrap();
    c.deploy_app(ns, "catalog", APP_NET8, port, &[]).unwrap();
    let pod = c.running_pod(ns, "catalog", 120 * S).unwrap();
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(containers(&pod), ["app", "dumpwatch-sidecar"]);
    c.wait_for_app(port, 60 * S).unwrap();
    let series = c
        .wait_for_series("dotnet_gc_heap_size_bytes", 60 * S)
        .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", tail(&c.pod_log(ns, "dumpwatch-sidecar"), 40)));
    eprintln!("watched: {series}");

    // A steady leak, ~1.3 MB (14,000 customers) per second of wall time, whatever each round
    // trip costs (the port-forward and the snapshot check take their share): the heap's floor
    // rises (the growth alert) and crosses the trigger's 48 MiB after ~35 s.
    let leaking = Instant::now();
    let mut leaked_customers = 0u64;
    let mut fired = None;
    let mut last = Instant::now() - S;
    // On the real node the trigger fired after 92-101 s (46.9 s on the node agent, where
    // requests skipped the port-forward): leave room on a shared machine.
    while leaking.elapsed() < 180 * S {
        let count = (14_000.0 * last.elapsed().as_secs_f64()).clamp(7_000.0, 56_000.0) as u64;
        last = Instant::now();
        let r = testbed::http_get(port, &format!("/leak?count={count}"), 10 * S).expect("the workload answers");
        let v: Value = serde_json::from_str(&r.1).unwrap();
        leaked_customers = v["total_customers"].as_u64().unwrap_or(leaked_customers);
        if fired.is_none() && !c.items(ns, "dumpsnapshots").unwrap().is_empty() {
            fired = Some(Instant::now());
        }
        if fired.is_some_and(|f| f.elapsed() > 20 * S) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    let fired = fired.unwrap_or_else(|| {
        panic!(
            "the gcHeapBytes trigger made no DumpSnapshot within 180 s ({leaked_customers} customers leaked)\nsidecar log:\n{}",
            tail(&c.pod_log(ns, "dumpwatch-sidecar"), 30)
        )
    });
    figures.note("leak: first leaked byte -> trigger's DumpSnapshot", fired - leaking);

    let analyzed = wait_for_snapshot(c, ns, "the leak snapshot Analyzed", 240 * S, |s| {
        phase(s) == "Analyzed" || phase(s) == "Failed"
    });
    assert_eq!(phase(&analyzed), "Analyzed", "{analyzed:#}");
    figures.note("leak: trigger -> analyzed snapshot", fired.elapsed());
    let leak_snapshot = analyzed["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(analyzed["spec"]["pod"], pod_name.as_str());
    // Stored in S3, compressed, checksummed.
    let artifacts = analyzed["spec"]["artifacts"].as_array().unwrap().clone();
    let kinds: BTreeSet<&str> = artifacts.iter().filter_map(|a| a["kind"].as_str()).collect();
    assert!(kinds.contains("dump") && kinds.contains("gcdump"), "{artifacts:#?}");
    for a in &artifacts {
        let uri = a["uri"].as_str().unwrap();
        assert!(uri.starts_with(&format!("s3://{}/", scenarios::BUCKET)) && uri.ends_with(".zst"), "{uri}");
        assert_eq!(a["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(c.s3_object_sha256(uri).unwrap(), a["sha256"].as_str().unwrap(), "{uri} as stored");
    }
    // The analysis names the leaked type and the path that holds it.
    let suspects = &analyzed["status"]["findings"]["suspects"];
    let top = suspects.as_array().and_then(|s| s.first()).cloned().unwrap_or_default();
    assert!(top["typeName"].as_str().unwrap_or("").ends_with("Customer"), "{suspects:#}");
    assert!(top.to_string().contains("CustomerCache"), "the path names the cache: {top:#}");
    assert!(top["instances"].as_u64().unwrap() >= leaked_customers.min(10_000), "{top:#} vs {leaked_customers}");
    let event = harness::wait_for("a MemoryLeakSuspected Event on the pod", 60 * S, || {
        Ok(c.items(ns, "events")?
            .into_iter()
            .find(|e| e["reason"] == "MemoryLeakSuspected" && e["involvedObject"]["name"] == pod_name.as_str()))
    })
    .unwrap();
    eprintln!("Event: {}", event["message"]);
    let alert = c.wait_for_alert("DotnetHeapGrowthSustained", 120 * S).unwrap();
    figures.note("leak: first leaked byte -> DotnetHeapGrowthSustained firing (windows / 60)", leaking.elapsed());
    eprintln!("Alert: {}", alert["annotations"]["summary"]);
    assert_eq!(alert["labels"]["pod"], pod_name.as_str(), "{alert}");
    c.wait_for_alert("DotnetMemoryLeakSuspected", 60 * S).unwrap();

    // On demand: kubectl create, no artifacts.
    let requested = Instant::now();
    c.cp.apply(&format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpSnapshot\nmetadata: {{name: asked, namespace: {ns}}}\n\
         spec: {{pod: {pod_name}, policy: catalog, trigger: onDemand}}\n"
    ))
    .unwrap();
    // 61.8 s and 238.8 s in two runs on a shared machine: a heap dump of ~1.4 M objects, its
    // upload and a debug-build analysis compete with other engineers' builds.
    let asked = wait_for_snapshot(c, ns, "the on-demand snapshot Analyzed", 360 * S, |s| {
        s["metadata"]["name"] == "asked" && (phase(s) == "Analyzed" || phase(s) == "Failed")
    });
    assert_eq!(phase(&asked), "Analyzed", "{asked:#}");
    assert!(!asked["spec"]["artifacts"].as_array().unwrap().is_empty());
    figures.note("on demand: kubectl create -> analyzed snapshot", requested.elapsed());

    dashboards.check(c, "leak + on demand");

    // Retention: maxCount 1 keeps the newest; the leak snapshot and its objects go.
    harness::wait_for("retention to delete the older snapshot", 120 * S, || {
        let names: Vec<String> = c
            .items(ns, "dumpsnapshots")?
            .iter()
            .filter_map(|s| s["metadata"]["name"].as_str().map(String::from))
            .collect();
        Ok((!names.contains(&leak_snapshot)).then_some(()))
    })
    .unwrap();
    for a in &artifacts {
        let uri = a["uri"].as_str().unwrap();
        assert!(c.s3_object_sha256(uri).is_err(), "{uri} deleted with its snapshot");
    }
    assert!(c.items(ns, "dumpsnapshots").unwrap().iter().any(|s| s["metadata"]["name"] == "asked"));
}

/// .NET Core 3.1 has no owner in its contention events, so no live detection: the policy's stall
/// trigger (thread-pool queue) captures a dump, the analysis Job runs `dumpwatch analyze`, and
/// the snapshot's status carries the deadlock with the right threads.
fn deadlock_on_net31_by_stall(c: &Cluster, figures: &mut Figures, dashboards: &mut Dashboards) {
    let ns = "legacy";
    c.delete_app("catalog", "catalog").unwrap();
    c.opted_in_namespace(ns).unwrap();
    // 3.1 cannot connect to a diagnostic port: connect mode (shared PID namespace).
    c.cp.apply(&format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {{name: legacy, namespace: {ns}}}\n\
         spec:\n  selector: {{matchLabels: {{app: legacy}}}}\n  mode: connect\n  counterInterval: 1s\n\
         \x20 triggers: [{{type: threadPoolQueue, above: 20, for: 3s}}]\n\
         \x20 capture: {{kinds: [dump], dumpType: heap}}\n  {}\n",
        c.s3_storage()
    ))
    .unwrap();
    let port = free_port();
    c.wait_for_injection(ns, "legacy", 60 * S).unwrap();
    c.deploy_app(ns, "legacy", APP_NET31, port, &[]).unwrap();
    let pod = c.running_pod(ns, "legacy", 120 * S).unwrap();
    assert_eq!(containers(&pod), ["app", "dumpwatch-sidecar"]);
    assert_eq!(pod["spec"]["shareProcessNamespace"], true, "connect mode shares the PID namespace");
    c.wait_for_app(port, 60 * S).unwrap();
    c.wait_for_series("dumpwatch_live_deadlock_detection_unavailable == 1", 60 * S)
        .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", tail(&c.pod_log(ns, "dumpwatch-sidecar"), 40)));

    // The deadlock, then 60 requests that need its lock pile up in the thread pool.
    let truth = testbed::http_get(port, "/deadlock?waiters=1&requests=60", 30 * S).expect("the workload answers");
    let formed = Instant::now();
    let truth: Value = serde_json::from_str(&truth.1).unwrap();
    let owners = tids(&truth["owners"], "os_tid");
    let snapshot = wait_for_snapshot(c, ns, "the stall dump analyzed", 240 * S, |s| {
        phase(s) == "Analyzed" || phase(s) == "Failed"
    });
    assert_eq!(phase(&snapshot), "Analyzed", "{snapshot:#}");
    figures.note(".NET 3.1: deadlock formed -> stall dump analyzed", formed.elapsed());
    assert_eq!(snapshot["spec"]["trigger"], "threadPoolQueue");
    // On failure, the whole snapshot: its findings' warnings and the analysis Job's log say why.
    let cycle = &snapshot["status"]["findings"]["deadlockCycles"][0];
    if !cycle.is_object() {
        // Seen in 2 of 5 runs on the stand-in node and 1 of 3 on the real node, never outside
        // Kubernetes: keep the dump to redo the analysis where the workload's files are.
        let log = c.pod_log(ns, "analyze");
        let kept =
            c.keep_evidence(&snapshot, &log).map_or_else(|e| format!("(not kept: {e})"), |d| d.display().to_string());
        panic!(
            "the stall dump's analysis found no deadlock cycle; snapshot: {snapshot:#}\nanalysis Job log:\n{}\n\
             dump, DAC and whole log kept in {kept}",
            tail(&log, 60)
        );
    }
    assert_eq!(tids(&cycle["threads"], "osTid"), owners, "the analysis names the two owners: {cycle:#}");
    assert!(cycle["victims"].as_u64().unwrap() >= 1, "{cycle:#}");
    let event = harness::wait_for("a DeadlockDetected Event on the 3.1 pod", 60 * S, || {
        Ok(c.items(ns, "events")?.into_iter().find(|e| e["reason"] == "DeadlockDetected"))
    })
    .unwrap();
    eprintln!("Event: {}", event["message"]);
    dashboards.check(c, ".NET 3.1 deadlock");
    c.delete_app(ns, "legacy").unwrap();
}

/// A policy with a crash trigger: the webhook sets the runtime's crash-dump environment, the app
/// dies of an unhandled exception, the sidecar uploads the runtime's own dump and crash report,
/// and the analysis names the exception and the thread in a ProcessCrashed Event on the pod.
fn crash_on_net8(c: &Cluster, figures: &mut Figures) {
    let ns = "checkout";
    c.opted_in_namespace(ns).unwrap();
    c.cp.apply(&format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {{name: checkout, namespace: {ns}}}\n\
         spec:\n  selector: {{matchLabels: {{app: checkout}}}}\n  mode: listen\n  counterInterval: 1s\n\
         \x20 triggers: [{{type: crash}}]\n  {}\n",
        c.s3_storage()
    ))
    .unwrap();
    let port = free_port();
    c.wait_for_injection(ns, "checkout", 60 * S).unwrap();
    c.deploy_app(ns, "checkout", APP_NET8, port, &[]).unwrap();
    let pod = c.running_pod(ns, "checkout", 120 * S).unwrap();
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    let app = pod["spec"]["containers"].as_array().unwrap().iter().find(|k| k["name"] == "app").cloned().unwrap();
    let env = app["env"].to_string();
    assert!(env.contains("COMPlus_DbgEnableMiniDump") && env.contains("DOTNET_EnableCrashReport"), "{env}");
    c.wait_for_app(port, 60 * S).unwrap();
    // Watched (so the sidecar holds the runtime's DAC for the dump written as it dies).
    c.wait_for_series(&format!("dotnet_gc_heap_size_bytes{{namespace=\"{ns}\"}}"), 60 * S)
        .unwrap_or_else(|e| panic!("{e}\nsidecar log:\n{}", tail(&c.pod_log(ns, "dumpwatch-sidecar"), 40)));

    let truth = testbed::http_get(port, "/crash?delay_ms=200", 30 * S).expect("the workload answers");
    let crashed = Instant::now();
    let truth: Value = serde_json::from_str(&truth.1).unwrap();
    let snapshot = wait_for_snapshot(c, ns, "the crash dump analyzed", 240 * S, |s| {
        s["spec"]["trigger"] == "crash" && (phase(s) == "Analyzed" || phase(s) == "Failed")
    });
    assert_eq!(phase(&snapshot), "Analyzed", "{snapshot:#}\nanalysis log:\n{}", tail(&c.pod_log(ns, "analyze"), 40));
    figures.note(".NET 8: unhandled exception -> crash dump analyzed", crashed.elapsed());
    let crash = &snapshot["status"]["findings"]["crash"];
    assert_eq!(crash["exceptionType"], truth["exception_type"], "{snapshot:#}");
    assert!(snapshot["status"]["findings"]["summary"].as_str().unwrap_or("").starts_with("crashed: "), "{snapshot:#}");
    let event = harness::wait_for("a ProcessCrashed Event on the pod", 60 * S, || {
        Ok(c.items(ns, "events")?
            .into_iter()
            .find(|e| e["reason"] == "ProcessCrashed" && e["involvedObject"]["name"] == pod_name.as_str()))
    })
    .unwrap();
    figures.note(".NET 8: unhandled exception -> ProcessCrashed Event", crashed.elapsed());
    let message = event["message"].as_str().unwrap_or("");
    eprintln!("Event: {message}");
    assert!(message.contains("unhandled DiagScenarios.WorkloadCrashException"), "{event}");
    assert!(message.contains(&format!("(managed {})", truth["thread"])), "{event}");
    assert!(message.contains("ThrowUnhandled"), "the frame that threw: {event}");
    c.delete_app(ns, "checkout").unwrap();
}

/// With the operator (and so its webhook) down, pods are still created, without the sidecar,
/// and the policy says so once the operator is back.
fn webhook_down(c: &Cluster, figures: &mut Figures) {
    let ns = "billing";
    c.opted_in_namespace(ns).unwrap();
    c.cp.apply(&format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {{name: billing, namespace: {ns}}}\n\
         spec:\n  selector: {{matchLabels: {{app: billing}}}}\n  triggers: [{{type: deadlock}}]\n"
    ))
    .unwrap();
    let operator = ["-n", scenarios::NAMESPACE, "deployment/dumpwatch-operator"];
    c.cp.kubectl(&[&["scale", "--replicas=0"][..], &operator[..]].concat()).unwrap();
    harness::wait_for("the operator gone", 60 * S, || {
        let pods = c.items(scenarios::NAMESPACE, "pods")?;
        Ok(pods.is_empty().then_some(()))
    })
    .unwrap();
    let created = Instant::now();
    c.deploy_app(ns, "billing", APP_NET8, free_port(), &[]).unwrap();
    let pod = c.running_pod(ns, "billing", 120 * S).unwrap();
    figures.note("webhook down: Deployment applied -> pod running (uninjected)", created.elapsed());
    assert_eq!(containers(&pod), ["app"], "failurePolicy Ignore: created, not injected");
    c.cp.kubectl(&[&["scale", "--replicas=1"][..], &operator[..]].concat()).unwrap();
    let policy = harness::wait_for("the policy to report the uninjected pod", 120 * S, || {
        let p = c.cp.kubectl_json(&["get", "dumppolicy", "billing", "-n", ns])?;
        let reported = p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|k| k["type"] == "Injecting" && k["status"] == "False" && k["reason"] == "WebhookNotInjecting");
        Ok(reported.then_some(p))
    })
    .unwrap();
    assert_eq!(policy["status"]["matchedPods"], 1, "{policy:#}");
    assert_eq!(policy["status"]["injectedPods"], 0, "{policy:#}");
    let injecting =
        policy["status"]["conditions"].as_array().unwrap().iter().find(|k| k["type"] == "Injecting").cloned();
    eprintln!("Policy condition: {}", injecting.unwrap_or_default()["message"]);
}
