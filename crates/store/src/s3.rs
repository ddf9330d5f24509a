//! S3-compatible object storage: presigned PUT/GET/UploadPart URLs for those who hold no
//! credentials (the sidecar, the analysis Job), and the calls only the credential holder makes
//! (create, complete and abort multipart uploads; delete; head).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Serialize};

use crate::http::{HttpClient, Reply};
use crate::sigv4::{self, Credentials};
use crate::{Error, ObjectInfo};

/// Default part size of multipart uploads; objects above it are uploaded in parts.
pub const DEFAULT_PART_SIZE: u64 = 64 << 20;
/// S3 limits: at most 10 000 parts, 5 TiB per object.
pub const MAX_PARTS: u64 = 10_000;
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;
/// Control calls (create/complete/abort, delete, head) answer within this, or fail.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the objects are. Credentials are separate ([`Credentials`]): the operator reads them
/// from a Secret, and they never leave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Config {
    /// `https://s3.eu-west-1.amazonaws.com`, `http://minio.storage:9000`, ...
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Key prefix, without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// `https://endpoint/bucket/key` (most S3-compatible servers) rather than
    /// `https://bucket.endpoint/key` (AWS's default).
    pub path_style: bool,
}

/// The three parts of an endpoint URL that signing needs.
#[derive(Debug, Clone)]
struct Endpoint {
    scheme: String,
    /// host[:port], as sent in `Host`.
    host: String,
    /// base path without a trailing `/` (usually empty).
    base: String,
}

/// A started multipart upload: the uploader PUTs part `i` (from byte `i * part_size`) to
/// `parts[i]`, then asks the credential holder to complete it with the parts' ETags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MultipartUpload {
    pub upload_id: String,
    pub part_size: u64,
    pub parts: Vec<String>,
}

pub struct S3Store {
    config: S3Config,
    endpoint: Endpoint,
    credentials: Credentials,
    http: HttpClient,
    part_size: u64,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store").field("config", &self.config).field("part_size", &self.part_size).finish()
    }
}

impl S3Store {
    pub fn new(config: S3Config, credentials: Credentials) -> Result<Self, Error> {
        let endpoint = parse_endpoint(&config.endpoint)?;
        if config.bucket.is_empty() || config.bucket.contains('/') {
            return Err(Error::InvalidConfig(format!("bucket {:?} is not a bucket name", config.bucket)));
        }
        if !config.path_style && endpoint.host.parse::<std::net::SocketAddr>().is_ok() {
            return Err(Error::InvalidConfig("an IP endpoint needs path-style addressing".into()));
        }
        let mut config = config;
        config.prefix = config.prefix.trim_matches('/').to_string();
        Ok(Self { config, endpoint, credentials, http: HttpClient::new(), part_size: DEFAULT_PART_SIZE })
    }

    /// Share one HTTP client (connection pool, TLS roots) between stores.
    pub fn with_http(mut self, http: HttpClient) -> Self {
        self.http = http;
        self
    }

