//! `dumpwatch-operator`: flags, logging, then the pieces from the `operator` library. Every
//! replica serves metrics (and HTTPS: webhook + sidecar API); only the leader runs controllers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use operator::controller::{
    self, AnalysisSettings, ArtifactDeleter, ArtifactUrls, Context, Deleters, LeaderElector, Metrics,
};

/// The dumpwatch Kubernetes operator.
///
/// Watches DumpPolicies (status: matched and injected pods, conditions; retention of old
/// snapshots) and DumpSnapshots (an analysis Job per uploaded dump, Events such as
/// DeadlockDetected on the pod and the policy, deletion of stored artifacts). Run two replicas:
/// they elect a leader through a Lease, and only the leader runs the controllers; every replica
/// serves /metrics (and the HTTPS webhook and sidecar API).
///
/// Every flag can be given as the environment variable shown. Logging: DUMPWATCH_LOG
/// (e.g. `info,operator=debug`).
#[derive(Parser, Debug)]
#[command(name = "dumpwatch-operator", version, about, long_about)]
struct Cli {
    /// Where /metrics is served (plain HTTP, for Prometheus).
    #[arg(long, env = "DUMPWATCH_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,

    /// Namespace of the leader-election Lease (the operator's own; the downward API gives it).
    #[arg(long, env = "POD_NAMESPACE", default_value = "dumpwatch")]
    namespace: String,

    /// This replica's identity in the Lease (the pod name; the downward API gives it).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Name of the Lease the replicas compete for.
    #[arg(long, env = "DUMPWATCH_LEASE_NAME", default_value = "dumpwatch-operator-leader")]
    lease_name: String,

    /// How long a leader's Lease lasts without renewal: the time the other replica waits when the
    /// leader dies without releasing it. It is renewed every third of this.
    #[arg(long, env = "DUMPWATCH_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,

    /// Image whose entrypoint is the `dumpwatch` CLI; analysis Jobs run `dumpwatch analyze` in it.
    #[arg(long, env = "DUMPWATCH_ANALYZER_IMAGE", default_value = "ghcr.io/dumpwatch/dumpwatch:latest")]
    analyzer_image: String,

    /// The operator's HTTPS API as pods reach it; analysis Jobs post their findings there.
    #[arg(long, env = "DUMPWATCH_OPERATOR_URL", default_value = "https://dumpwatch-operator.dumpwatch.svc:8443")]
    operator_url: String,

    /// PEM file of the CA that signed the operator's serving certificate; handed to analysis
    /// Jobs (DUMPWATCH_OPERATOR_CA) so that they can verify the operator.
    #[arg(long, env = "DUMPWATCH_OPERATOR_CA_FILE")]
    operator_ca_file: Option<PathBuf>,

    /// Retries of a failed analysis pod (1 or 2).
    #[arg(long, env = "DUMPWATCH_ANALYSIS_BACKOFF_LIMIT", default_value_t = 1)]
    analysis_backoff_limit: i32,

