//! The webhook server over real HTTPS on loopback, with AdmissionReviews as kube-apiserver sends
//! them: routes, keep-alive, TLS versions, and certificates swapped while it runs (a rotation,
//! cert-manager files re-mounted) without a restart.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::{DumpPolicy, DumpPolicySpec};
use axum::body::Bytes;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use operator::webhook::certs::{self, CertPem};
use operator::webhook::{self, CertSource, WebhookState};
use operator::{SIDECAR_NAME, SidecarSettings};
use serde_json::Value;
use time::OffsetDateTime;

const CREATE: &[u8] = include_bytes!("../src/webhook/testdata/pod-create.json");

fn orders_policy() -> DumpPolicy {
    let mut p = DumpPolicy::new("orders", DumpPolicySpec::from_yaml("selector: {matchLabels: {app: orders}}").unwrap());
    p.metadata.namespace = Some("shop".into());
    p
}

fn issue(ca: &CertPem) -> CertPem {
    certs::issue_serving(ca, &["127.0.0.1".into()], OffsetDateTime::now_utc(), certs::SERVING_VALIDITY).unwrap()
}

struct Server {
    addr: SocketAddr,
    ca: CertPem,
    certs: CertSource,
    _writer: Writer<DumpPolicy>,
    task: tokio::task::JoinHandle<()>,
}

