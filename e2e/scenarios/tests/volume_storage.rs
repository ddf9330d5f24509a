//! Volume storage on a PersistentVolumeClaim, on real components: a DumpPolicy with
//! `storage.volume.claimName`, an on-demand `DumpSnapshot` of a real .NET 8 pod; the dump lands
//! compressed on the claim (its bytes match the snapshot's SHA-256), the analysis Job mounts the
//! claim and the snapshot is `Analyzed`; `kubectl delete dsnap` runs the cleanup Job, the files
//! leave the claim and the snapshot goes. The claim is bound to a hostPath PersistentVolume
//! (`Cluster::claim`), so the test reads the files where the volume keeps them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::{Value, free_port};
use scenarios::{APP_NET8, Cluster, containers};
use sha2::{Digest, Sha256};

const S: Duration = Duration::from_secs(1);
const NS: &str = "ledger";
const CLAIM: &str = "dumps";
/// Where the claim is mounted in the sidecar and the Jobs (`storage.volume.path`).
const MOUNT: &str = "/dumps";

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn logs(c: &Cluster) -> String {
    format!(
        "snapshots: {:#}\njobs:\n{}\nsidecar log:\n{}\noperator log:\n{}\nanalysis log:\n{}\ncleanup log:\n{}",
        c.cp.kubectl_json(&["get", "dsnap", "-n", NS]).unwrap_or_default(),
        c.items(NS, "jobs")
            .unwrap_or_default()
            .iter()
            .map(|j| format!("{}: {}", j["metadata"]["name"], j["status"]))
            .collect::<Vec<_>>()
            .join("\n"),
        tail(&c.pod_log(NS, "dumpwatch-sidecar"), 40),
        tail(&c.pod_log(scenarios::NAMESPACE, "operator"), 60),
        tail(&c.pod_log(NS, "analyze"), 30),
        tail(&c.pod_log(NS, "delete-artifacts"), 30),
    )
}

