//! S3 artifacts through the controllers, on the real kube-apiserver and a real S3 server (moto):
//! the analysis Job gets a presigned GET that really reads the stored object, and deleting the
//! snapshot deletes the object (finalizer) with the credentials of the policy's Secret.

mod controller_support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use api::DumpSnapshot;
use controller_support::{client, eventually, start, stop};
use harness::{Options, S3Server};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use operator::controller::{self, AnalysisSettings, Context, Deleters, Metrics};
use operator::sidecar_api::ObjectStorage;
use serde_json::json;

const KEY: &str = "dw/default/orders-a/c1/core.42.zst";

fn curl(args: &[&str]) -> (bool, Vec<u8>) {
    let out = Command::new("curl").args(["-sf"]).args(args).output().unwrap();
    (out.status.success(), out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_gets_for_jobs_and_the_finalizer_deletes_the_object() {
    let s3 = tokio::task::spawn_blocking(|| S3Server::start("dumps")).await.unwrap().expect("moto starts");
    let cp = start(Options { controller_manager: false, node_agent: false, ..Options::default() }).await;
    cp.install_dumpwatch_crds().unwrap();
    cp.apply(&format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: dumpwatch}}
---
apiVersion: v1
kind: Secret
metadata: {{name: s3-creds, namespace: dumpwatch}}
stringData: {{accessKeyId: {ak}, secretAccessKey: {sk}}}
---
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpStore
metadata: {{name: dumps}}
spec: {{s3: {{endpoint: "{endpoint}", region: us-east-1, bucket: dumps, prefix: dw, secretRef: s3-creds, insecure: true}}}}
---
apiVersion: dumpwatch.dev/v1alpha1
kind: DumpPolicy
metadata: {{name: orders, namespace: default}}
spec:
  selector: {{matchLabels: {{app: orders}}}}
  storage: {{s3: {{storeRef: dumps}}}}
"#,
        ak = S3Server::ACCESS_KEY,
        sk = S3Server::SECRET_KEY,
        endpoint = s3.endpoint(),
    ))
    .unwrap();
    let client = client(&cp).await;

    // The object, stored as the sidecar would (presigned PUT).
    let config = store::S3Config {
        endpoint: s3.endpoint(),
        region: "us-east-1".into(),
        bucket: "dumps".into(),
        prefix: "dw".into(),
        path_style: true,
    };
    let credentials = store::Credentials {
        access_key_id: S3Server::ACCESS_KEY.into(),
        secret_access_key: S3Server::SECRET_KEY.into(),
        session_token: None,
    };
    let ours = store::S3Store::new(config, credentials).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("core.42.zst");
    std::fs::write(&body, b"stored dump bytes").unwrap();
    let put = ours.presign_put(KEY, b"stored dump bytes".len() as u64, Duration::from_secs(600));
    let (ok, _) = curl(
        &["-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary"]
            .into_iter()
            .chain([format!("@{}", body.display()).as_str(), put.as_str()])
            .collect::<Vec<_>>(),
    );
    assert!(ok, "PUT to moto");
    assert!(ours.head(KEY).await.unwrap().is_some());

    let object = Arc::new(ObjectStorage::new(client.clone(), "dumpwatch"));
    let deleter = Arc::new(Deleters { object: Some(object.clone()) });
    let settings = AnalysisSettings { image: "dumpwatch:test".into(), ..AnalysisSettings::default() };
    let ctx = Arc::new(Context::new(client.clone(), Metrics::new(), settings, deleter, object, None));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let controllers = tokio::spawn(controller::run(ctx, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));

    let snapshots: Api<DumpSnapshot> = Api::namespaced(client.clone(), "default");
    let snapshot: DumpSnapshot = serde_json::from_value(json!({
        "apiVersion": "dumpwatch.dev/v1alpha1", "kind": "DumpSnapshot",
        "metadata": {"name": "orders-a-c1", "namespace": "default"},
        "spec": {"policy": "orders", "pod": "orders-a", "trigger": "deadlock",
                 "artifacts": [{"kind": "dump", "uri": format!("s3://dumps/{KEY}"), "size": 17, "sha256": "ab".repeat(32)}]}
    }))
    .unwrap();
    snapshots.create(&PostParams::default(), &snapshot).await.unwrap();
    let uploaded = Patch::Merge(json!({"status": {"phase": "Uploaded"}}));
    snapshots.patch_status("orders-a-c1", &PatchParams::default(), &uploaded).await.unwrap();

    // The Job reads the object through a presigned GET, without credentials of its own.
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let job = eventually("the analysis Job", Duration::from_secs(60), || async {
        jobs.get("dsnap-orders-a-c1-analyze").await.map_err(|e| e.to_string())
    })
    .await;
    let args = job.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    let artifacts: Vec<api::Artifact> = serde_json::from_str(&args[2].replace("$$", "$")).unwrap();
    let url = &artifacts[0].uri;
    assert!(url.starts_with(&s3.endpoint()) && url.contains("X-Amz-Signature="), "{url}");
    let (ok, bytes) = curl(&[url.as_str()]);
    assert!(ok && bytes == b"stored dump bytes", "the presigned GET reads the object");
    assert_eq!(artifacts[0].sha256, "ab".repeat(32), "size and checksum travel unchanged");

    // Deleting the snapshot deletes the object first.
    let analyzed = Patch::Merge(json!({"status": {"phase": "Analyzed"}}));
    snapshots.patch_status("orders-a-c1", &PatchParams::default(), &analyzed).await.unwrap();
    snapshots.delete("orders-a-c1", &DeleteParams::default()).await.unwrap();
    eventually("the snapshot is gone", Duration::from_secs(60), || async {
        match snapshots.get_opt("orders-a-c1").await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    assert!(ours.head(KEY).await.unwrap().is_none(), "the object is deleted");

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), controllers).await.expect("controllers stop").unwrap();
    stop(cp).await;
    drop(s3);
}
