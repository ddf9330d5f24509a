//! The operator's one HTTPS listener (port 8443): the webhook, health, and whatever other
//! routers `main` merges in (the sidecar API). TLS 1.2 and 1.3 through rustls; HTTP/1.1 with
//! keep-alive, because the API server reuses its connections to a webhook.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::tls::CertSource;
use crate::Error;

/// A client that has not finished its handshake by then is dropped (it holds a task, not the
/// accept loop).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// hyper starts this clock whenever a connection waits for a request, so it is also how long an
/// idle kept-alive connection stays open. Longer than the API server's own idle timeout (Go's
/// 90 s): the client closes first, so it never sends on a connection we are closing (a POST
/// is not retried).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Binds `addr` and serves `router` over HTTPS with the certificate of `tls`. Runs until the
/// future is dropped.
pub async fn serve(addr: SocketAddr, tls: CertSource, router: Router) -> Result<(), Error> {
    let listener = TcpListener::bind(addr).await.map_err(|e| Error::io(format!("bind {addr}"), e))?;
    serve_on(listener, tls, router).await
}

/// [`serve`] on a listener already bound (tests bind port 0 and read the port first).
/// Dropping the future closes the listener and every open connection.
pub async fn serve_on(listener: TcpListener, tls: CertSource, router: Router) -> Result<(), Error> {
    let acceptor = TlsAcceptor::from(Arc::new(server_config(&tls)?));
    // Connections live in a JoinSet owned by this future: dropping it (shutdown, a test that
    // stops the server) aborts them all, so no kept-alive connection outlives the server.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let mut cert_changes = tls.changes();
        connections.spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(IDLE_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            cert_changes.mark_unchanged();
            // When the certificate changes, the connection finishes its request in flight and
            // closes: clients reconnect and check the new certificate (and a kept-alive
            // connection never outlives the certificate it was opened with).
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = cert_changes.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

fn server_config(tls: &CertSource) -> Result<rustls::ServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(tls.resolver());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