/// The host file a `file:///dumps/...` URI names, in the claim's volume at `volume`.
fn on_claim(volume: &std::path::Path, uri: &str) -> PathBuf {
    let rel = uri.strip_prefix(&format!("file://{MOUNT}/")).unwrap_or_else(|| panic!("{uri} is not under {MOUNT}"));
    volume.join(rel)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_dump_on_a_claim_is_analyzed_and_deleted_with_its_snapshot() {
    let c = Cluster::start().expect("cluster with dumpwatch installed");
    let began = Instant::now();
    eprintln!("FIGURE cluster + chart installed: {:.1} s", c.started.elapsed().as_secs_f64());
    c.opted_in_namespace(NS).unwrap();
    let volume = c.claim(NS, CLAIM).unwrap();
    c.cp.apply(&format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {{name: ledger, namespace: {NS}}}\n\
         spec:\n  selector: {{matchLabels: {{app: ledger}}}}\n  mode: listen\n  counterInterval: 1s\n\
         \x20 triggers: [{{type: onDemand}}]\n  capture: {{kinds: [dump], dumpType: heap}}\n\
         \x20 storage: {{volume: {{path: {MOUNT}, claimName: {CLAIM}}}}}\n"
    ))
    .unwrap();
    let port = free_port();
    c.wait_for_injection(NS, "ledger", 60 * S).unwrap();
    c.deploy_app(NS, "ledger", APP_NET8, port, &[]).unwrap();
    let pod = c.running_pod(NS, "ledger", 120 * S).unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(containers(&pod), ["app", "dumpwatch-sidecar"]);
    // The claim is the sidecar's only: the app cannot read other pods' dumps.
    let all = ["containers", "initContainers"].map(|k| pod["spec"][k].as_array().cloned().unwrap_or_default()).concat();
    assert!(all.iter().any(|c| c["name"] == "dumpwatch-sidecar"));
    for container in &all {
        let mounts_claim = container["volumeMounts"].as_array().into_iter().flatten().any(|m| m["mountPath"] == MOUNT);
        assert_eq!(mounts_claim, container["name"] == "dumpwatch-sidecar", "{container:#}");
    }
    c.wait_for_app(port, 60 * S).unwrap();
    c.wait_for_series(&format!("dotnet_gc_heap_size_bytes{{namespace=\"{NS}\"}}"), 60 * S)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    // Something on the heap for the analysis to name.
    testbed::http_get(port, "/leak?count=14000", 10 * S).expect("the workload answers");

    let requested = Instant::now();
    c.cp.apply(&format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpSnapshot\nmetadata: {{name: asked, namespace: {NS}}}\n\
         spec: {{pod: {pod_name}, policy: ledger, trigger: onDemand}}\n"
    ))
    .unwrap();
    let stored = harness::wait_for("the on-demand dump on the claim", 120 * S, || {
        let s = c.cp.kubectl_json(&["get", "dsnap", "asked", "-n", NS])?;
        Ok(s["spec"]["artifacts"].as_array().is_some_and(|a| !a.is_empty()).then_some(s))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    eprintln!(
        "FIGURE on demand: kubectl apply -> dump stored on the claim: {:.1} s",
        requested.elapsed().as_secs_f64()
    );
    assert_eq!(stored["spec"]["volume"]["claimName"], CLAIM, "{stored:#}");
    assert_eq!(stored["spec"]["volume"]["path"], MOUNT, "{stored:#}");
    let artifacts = stored["spec"]["artifacts"].as_array().unwrap().clone();
    let mut files = Vec::new();
    for a in &artifacts {
        let uri = a["uri"].as_str().unwrap();
        assert!(uri.starts_with(&format!("file://{MOUNT}/{NS}/{pod_name}/")) && uri.ends_with(".zst"), "{uri}");
        let file = on_claim(&volume, uri);
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(bytes.len() as u64, a["size"].as_u64().unwrap(), "{uri}");
        assert_eq!(sha256_hex(&bytes), a["sha256"].as_str().unwrap(), "{uri} as stored on the claim");
        files.push(file);
    }
    assert!(artifacts.iter().any(|a| a["kind"] == "dump"), "{artifacts:#?}");

    let analyzed = harness::wait_for("the snapshot Analyzed", 240 * S, || {
        let s = c.cp.kubectl_json(&["get", "dsnap", "asked", "-n", NS])?;
        let phase = s["status"]["phase"].as_str().unwrap_or("").to_string();
        Ok(["Analyzed", "Failed"].contains(&phase.as_str()).then_some(s))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    assert_eq!(analyzed["status"]["phase"], "Analyzed", "{analyzed:#}\n{}", logs(&c));
    // The Job read the heap out of the dump on the claim.
    let top_type = analyzed["status"]["findings"]["topType"].as_str().unwrap_or("");
    assert!(!top_type.is_empty(), "the analysis names the heap's top type: {analyzed:#}");
    eprintln!("FIGURE on demand: kubectl apply -> Analyzed from the claim: {:.1} s", requested.elapsed().as_secs_f64());
    eprintln!("findings: {} (top type {top_type})", analyzed["status"]["findings"]["summary"]);
    let job = analyzed["status"]["job"].as_str().unwrap().to_string();
    let job = c.cp.kubectl_json(&["get", "job", &job, "-n", NS]).unwrap();
    let volumes = &job["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes.as_array().unwrap().iter().any(|v| v["persistentVolumeClaim"]["claimName"] == CLAIM),
        "the analysis Job mounts the claim: {volumes:#}"
    );

    // Deleting the snapshot deletes its files through the cleanup Job, then the object goes.
    let deleting = Instant::now();
    c.cp.kubectl(&["delete", "dsnap", "asked", "-n", NS, "--wait=false"]).unwrap();
    harness::wait_for("the snapshot gone", 120 * S, || {
        let names: Vec<Value> = c.items(NS, "dumpsnapshots")?.iter().map(|s| s["metadata"]["name"].clone()).collect();
        Ok((!names.contains(&Value::from("asked"))).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&c)));
    eprintln!("FIGURE kubectl delete dsnap -> files deleted, snapshot gone: {:.1} s", deleting.elapsed().as_secs_f64());
    for f in &files {
        assert!(!f.exists(), "{} deleted from the claim", f.display());
    }
    let capture_dir = files[0].parent().unwrap();
    assert!(!capture_dir.exists(), "the emptied capture directory goes too: {}", capture_dir.display());
    // The operator deletes its cleanup Job once it succeeded; its log says the Job did the work.
    let operator_log = c.pod_log(scenarios::NAMESPACE, "operator");
    assert!(
        operator_log.contains("cleanup Job created") && operator_log.contains("files on the claim deleted"),
        "{}",
        tail(&operator_log, 40)
    );
    eprintln!("FIGURE volume storage scenario: {:.1} s", began.elapsed().as_secs_f64());
}
