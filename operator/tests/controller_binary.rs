//! The `dumpwatch-operator` binary itself, two replicas on the real kube-apiserver: one leads
//! (Lease, `dumpwatch_operator_leader 1` on its /metrics) and reconciles, the other only serves
//! metrics; killed, the leader is replaced once the Lease expires; SIGTERM releases the Lease
//! and exits cleanly. Both serve HTTPS with the one serving certificate the first of them
//! provisioned in the shared Secret.

mod controller_support;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use api::DumpPolicy;
use controller_support::{client, eventually, start, stop};
use harness::{ControlPlane, Options};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

struct Replica {
    name: &'static str,
    port: u16,
    webhook_port: u16,
    child: Child,
}

fn spawn(cp: &ControlPlane, name: &'static str, log_dir: &std::path::Path) -> Replica {
    let port = harness::free_port();
    let webhook_port = harness::free_port();
    let log = std::fs::File::create(log_dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dumpwatch-operator"))
        .env("KUBECONFIG", cp.kubeconfig())
        .env("POD_NAMESPACE", "default")
        .env("POD_NAME", name)
        .env("DUMPWATCH_LOG", "info")
        .args(["--metrics-addr", &format!("127.0.0.1:{port}"), "--lease-duration", "3s"])
        .args(["--webhook-addr", &format!("127.0.0.1:{webhook_port}"), "--extra-san", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Replica { name, port, webhook_port, child }
}

/// `dumpwatch_operator_leader` from the replica's /metrics.
fn leader_gauge(port: u16) -> Result<u8, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    body.lines()
        .find_map(|l| l.strip_prefix("dumpwatch_operator_leader "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no leader gauge in {body}"))
}

async fn holder(api: &Api<Lease>) -> Result<String, String> {
    let lease = api.get_opt("dumpwatch-operator-leader").await.map_err(|e| e.to_string())?;
    lease.and_then(|l| l.spec?.holder_identity).ok_or_else(|| "no holder".into())
}

/// The policy controller (leader only) has written the status of `name`.
async fn reconciled(policies: &Api<DumpPolicy>, name: &str) {
    eventually(&format!("status of policy {name}"), Duration::from_secs(30), || async {
        let p = policies.get(name).await.map_err(|e| e.to_string())?;
        p.status.and_then(|s| s.observed_generation).map(|_| ()).ok_or_else(|| "no status".to_string())
    })
    .await;
}

fn policy(name: &str) -> String {
    format!(
        "apiVersion: dumpwatch.dev/v1alpha1\nkind: DumpPolicy\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{selector: {{matchLabels: {{app: {name}}}}}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operator_replicas_elect_one_leader_and_hand_over() {
    let cp = start(Options { controller_manager: false, node_agent: false, ..Options::default() }).await;
    cp.install_dumpwatch_crds().unwrap();
    let client = client(&cp).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let policies: Api<DumpPolicy> = Api::namespaced(client.clone(), "default");
    let logs = tempfile::tempdir().unwrap();
    let mut replicas = [spawn(&cp, "operator-a", logs.path()), spawn(&cp, "operator-b", logs.path())];

    let leader = eventually("a leader", Duration::from_secs(60), || async { holder(&leases).await }).await;
    let (lead, follow) = if replicas[0].name == leader { (0, 1) } else { (1, 0) };
    eventually("metrics say who leads", Duration::from_secs(30), || {
        let ports = (replicas[lead].port, replicas[follow].port);
        async move {
            match (leader_gauge(ports.0)?, leader_gauge(ports.1)?) {
                (1, 0) => Ok(()),
                other => Err(format!("leader gauges {other:?}")),
            }
        }
    })
    .await;
    cp.apply(&policy("first")).unwrap();
    reconciled(&policies, "first").await;

    // Every replica serves HTTPS, with the certificate of the one Secret they share.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let (ca, serving) = eventually("the webhook certificate secret", Duration::from_secs(30), || async {
        let secret = secrets.get_opt("dumpwatch-operator-tls").await.map_err(|e| e.to_string())?;
        let secret = secret.ok_or("no secret yet")?;
        let (ca, serving) = operator::webhook::provision::read_secret(&secret)?;
        Ok((ca, serving.ok_or("no serving certificate")?))
    })
    .await;
    for r in &replicas {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], r.webhook_port));
        let served = eventually(&format!("HTTPS on {}", r.name), Duration::from_secs(30), || {
            let ca = ca.cert.clone();
            async move { support::https::connect(addr, "127.0.0.1", &ca).await.map_err(|e| e.to_string()) }
        })
        .await;
        let pem_serial = operator::webhook::certs::inspect(&serving.cert).unwrap().serial;
        assert_eq!(
            operator::webhook::certs::inspect_der(&served.server_cert).unwrap().serial,
            pem_serial,
            "{}",
            r.name
        );
    }

    // SIGKILL: no release, the follower waits out the Lease and takes over the controllers.
    replicas[lead].child.kill().unwrap();
    replicas[lead].child.wait().unwrap();
    let next = eventually("the follower leads", Duration::from_secs(30), || async {
        let h = holder(&leases).await?;
        if h == leader { Err("still the dead leader".into()) } else { Ok(h) }
    })
    .await;
    assert_eq!(next, replicas[follow].name);
    let port = replicas[follow].port;
    eventually("its metrics say so", Duration::from_secs(30), || async move {
        if leader_gauge(port)? == 1 { Ok(()) } else { Err("gauge 0".into()) }
    })
    .await;
    cp.apply(&policy("second")).unwrap();
    reconciled(&policies, "second").await;

    // SIGTERM: a clean exit that gives the Lease up.
    let pid = replicas[follow].child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = eventually("exit after SIGTERM", Duration::from_secs(20), || {
        let r = replicas[follow].child.try_wait().map_err(|e| e.to_string());
        async move { r?.ok_or_else(|| "running".to_string()) }
    })
    .await;
    let log = std::fs::read_to_string(logs.path().join(format!("{}.log", replicas[follow].name))).unwrap();
    assert!(status.success(), "exit status {status:?}\n{log}");
    assert_eq!(holder(&leases).await, Err("no holder".into()), "released on shutdown\n{log}");
    stop(cp).await;
}
