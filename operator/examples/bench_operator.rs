//! The operator at cluster scale (issue 17), on a real kube-apiserver: one or two
//! `dumpwatch-operator` binaries (e.g. the merge base's and this branch's) run one after the
//! other against the same control plane and the same load, and are compared side by side.
//! Run with `scripts/bench-operator` (it builds both binaries).
//!
//! The load: `--namespaces` opted-in namespaces × `--policies` DumpPolicies (each selects
//! `app=p<j>`), `--snapshots` DumpSnapshots, then Pod objects created in waves of `--wave` up to
//! `--pods` and deleted in waves back to none. Pods do not run (there is no node): the bench
//! creates each one through the API server (so through the operator's webhook, at `--rate`
//! admissions/s, open loop) and then sets its status to Running as a kubelet would.
//!
//! Measured per binary:
//! - requests the operator made, by verb and resource, from the API server's audit log filtered
//!   by the operator's ServiceAccount (each binary runs as its own; `apiserver_request_total`
//!   has no user or user-agent label, the audit log is the API server's own per-user record);
//! - the operator's peak RSS (`VmHWM`) and CPU time (`/proc/<pid>/stat`);
//! - after each wave, the time until every policy's `status.matchedPods` is right;
//! - admission latency during the waves: the operator's own histogram
//!   (`dumpwatch_operator_webhook_duration_seconds`, p99 as a bucket bound) and the pod create
//!   as the bench saw it (API server + webhook + etcd, exact p99).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{DumpPolicy, DumpSnapshot};
use harness::{ControlPlane, Options};
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, WebhookClientConfig};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

struct Args {
    bins: Vec<(String, PathBuf)>,
    namespaces: usize,
    policies: usize,
    pods: usize,
    wave: usize,
    snapshots: usize,
    rate: f64,
}

fn args() -> Args {
    let mut a =
        Args { bins: Vec::new(), namespaces: 20, policies: 20, pods: 5000, wave: 1000, snapshots: 500, rate: 100.0 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            // --bin label=path, once per binary, run in that order.
            "--bin" => {
                let v = value();
                let (label, path) = v.split_once('=').expect("--bin label=path");
                a.bins.push((label.into(), path.into()));
            }
            "--namespaces" => a.namespaces = value().parse().unwrap(),
            "--policies" => a.policies = value().parse().unwrap(),
            "--pods" => a.pods = value().parse().unwrap(),
            "--wave" => a.wave = value().parse().unwrap(),
            "--snapshots" => a.snapshots = value().parse().unwrap(),
            "--rate" => a.rate = value().parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.bins.is_empty(), "--bin label=path (once per operator binary)");
    a
}

const SYSTEM_NS: &str = "dumpwatch";

fn sa(label: &str) -> String {
    format!("dumpwatch-operator-{label}")
}

fn ns_name(i: usize) -> String {
    format!("bench-{i:02}")
}

/// Pod `i` lives in namespace `i % namespaces` and is selected by policy `(i / namespaces) % policies`.
fn placement((namespaces, policies): (usize, usize), i: usize) -> (String, String) {
    (ns_name(i % namespaces), format!("p{:02}", (i / namespaces) % policies))
}

fn audit_policy(labels: &[String]) -> String {
    let users: Vec<String> =
        labels.iter().map(|l| format!("\"system:serviceaccount:{SYSTEM_NS}:{}\"", sa(l))).collect();
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
         - level: Metadata\n  users: [{}]\n- level: None\n",
        users.join(", ")
    )
}

/// A kubeconfig that authenticates as the operator's ServiceAccount `label`.
fn operator_kubeconfig(cp: &ControlPlane, label: &str, dir: &Path) -> PathBuf {
    let token = cp.kubectl(&["create", "token", &sa(label), "-n", SYSTEM_NS, "--duration=6h"]).unwrap();
    let path = dir.join(format!("kubeconfig-{label}"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{}\", certificate-authority: \"{}\"}}\n\
             users:\n- name: u\n  user: {{token: \"{}\"}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\n\
             current-context: x\n",
            cp.server(),
            cp.ca_cert().display(),
            token.trim()
        ),
    )
    .unwrap();
    path
}

