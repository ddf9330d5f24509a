//! `scripts/demo`'s Kubernetes part: a short deadlock + leak run on the embedded cluster,
//! printing what a user of dumpwatch sees (`kubectl get dsnap`, Events, findings, alerts).
//! Everything it starts is stopped when it ends.

use std::time::{Duration, Instant};

use harness::{Value, free_port};
use scenarios::{APP_NET8, Cluster};

const S: Duration = Duration::from_secs(1);

fn banner(text: &str) {
    println!("\n\x1b[1m== {text}\x1b[0m");
}

fn kubectl(c: &Cluster, args: &[&str]) {
    println!("$ kubectl {}", args.join(" "));
    match c.cp.kubectl(args) {
        Ok(out) => print!("{out}"),
        Err(e) => println!("(failed: {e})"),
    }
}

fn events(c: &Cluster, ns: &str, reason: &str) -> Vec<Value> {
    c.items(ns, "events").unwrap_or_default().into_iter().filter(|e| e["reason"] == reason).collect()
}

fn main() -> harness::Result<()> {
    banner(
        "1. A Kubernetes cluster (control plane + a real node), Prometheus, Alertmanager, S3; the images; `helm template charts/dumpwatch | kubectl apply`",
    );
    let c = Cluster::start()?;
    println!("cluster ready and dumpwatch installed in {:.1} s", c.started.elapsed().as_secs_f64());
    kubectl(&c, &["get", "nodes", "-o", "wide"]);
    kubectl(&c, &["get", "pods", "-n", scenarios::NAMESPACE, "-o", "wide"]);

    banner("2. kubectl apply a DumpPolicy and a .NET 8 Deployment in namespace shop (opted in)");
    let ns = "shop";
    c.opted_in_namespace(ns)?;
    let policy = format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {{name: orders, namespace: {ns}}}\n\
         spec:\n  selector: {{matchLabels: {{app: orders}}}}\n  counterInterval: 1s\n\
         \x20 triggers: [{{type: deadlock, capture: [stacks]}}, {{type: gcHeapBytes, above: 40Mi, for: 2s}}]\n\
         \x20 capture: {{kinds: [dump, gcdump], dumpType: heap}}\n  limits: {{cooldown: 5s}}\n  {}\n",
        c.s3_storage()
    );
    println!("{policy}");
    c.cp.apply(&policy)?;
    // The operator is Ready only once the API server trusts its certificate and its caches are
    // synced; the policy just applied may still be on its way to the webhook's cache: a dry-run
    // pod shows when a real one would be injected.
    c.wait_for_injection(ns, "orders", 60 * S)?;
    let port = free_port();
    c.deploy_app(ns, "orders", APP_NET8, port, &[])?;
    let pod = c.running_pod(ns, "orders", 120 * S)?;
    c.expect_injected(&pod)?;
    c.wait_for_app(port, 60 * S)?;
    println!(
        "pod {} runs containers {:?} (the webhook injected the sidecar)",
        pod["metadata"]["name"],
        scenarios::containers(&pod)
    );
    c.wait_for_series("dotnet_gc_heap_size_bytes", 60 * S)?;

    banner("3. The app deadlocks (GET /deadlock?waiters=3)");
    let (_, truth) = testbed::http_get(port, "/deadlock?waiters=3", 30 * S)?;
    let formed = Instant::now();
    let truth: Value = serde_json::from_str(&truth)?;
    let owners: Vec<String> =
        truth["owners"].as_array().into_iter().flatten().map(|o| o["os_tid"].to_string()).collect();
    println!("ground truth from the app: OS threads {} hold each other's locks", owners.join(" and "));
    harness::wait_for("DeadlockDetected", 30 * S, || Ok(events(&c, ns, "DeadlockDetected").first().cloned()))?;
    println!("found {:.1} s after the deadlock formed:", formed.elapsed().as_secs_f64());
    kubectl(&c, &["get", "dsnap", "-n", ns]);
    kubectl(&c, &["get", "events", "-n", ns, "--field-selector", "reason=DeadlockDetected"]);
    let alert = c.wait_for_alert("DotnetDeadlockDetected", 90 * S)?;
    println!(
        "Alertmanager, {:.1} s after: {} — {}",
        formed.elapsed().as_secs_f64(),
        alert["labels"]["alertname"],
        alert["annotations"]["summary"]
    );

    banner(
        "4. The app leaks Customers until the heap trigger fires; the dump and heap snapshot go to S3 and are analyzed",
    );
    let leaking = Instant::now();
    while leaking.elapsed() < 120 * S && events(&c, ns, "MemoryLeakSuspected").is_empty() {
        let _ = testbed::http_get(port, "/leak?count=20000", 10 * S);
        std::thread::sleep(S);
    }
    harness::wait_for("MemoryLeakSuspected", 240 * S, || Ok(events(&c, ns, "MemoryLeakSuspected").first().cloned()))?;
    println!("analyzed {:.1} s after the leak started:", leaking.elapsed().as_secs_f64());
    kubectl(&c, &["get", "dsnap", "-n", ns]);
    kubectl(&c, &["get", "events", "-n", ns, "--field-selector", "reason=MemoryLeakSuspected"]);
    if let Some(s) = c.items(ns, "dumpsnapshots")?.iter().find(|s| s["status"]["findings"]["suspects"].is_array()) {
        println!("top suspect in the snapshot's status:\n{:#}", s["status"]["findings"]["suspects"][0]);
        for a in s["spec"]["artifacts"].as_array().into_iter().flatten() {
            println!("stored: {} ({} bytes, sha256 {})", a["uri"], a["size"], a["sha256"]);
        }
    }
    if let Ok(alert) = c.wait_for_alert("DotnetMemoryLeakSuspected", 60 * S) {
        println!("Alertmanager: {} — {}", alert["labels"]["alertname"], alert["annotations"]["summary"]);
    }
    println!("\ndone in {:.0} s; stopping everything", c.started.elapsed().as_secs_f64());
    Ok(())
}
