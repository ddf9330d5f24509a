//! `dumpwatch-sidecar`: thin main; everything lives in the `sidecar` library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Watch every .NET process beside you: Prometheus metrics, live deadlock detection (.NET 8+),
/// triggers that capture dumps, heap snapshots and stacks, within strict limits.
///
/// Standalone beside a Docker container (share its PID namespace and a volume):
///
///   docker run --pid=container:app -v dumps:/dumpwatch -v ./policy.yaml:/etc/dumpwatch/policy.yaml \
///       dumpwatch-sidecar --policy /etc/dumpwatch/policy.yaml
///
/// A minimal policy (the same schema as the DumpPolicy CRD's spec):
///
///   mode: connect            # or listen: apps set DOTNET_DiagnosticPorts=/dumpwatch/dumpwatch.sock
///   triggers:
///     - {type: gcHeapBytes, above: 500Mi, for: 30s}
///     - {type: deadlock}
///   limits: {maxPerHour: 2, cooldown: 10m, maxBytes: 5Gi}
///   storage: {volume: {path: /dumpwatch}}
///
/// The app's own metrics, a trigger at start and a process filter (globs on the process name or
/// the whole command line; sidecar/README.md, "Metric triggers"):
///
///   triggers:
///     - {type: metric, metric: {provider: MyApp.Queue, counter: queue-length}, above: 40, for: 30s}
///     - {type: metric, metric: {meter: MyApp, instrument: request-duration, percentile: 95}, above: 500}
///     - {type: metric, metric: {meter: MyApp, instrument: requests}, below: 1, for: 1m}
///     - {type: startup, capture: [stacks], processes: ["MyApp.Worker"]}
///
/// The policy file is reloaded when it changes. `kill -USR1 <sidecar>` (or creating an
/// onDemand trigger's `file`) requests a capture of every watched process now, within the
/// limits. Captures appear as complete directories
/// with a manifest.json; nothing half-written is ever visible.
#[derive(Parser, Debug)]
#[command(name = "dumpwatch-sidecar", version, verbatim_doc_comment)]
struct Args {
    /// DumpPolicy YAML: a bare spec or a whole DumpPolicy object.
    #[arg(long, env = "DUMPWATCH_POLICY", default_value = "/etc/dumpwatch/policy.yaml")]
    policy: PathBuf,
    /// Operator mode: take the policy and on-demand requests from the dumpwatch operator and
    /// store captures where it says (S3 through presigned URLs, or the volume). --policy is
    /// then not read (the webhook sets DUMPWATCH_POLICY to the policy's name).
    #[arg(long, env = "DUMPWATCH_OPERATOR_URL")]
    operator_url: Option<String>,
    /// PEM text (not a path) of the operator's CA.
    #[arg(long, env = "DUMPWATCH_OPERATOR_CA", hide_env_values = true)]
    operator_ca: Option<String>,
    /// The projected ServiceAccount token proving which pod calls; re-read on every request.
    #[arg(long, env = "DUMPWATCH_TOKEN_FILE", default_value = "/var/run/secrets/dumpwatch.dev/token")]
    token_file: PathBuf,
    /// How often the policy is fetched from the operator, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    policy_refresh_ms: u64,
    /// Capture folder; overrides spec.storage.volume.path.
    #[arg(long, env = "DUMPWATCH_STORAGE")]
    storage: Option<PathBuf>,
    /// Operator mode: where the policy's claim is mounted (the webhook sets it); finished
    /// captures are stored there as <namespace>/<pod>/<capture>/<file>.zst.
    #[arg(long, env = "DUMPWATCH_STORE")]
    store: Option<PathBuf>,
    /// Listen-mode socket the apps' DOTNET_DiagnosticPorts points to [default: <storage>/dumpwatch.sock].
    #[arg(long, env = "DUMPWATCH_LISTEN_SOCKET")]
    listen_socket: Option<PathBuf>,
    /// Address of /metrics, /healthz, /readyz and /findings (host:port; an IPv6 host with or
    /// without brackets). The operator's webhook sets the pod's IP.
    #[arg(long, env = "DUMPWATCH_HTTP", default_value = "0.0.0.0:9464", value_parser = parse_listen)]
    http: SocketAddr,
    /// /findings (thread stacks, type names) answers only `Authorization: Bearer <this file's
    /// contents>`. Without it: open when standalone, off in operator mode.
    #[arg(long, env = "DUMPWATCH_FINDINGS_TOKEN_FILE")]
    findings_token_file: Option<PathBuf>,
    /// Pod name for manifests (Downward API).
    #[arg(long, env = "POD_NAME", default_value = "")]
    pod: String,
    /// Pod namespace for manifests (Downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "")]
    namespace: String,
    /// App container name for manifests.
    #[arg(long, env = "DUMPWATCH_CONTAINER", default_value = "")]
    container: String,
    /// How often /proc is scanned for new processes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    scan_interval_ms: u64,
    /// Only watch processes whose environment holds KEY=VALUE (a host shared with other apps).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_select)]
    select_env: Option<sidecar::discovery::Select>,
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long)]
    json_logs: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if args.json_logs {
        fmt.json().init()
    } else {
        fmt.init()
    }
    // One thread: the sidecar mostly waits on sockets, and must stay small beside the app.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let cfg = sidecar::Config {
        policy_file: args.policy,
        operator: args.operator_url.map(|url| sidecar::operator_client::OperatorConfig {
            url,
            ca_pem: args.operator_ca,
            token_file: args.token_file,
            policy_refresh: std::time::Duration::from_millis(args.policy_refresh_ms.max(100)),
        }),
        capture_dir: args.storage,
        claim_dir: args.store,
        listen_socket: args.listen_socket,
        http: args.http,
        findings_token_file: args.findings_token_file,
        identity: api::wire::Identity { pod: args.pod, namespace: args.namespace, container: args.container },
        scan_interval: std::time::Duration::from_millis(args.scan_interval_ms.max(50)),
        proc_root: "/proc".into(),
        select: args.select_env.unwrap_or_default(),
    };
    // The whole cause chain, without presigned signatures.
    rt.block_on(sidecar::run(cfg)).map_err(|e| anyhow::anyhow!(store::redact::error_chain(&e)))
}

/// `host:port`, where host may be a bare IPv6 address (as `$(POD_IP):9464` expands on a v6 pod).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?}: write host:port"))?;
    let ip: std::net::IpAddr = host.trim_matches(['[', ']']).parse().map_err(|e| format!("{s:?}: {e}"))?;
    let port: u16 = port.parse().map_err(|e| format!("{s:?}: port: {e}"))?;
    Ok(SocketAddr::new(ip, port))
}

fn parse_select(s: &str) -> Result<sidecar::discovery::Select, String> {
    sidecar::discovery::Select::env(s).ok_or_else(|| format!("{s:?}: write KEY=VALUE"))
}