fn setup_manifest(args: &Args, labels: &[String]) -> String {
    let mut m = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {SYSTEM_NS}}}\n");
    for l in labels {
        m += &format!(
            "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {sa}, namespace: {SYSTEM_NS}}}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {sa}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}\n\
             subjects: [{{kind: ServiceAccount, name: {sa}, namespace: {SYSTEM_NS}}}]\n",
            sa = sa(l)
        );
    }
    for i in 0..args.namespaces {
        m += &format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}, labels: {{dumpwatch.dev/inject: enabled}}}}\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: default, namespace: {n}}}\n",
            n = ns_name(i)
        );
    }
    m
}

fn policy(ns: &str, j: usize) -> DumpPolicy {
    serde_json::from_value(json!({
        "apiVersion": "dumpwatch.dev/v1alpha1", "kind": "DumpPolicy",
        "metadata": {"name": format!("p{j:02}"), "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": format!("p{j:02}")}}, "triggers": [{"type": "deadlock"}]},
    }))
    .unwrap()
}

fn pod(ns: &str, name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": "orders:1"}]},
    }))
    .unwrap()
}

/// The operator process and what /proc says of it.
struct Operator {
    child: Child,
    metrics_port: u16,
}

impl Operator {
    fn start(bin: &Path, kubeconfig: &Path, webhook_port: u16, log: &Path) -> Operator {
        let metrics_port = harness::free_port();
        let child = Command::new(bin)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", SYSTEM_NS)
            .env("POD_NAME", "bench")
            // `BENCH_OPERATOR_LOG=info` (or debug) to see why an operator misbehaves.
            .env("DUMPWATCH_LOG", std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into()))
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}"), "--no-leader-election"])
            .args(["--webhook-addr", &format!("127.0.0.1:{webhook_port}"), "--extra-san", "127.0.0.1"])
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(std::fs::OpenOptions::new().append(true).open(log).unwrap())
            .spawn()
            .unwrap();
        Operator { child, metrics_port }
    }

    fn proc_status(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// User + system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = s.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // Fields 14 and 15 (utime, stime), counted from after the command name (field 3 = index 0).
        (ticks(11) + ticks(12)) / 100.0
    }

    fn metrics(&self) -> String {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)) else { return String::new() };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bench that fails half way must not leave its operator running.
impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Bucket counts of `dumpwatch_operator_webhook_duration_seconds` (cumulative, by `le`).
fn webhook_buckets(metrics: &str) -> Vec<(f64, u64)> {
    let mut out = Vec::new();
    for l in metrics.lines().filter(|l| l.starts_with("dumpwatch_operator_webhook_duration_seconds_bucket")) {
        let le = l.split("le=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("+Inf");
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        let n = l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64;
        out.push((le, n));
    }
    out
}

/// p99 as the bound of the bucket it falls in, from the difference of two scrapes.
fn p99_bucket(before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<(f64, u64)> {
    let counts: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, n)| (*le, n - before.iter().find(|(l, _)| l == le).map(|(_, b)| *b).unwrap_or(0)))
        .collect();
    let total = counts.last()?.1;
    let want = (total as f64 * 0.99).ceil() as u64;
    counts.iter().find(|(_, n)| *n >= want).map(|(le, _)| (*le, total))
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[derive(Default)]
struct Figures {
    minutes: f64,
    peak_rss_mib: f64,
    cpu_s: f64,
    status_right: Vec<(String, Option<Duration>)>,
    /// When each wave's last request returned (wall clock, to place the audit log's entries).
    wave_ends: Vec<Timestamp>,
    create_p50: Duration,
    create_p99: Duration,
    webhook_p99: Option<(f64, u64)>,
    injected: usize,
    created: usize,
}

/// Every policy's `matchedPods` equals the live pods it selects: how long it took, or `None`.
async fn status_right(
    client: &kube::Client,
    want: &HashMap<(String, String), u32>,
    limit: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let all: Api<DumpPolicy> = Api::all(client.clone());
    while started.elapsed() < limit {
        if let Ok(list) = all.list(&ListParams::default()).await {
            let wrong = list.items.iter().filter(|p| {
                let key =
                    (p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default());
                p.status.as_ref().map(|s| s.matched_pods) != Some(*want.get(&key).unwrap_or(&0))
            });
            if wrong.count() == 0 {
                return Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Runs `f(i)` for each `i` at `rate` per second, open loop; for each that succeeded, the time
/// from its due time to the instant `f` gives (when its measured part finished).
async fn paced<F, Fut>(items: Vec<usize>, rate: f64, f: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<tokio::time::Instant>> + Send + 'static,
{
    let f = Arc::new(f);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for (k, i) in items.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(k as f64 / rate);
        tokio::time::sleep_until(due).await;
        let f = f.clone();
        tasks.push(tokio::spawn(async move { f(i).await.map(|done| done - due) }));
    }
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(Some(d)) = t.await {
            out.push(d);
        }
    }
    out
}

async fn run_one(
    args: &Args,
    cp: &ControlPlane,
    client: &kube::Client,
    label: &str,
    bin: &Path,
    dir: &Path,
    webhook_port: u16,
) -> Figures {
    let mut fig = Figures::default();
    let kubeconfig = operator_kubeconfig(cp, label, dir);
    let op = Operator::start(bin, &kubeconfig, webhook_port, &dir.join(format!("operator-{label}.log")));
    let started = Instant::now();

    for i in 0..args.namespaces {
        let api: Api<DumpPolicy> = Api::namespaced(client.clone(), &ns_name(i));
        for j in 0..args.policies {
            api.create(&PostParams::default(), &policy(&ns_name(i), j)).await.unwrap();
        }
    }
    // The webhook serves once its certificate is in the configuration's caBundle.
    let pods0: Api<Pod> = Api::namespaced(client.clone(), &ns_name(0));
    let ready = Instant::now();
    loop {
        let probe = pod(&ns_name(0), "probe", "p00");
        let created = pods0.create(&PostParams { dry_run: true, ..Default::default() }, &probe).await;
        if created.is_ok_and(|p| {
            p.metadata.labels.unwrap_or_default().contains_key("dumpwatch.dev/injected")
                || p.metadata.annotations.unwrap_or_default().contains_key("dumpwatch.dev/injected")
        }) {
            break;
        }
        if ready.elapsed() > Duration::from_secs(120) {
            let log = std::fs::read_to_string(dir.join(format!("operator-{label}.log"))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            panic!("the webhook of {label} never injected in 120 s; its log ends:\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for k in 0..args.snapshots {
        let ns = ns_name(k % args.namespaces);
        let s: DumpSnapshot = serde_json::from_value(json!({
            "apiVersion": "dumpwatch.dev/v1alpha1", "kind": "DumpSnapshot",
            "metadata": {"name": format!("s{k:04}"), "namespace": ns},
            "spec": {"policy": format!("p{:02}", (k / args.namespaces) % args.policies), "pod": format!("gone-{k}"), "trigger": "deadlock"},
        }))
        .unwrap();
        Api::<DumpSnapshot>::namespaced(client.clone(), &ns).create(&PostParams::default(), &s).await.unwrap();
    }
    let want0: HashMap<(String, String), u32> = HashMap::new();
    let t = status_right(client, &want0, Duration::from_secs(120)).await;
    fig.status_right.push(("policies created".into(), t));

    // Waves up, then down.
    let mut live: Vec<usize> = Vec::new();
    let mut create_lat = Vec::new();
    let hist_before = webhook_buckets(&op.metrics());
    let injected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut waves: Vec<(bool, Vec<usize>)> = Vec::new();
    let mut next = 0;
    while next < args.pods {
        let n = args.wave.min(args.pods - next);
        waves.push((true, (next..next + n).collect()));
        next += n;
    }
    let mut up: Vec<usize> = (0..args.pods).collect();
    while !up.is_empty() {
        let n = args.wave.min(up.len());
        waves.push((false, up.drain(..n).collect()));
    }
    for (create, items) in waves {
        let what = format!("{} {} pods (then {})", if create { "+" } else { "-" }, items.len(), {
            if create { live.len() + items.len() } else { live.len() - items.len() }
        });
        if create {
            let (c, shape, inj) = (client.clone(), (args.namespaces, args.policies), injected.clone());
            let lat = paced(items.clone(), args.rate, move |i| {
                let (c, inj) = (c.clone(), inj.clone());
                let (ns, app) = placement(shape, i);
                async move {
                    let pods: Api<Pod> = Api::namespaced(c, &ns);
                    let name = format!("w-{i:05}");
                    let p = pods.create(&PostParams::default(), &pod(&ns, &name, &app)).await.ok()?;
                    let created = tokio::time::Instant::now();
                    if p.metadata.labels.unwrap_or_default().contains_key("dumpwatch.dev/injected")
                        || p.metadata.annotations.unwrap_or_default().contains_key("dumpwatch.dev/injected")
                    {
                        inj.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let running = json!({"status": {"phase": "Running"}});
                    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(running)).await.ok()?;
                    Some(created)
                }
            })
            .await;
            fig.created += lat.len();
            create_lat.extend(lat);
            live.extend(items);
        } else {
            let (c, shape) = (client.clone(), (args.namespaces, args.policies));
            paced(items.clone(), args.rate * 2.0, move |i| {
                let c = c.clone();
                let (ns, _) = placement(shape, i);
                async move {
                    let pods: Api<Pod> = Api::namespaced(c, &ns);
                    pods.delete(&format!("w-{i:05}"), &DeleteParams::default().grace_period(0)).await.ok()?;
                    Some(tokio::time::Instant::now())
                }
            })
            .await;
            live.retain(|i| !items.contains(i));
        }
        let mut want: HashMap<(String, String), u32> = HashMap::new();
        for &i in &live {
            *want.entry(placement((args.namespaces, args.policies), i)).or_default() += 1;
        }
        fig.wave_ends.push(Timestamp::now());
        let t = status_right(client, &want, Duration::from_secs(120)).await;
        eprintln!("[{label}] {what}: status right after {t:?}");
        fig.status_right.push((what, t));
    }
    fig.webhook_p99 = p99_bucket(&hist_before, &webhook_buckets(&op.metrics()));
    create_lat.sort();
    fig.create_p50 = quantile(&create_lat, 0.5);
    fig.create_p99 = quantile(&create_lat, 0.99);
    fig.injected = injected.load(std::sync::atomic::Ordering::Relaxed);

    // Teardown while the operator runs (it removes the snapshots' finalizers).
    for i in 0..args.namespaces {
        let ns = ns_name(i);
        let _ = Api::<DumpSnapshot>::namespaced(client.clone(), &ns)
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
    }
    let snaps: Api<DumpSnapshot> = Api::all(client.clone());
    let t = Instant::now();
    while snaps.list(&ListParams::default()).await.map(|l| l.items.len()).unwrap_or(1) > 0
        && t.elapsed() < Duration::from_secs(120)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    fig.minutes = started.elapsed().as_secs_f64() / 60.0;
    fig.peak_rss_mib = op.proc_status("VmHWM:") as f64 / 1024.0;
    fig.cpu_s = op.cpu_seconds();
    op.stop();
    for i in 0..args.namespaces {
        let _ = Api::<DumpPolicy>::namespaced(client.clone(), &ns_name(i))
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
    }
    fig
}

/// Requests by "verb resource[/subresource]" of ServiceAccount `label` in the audit log.
fn audited(log: &Path, label: &str) -> BTreeMap<String, u64> {
    let user = format!("system:serviceaccount:{SYSTEM_NS}:{}", sa(label));
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else { continue };
        if e["user"]["username"] != user.as_str() {
            continue;
        }
        let verb = e["verb"].as_str().unwrap_or("");
        // A watch is counted when it starts (it completes only when it ends); others when done.
        let counted = if verb == "watch" { e["stage"] == "ResponseStarted" } else { e["stage"] == "ResponseComplete" };
        if !counted {
            continue;
        }
        let r = &e["objectRef"];
        let resource = match r["subresource"].as_str() {
            Some(sub) => format!("{}/{sub}", r["resource"].as_str().unwrap_or("")),
            None => r["resource"].as_str().unwrap_or("").to_string(),
        };
        *out.entry(format!("{verb} {resource}")).or_default() += 1;
    }
    out
}

/// The operator's policy status writes after a wave's end, from the audit log: how many, when
/// the last one reached the API server and how long the API server took for the slowest one.
/// Says whether a slow "status right" was the operator deciding late or the API server.
fn status_writes_after(log: &Path, label: &str, from: Timestamp, until: Timestamp) -> String {
    let user = format!("system:serviceaccount:{SYSTEM_NS}:{}", sa(label));
    let ts = |v: &Value| v.as_str().and_then(|s| s.parse::<Timestamp>().ok());
    let (mut n, mut last, mut slowest) = (0, None::<f64>, 0f64);
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else { continue };
        let r = &e["objectRef"];
        if e["user"]["username"] != user.as_str()
            || e["stage"] != "ResponseComplete"
            || e["verb"] != "patch"
            || r["resource"] != "dumppolicies"
            || r["subresource"] != "status"
        {
            continue;
        }
        let (Some(received), Some(done)) = (ts(&e["requestReceivedTimestamp"]), ts(&e["stageTimestamp"])) else {
            continue;
        };
        if received < from || received > until {
            continue;
        }
        n += 1;
        let at = received.duration_since(from).as_secs_f64();
        last = Some(last.map_or(at, |l: f64| l.max(at)));
        slowest = slowest.max(done.duration_since(received).as_secs_f64());
    }
    match last {
        Some(at) => format!("{n} status writes, last received +{at:.1} s, slowest {:.0} ms", slowest * 1e3),
        None => "no status write".into(),
    }
}

fn main() {
    let args = args();
    let labels: Vec<String> = args.bins.iter().map(|(l, _)| l.clone()).collect();
    let dir = tempfile::Builder::new().prefix("bench-operator-").tempdir().unwrap();
    let policy_file = dir.path().join("audit-policy.yaml");
    std::fs::write(&policy_file, audit_policy(&labels)).unwrap();
    let audit_log = dir.path().join("audit.log");
    let cp = ControlPlane::start_with(Options {
        controller_manager: false,
        node_agent: false,
        apiserver_args: vec![
            format!("--audit-policy-file={}", policy_file.display()),
            format!("--audit-log-path={}", audit_log.display()),
            "--audit-log-maxsize=0".into(),
        ],
        ..Options::default()
    })
    .expect("control plane starts");
    cp.install_dumpwatch_crds().unwrap();
    cp.apply(&setup_manifest(&args, &labels)).unwrap();
    let webhook_port = harness::free_port();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let results: Vec<(String, Figures)> = rt.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(cp.kubeconfig()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let url = format!("https://127.0.0.1:{webhook_port}/mutate");
        let mwc = operator::webhook::config::mutating_webhook_configuration(
            "dumpwatch",
            WebhookClientConfig { url: Some(url), ..Default::default() },
        );
        Api::<MutatingWebhookConfiguration>::all(client.clone()).create(&PostParams::default(), &mwc).await.unwrap();
        let mut out = Vec::new();
        for (label, bin) in &args.bins {
            eprintln!("[{label}] {}", bin.display());
            out.push((label.clone(), run_one(&args, &cp, &client, label, bin, dir.path(), webhook_port).await));
        }
        out
    });
    // The audit log is written asynchronously (batched): give it a moment.
    std::thread::sleep(Duration::from_secs(2));

    println!(
        "\n## bench-operator: {} namespaces × {} policies, pods in waves of {} up to {}, {} snapshots, {} admissions/s",
        args.namespaces, args.policies, args.wave, args.pods, args.snapshots, args.rate
    );
    print!("\n| | {} |\n|---|", labels.join(" | "));
    println!("{}", "---|".repeat(labels.len()));
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let row = |name: &str, f: &dyn Fn(&str, &Figures) -> String| -> (String, Vec<String>) {
        (name.into(), results.iter().map(|(l, fig)| f(l, fig)).collect())
    };
    rows.push(row("run (min)", &|_, f| format!("{:.1}", f.minutes)));
    rows.push(row("operator peak RSS (MiB)", &|_, f| format!("{:.0}", f.peak_rss_mib)));
    rows.push(row("operator CPU (s)", &|_, f| format!("{:.1}", f.cpu_s)));
    let requests: Vec<BTreeMap<String, u64>> = labels.iter().map(|l| audited(&audit_log, l)).collect();
    let verbs: std::collections::BTreeSet<String> =
        requests.iter().flat_map(|r| r.keys().map(|k| k.split(' ').next().unwrap().to_string())).collect();
    for v in &verbs {
        let by_verb: Vec<u64> = requests
            .iter()
            .map(|r| r.iter().filter(|(k, _)| k.split(' ').next() == Some(v)).map(|(_, n)| n).sum())
            .collect();
        rows.push((format!("requests: {v}"), by_verb.iter().map(|n| n.to_string()).collect()));
        if v == "list" {
            rows.push((
                "LIST per minute".into(),
                by_verb.iter().zip(&results).map(|(n, (_, f))| format!("{:.1}", *n as f64 / f.minutes)).collect(),
            ));
        }
    }
    let waves = results.first().map(|(_, f)| f.status_right.len()).unwrap_or(0);
    for w in 0..waves {
        let name = format!("status right after: {}", results[0].1.status_right[w].0);
        rows.push((
            name,
            results
                .iter()
                .map(|(_, f)| match f.status_right.get(w).and_then(|(_, t)| *t) {
                    Some(t) => format!("{:.1} s", t.as_secs_f64()),
                    None => "not in 120 s".into(),
                })
                .collect(),
        ));
    }
    rows.push(row("pod create p50 / p99 (ms, API server + webhook)", &|_, f| {
        format!("{:.1} / {:.1}", f.create_p50.as_secs_f64() * 1e3, f.create_p99.as_secs_f64() * 1e3)
    }));
    rows.push(row("webhook p99 (operator histogram, bucket bound)", &|_, f| match f.webhook_p99 {
        Some((le, n)) => format!("≤ {} ms of {n}", le * 1e3),
        None => "no samples".into(),
    }));
    rows.push(row("pods created / injected", &|_, f| format!("{} / {}", f.created, f.injected)));
    for (name, cells) in &rows {
        println!("| {name} | {} |", cells.join(" | "));
    }
    println!("\nstatus writes after each wave's end (audit log):");
    for (l, (_, f)) in labels.iter().zip(&results) {
        for (i, end) in f.wave_ends.iter().enumerate() {
            let (what, right) = &f.status_right[i + 1];
            let until = *end + right.unwrap_or(Duration::from_secs(120));
            let right = right.map_or("never".into(), |t| format!("{:.1} s", t.as_secs_f64()));
            println!("  {l} {what}: right after {right}; {}", status_writes_after(&audit_log, l, *end, until));
        }
    }
    println!("\nrequests by resource:");
    for (l, r) in labels.iter().zip(&requests) {
        println!("  {l}: {r:?}");
    }
    drop(cp);
}
