//! The dumpwatch sidecar: beside the app, watch every .NET process, publish metrics, detect
//! deadlocks live, fire triggers and capture evidence without ever hurting the app.
//!
//! Layout, lowest first (a module imports only those above it; `tests/module_graph.rs` checks
//! that the imports form no cycle):
//! - pure decisions: [`triggers`], [`metric_triggers`] (EventCounter and Meter values against
//!   thresholds), [`exceptions`] (thrown exceptions against exception triggers, the last N kept),
//!   [`limits`], [`ids`];
//! - the store and what is shared: [`storage`] (capture directories), [`state`] (the pod's
//!   capture log, kept on the capture volume), [`metrics`], [`policy`]
//!   (file reload, on-demand requests), [`operator_client`] (the operator's API, `api::wire`),
//!   [`report`] (operator mode: the queue that stores each capture on S3 or a volume and reports
//!   it), [`shared`] (what every part shares);
//! - capturing: [`capture`] (dump, heap snapshot, stacks of a live process), [`crash`] (the
//!   runtime's crash dumps), both committed by [`commit`] (capture lock, budget, manifest,
//!   report, retention); [`heap_growth`] (periodic heap snapshots, growth metrics, a verdict
//!   committed as a finding);
//! - the edges: [`watcher`] (one session per process, triggers), [`discovery`] (who to watch),
//!   [`http`] (`/metrics`, `/findings`).

pub mod capture;
pub mod commit;
pub mod crash;
pub mod discovery;
mod error;
pub mod exceptions;
pub mod heap_growth;
pub mod http;
pub mod ids;
pub mod limits;
pub mod metric_triggers;
pub mod metrics;
pub mod operator_client;
pub mod policy;
pub mod report;
pub mod shared;
pub mod state;
pub mod storage;
pub mod triggers;
pub mod watcher;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use api::StorageTarget;
use api::wire::Identity;

pub use error::Error;

/// Everything the sidecar needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub policy_file: PathBuf,
    /// Operator mode: the policy, on-demand requests and storage come through the operator;
    /// `policy_file` is not read.
    pub operator: Option<operator_client::OperatorConfig>,
    /// Where captures are taken (`--storage`); overrides `spec.storage.volume.path`.
    pub capture_dir: Option<PathBuf>,
    /// Operator mode: where the policy's claim is mounted (`DUMPWATCH_STORE`); finished captures
    /// are stored there instead of in the capture folder.
    pub claim_dir: Option<PathBuf>,
    /// Listen-mode socket; default `<capture dir>/dumpwatch.sock`.
    pub listen_socket: Option<PathBuf>,
    pub http: SocketAddr,
    /// A file whose contents `/findings` requires as a bearer token ([`http::FindingsAccess`]).
    pub findings_token_file: Option<PathBuf>,
    pub identity: Identity,
    pub scan_interval: Duration,
    /// Where `/proc` is (tests).
    pub proc_root: PathBuf,
    /// Only watch processes whose environment matches.
    pub select: discovery::Select,
}

/// Run until the process is stopped. Errors only at start.
///
/// Watchers and captures run on one thread (a `LocalSet`): the `diag` sessions are not `Send`,
/// and one thread is all a sidecar that mostly waits on sockets should take from the pod.
pub async fn run(cfg: Config) -> Result<(), Error> {
    tokio::task::LocalSet::new().run_until(run_local(cfg)).await
}

