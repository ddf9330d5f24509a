//! Storage over HTTP(S) on reqwest, the workspace's one HTTP client stack: the operator's own S3
//! calls, and the PUTs and GETs of presigned URLs (the sidecar's uploads, tests, downloads). No
//! credentials pass through here; every request is a presigned URL. Refusals become
//! [`Error::S3`] with S3's code, so callers decide on the kind, not on text.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, HeaderMap};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::Error;

/// A reply, its body read whole (S3 replies to control calls are small XML documents).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Replies bigger than this are cut: a reply to a control call is a few hundred bytes; a server
/// that sends megabytes is not an S3 server we can talk to.
const MAX_REPLY: usize = 1 << 20;

/// A connection pool for storage URLs (S3 endpoints, public roots). Cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    /// TLS (rustls, the web's public roots built in) and plain HTTP (test servers, in-cluster
    /// endpoints). A connection must open within 10 s and a read progress within 60 s.
    pub fn new() -> Self {
        let inner = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            // Building fails only when the TLS backend or the system resolver configuration cannot
            // load; rustls with built-in roots and the default resolver read nothing at build.
            .expect("a rustls client with built-in roots builds");
        Self { inner }
    }

    /// Sends `method url` with `body` and reads the reply, all within `timeout`.
    pub async fn send(
        &self,
        operation: &'static str,
        method: reqwest::Method,
        url: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, Error> {
        let len = body.len() as u64;
        let req = self.request(method, url, len).body(body).timeout(timeout);
        let resp = req.send().await.map_err(|e| transport(operation, &e))?;
        read_reply(operation, resp).await
    }

    fn request(&self, method: reqwest::Method, url: &str, len: u64) -> reqwest::RequestBuilder {
        // Content-Type is not signed, but moto stores an empty object for a form-encoded body.
        self.inner.request(method, url).header(CONTENT_LENGTH, len).header(CONTENT_TYPE, "application/octet-stream")
    }

    /// PUTs exactly `len` bytes from `body` to a presigned URL (an upload URL signs its length);
    /// returns the object's (or part's) `ETag`, which completing a multipart upload needs.
    pub async fn put_stream(&self, url: &str, len: u64, body: reqwest::Body) -> Result<String, Error> {
        let operation = "presigned PUT";
        let resp = self.request(reqwest::Method::PUT, url, len).body(body).send().await;
        let reply = read_reply(operation, resp.map_err(|e| transport(operation, &e))?).await?;
        etag_of(operation, reply)
    }

    /// PUTs `len` bytes of `path` from `offset` to a presigned URL, streaming from the file.
    pub async fn put_file_range(&self, url: &str, path: &Path, offset: u64, len: u64) -> Result<String, Error> {
        let io = |what: &str| {
            let what = format!("{what} {}", path.display());
            move |source| Error::Io { what, source }
        };
        let mut file = tokio::fs::File::open(path).await.map_err(io("opening"))?;
        file.seek(std::io::SeekFrom::Start(offset)).await.map_err(io("seeking in"))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 1 << 20);
        self.put_stream(url, len, reqwest::Body::wrap_stream(stream)).await
    }

    /// PUTs `body` to a presigned URL; returns the `ETag`.
    pub async fn put_bytes(&self, url: &str, body: Bytes, timeout: Duration) -> Result<String, Error> {
        let reply = self.send("presigned PUT", reqwest::Method::PUT, url, body, timeout).await?;
        etag_of("presigned PUT", reply)
    }

    /// GETs a presigned URL into the file `dst`, streaming; returns the bytes written. A refusal
    /// or a broken transfer leaves no file behind.
    pub async fn get_to_file(&self, url: &str, dst: &Path) -> Result<u64, Error> {
        let operation = "presigned GET";
        let mut resp = self.inner.get(url).send().await.map_err(|e| transport(operation, &e))?;
        if !resp.status().is_success() {
            let reply = read_reply(operation, resp).await?;
            return Err(crate::s3::refusal(operation, "", &reply));
        }
        let io = |what: &'static str| {
            let what = format!("{what} {}", dst.display());
            move |source| Error::Io { what, source }
        };
        let mut file = tokio::fs::File::create(dst).await.map_err(io("creating"))?;
        let mut written = 0u64;
        let result = async {
            while let Some(chunk) = resp.chunk().await.map_err(|e| transport(operation, &e))? {
                file.write_all(&chunk).await.map_err(io("writing"))?;
                written += chunk.len() as u64;
            }
            file.flush().await.map_err(io("flushing"))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(dst).await;
        }
        result.map(|()| written)
    }
}

/// The reply with its body, at most [`MAX_REPLY`] bytes of it.
async fn read_reply(operation: &'static str, mut resp: reqwest::Response) -> Result<Reply, Error> {
    let status = resp.status().as_u16();
    let headers = std::mem::take(resp.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(operation, &e))? {
        body.extend_from_slice(&chunk[..chunk.len().min(MAX_REPLY - body.len())]);
        if body.len() == MAX_REPLY {
            break;
        }
    }
    Ok(Reply { status, headers, body: body.into() })
}

/// A request that got no reply: the server is away, TLS failed, the time ran out. The text is
/// the whole cause chain with any presigned signature cut out.
fn transport(operation: &'static str, e: &reqwest::Error) -> Error {
    Error::Http { operation, detail: crate::redact::error_chain(e) }
}

fn etag_of(operation: &'static str, reply: Reply) -> Result<String, Error> {
    if !(200..300).contains(&reply.status) {
        return Err(crate::s3::refusal(operation, "", &reply));
    }
    let etag = reply.headers.get(ETAG).and_then(|v| v.to_str().ok());
    etag.map(str::to_owned)
        .ok_or_else(|| Error::BadReply { operation, detail: format!("{} without an ETag", reply.status) })
}