    /// Parts of this size (the last one smaller); tests use small parts. S3 itself refuses parts
    /// under 5 MiB except the last.
    pub fn with_part_size(mut self, bytes: u64) -> Self {
        self.part_size = bytes.max(1);
        self
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// `<prefix>/<segments...>`, each segment stripped of `/` so that no caller-provided name
    /// escapes its directory.
    pub fn key(&self, segments: &[&str]) -> String {
        let parts = segments.iter().map(|s| s.replace('/', "_"));
        std::iter::once(self.config.prefix.clone()).filter(|p| !p.is_empty()).chain(parts).collect::<Vec<_>>().join("/")
    }

    /// `s3://bucket/key`.
    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.config.bucket)
    }

    /// Presigned `PUT` of one whole object of exactly `size` bytes (the length is signed).
    pub fn presign_put(&self, key: &str, size: u64, expires: Duration) -> String {
        self.sign_upload(key, &[], size, expires)
    }

    /// Presigned `GET` (for the analysis Job).
    pub fn presign_get(&self, key: &str, expires: Duration) -> String {
        self.sign(Method::GET, key, &[], expires)
    }

    /// Presigned `PUT` of part `number` (1-based) of a multipart upload, of exactly `len` bytes.
    pub fn presign_part(&self, key: &str, upload_id: &str, number: u32, len: u64, expires: Duration) -> String {
        self.sign_upload(key, &[("partNumber", &number.to_string()), ("uploadId", upload_id)], len, expires)
    }

    /// Starts a multipart upload of `size` bytes and presigns a URL per part. The part size
    /// grows when `size` would need more than 10 000 parts.
    pub async fn create_multipart(&self, key: &str, size: u64, expires: Duration) -> Result<MultipartUpload, Error> {
        let part_size = part_size_for(size, self.part_size)?;
        let url = self.sign(Method::POST, key, &[("uploads", "")], CALL_TIMEOUT);
        let reply = self.http.send("CreateMultipartUpload", Method::POST, &url, Bytes::new(), CALL_TIMEOUT).await?;
        let reply = ok_or_refusal("CreateMultipartUpload", key, reply)?;
        let upload_id = xml_text(&reply.body, "UploadId").ok_or_else(|| Error::BadReply {
            operation: "CreateMultipartUpload",
            detail: format!("no UploadId in {}", String::from_utf8_lossy(&reply.body)),
        })?;
        let count = size.div_ceil(part_size).max(1);
        let parts = (1..=count)
            .map(|n| {
                let len = part_size.min(size - (n - 1) * part_size);
                self.presign_part(key, &upload_id, n as u32, len, expires)
            })
            .collect();
        Ok(MultipartUpload { upload_id, part_size, parts })
    }

    /// Completes a multipart upload: `etags[i]` is the ETag S3 gave part `i + 1`.
    pub async fn complete_multipart(&self, key: &str, upload_id: &str, etags: &[String]) -> Result<(), Error> {
        let op = "CompleteMultipartUpload";
        if etags.is_empty() || etags.len() as u64 > MAX_PARTS {
            return Err(Error::InvalidRequest(format!("{} parts (1 to {MAX_PARTS} allowed)", etags.len())));
        }
        let mut body = String::from("<CompleteMultipartUpload>");
        for (i, etag) in etags.iter().enumerate() {
            let etag = quick_xml::escape::escape(etag.as_str());
            body.push_str(&format!("<Part><PartNumber>{}</PartNumber><ETag>{etag}</ETag></Part>", i + 1));
        }
        body.push_str("</CompleteMultipartUpload>");
        let url = self.sign(Method::POST, key, &[("uploadId", upload_id)], CALL_TIMEOUT);
        let reply = self.http.send(op, Method::POST, &url, Bytes::from(body), CALL_TIMEOUT).await?;
        // S3 may answer 200 and put the error in the body (the complete took long and failed).
        let reply = ok_or_refusal(op, key, reply)?;
        if xml_text(&reply.body, "Code").is_some() {
            return Err(refusal(op, key, &reply));
        }
        Ok(())
    }

    /// Aborts a multipart upload, freeing its parts.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), Error> {
        let url = self.sign(Method::DELETE, key, &[("uploadId", upload_id)], CALL_TIMEOUT);
        let reply = self.http.send("AbortMultipartUpload", Method::DELETE, &url, Bytes::new(), CALL_TIMEOUT).await?;
        ok_or_refusal("AbortMultipartUpload", key, reply).map(drop)
    }

    /// Deletes an object; deleting one that does not exist succeeds (S3 semantics, and what a
    /// finalizer that runs twice needs).
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let url = self.sign(Method::DELETE, key, &[], CALL_TIMEOUT);
        let reply = self.http.send("DeleteObject", Method::DELETE, &url, Bytes::new(), CALL_TIMEOUT).await?;
        match reply.status {
            404 if xml_text(&reply.body, "Code").as_deref() != Some("NoSuchBucket") => Ok(()),
            _ => ok_or_refusal("DeleteObject", key, reply).map(drop),
        }
    }

    /// Size and ETag of an object, `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error> {
        let url = self.sign(Method::HEAD, key, &[], CALL_TIMEOUT);
        let reply = self.http.send("HeadObject", Method::HEAD, &url, Bytes::new(), CALL_TIMEOUT).await?;
        if reply.status == 404 {
            return Ok(None);
        }
        let reply = ok_or_refusal("HeadObject", key, reply)?;
        let header = |name| reply.headers.get(name).and_then(|v: &http::HeaderValue| v.to_str().ok());
        let size = header(http::header::CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::BadReply { operation: "HeadObject", detail: "no Content-Length".into() })?;
        Ok(Some(ObjectInfo { size, etag: header(http::header::ETAG).map(str::to_owned) }))
    }

    /// The key of an `s3://bucket/key` URI of this store's bucket.
    pub fn key_of<'u>(&self, uri: &'u str) -> Result<&'u str, Error> {
        let rest = uri.strip_prefix("s3://").ok_or_else(|| Error::InvalidUri(uri.to_string()))?;
        let (bucket, key) = rest.split_once('/').ok_or_else(|| Error::InvalidUri(uri.to_string()))?;
        if key.is_empty() {
            return Err(Error::InvalidUri(uri.to_string()));
        }
        if bucket != self.config.bucket {
            return Err(Error::NotThisStore { uri: uri.to_string(), store: self.uri("") });
        }
        Ok(key)
    }

    fn sign(&self, method: Method, key: &str, query: &[(&str, &str)], expires: Duration) -> String {
        self.presign(method, key, query, None, expires)
    }

    fn sign_upload(&self, key: &str, query: &[(&str, &str)], len: u64, expires: Duration) -> String {
        self.presign(Method::PUT, key, query, Some(len), expires)
    }

    fn presign(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        content_length: Option<u64>,
        expires: Duration,
    ) -> String {
        let (host, path) = if self.config.path_style {
            (self.endpoint.host.clone(), format!("{}/{}/{key}", self.endpoint.base, self.config.bucket))
        } else {
            (format!("{}.{}", self.config.bucket, self.endpoint.host), format!("{}/{key}", self.endpoint.base))
        };
        let req = sigv4::Request {
            method: method.as_str(),
            scheme: &self.endpoint.scheme,
            host: &host,
            path: &path,
            query,
            content_length,
        };
        sigv4::presign(&req, &self.credentials, &self.config.region, SystemTime::now(), expires)
    }
}

