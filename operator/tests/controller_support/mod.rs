//! Shared by the controller integration tests: a control plane with the CRDs installed, a
//! kube-rs client on it, the controllers running in this process, and polling helpers.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{ControlPlane, Options};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use operator::controller::{self, AnalysisSettings, Context, Deleters, Metrics, NoObjectStorage};

/// `ControlPlane::start_with` off the async runtime (it blocks for seconds).
pub async fn start(opts: Options) -> ControlPlane {
    tokio::task::spawn_blocking(move || ControlPlane::start_with(opts)).await.unwrap().expect("control plane starts")
}

pub async fn client(cp: &ControlPlane) -> Client {
    let kubeconfig = Kubeconfig::read_from(cp.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

/// Runs the controllers in this process until the returned sender is dropped or sent `true`.
pub fn run_controllers(
    client: Client,
    analysis: AnalysisSettings,
) -> (tokio::sync::watch::Sender<bool>, Arc<Context>, tokio::task::JoinHandle<()>) {
    let deleter = Arc::new(Deleters { object: None });
    let ctx = Arc::new(Context::new(
        client,
        Metrics::new(),
        analysis,
        deleter,
        Arc::new(NoObjectStorage),
        Some("test".into()),
    ));
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let c = ctx.clone();
    let task = tokio::spawn(controller::run(c, async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    (tx, ctx, task)
}

/// Polls `f` every 250 ms until it gives `Some`, or panics after `timeout` naming `what` and
/// the last value seen.
pub async fn eventually<T, Fut>(what: &str, timeout: Duration, mut f: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Stops a control plane off the async runtime (its drop blocks).
pub async fn stop(cp: ControlPlane) {
    tokio::task::spawn_blocking(move || drop(cp)).await.unwrap();
}
