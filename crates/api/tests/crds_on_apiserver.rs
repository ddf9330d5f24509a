//! The generated CRDs on the real kube-apiserver: both install and become Established, a valid
//! DumpPolicy and a DumpSnapshot are stored, and invalid policies are refused by the API server's
//! CEL rules with a message that says what to fix.

use harness::{ControlPlane, Options};

/// The committed CRDs (what the harness installs) are what `crdgen` generates.
fn assert_crds_fresh() {
    for name in harness::DUMPWATCH_CRDS {
        let committed = std::fs::read_to_string(harness::crds_dir().join(name)).unwrap();
        let generated = api::crd_yaml().into_iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(committed, generated, "{name} is stale: run `cargo run -p api --bin crdgen`");
    }
}

const VALID: &str = r#"
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpPolicy
metadata: {name: orders, namespace: default}
spec:
  selector: {matchLabels: {app: orders}}
  mode: listen
  counterInterval: 1s
  triggers:
    - {type: gcHeapBytes, above: 500Mi, for: 30s}
    - {type: cpu, above: 80%, for: 1m, clearBelow: "0.5"}
    - {type: deadlock}
    - {type: schedule, cron: "0 3 * * *"}
    - {type: exception, exceptionType: "System.*Timeout*", count: 5, window: 1m, capture: [exceptions, stacks]}
    - {type: metric, metric: {provider: Orders.Queue, counter: queue-length}, above: 40, for: 5s}
    - {type: metric, metric: {meter: Orders, instrument: request-duration, percentile: 95}, above: 250, processes: ["Orders.*"]}
    - {type: metric, metric: {meter: Orders, instrument: queue-length}, below: 1, clearAbove: 5}
    - {type: startup, capture: [stacks], processes: ["*--role=worker*"]}
  capture: {kinds: [dump], exceptionsLast: 50}
  limits: {maxPerHour: 2, cooldown: 10m, maxBytes: 4Gi}
  storage: {volume: {path: /dumps}}
  heapSnapshots: {every: 10m, keep: 6}
"#;