/// The server with one policy in its cache (fed as the reflector would: an initial list).
async fn start(certs: CertSource, ca: CertPem, policies: Vec<DumpPolicy>) -> Server {
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for p in policies {
        writer.apply_watcher_event(&watcher::Event::InitApply(p));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let state = WebhookState {
        policies: store,
        sidecar: SidecarSettings::default(),
        certs: certs.clone(),
        latency: operator::webhook::latency_histogram(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = webhook::router(state);
    let task = tokio::spawn({
        let certs = certs.clone();
        async move { webhook::serve_on(listener, certs, router).await.unwrap() }
    });
    Server { addr, ca, certs, _writer: writer, task }
}

async fn self_signed_server() -> Server {
    let ca = certs::generate_ca(OffsetDateTime::now_utc()).unwrap();
    let certs = CertSource::empty();
    certs.set(&issue(&ca), &ca.cert).unwrap();
    start(certs, ca, vec![orders_policy()]).await
}

fn serial(der: &[u8]) -> Vec<u8> {
    certs::inspect_der(der).unwrap().serial
}

#[tokio::test]
async fn admission_reviews_health_and_readiness_over_one_kept_alive_connection() {
    let server = self_signed_server().await;
    let mut conn = support::https::connect(server.addr, "127.0.0.1", &server.ca.cert).await.unwrap();
    assert_eq!(conn.tls_version, "Some(TLSv1_3)");

    let (status, body) = conn.request("GET", "/healthz", Bytes::new()).await.unwrap();
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));
    let (status, _) = conn.request("GET", "/readyz", Bytes::new()).await.unwrap();
    assert_eq!(status, 200);

    // Many reviews on the same connection (the API server reuses its connections).
    for _ in 0..20 {
        let (status, body) = conn.request("POST", "/mutate", Bytes::from_static(CREATE)).await.unwrap();
        assert_eq!(status, 200);
        let review: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(review["response"]["allowed"], true);
        let patch: Vec<u8> = serde_json::from_value(review["response"]["patch"].clone()).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut pod: Value = serde_json::from_slice::<Value>(CREATE).unwrap()["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch.0).unwrap();
        assert_eq!(pod["spec"]["containers"][1]["name"], SIDECAR_NAME);
        // The CA the server presents is the one the sidecar is told to trust.
        let env = pod["spec"]["containers"][1]["env"].as_array().unwrap();
        let ca = env.iter().find(|e| e["name"] == "DUMPWATCH_OPERATOR_CA").unwrap();
        assert_eq!(ca["value"].as_str(), Some(server.ca.cert.as_str()));
    }
    // Not an AdmissionReview: 400, and the connection stays usable.
    let (status, _) = conn.request("POST", "/mutate", Bytes::from_static(b"{}")).await.unwrap();
    assert_eq!(status, 400);
    let (status, _) = conn.request("GET", "/healthz", Bytes::new()).await.unwrap();
    assert_eq!(status, 200);
    let (status, _) = conn.request("GET", "/nope", Bytes::new()).await.unwrap();
    assert_eq!(status, 404);
    server.task.abort();
}

#[tokio::test]
async fn tls_1_2_is_served_and_an_untrusted_ca_is_refused() {
    let server = self_signed_server().await;
    // A client that offers TLS 1.2 only.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    roots.add(CertificateDer::from_pem_slice(server.ca.cert.as_bytes()).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(tls.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));

    let stranger = certs::generate_ca(OffsetDateTime::now_utc()).unwrap();
    assert!(support::https::connect(server.addr, "127.0.0.1", &stranger.cert).await.is_err());
    assert!(support::https::connect(server.addr, "localhost", &server.ca.cert).await.is_err(), "not a SAN");
    server.task.abort();
}

#[tokio::test]
async fn a_new_certificate_is_served_from_the_next_handshake_and_open_connections_close() {
    let server = self_signed_server().await;
    let mut old = support::https::connect(server.addr, "127.0.0.1", &server.ca.cert).await.unwrap();
    let before = serial(&old.server_cert);
    assert_eq!(old.request("GET", "/healthz", Bytes::new()).await.unwrap().0, 200);

    let rotated = issue(&server.ca);
    server.certs.set(&rotated, &server.ca.cert).unwrap();
    let new = support::https::connect(server.addr, "127.0.0.1", &server.ca.cert).await.unwrap();
    assert_ne!(serial(&new.server_cert), before);
    assert_eq!(serial(&new.server_cert), certs::inspect(&rotated.cert).unwrap().serial);
    // The connection opened with the old certificate is closed by the server (idle: at once).
    let mut closed = false;
    for _ in 0..50 {
        if old.request("GET", "/healthz", Bytes::new()).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the kept-alive connection of the old certificate was closed");

    // A broken certificate is refused and the current one stays.
    let broken = CertPem { cert: rotated.cert.clone(), key: issue(&server.ca).key };
    assert!(server.certs.set(&broken, &server.ca.cert).is_err(), "a key of another certificate");
    let again = support::https::connect(server.addr, "127.0.0.1", &server.ca.cert).await.unwrap();
    assert_eq!(serial(&again.server_cert), serial(&new.server_cert));
    server.task.abort();
}

#[tokio::test]
async fn cert_manager_files_are_loaded_and_reloaded_when_the_secret_is_remounted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::generate_ca(OffsetDateTime::now_utc()).unwrap();
    let write = |serving: &CertPem| {
        std::fs::write(dir.path().join("tls.crt"), &serving.cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), &serving.key).unwrap();
        std::fs::write(dir.path().join("ca.crt"), &ca.cert).unwrap();
    };
    let first = issue(&ca);
    write(&first);
    let source = CertSource::empty();
    assert!(source.reload_dir(dir.path()).unwrap(), "loaded");
    assert!(!source.reload_dir(dir.path()).unwrap(), "unchanged files: nothing to do");
    assert_eq!(source.ca_pem(), ca.cert);
    let server = start(source.clone(), ca.clone(), vec![orders_policy()]).await;
    tokio::spawn(source.clone().watch_dir(dir.path().to_path_buf(), Duration::from_millis(100)));

    let conn = support::https::connect(server.addr, "127.0.0.1", &ca.cert).await.unwrap();
    assert_eq!(serial(&conn.server_cert), certs::inspect(&first.cert).unwrap().serial);

    // Half-written files (a key that does not match) are not loaded; the old certificate stays.
    let second = issue(&ca);
    std::fs::write(dir.path().join("tls.crt"), &second.cert).unwrap();
    assert!(source.reload_dir(dir.path()).is_err());
    // Then the files become consistent: the watcher picks them up.
    write(&second);
    let wanted = certs::inspect(&second.cert).unwrap().serial;
    let mut served = Vec::new();
    for _ in 0..100 {
        served = serial(&support::https::connect(server.addr, "127.0.0.1", &ca.cert).await.unwrap().server_cert);
        if served == wanted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served, wanted, "the re-mounted certificate is served without a restart");
    server.task.abort();
}

#[tokio::test]
async fn readiness_waits_for_a_certificate_and_the_policy_cache() {
    let ca = certs::generate_ca(OffsetDateTime::now_utc()).unwrap();
    let certs = CertSource::empty();
    assert!(!certs.is_loaded());
    // A certificate, but a policy cache that never listed.
    let (store, _writer) = reflector::store::<DumpPolicy>();
    let state = WebhookState {
        policies: store,
        sidecar: SidecarSettings::default(),
        certs: certs.clone(),
        latency: operator::webhook::latency_histogram(),
    };
    certs.set(&issue(&ca), &ca.cert).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(webhook::serve_on(listener, certs, webhook::router(state)));
    let mut conn = support::https::connect(addr, "127.0.0.1", &ca.cert).await.unwrap();
    let (status, body) = conn.request("GET", "/readyz", Bytes::new()).await.unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    // An admission before the first list waits a little, then answers allowed, unchanged.
    let (status, body) = conn.request("POST", "/mutate", Bytes::from_static(CREATE)).await.unwrap();
    assert_eq!(status, 200);
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((review["response"]["allowed"].as_bool(), review["response"].get("patch")), (Some(true), None));
    task.abort();
}

#[tokio::test]
async fn readiness_waits_for_the_ca_in_the_ca_bundle_when_we_write_it() {
    let ca = certs::generate_ca(OffsetDateTime::now_utc()).unwrap();
    let certs = CertSource::awaiting_ca_bundle();
    certs.set(&issue(&ca), &ca.cert).unwrap();
    let server = start(certs.clone(), ca.clone(), vec![orders_policy()]).await;
    let mut conn = support::https::connect(server.addr, "127.0.0.1", &ca.cert).await.unwrap();
    let (status, body) = conn.request("GET", "/readyz", Bytes::new()).await.unwrap();
    assert_eq!(status, 503, "served, but the API server could not verify it yet");
    assert!(String::from_utf8_lossy(&body).contains("its CA in the caBundle: false"), "{body:?}");
    // Another CA in the caBundle (the Secret was replaced since) is not ours either.
    let other = certs::generate_ca(OffsetDateTime::now_utc()).unwrap();
    certs.ca_bundle_holds(&other.cert);
    assert_eq!(conn.request("GET", "/readyz", Bytes::new()).await.unwrap().0, 503);
    certs.ca_bundle_holds(&ca.cert);
    let (status, body) = conn.request("GET", "/readyz", Bytes::new()).await.unwrap();
    assert_eq!(status, 200, "{body:?}");
    server.task.abort();
}
