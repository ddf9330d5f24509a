//! kube-rs (the operator's client) talks to the harness's control plane through its kubeconfig:
//! TLS with the test CA, an ECDSA client certificate, a watch, and server-side apply.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_client_against_the_harness() {
    let cp = tokio::task::spawn_blocking(harness::ControlPlane::start).await.unwrap().expect("control plane starts");
    let kubeconfig = Kubeconfig::read_from(cp.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    let client = kube::Client::try_from(config).unwrap();

    let version = client.apiserver_version().await.unwrap();
    assert_eq!((version.major.as_str(), version.minor.as_str()), ("1", "36"));
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> =
        nodes.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|n| n.metadata.name).collect();
    assert_eq!(names, vec![harness::NODE_NAME.to_string()]);

    // A watch sees a server-side-applied object.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let stream =
        watcher(cms.clone(), watcher::Config::default().fields("metadata.name=from-kube-rs")).applied_objects();
    let apply = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-kube-rs"}, "data": {"k": "v"}});
    cms.patch("from-kube-rs", &PatchParams::apply("dumpwatch-test"), &Patch::Apply(&apply)).await.unwrap();
    let mut stream = Box::pin(stream);
    let seen =
        tokio::time::timeout(Duration::from_secs(20), stream.next()).await.expect("watch event").unwrap().unwrap();
    assert_eq!(seen.data.unwrap()["k"], "v");
    drop(stream);
    tokio::task::spawn_blocking(move || drop(cp)).await.unwrap();
}
