#![allow(dead_code)] // shared by the tests and the benchmark, each using part of it
//! A minimal HTTPS/1.1 client for the webhook tests and the benchmark: one kept-alive
//! connection, trusting only the given CA, reporting which certificate the server presented.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// DER of the certificate the server presented at the handshake.
    pub server_cert: Vec<u8>,
    pub tls_version: String,
}

/// Opens a TLS connection to `addr` checking its certificate for `server_name` against `ca_pem`.
pub async fn connect(addr: std::net::SocketAddr, server_name: &str, ca_pem: &str) -> std::io::Result<Connection> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(std::io::Error::other)?).map_err(std::io::Error::other)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server_name.to_string()).map_err(std::io::Error::other)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    let (_, session) = tls.get_ref();
    let server_cert = session.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    let tls_version = format!("{:?}", session.protocol_version());
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(Connection { sender, server_cert, tls_version })
}

impl Connection {
    /// Sends one request on this connection and reads the whole answer.
    pub async fn request(&mut self, method: &str, path: &str, body: Bytes) -> std::io::Result<(u16, Bytes)> {
        self.sender.ready().await.map_err(std::io::Error::other)?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "webhook")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(std::io::Error::other)?;
        let resp = self.sender.send_request(req).await.map_err(std::io::Error::other)?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(std::io::Error::other)?.to_bytes();
        Ok((status, body))
    }
}
