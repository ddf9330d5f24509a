//! `store`: where capture artifacts live, behind one interface, knowing nothing of Kubernetes.
//!
//! - [`S3Store`]: S3-compatible object storage. Those without credentials (the sidecar, the
//!   analysis Job) get presigned URLs ([`S3Store::presign_put`], [`S3Store::create_multipart`]'s
//!   part URLs, [`S3Store::presign_get`]); the credential holder (the operator) completes or
//!   aborts multipart uploads, deletes and heads objects. SigV4 lives in [`sigv4`].
//! - [`VolumeStore`]: a directory on a mounted volume, `file://` URIs.
//! - [`Store`] is either, addressed by artifact URI: what the operator's retention and finalizers
//!   delete with.
//! - [`codec`]: the stored-artifact format (streaming zstd + SHA-256), the one implementation of
//!   every writer ([`compress_file`]) and reader ([`codec::Verifier`], [`verify_and_decompress`]).
//! - [`HttpClient`]: PUTs and GETs of presigned URLs (the uploader's and the reader's side).
//! - [`redact`]: error text without presigned signatures, for every binary.

pub mod codec;
mod http;
pub mod redact;
pub mod s3;
pub mod sigv4;
mod volume;

use std::time::Duration;

pub use codec::{
    Compressed, compress_and_hash, compress_file, sha256_file, verify_and_decompress, verify_and_decompress_file,
};
pub use http::HttpClient;
pub use s3::{DEFAULT_PART_SIZE, MultipartUpload, S3Config, S3Store};
pub use sigv4::Credentials;
pub use volume::VolumeStore;

/// Everything that can go wrong with storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The S3 server refused: `code` is S3's (`NoSuchBucket`, `AccessDenied`, `NoSuchUpload`,
    /// `SignatureDoesNotMatch`, ...) or `HTTP<status>` when the reply carried none.
    #[error("S3 refused {operation} of {key:?}: {code} (HTTP {status}): {message}")]
    S3 { operation: &'static str, key: String, status: u16, code: String, message: String },
    #[error("S3 {operation}: unexpected reply: {detail}")]
    BadReply { operation: &'static str, detail: String },
    #[error("S3 {operation}: {detail}")]
    Http { operation: &'static str, detail: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("checksum mismatch: expected SHA-256 {expected}, the stored bytes hash to {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("{0:?} is not an artifact URI (s3://bucket/key or file:///absolute/path)")]
    InvalidUri(String),
    #[error("{uri} is not in this store ({store})")]
    NotThisStore { uri: String, store: String },
    #[error("storage configuration: {0}")]
    InvalidConfig(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{size} bytes is more than the {max} an object can hold")]
    TooLarge { size: u64, max: u64 },
    #[error("{0} is not possible with this kind of storage")]
    Unsupported(&'static str),
}

impl Error {
    /// S3's error code, when the server sent one.
    pub fn s3_code(&self) -> Option<&str> {
        match self {
            Error::S3 { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the same request may succeed later: the server was away, busy or slow. A refusal
    /// (`AccessDenied`, `NoSuchBucket`, a bad request, a checksum) stays a refusal: retrying it
    /// only delays the error the user has to act on.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::S3 { status, code, .. } => match code.as_str() {
                // S3's own words for "try again"; an expired session token is renewed by the next
                // presigning.
                "RequestTimeout" | "SlowDown" | "InternalError" | "ServiceUnavailable" | "OperationAborted"
                | "ExpiredToken" => true,
                _ => *status >= 500 || *status == 408 || *status == 429,
            },
            Error::Http { .. } | Error::BadReply { .. } => true,
            Error::Io { source, .. } => !matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::InvalidData
            ),
            Error::ChecksumMismatch { .. }
            | Error::InvalidUri(_)
            | Error::NotThisStore { .. }
            | Error::InvalidConfig(_)
            | Error::InvalidRequest(_)
            | Error::TooLarge { .. }
            | Error::Unsupported(_) => false,
        }
    }
}

/// What `head` learns about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: Option<String>,
}

/// One storage of either kind.
#[derive(Debug)]
pub enum Store {
    S3(Box<S3Store>),
    Volume(VolumeStore),
}

impl Store {
    /// Deletes an artifact by URI; deleting what is already gone succeeds, so a finalizer can
    /// run twice.
    pub async fn delete(&self, uri: &str) -> Result<(), Error> {
        match self {
            Store::S3(s) => s.delete(s.key_of(uri)?).await,
            Store::Volume(v) => v.delete(uri).await,
        }
    }

    /// Size (and ETag) of the artifact, `None` when it does not exist.
    pub async fn head(&self, uri: &str) -> Result<Option<ObjectInfo>, Error> {
        match self {
            Store::S3(s) => s.head(s.key_of(uri)?).await,
            Store::Volume(v) => v.head(uri).await,
        }
    }

    /// A URL that reads the artifact without credentials (S3 only: a volume is read by mounting it).
    pub fn presign_get(&self, uri: &str, expires: Duration) -> Result<String, Error> {
        match self {
            Store::S3(s) => Ok(s.presign_get(s.key_of(uri)?, expires)),
            Store::Volume(_) => Err(Error::Unsupported("a presigned URL")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(status: u16, code: &str) -> Error {
        Error::S3 { operation: "PutObject", key: "k".into(), status, code: code.into(), message: String::new() }
    }

    #[test]
    fn refusals_are_permanent_and_outages_transient() {
        for permanent in
            [s3(403, "AccessDenied"), s3(404, "NoSuchBucket"), s3(403, "InvalidAccessKeyId"), s3(400, "HTTP400")]
        {
            assert!(!permanent.is_transient(), "{permanent}");
        }
        for transient in [s3(503, "SlowDown"), s3(500, "InternalError"), s3(400, "RequestTimeout"), s3(502, "HTTP502")]
        {
            assert!(transient.is_transient(), "{transient}");
        }
        assert!(Error::Http { operation: "x", detail: "connection refused".into() }.is_transient());
        assert!(!Error::ChecksumMismatch { expected: "a".into(), actual: "b".into() }.is_transient());
    }
}