    /// Symbol servers (comma-separated) analysis Jobs may fetch a missing DAC from, by the dumped
    /// runtime's build-id; empty: none (dumps stored without their DAC then fail to analyze).
    #[arg(
        long,
        env = "DUMPWATCH_ANALYSIS_SYMBOL_SERVER",
        default_value = operator::controller::job::MICROSOFT_SYMBOL_SERVER
    )]
    analysis_symbol_server: String,

    /// The admin DAC store mounted read-only into analysis Jobs: a Kubernetes volume source as
    /// JSON (e.g. `{"persistentVolumeClaim":{"claimName":"dac-store"}}`); empty: none.
    #[arg(long, env = "DUMPWATCH_ANALYSIS_DAC_STORE_VOLUME", default_value = "")]
    analysis_dac_store_volume: String,

    /// Analysis Jobs load the DAC stored with the capture (`--trust-dac-beside-dump`): this
    /// trusts the app pods, which chose that file.
    #[arg(long, env = "DUMPWATCH_ANALYSIS_TRUST_CAPTURED_DACS", default_value_t = false)]
    analysis_trust_captured_dacs: bool,

    /// Analysis Jobs may take the DAC from .NET runtimes in the analyzer image (an image built
    /// with them on purpose); otherwise they pass `--no-local-runtime`.
    #[arg(long, env = "DUMPWATCH_ANALYSIS_LOCAL_RUNTIMES", default_value_t = false)]
    analysis_local_runtimes: bool,

    /// How long finished analysis Jobs stay (for `kubectl logs`).
    #[arg(long, env = "DUMPWATCH_ANALYSIS_TTL", default_value = "1h", value_parser = parse_duration)]
    analysis_ttl: Duration,

    /// Run the controllers without a Lease (one replica only; for development).
    #[arg(long, env = "DUMPWATCH_NO_LEADER_ELECTION")]
    no_leader_election: bool,

    /// The HTTPS listener: webhook `POST /mutate`, the sidecar API, `/healthz`, `/readyz`.
    #[arg(long, env = "DUMPWATCH_HTTPS_ADDR", default_value = "0.0.0.0:8443")]
    webhook_addr: SocketAddr,

    /// Serving certificate: `self` (generated, kept in --cert-secret, caBundle written, rotated)
    /// or `cert-manager` (alias `files`: tls.crt/tls.key/ca.crt mounted in --cert-dir; reloaded).
    #[arg(long, env = "DUMPWATCH_CERT_MODE", default_value = "self")]
    cert_mode: operator::webhook::CertMode,

    /// cert-manager mode: the directory of tls.crt, tls.key and ca.crt.
    #[arg(long, env = "DUMPWATCH_CERT_DIR", default_value = "/etc/dumpwatch/tls")]
    cert_dir: PathBuf,

    /// The operator's Service: the serving certificate names <service>.<namespace>.svc.
    #[arg(long, env = "DUMPWATCH_SERVICE_NAME", default_value = "dumpwatch-operator")]
    service_name: String,

    /// More names or IPs for the serving certificate (repeatable, or comma-separated).
    #[arg(long = "extra-san", env = "DUMPWATCH_EXTRA_SANS", value_delimiter = ',')]
    extra_sans: Vec<String>,

    /// The MutatingWebhookConfiguration whose caBundle self mode keeps up to date.
    #[arg(long, env = "DUMPWATCH_WEBHOOK_CONFIGURATION", default_value = "dumpwatch")]
    webhook_config: String,

    /// Self mode: the Secret (in --namespace) holding the CA and the serving certificate; the
    /// chart creates it empty, the operator fills it (and creates it when absent).
    #[arg(long, env = "DUMPWATCH_TLS_SECRET", default_value = "dumpwatch-operator-tls")]
    cert_secret: String,

    /// Image of the injected sidecar.
    #[arg(long, env = "DUMPWATCH_SIDECAR_IMAGE", default_value = "ghcr.io/dumpwatch/sidecar:0.1.0")]
    sidecar_image: String,

    /// UID (and GID) of the injected sidecar when the pod spec does not name the app's user
    /// (otherwise the sidecar runs as the app's user: the only one that reaches it).
    #[arg(long, env = "DUMPWATCH_SIDECAR_RUN_AS_USER", default_value_t = 65532)]
    sidecar_run_as_user: i64,

    /// Inject the sidecar as a native sidecar (an init container with restartPolicy Always, so it
    /// starts first and never keeps a Job's pod running): `auto` when the API server is 1.29 or
    /// later, `always`, or `never` (a regular container; Job pods are then left uninjected).
    #[arg(long, env = "DUMPWATCH_NATIVE_SIDECAR", default_value = "auto", value_parser = ["auto", "always", "never"])]
    native_sidecar: String,

    /// Where the shared volume is mounted in the sidecar and the app containers.
    #[arg(long, env = "DUMPWATCH_SIDECAR_MOUNT_PATH", default_value = "/dumpwatch")]
    sidecar_mount_path: String,

    /// Size limit of the shared emptyDir (empty: none).
    #[arg(long, env = "DUMPWATCH_SIDECAR_VOLUME_SIZE_LIMIT", default_value = "")]
    sidecar_volume_size_limit: String,

    /// The sidecar's /metrics port and its name on the container.
    #[arg(long, env = "DUMPWATCH_SIDECAR_METRICS_PORT", default_value_t = 9464)]
    sidecar_metrics_port: i32,
    #[arg(long, env = "DUMPWATCH_SIDECAR_METRICS_PORT_NAME", default_value = "dw-metrics")]
    sidecar_metrics_port_name: String,

    /// The sidecar's resources, a Kubernetes ResourceRequirements as JSON (default: 10m CPU,
    /// 32Mi requested, 128Mi memory limit).
    #[arg(long, env = "DUMPWATCH_SIDECAR_RESOURCES")]
    sidecar_resources: Option<String>,

    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, env = "DUMPWATCH_LOG_JSON")]
    log_json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    api::Duration::parse(s).map(|d| d.std()).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain, without presigned signatures (a URL's query is a credential).
            eprintln!("dumpwatch-operator: error: {}", store::redact::error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DUMPWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if cli.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }

    let client =
        kube::Client::try_default().await.context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let identity = cli
        .identity
        .clone()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| format!("dumpwatch-operator-{}", std::process::id()));
    let metrics = Metrics::new();
    let webhook_latency = operator::webhook::latency_histogram();
    metrics.register(
        "dumpwatch_operator_webhook_duration_seconds",
        "Time to answer one AdmissionReview",
        webhook_latency.clone(),
    );

    // Every replica: the HTTPS listener, webhook and sidecar API.
    let defaults = operator::SidecarSettings::default();
    let native = match cli.native_sidecar.as_str() {
        "always" => true,
        "never" => false,
        _ => {
            let version = client.apiserver_version().await.context("reading the API server's version")?;
            operator::inject::native_sidecars_supported(&version.major, &version.minor)
        }
    };
    tracing::info!(
        native,
        "sidecar injection: {}",
        if native { "native sidecar (init container)" } else { "regular container" }
    );
    let resources = match &cli.sidecar_resources {
        Some(json) => serde_json::from_str(json).context("--sidecar-resources is not a ResourceRequirements")?,
        None => defaults.resources.clone(),
    };
    let https_options = operator::webhook::ServeOptions {
        addr: cli.webhook_addr,
        cert_mode: cli.cert_mode,
        cert_dir: cli.cert_dir.clone(),
        namespace: cli.namespace.clone(),
        service_name: cli.service_name.clone(),
        extra_sans: cli.extra_sans.clone(),
        webhook_config_name: cli.webhook_config.clone(),
        cert_secret_name: cli.cert_secret.clone(),
        sidecar: operator::SidecarSettings {
            image: cli.sidecar_image.clone(),
            resources,
            run_as_user: cli.sidecar_run_as_user,
            native,
            mount_path: cli.sidecar_mount_path.clone(),
            volume_size_limit: Some(cli.sidecar_volume_size_limit.clone()).filter(|s| !s.is_empty()),
            operator_url: cli.operator_url.clone(),
            metrics_port: cli.sidecar_metrics_port,
            metrics_port_name: cli.sidecar_metrics_port_name.clone(),
            ..defaults
        },
        latency: webhook_latency.clone(),
    };
    let sidecar_api =
        operator::sidecar_api::router(operator::sidecar_api::SidecarApi::new(client.clone(), cli.namespace.clone()));
    let (certs, https) = operator::webhook::start(client.clone(), https_options, sidecar_api).await?;
    let https_server = tokio::spawn(https);

    let operator_ca_pem = match &cli.operator_ca_file {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading --operator-ca-file {}", p.display()))?)
        }
        // Self-provisioned: the CA is known once the Secret is read (or written); give it a moment.
        None => {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while certs.ca_pem().is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(certs.ca_pem()).filter(|pem| !pem.is_empty())
        }
    };
    let analysis = AnalysisSettings {
        image: cli.analyzer_image.clone(),
        operator_url: cli.operator_url.clone(),
        operator_ca_pem,
        backoff_limit: cli.analysis_backoff_limit,
        ttl_after_finished_secs: cli.analysis_ttl.as_secs() as i32,
        symbol_server: cli.analysis_symbol_server.clone(),
        dac_store: operator::controller::job::dac_store_volume(&cli.analysis_dac_store_volume)
            .map_err(anyhow::Error::msg)?,
        trust_captured_dacs: cli.analysis_trust_captured_dacs,
        local_runtimes: cli.analysis_local_runtimes,
        ..AnalysisSettings::default()
    };
    // `s3://` artifacts: the policy's storage and the credentials of its Secret in our namespace
    // (or, once the policy is gone, of any policy whose bucket and prefix hold the artifact).
    let object = Arc::new(operator::sidecar_api::ObjectStorage::new(client.clone(), cli.namespace.clone()));
    // `file://` artifacts on a claim: a cleanup Job in the snapshot's namespace (cleanup.rs).
    let deleter: Arc<dyn ArtifactDeleter> = Arc::new(Deleters { object: Some(object.clone()) });
    let urls: Arc<dyn ArtifactUrls> = object;
    let mut ctx = Context::new(client.clone(), metrics.clone(), analysis, deleter, urls, Some(identity.clone()));
    ctx.certs = Some(certs.clone());
    ctx.sidecar_mount_path = cli.sidecar_mount_path.clone();
    let ctx = Arc::new(ctx);

    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_tx.send(true);
    });

    // Every replica: /metrics.
    let listener = tokio::net::TcpListener::bind(cli.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", cli.metrics_addr))?;
    tracing::info!(addr = %cli.metrics_addr, "serving /metrics");
    let mut metrics_down = shutdown.clone();
    let metrics_server = tokio::spawn(
        axum::serve(listener, metrics.router())
            .with_graceful_shutdown(async move {
                let _ = metrics_down.wait_for(|s| *s).await;
            })
            .into_future(),
    );

    if cli.no_leader_election {
        metrics.leader.set(1);
        let mut down = shutdown.clone();
        controller::run(ctx, async move {
            let _ = down.wait_for(|s| *s).await;
        })
        .await;
    } else {
        let elector = LeaderElector {
            api: Api::<Lease>::namespaced(client, &cli.namespace),
            lease_name: cli.lease_name.clone(),
            identity,
            lease_duration: cli.lease_duration,
        };
        controller::run_when_leading(ctx, elector, shutdown).await;
    }
    metrics_server.await?.context("metrics server")?;
    https_server.abort();
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