/// The part size for `size` bytes: `preferred`, grown to whole MiB when 10 000 parts would not
/// hold the object.
pub fn part_size_for(size: u64, preferred: u64) -> Result<u64, Error> {
    if size > MAX_OBJECT_SIZE {
        return Err(Error::TooLarge { size, max: MAX_OBJECT_SIZE });
    }
    let preferred = preferred.max(1);
    if size.div_ceil(preferred) <= MAX_PARTS {
        return Ok(preferred);
    }
    Ok(size.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20)
}

fn parse_endpoint(s: &str) -> Result<Endpoint, Error> {
    let bad = |why: &str| Error::InvalidConfig(format!("endpoint {s:?}: {why}"));
    let uri: http::Uri = s.parse().map_err(|e| bad(&format!("{e}")))?;
    let scheme =
        uri.scheme_str().filter(|s| *s == "http" || *s == "https").ok_or_else(|| bad("needs http:// or https://"))?;
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("credentials belong in the Secret, not in the URL"));
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    let host = match authority.port_u16() {
        Some(p) if p != default_port => format!("{}:{p}", authority.host()),
        _ => authority.host().to_string(),
    };
    if uri.query().is_some() {
        return Err(bad("no query string allowed"));
    }
    Ok(Endpoint { scheme: scheme.to_string(), host, base: uri.path().trim_end_matches('/').to_string() })
}

fn ok_or_refusal(operation: &'static str, key: &str, reply: Reply) -> Result<Reply, Error> {
    if (200..300).contains(&reply.status) { Ok(reply) } else { Err(refusal(operation, key, &reply)) }
}

/// An S3 error reply as a typed error: `<Error><Code>NoSuchBucket</Code><Message>...`. A reply
/// without XML (HEAD has no body; a proxy's HTML page) still becomes [`Error::S3`], with the
/// status as the code.
pub(crate) fn refusal(operation: &'static str, key: &str, reply: &Reply) -> Error {
    let code = xml_text(&reply.body, "Code").unwrap_or_else(|| format!("HTTP{}", reply.status));
    let message = xml_text(&reply.body, "Message")
        .unwrap_or_else(|| String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]).into_owned());
    Error::S3 { operation, key: key.to_string(), status: reply.status, code, message }
}

