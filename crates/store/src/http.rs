//! A small HTTP(S) client over hyper (the stack kube already builds): the operator's own S3
//! calls, and the uploader's PUTs to presigned URLs. No credentials pass through here; requests
//! are presigned URLs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::Error;

type Body = BoxBody<Bytes, std::io::Error>;

/// A reply, its body read whole (S3 replies to our calls are small XML documents).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// Replies bigger than this are cut: a reply to a control call is a few hundred bytes; a server
/// that sends megabytes is not an S3 server we can talk to.
const MAX_REPLY: usize = 1 << 20;

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// TLS with the system's roots (ring); plain HTTP too (test servers, in-cluster endpoints).
    pub fn new() -> Self {
        let mut roots = rustls::RootCertStore::empty();
        // A machine without a CA bundle can still talk plain HTTP: errors here only mean fewer roots.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        Self { inner: Client::builder(TokioExecutor::new()).build(connector) }
    }

    /// Sends `method url` with `body` and reads the reply, all within `timeout`.
    pub async fn send(
        &self,
        operation: &'static str,
        method: http::Method,
        url: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        let len = body.len();
        let body = Full::new(body).map_err(|never| match never {}).boxed();
        let req = request(operation, method, url, len as u64, body)?;
        tokio::time::timeout(timeout, self.exchange(operation, req))
            .await
            .map_err(|_| Error::Http { operation, detail: format!("no reply within {timeout:?}") })?
    }

    async fn exchange(&self, operation: &'static str, req: http::Request<Body>) -> Result<Reply, Error> {
        let resp = self.inner.request(req).await.map_err(|e| Error::Http { operation, detail: chain(&e) })?;
        let (parts, body) = resp.into_parts();
        let body = http_body_util::Limited::new(body, MAX_REPLY)
            .collect()
            .await
            .map_err(|e| Error::Http { operation, detail: format!("reading the reply: {e}") })?
            .to_bytes();
        Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
    }

    /// PUTs `len` bytes of `path` from `offset` to a presigned URL, streaming from the file. Returns
    /// the object's (or part's) `ETag`, which completing a multipart upload needs.
    pub async fn put_file_range(&self, url: &str, path: &Path, offset: u64, len: u64) -> Result<String, Error> {
        let operation = "presigned PUT";
        let io = |what: &str| {
            let what = format!("{what} {}", path.display());
            move |source| Error::Io { what, source }
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io("opening"))?;
        file.seek(std::io::SeekFrom::Start(offset)).await.map_err(io("seeking in"))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 1 << 20);
        let body = StreamBody::new(stream.map_ok(hyper::body::Frame::data)).boxed();
        let req = request(operation, http::Method::PUT, url, len, body)?;
        let reply = self.exchange(operation, req).await?;
        etag_of(operation, reply)
    }

    /// GETs a presigned URL into the file `dst`, streaming; returns the bytes written. A refusal
    /// leaves no file behind.
    pub async fn get_to_file(&self, url: &str, dst: &Path) -> Result<u64, Error> {
        use tokio::io::AsyncWriteExt;
        let operation = "presigned GET";
        let empty = Full::new(Bytes::new()).map_err(|never| match never {}).boxed();
        let req = request(operation, http::Method::GET, url, 0, empty)?;
        let resp = self.inner.request(req).await.map_err(|e| Error::Http { operation, detail: chain(&e) })?;
        let (parts, mut body) = resp.into_parts();
        if !parts.status.is_success() {
            let body = http_body_util::Limited::new(body, MAX_REPLY).collect().await.map(|b| b.to_bytes());
            let reply = Reply { status: parts.status.as_u16(), headers: parts.headers, body: body.unwrap_or_default() };
            return Err(crate::s3::refusal(operation, "", &reply));
        }
        let io = |what: &'static str| {
            let what = format!("{what} {}", dst.display());
            move |source| Error::Io { what, source }
        };
        let mut file = tokio::fs::File::create(dst).await.map_err(io("creating"))?;
        let mut written = 0u64;
        let result = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| Error::Http { operation, detail: format!("reading the body: {e}") })?;
                if let Ok(data) = frame.into_data() {
                    file.write_all(&data).await.map_err(io("writing"))?;
                    written += data.len() as u64;
                }
            }
            file.flush().await.map_err(io("flushing"))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(dst).await;
        }
        result.map(|()| written)
    }

    /// PUTs `body` to a presigned URL; returns the `ETag`.
    pub async fn put_bytes(&self, url: &str, body: Bytes, timeout: Duration) -> Result<String, Error> {
        let reply = self.send("presigned PUT", http::Method::PUT, url, body, timeout).await?;
        etag_of("presigned PUT", reply)
    }
}

fn request(
    operation: &'static str,
    method: http::Method,
    url: &str,
    len: u64,
    body: Body,
) -> Result<http::Request<Body>, Error> {
    // Content-Type is not signed, but moto stores an empty object for a form-encoded body.
    http::Request::builder()
        .method(method)
        .uri(url)
        .header(http::header::CONTENT_LENGTH, len)
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(body)
        .map_err(|e| Error::Http { operation, detail: format!("bad URL {url:?}: {e}") })
}

fn etag_of(operation: &'static str, reply: Reply) -> Result<String, Error> {
    if !(200..300).contains(&reply.status) {
        return Err(crate::s3::refusal(operation, "", &reply));
    }
    let etag = reply.headers.get(http::header::ETAG).and_then(|v| v.to_str().ok());
    etag.map(str::to_owned)
        .ok_or_else(|| Error::BadReply { operation, detail: format!("{} without an ETag", reply.status) })
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