async fn run_local(cfg: Config) -> Result<(), Error> {
    let operator = match &cfg.operator {
        Some(o) => {
            let client = Arc::new(operator_client::OperatorClient::new(o)?);
            tracing::info!(url = %o.url, "operator mode: waiting for the policy");
            let first = operator_client::first_policy(&client).await;
            Some((client, first))
        }
        None => None,
    };
    let policy = match &operator {
        Some((_, first)) => first.spec.clone(),
        None => policy::load(&cfg.policy_file)?,
    };
    // S3 is reached only through the operator, from a local capture folder.
    let root = match (policy.storage.target(), &cfg.capture_dir) {
        (StorageTarget::S3(_), _) if operator.is_none() => return Err(Error::NoS3),
        (StorageTarget::S3(_), None) => return Err(Error::NoS3),
        (_, Some(dir)) => dir.clone(),
        (StorageTarget::Volume(v), None) => PathBuf::from(&v.path),
    };
    let storage = storage::Storage::open(&root)?;
    let mode = policy.mode;
    let (policy_tx, policy_rx) = tokio::sync::watch::channel(Arc::new(policy));
    let (demand_tx, _) = tokio::sync::broadcast::channel(16);
    let metrics = metrics::Metrics::new();
    let (reporter, report_queue) = report::queue(metrics.uploads.clone());
    let shared = Arc::new(shared::Shared::new(
        metrics,
        storage,
        cfg.identity.clone(),
        policy_rx.clone(),
        demand_tx.clone(),
        operator.is_some().then_some(reporter.clone()),
    ));
    let listener = tokio::net::TcpListener::bind(cfg.http)
        .await
        .map_err(Error::io(format!("binding the HTTP endpoint {}", cfg.http)))?;
    let addr = listener.local_addr().map_err(Error::io("reading the HTTP address"))?;
    tracing::info!(%addr, storage = %root.display(), ?mode, "sidecar started");
    let ready = Arc::new(AtomicBool::new(false));
    let findings = http::FindingsAccess::decide(cfg.operator.is_some(), cfg.findings_token_file.clone());
    let app = http::App { shared: shared.clone(), ready: ready.clone(), findings };
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, http::router(app)).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    match operator {
        Some((client, first)) => {
            let refresh = cfg.operator.as_ref().map_or(Duration::from_secs(10), |o| o.policy_refresh);
            tokio::spawn(operator_client::policy_loop(client.clone(), policy_tx, first, refresh));
            tokio::spawn(operator_client::requests_loop(client.clone(), demand_tx.clone(), Duration::from_secs(30)));
            let ctx = report::Context {
                policy: policy_rx.clone(),
                identity: cfg.identity.clone(),
                captures: root.clone(),
                claim: cfg.claim_dir.clone(),
                client,
                storage_http: store::HttpClient::new(),
                uploads: shared.metrics.uploads.clone(),
            };
            tokio::spawn(report::run(ctx, report_queue));
            report::resubmit_leftovers(&shared.storage, &reporter);
        }
        None => {
            tokio::spawn(policy::reload_loop(cfg.policy_file.clone(), policy_tx, Duration::from_secs(1)));
        }
    }
    tokio::spawn(policy::on_demand_loop(policy_rx.clone(), demand_tx));
    let procfs = diag::discovery::ProcFs::new(&cfg.proc_root);
    tokio::task::spawn_local(discovery::scan_loop(
        shared.clone(),
        procfs.clone(),
        cfg.proc_root.clone(),
        cfg.select.clone(),
        cfg.scan_interval,
    ));
    tokio::task::spawn_local(crash::collect_loop(shared.clone()));
    // Age-based retention also runs when nothing is captured.
    tokio::spawn({
        let shared = shared.clone();
        let mut policy = shared.policy.clone();
        async move {
            loop {
                let r = policy.borrow_and_update().retention.clone();
                for gone in shared.storage.apply_retention(&r) {
                    tracing::info!(path = %gone.display(), "retention removed an old capture");
                }
                // A short maxAge is honoured within a quarter of itself, a long one within a
                // minute; a new policy applies at once.
                tokio::select! {
                    _ = tokio::time::sleep(sweep_interval(&r)) => {}
                    changed = policy.changed() => if changed.is_err() { return },
                }
            }
        }
    });
    if mode == api::Mode::Listen {
        let socket = cfg.listen_socket.clone().unwrap_or_else(|| root.join("dumpwatch.sock"));
        let server = discovery::bind(&socket)?;
        ready.store(true, Ordering::Relaxed);
        discovery::listen_loop(shared.clone(), server, procfs, cfg.select.clone()).await;
        Ok(())
    } else {
        ready.store(true, Ordering::Relaxed);
        std::future::pending().await
    }
}

/// How often age-based retention runs when nothing is captured.
fn sweep_interval(r: &api::Retention) -> Duration {
    (r.max_age.0 / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn retention_sweeps_within_a_quarter_of_max_age_between_1_s_and_1_min() {
        let every = |age: u64| {
            super::sweep_interval(&api::Retention { max_count: 1, max_age: api::Duration(Duration::from_secs(age)) })
        };
        assert_eq!(every(2), Duration::from_secs(1));
        assert_eq!(every(20), Duration::from_secs(5));
        assert_eq!(every(7 * 86400), Duration::from_secs(60));
    }
}
