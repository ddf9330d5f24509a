//! Every dashboard query and every alert expression runs on a real Prometheus that scrapes the
//! sidecar's and the operator's real metric registries (`sidecar::metrics::Metrics`,
//! `operator::controller::Metrics`: the names and labels they serve), and must return data.
//! Metric names in dashboards and rules must be ones these registries serve.
//!
//! Namespace and pod labels come from the scrape in a cluster (PodMonitor target labels); here
//! the small exporter adds them to each sample, which is what Prometheus stores either way.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use api::SnapshotPhase;
use chart_tests::{Value, dashboards, metric_names, panel_queries, rule_exprs, substitute_variables};
use harness::{Prometheus, wait_for};
use operator::controller::Metrics as OperatorMetrics;
use sidecar::metrics::{CaptureLabels, Metrics, Proc, SnapshotLabels, TriggerLabels};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `/metrics` from `body()` on a loopback port until `stop` is set; returns `host:port`.
fn serve(stop: Arc<AtomicBool>, content_type: &'static str, body: impl Fn() -> String + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut conn, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            conn.set_nonblocking(false).ok();
            conn.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = body();
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(reply.as_bytes()).ok();
        }
    });
    addr
}

/// Adds `namespace` and `pod` to every sample line, as a PodMonitor's target labels would.
fn with_target_labels(exposition: &str, namespace: &str, pod: &str) -> String {
    let target = format!(r#"namespace="{namespace}",pod="{pod}""#);
    let mut out = String::new();
    for line in exposition.lines() {
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
        } else if let Some((name, rest)) = line.split_once('{') {
            out.push_str(&format!("{name}{{{target},{rest}"));
        } else if let Some((name, rest)) = line.split_once(' ') {
            out.push_str(&format!("{name}{{{target}}} {rest}"));
        }
        out.push('\n');
    }
    out
}

/// Sample names of an exposition (`foo_total`, `foo_bucket`, ...), the names PromQL sees.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// One pod's sidecar, with a process that moves every tick like a busy app.
struct FakePod {
    metrics: Metrics,
    proc: Proc,
    deadlocked: f64,
    live_detection: bool,
}

impl FakePod {
    fn new(process: &str, deadlocked: f64, live_detection: bool) -> FakePod {
        let pod = FakePod {
            metrics: Metrics::new(),
            proc: Proc { pid: "1".into(), process: process.into() },
            deadlocked,
            live_detection,
        };
        pod.metrics.watched.set(1);
        pod
    }

    fn tick(&self, t: f64) {
        let (m, p) = (&self.metrics, &self.proc);
        m.gc_heap.get_or_create(p).set(50e6 + 1e6 * t);
        m.working_set.get_or_create(p).set(120e6 + 1e6 * t);
        m.cpu.get_or_create(p).set(0.25);
        m.tp_threads.get_or_create(p).set(8.0);
        m.tp_queue.get_or_create(p).set(3.0);
        m.contention.get_or_create(p).inc_by(5.0);
        m.exceptions.get_or_create(p).inc_by(2.0);
        m.allocated.get_or_create(p).inc_by(4e6);
        if self.live_detection {
            m.deadlocked.get_or_create(p).set(self.deadlocked);
        } else {
            m.no_live_deadlock.get_or_create(p).set(1.0);
        }
        m.set_heap_types(p, &[("Shop.Customer".into(), (1e6 * t) as u64), ("System.String".into(), 3_000_000)]);
        // Periodic heap snapshots: the customers keep growing, the strings do not; a verdict.
        m.heap_growth_bytes.replace(p, &[("Shop.Customer".into(), 1e6 * t), ("System.String".into(), 0.0)]);
        m.heap_growth_objects.replace(p, &[("Shop.Customer".into(), 1e4 * t), ("System.String".into(), 0.0)]);
        m.heap_growth_window.get_or_create(p).set(t.min(300.0));
        m.heap_growth_suspected.replace(p, &[("Shop.Customer".into(), 1.0)]);
        let snapshot = SnapshotLabels { pid: p.pid.clone(), process: p.process.clone(), result: "success".into() };
        m.heap_snapshots.get_or_create(&snapshot).inc();
        let trigger = TriggerLabels { pid: p.pid.clone(), process: p.process.clone(), trigger: "gcHeapBytes".into() };
        m.triggers.get_or_create(&trigger).inc();
        for (kind, result) in [("gcdump", "success"), ("dump", "failure")] {
            m.captures.get_or_create(&CaptureLabels { kind: kind.into(), result: result.into() }).inc();
        }
        m.capture_seconds.observe(0.3 + (t % 3.0));
    }
}

/// The operator's registry as the leader's controllers fill it.
fn operator_tick(m: &OperatorMetrics) {
    m.leader.set(1);
    m.set_snapshot_phases(&[(SnapshotPhase::Analyzed, 3), (SnapshotPhase::Analyzing, 1), (SnapshotPhase::Failed, 1)]);
    m.count_findings("deadlock", 1);
    m.count_findings("leak_suspect", 1);
    m.observe_reconcile("dumpsnapshot", Duration::from_millis(12));
    m.reconcile_failed("dumpsnapshot", "conflict");
}