const SNAPSHOT: &str = r#"
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpSnapshot
metadata: {name: orders-7c9-1, namespace: default}
spec:
  policy: orders
  pod: orders-7c9
  container: api
  pid: 1
  runtimeVersion: 8.0.4
  trigger: gcHeapBytes
  observed: 612Mi
  artifacts:
    - {kind: dump, uri: "s3://dumps/default/orders-7c9-1/core.zst", size: 104857600, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
"#;

const COOLDOWN_MESSAGE: &str = "limits.cooldown must be at least counterInterval";

/// A bare apiserver (the harness retries a start whose port was taken in between).
fn start_apiserver() -> ControlPlane {
    ControlPlane::start_with(Options { controller_manager: false, node_agent: false, ..Options::default() })
        .expect("control plane starts")
}

#[test]
fn generated_crds_on_the_real_apiserver() {
    let cp = start_apiserver();
    assert_crds_fresh();
    cp.install_dumpwatch_crds().expect("the CRDs apply and become Established");

    // The same YAML the standalone sidecar reads is valid for the Rust rules and the API server.
    api::DumpPolicySpec::from_yaml(VALID).expect("valid for the Rust rules");
    cp.apply(VALID).expect("a valid DumpPolicy is accepted");
    let stored = cp.kubectl_json(&["get", "dpol", "orders", "-n", "default"]).unwrap();
    assert_eq!(stored["spec"]["triggers"][3]["cron"], "0 3 * * *");
    // Defaults from the schema are applied by the API server.
    assert_eq!(stored["spec"]["retention"]["maxCount"], 10);
    assert_eq!(stored["spec"]["heapSnapshots"]["topTypes"], 10, "{}", stored["spec"]["heapSnapshots"]);
    // What the API server returns (with its defaults filled in) is what the operator's caches
    // deserialize: a field the Rust types refuse would hide every policy from the webhook.
    let typed: api::DumpPolicy = serde_json::from_value(stored.clone())
        .unwrap_or_else(|e| panic!("the stored policy does not deserialize: {e}\n{stored:#}"));
    assert_eq!(typed.spec.retention.max_count, 10);
    // S3 alone is a storage kind of its own (no default volume beside it).
    let s3 = VALID
        .replace("storage: {volume: {path: /dumps}}", "storage: {s3: {storeRef: team-dumps}}")
        .replace("name: orders,", "name: orders-s3,");
    api::DumpPolicySpec::from_yaml(&s3).expect("s3 alone is valid for the Rust rules");
    cp.apply(&s3).expect("s3 alone is accepted");
    let stored = cp.kubectl_json(&["get", "dpol", "orders-s3", "-n", "default"]).unwrap();
    assert_eq!(stored["spec"]["storage"]["s3"]["storeRef"], "team-dumps");
    assert!(stored["spec"]["storage"].get("volume").is_none(), "{}", stored["spec"]["storage"]);

    let invalid = [
        (
            VALID.replace("storage: {volume: {path: /dumps}}", "storage: {volume: {path: /dumps}, s3: {storeRef: s}}"),
            "storage needs exactly one of volume (e.g. volume: {path: /dumpwatch}) or s3",
        ),
        // A tenant cannot borrow the operator's Secrets or point it at an address of its own.
        (
            VALID.replace(
                "storage: {volume: {path: /dumps}}",
                "storage: {s3: {endpoint: 'http://169.254.169.254', bucket: b, secretRef: admin-creds}}",
            ),
            "storage.s3 can no longer name an endpoint, region, bucket, prefix or secretRef: a cluster admin creates a DumpStore",
        ),
        (
            VALID.replace(
                "storage: {volume: {path: /dumps}}",
                "storage: {s3: {storeRef: team, secretRef: admin-creds}}",
            ),
            "storage: {s3: {storeRef: <store name>}}",
        ),
        (
            VALID.replace("storage: {volume: {path: /dumps}}", "storage: {s3: {}}"),
            "storage.s3.storeRef is required: the name of a DumpStore",
        ),
        (VALID.replace("storage: {volume: {path: /dumps}}", "storage: {}"), "storage needs exactly one of volume"),
        (
            VALID.replace("{type: schedule, cron: \"0 3 * * *\"}", "{type: schedule}"),
            "a schedule trigger needs exactly one of `every` (e.g. every: 1h) or `cron`",
        ),
        (
            VALID.replace("above: 500Mi, ", ""),
            "a metric trigger needs exactly one of `above` or `below` (the threshold), e.g. above: 500Mi",
        ),
        (VALID.replace("below: 1, ", "above: 9, below: 1, "), "needs exactly one of `above` or `below`"),
        (
            VALID.replace("metric: {provider: Orders.Queue, counter: queue-length}, ", ""),
            "a `metric` trigger names its metric",
        ),
        (
            VALID.replace("{type: deadlock}", "{type: deadlock, metric: {meter: M, instrument: i}}"),
            "a `metric` trigger names its metric",
        ),
        (
            VALID.replace("counter: queue-length}", "counter: queue-length, meter: Orders}"),
            "metric needs either provider + counter (an EventCounter",
        ),
        (VALID.replace("percentile: 95", "percentile: 90"), "metric.percentile must be 50, 95 or 99"),
        (
            VALID.replace("below: 1, clearAbove: 5", "above: 1, clearAbove: 5"),
            "clearBelow re-arms an `above` trigger, clearAbove a `below` trigger",
        ),
        (VALID.replace("cooldown: 10m", "cooldown: 500ms"), COOLDOWN_MESSAGE),
        (
            VALID.replace("counterInterval: 1s", "counterInterval: 1h").replace("cooldown: 10m", "cooldown: 59m"),
            COOLDOWN_MESSAGE,
        ),
        (
            VALID.replace("counterInterval: 1s", "counterInterval: \"2\"").replace("cooldown: 10m", "cooldown: 1500ms"),
            COOLDOWN_MESSAGE,
        ),
        (
            VALID.replace("heapSnapshots: {every: 10m", "heapSnapshots: {every: 500ms"),
            "heapSnapshots.every must be at least 1s: each heap snapshot runs a full blocking GC in the app",
        ),
        (VALID.replace("keep: 6}", "keep: 3}"), "spec.heapSnapshots.keep: Invalid value: 3"),
        (
            VALID.replace("{type: deadlock}", "{type: deadlock, count: 2}"),
            "exceptionType, count and window only apply to an exception trigger",
        ),
        (VALID.replace("count: 5,", "count: 0,"), "spec.triggers[4].count: Invalid value: 0"),
        (VALID.replace("exceptionsLast: 50", "exceptionsLast: 0"), "spec.capture.exceptionsLast: Invalid value: 0"),
        (
            VALID.replace("{type: deadlock}", "{type: heapGrowth}"),
            "heapGrowth is not a trigger to write: it names the snapshots of growth verdicts; set spec.heapSnapshots",
        ),
    ];
    // A bare fraction is valid YAML for the Rust rules but not for a CRD's integer-or-string:
    // the API server says which field, and the description tells to quote it.
    let bare = VALID.replace("clearBelow: \"0.5\"", "clearBelow: 0.5").replace("name: orders,", "name: bare,");
    let err = cp.apply(&bare).expect_err("a bare fraction is refused").to_string();
    assert!(err.contains("spec.triggers[1].clearBelow"), "{err}");
    for (i, (manifest, message)) in invalid.iter().enumerate() {
        let manifest = manifest.replace("name: orders,", &format!("name: bad-{i},"));
        let err = cp.apply(&manifest).expect_err("an invalid DumpPolicy is refused").to_string();
        assert!(err.contains(message), "case {i}: expected {message:?} in the API server's answer, got: {err}");
        // The Rust rules refuse it too, so the standalone sidecar and the cluster agree.
        assert!(api::DumpPolicySpec::from_yaml(&manifest).is_err(), "case {i}: the Rust rules accept it");
    }

    // Stores: https only unless insecure, a Secret name, cluster scoped.
    let store = |name: &str, s3: &str| {
        format!("apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpStore\nmetadata: {{name: {name}}}\nspec: {{s3: {s3}}}\n")
    };
    cp.apply(&store(
        "aws",
        "{endpoint: 'https://s3.eu-west-1.amazonaws.com', region: eu-west-1, bucket: dumps, secretRef: s3}",
    ))
    .expect("an https store is accepted");
    cp.apply(&store("minio", "{endpoint: 'http://minio.storage:9000', bucket: dumps, secretRef: s3, insecure: true}"))
        .expect("plain http is accepted when marked insecure");
    let err = cp
        .apply(&store("plain", "{endpoint: 'http://minio.storage:9000', bucket: dumps, secretRef: s3}"))
        .expect_err("plain http is refused")
        .to_string();
    assert!(err.contains("s3.endpoint must be https://") && err.contains("set insecure: true"), "{err}");
    let stored = cp.kubectl_json(&["get", "dumpstore", "aws"]).unwrap();
    assert!(stored["metadata"].get("namespace").is_none(), "cluster scoped: {stored}");

    // The CEL rule reads every duration form the Rust parser reads (days, bare seconds,
    // fractions): these pairs are at or above the counter interval and must pass.
    for (i, (interval, cooldown)) in
        [("1s", "1s"), ("1h", "1d"), ("2", "2000ms"), ("1500ms", "1.5"), ("30m", "0.5h"), ("1s", "3650d")]
            .iter()
            .enumerate()
    {
        let manifest = VALID
            .replace("counterInterval: 1s", &format!("counterInterval: \"{interval}\""))
            .replace("cooldown: 10m", &format!("cooldown: \"{cooldown}\""))
            .replace("name: orders,", &format!("name: cooldown-{i},"));
        api::DumpPolicySpec::from_yaml(&manifest).unwrap_or_else(|e| panic!("{interval}/{cooldown}: Rust rules: {e}"));
        cp.apply(&manifest).unwrap_or_else(|e| panic!("counterInterval {interval}, cooldown {cooldown}: {e}"));
    }

    cp.apply(SNAPSHOT).expect("a DumpSnapshot is accepted");
    let table = cp.kubectl(&["get", "dsnap", "-n", "default"]).unwrap();
    assert!(table.contains("orders-7c9") && table.contains("gcHeapBytes"), "printer columns: {table}");
    let snap = cp.kubectl_json(&["get", "dsnap", "orders-7c9-1", "-n", "default"]).unwrap();
    assert_eq!(snap["spec"]["artifacts"][0]["size"], 104857600);
    // Status is a subresource: set through it, shown by the printer columns.
    let status =
        r#"{"status":{"phase":"Analyzed","findings":{"deadlocks":1,"leakSuspects":0,"summary":"1 deadlock"}}}"#;
    cp.kubectl(&[
        "patch",
        "dsnap",
        "orders-7c9-1",
        "-n",
        "default",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ])
    .expect("status subresource patch");
    let table = cp.kubectl(&["get", "dsnap", "-n", "default"]).unwrap();
    assert!(table.contains("Analyzed") && table.contains("1 deadlock"), "printer columns: {table}");
    let bad_phase = r#"{"status":{"phase":"Done"}}"#;
    let err = cp
        .kubectl(&[
            "patch",
            "dsnap",
            "orders-7c9-1",
            "-n",
            "default",
            "--subresource=status",
            "--type=merge",
            "-p",
            bad_phase,
        ])
        .expect_err("an unknown phase is refused")
        .to_string();
    assert!(err.contains("Analyzed"), "the refusal lists the phases: {err}");
}