/// The text of the first `<tag>...</tag>` element (any namespace), unescaped; `None` when the body
/// is not XML or has no such element. S3's replies are flat (UploadId, Code, Message).
fn xml_text(body: &[u8], tag: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut inside = false;
    let mut text = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if !inside && e.local_name().as_ref() == tag.as_bytes() => inside = true,
            Event::Text(t) if inside => text.push_str(&t.unescape().ok()?),
            Event::CData(t) if inside => text.push_str(std::str::from_utf8(&t).ok()?),
            Event::End(_) if inside => return Some(text),
            Event::Eof => return None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(endpoint: &str, path_style: bool) -> Result<S3Store, Error> {
        let config = S3Config {
            endpoint: endpoint.into(),
            region: "us-east-1".into(),
            bucket: "dumps".into(),
            prefix: "/team/".into(),
            path_style,
        };
        let creds = Credentials { access_key_id: "k".into(), secret_access_key: "s".into(), session_token: None };
        S3Store::new(config, creds)
    }

    #[test]
    fn urls_follow_the_addressing_style() {
        let s = store("http://127.0.0.1:9000", true).unwrap();
        assert!(s.presign_put("team/a", 5, Duration::from_secs(60)).starts_with("http://127.0.0.1:9000/dumps/team/a?"));
        let s = store("https://s3.eu-west-1.amazonaws.com/", false).unwrap();
        let url = s.presign_get("team/a", Duration::from_secs(60));
        assert!(url.starts_with("https://dumps.s3.eu-west-1.amazonaws.com/team/a?"), "{url}");
    }

    #[test]
    fn bad_endpoints_are_refused_with_the_reason() {
        for (e, why) in [
            ("s3.amazonaws.com", "http"),
            ("ftp://x", "http"),
            ("https://user:pw@x", "Secret"),
            ("http://127.0.0.1:9000", "path-style"),
        ] {
            let err = store(e, false).unwrap_err().to_string();
            assert!(err.contains(why), "{e}: {err}");
        }
    }

    #[test]
    fn keys_keep_names_inside_their_directory() {
        let s = store("http://h", true).unwrap();
        assert_eq!(s.key(&["ns", "pod", "c1", "../core.zst"]), "team/ns/pod/c1/.._core.zst");
        assert_eq!(s.key_of("s3://dumps/team/ns/x").unwrap(), "team/ns/x");
        assert!(matches!(s.key_of("s3://other/team/x"), Err(Error::NotThisStore { .. })));
        assert!(matches!(s.key_of("file:///x"), Err(Error::InvalidUri(_))));
    }

    #[test]
    fn part_size_grows_only_past_ten_thousand_parts() {
        assert_eq!(part_size_for(100 << 20, 64 << 20).unwrap(), 64 << 20);
        let big = 1u64 << 40; // 1 TiB at 64 MiB would be 16 384 parts
        let p = part_size_for(big, 64 << 20).unwrap();
        assert!(big.div_ceil(p) <= MAX_PARTS && p.is_multiple_of(1 << 20), "{p}");
        assert!(matches!(part_size_for(6 << 40, 64 << 20), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn s3_errors_become_typed_errors() {
        let reply = Reply {
            status: 404,
            headers: Default::default(),
            body: Bytes::from_static(
                b"<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The bucket &amp; all</Message></Error>",
            ),
        };
        match refusal("PutObject", "k", &reply) {
            Error::S3 { code, message, status, .. } => {
                assert_eq!((code.as_str(), message.as_str(), status), ("NoSuchBucket", "The bucket & all", 404))
            }
            e => panic!("{e:?}"),
        }
        let garbage = Reply { status: 502, headers: Default::default(), body: Bytes::from_static(&[0xff, 0xfe]) };
        assert!(matches!(refusal("x", "k", &garbage), Error::S3 { code, .. } if code == "HTTP502"));
        let nested =
            b"<Error xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Code><![CDATA[SlowDown]]></Code></Error>";
        assert_eq!(xml_text(nested, "Code").as_deref(), Some("SlowDown"));
        assert_eq!(xml_text(b"<Error><Message>a</Message></Error>", "Code"), None);
    }

    #[test]
    fn part_urls_sign_each_parts_length() {
        let s = store("http://127.0.0.1:9000", true).unwrap();
        let a = s.presign_part("k", "u", 1, 5 << 20, Duration::from_secs(60));
        let b = s.presign_part("k", "u", 1, 1 << 20, Duration::from_secs(60));
        assert!(a.contains("X-Amz-SignedHeaders=content-length%3Bhost"), "{a}");
        assert_ne!(a, b);
    }
}