#[test]
fn every_dashboard_query_and_alert_returns_data_on_prometheus() {
    let stop = Arc::new(AtomicBool::new(false));
    let orders = Arc::new(FakePod::new("Orders", 2.0, true));
    let billing = Arc::new(FakePod::new("Billing", 0.0, false));
    let operator = OperatorMetrics::new();
    let started = Instant::now();
    let clock = move || started.elapsed().as_secs_f64();
    {
        let (orders, billing, operator, stop) = (orders.clone(), billing.clone(), operator.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                orders.tick(clock());
                billing.tick(clock());
                operator_tick(&operator);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
    }
    std::thread::sleep(Duration::from_millis(300));

    // Every metric name the dashboards and rules use is one the sidecar registers or a documented
    // operator metric.
    let mut known = sample_names(&orders.metrics.encode());
    known.extend(sample_names(&billing.metrics.encode()));
    known.extend(sample_names(&operator.encode()));
    let dashboards = dashboards().unwrap();
    let queries: Vec<_> = dashboards.iter().flat_map(|(file, d)| panel_queries(file, d)).collect();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let rules = rule_exprs().unwrap();
    for expr in queries.iter().map(|q| &q.expr).chain(rules.iter().map(|(_, e)| e)) {
        for name in metric_names(expr) {
            assert!(known.contains(&name), "`{name}` in `{expr}` is not a sidecar or operator metric: {known:?}");
        }
    }

    let targets = vec![
        serve(stop.clone(), OPENMETRICS, {
            let p = orders.clone();
            move || with_target_labels(&p.metrics.encode(), "shop", "orders-1")
        }),
        serve(stop.clone(), OPENMETRICS, {
            let p = billing.clone();
            move || with_target_labels(&p.metrics.encode(), "shop", "billing-1")
        }),
        serve(stop.clone(), OPENMETRICS, {
            let m = operator.clone();
            move || with_target_labels(&m.encode(), "dumpwatch", "dumpwatch-operator-7d9f-x2k4p")
        }),
    ];
    let rules_text = std::fs::read_to_string(chart_tests::chart_dir().join("rules/dumpwatch.rules.yaml")).unwrap();
    let prom = Prometheus::start(&targets, &rules_text, None).unwrap();
    prom.wait_for_samples("count(up == 1) == 3", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}; {}", prom.log()));

    // The pod and namespace variables (label_values) find the pods.
    for (file, d) in &dashboards {
        for var in d["templating"]["list"].as_array().unwrap() {
            let Some(def) = var["definition"].as_str() else { continue };
            let (series, label) = parse_label_values(def);
            let series = substitute_variables(&series, "shop", ".*");
            let values = wait_for(&format!("{file}: {def}"), Duration::from_secs(60), || {
                let v = prom.api(&format!("label/{label}/values?match[]={}", url_encode(&series)))?;
                Ok(v.as_array().filter(|a| !a.is_empty()).cloned())
            })
            .unwrap();
            let expected: &[&str] = if label == "namespace" { &["shop"] } else { &["billing-1", "orders-1"] };
            for e in expected {
                assert!(values.contains(&Value::from(*e)), "{file}: {def} gave {values:?}");
            }
        }
    }

    // Every panel's query returns data (rates need two scrapes, ALERTS an evaluation: wait).
    let checked = chart_tests::dashboard_queries_return_data(&prom, "shop", ".*", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(checked, queries.len());
    eprintln!("{checked} dashboard queries returned data");
    // Control: a query can come back empty here, so the loop above can fail.
    assert_eq!(prom.query("dotnet_gc_heap_size_bytes_misspelled").unwrap(), serde_json::json!([]));

    // Alert expressions: the three that this data should trigger return data; the heap-growth one
    // needs 40 minutes of history (its timing is unit-tested with promtool) but must evaluate.
    for (alert, expr) in &rules {
        if alert == "DotnetHeapGrowthSustained" {
            prom.query(expr).unwrap_or_else(|e| panic!("{alert}: {e}"));
            continue;
        }
        let r = prom.wait_for_samples(expr, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{alert}: {e}"));
        if alert == "DotnetDeadlockDetected" {
            assert_eq!(r.as_array().unwrap().len(), 1, "only the deadlocked pod: {r}");
            assert_eq!(r[0]["metric"]["pod"], "orders-1");
        }
    }
    // The deadlock alert fires on the real rule engine after its `for`.
    wait_for("DotnetDeadlockDetected firing", Duration::from_secs(90), || {
        let alerts = prom.api("alerts")?;
        let firing = alerts["alerts"].as_array().into_iter().flatten().any(|a| {
            a["labels"]["alertname"] == "DotnetDeadlockDetected"
                && a["state"] == "firing"
                && a["labels"]["pod"] == "orders-1"
        });
        Ok(firing.then_some(()))
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
}

/// `label_values(series, label)` → (series, label).
fn parse_label_values(def: &str) -> (String, String) {
    let inner = def.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')).expect(def);
    let (series, label) = inner.rsplit_once(',').expect(def);
    (series.trim().to_string(), label.trim().to_string())
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
