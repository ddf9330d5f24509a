//! Tenants on the real kube-apiserver with the chart applied (and the controller-manager, which
//! aggregates ClusterRoles): what a namespace editor may and may not do ("Who may do what" in the
//! chart's README), the admission policy that keeps snapshots' artifacts the operator's, and the
//! chart's S3 Secret read by the operator's own code to upload into moto through a DumpStore the
//! chart created.

use std::time::{Duration, Instant};

use chart_tests::{NAMESPACE, SERVICE_ACCOUNT, chart_dir, render_text};
use harness::{ControlPlane, Options, S3Server};

fn can(cp: &ControlPlane, who: &str, args: &[&str]) -> bool {
    let out = cp.kubectl_cmd().args(["auth", "can-i", "--as", who]).args(args).output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(answer == "yes" || answer == "no", "can-i {args:?}: {answer} {}", String::from_utf8_lossy(&out.stderr));
    answer == "yes"
}

fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn snapshot(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpSnapshot\nmetadata: {{name: {name}, namespace: shop}}\n\
         spec: {{pod: orders-1, policy: orders, trigger: onDemand{extra}}}\n"
    )
}

fn artifacts(uri: &str) -> String {
    format!(", artifacts: [{{kind: dump, uri: '{uri}', size: 10, sha256: '{SHA}'}}]")
}

#[test]
fn tenant_with_edit_rights_cannot_write_artifacts_stores_or_secrets() {
    let s3 = S3Server::start("dumps").unwrap();
    let cp = ControlPlane::start_with(Options { node_agent: false, ..Options::default() }).unwrap();
    for c in ["dumppolicy", "dumpsnapshot", "dumpstore"] {
        cp.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            &chart_dir().join(format!("crds/{c}.yaml")).display().to_string(),
        ])
        .unwrap();
    }
    cp.kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]).unwrap();
    cp.kubectl(&["create", "namespace", NAMESPACE]).unwrap();
    cp.kubectl(&["create", "namespace", "shop"]).unwrap();
    let endpoint = format!("storage.stores[0].endpoint={}", s3.endpoint());
    let set = [
        "storage.s3.createSecret=true",
        &format!("storage.s3.accessKeyId={}", S3Server::ACCESS_KEY),
        &format!("storage.s3.secretAccessKey={}", S3Server::SECRET_KEY),
        "storage.stores[0].name=team",
        &endpoint,
        "storage.stores[0].region=us-east-1",
        "storage.stores[0].bucket=dumps",
        "storage.stores[0].prefix=dw",
        "storage.stores[0].insecure=true",
    ];
    cp.apply(&render_text(&set, &[]).unwrap()).unwrap();
    cp.kubectl(&["create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice", "-n", "shop"]).unwrap();
    cp.kubectl(&["create", "rolebinding", "bob-view", "--clusterrole=view", "--user=bob", "-n", "shop"]).unwrap();

    // The aggregated roles reach Kubernetes' own edit and view.
    eventually("edit aggregates the chart's role", Duration::from_secs(60), || {
        can(&cp, "alice", &["create", "dumppolicies.dumpwatch.dev", "-n", "shop"])
    });
    eventually("view aggregates the chart's role", Duration::from_secs(60), || {
        can(&cp, "bob", &["list", "dumpsnapshots.dumpwatch.dev", "-n", "shop"])
    });
    for args in [
        &["delete", "dumpsnapshots.dumpwatch.dev", "-n", "shop"][..],
        &["patch", "dumppolicies.dumpwatch.dev", "-n", "shop"],
    ] {
        assert!(can(&cp, "alice", args), "alice may {args:?}");
    }
    for args in [
        &["create", "dumpstores.dumpwatch.dev"][..],
        &["patch", "dumpstores.dumpwatch.dev/team"],
        &["get", "secrets/dumpwatch-s3", "-n", NAMESPACE],
        &["patch", "dumpsnapshots.dumpwatch.dev", "--subresource=status", "-n", "shop"],
        &["patch", "dumppolicies.dumpwatch.dev", "--subresource=status", "-n", "shop"],
        &["create", "dumppolicies.dumpwatch.dev", "-n", NAMESPACE],
    ] {
        assert!(!can(&cp, "alice", args), "alice may not {args:?}");
    }
    assert!(!can(&cp, "bob", &["create", "dumpsnapshots.dumpwatch.dev", "-n", "shop"]));

    // A request for a capture is fine; artifacts, a store or a volume of her own are not.
    let as_alice = |manifest: &str| cp.kubectl_stdin(&["apply", "--as", "alice", "-f", "-"], manifest);
    as_alice(&snapshot("request", "")).expect("alice requests a capture");
    let message = "written by the dumpwatch operator only";
    eventually("the admission policy is in force", Duration::from_secs(60), || {
        let other = artifacts("s3://dumps/dw/other/db-0/c1/core.zst");
        match as_alice(&snapshot("forged", &other)) {
            Ok(_) => {
                cp.kubectl(&["delete", "dsnap", "forged", "-n", "shop", "--wait=false"]).unwrap();
                false
            }
            Err(e) => {
                assert!(e.to_string().contains(message), "{e}");
                true
            }
        }
    });
    for (name, extra) in [
        ("with-store", ", store: team".to_string()),
        ("with-volume", ", volume: {claimName: dumps, path: /dumps}".to_string()),
    ] {
        let err = as_alice(&snapshot(name, &extra)).expect_err("refused").to_string();
        assert!(err.contains(message), "{name}: {err}");
    }
    let patch = format!(
        r#"{{"spec": {{"artifacts": [{{"kind": "dump", "uri": "s3://dumps/dw/other/db-0/c1/core.zst", "size": 10, "sha256": "{SHA}"}}]}}}}"#
    );
    let err = cp
        .kubectl(&["patch", "dsnap", "request", "-n", "shop", "--as", "alice", "--type=merge", "-p", &patch])
        .expect_err("alice cannot add artifacts to her request")
        .to_string();
    assert!(err.contains(message), "{err}");
    // She may still change what is hers to change, and the operator may write the artifacts.
    cp.kubectl(&[
        "patch",
        "dsnap",
        "request",
        "-n",
        "shop",
        "--as",
        "alice",
        "--type=merge",
        "-p",
        r#"{"spec":{"pid":7}}"#,
    ])
    .unwrap();
    let operator = format!("system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}");
    let own = patch.replace("dw/other/db-0", "dw/shop/orders-1");
    cp.kubectl(&["patch", "dsnap", "request", "-n", "shop", "--as", &operator, "--type=merge", "-p", &own])
        .expect("the operator writes artifacts");

    // The chart's Secret, read by the operator's own store resolution, uploads into the bucket.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(cp.kubeconfig()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let api = operator::sidecar_api::SidecarApi::new(client, NAMESPACE);
        let store = api.store_named("team", "shop", true).await.expect("the chart's store and Secret resolve");
        let key = store.key(&["shop", "orders-1", "c1", "core.zst"]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("core.zst");
        std::fs::write(&file, b"0123456789").unwrap();
        let url = store.presign_put(&key, 10, Duration::from_secs(60));
        store::HttpClient::new().put_file_range(&url, &file, 0, 10).await.expect("uploaded with the chart's keys");
        assert_eq!(store.head(&key).await.unwrap().map(|o| o.size), Some(10));
    });
}
