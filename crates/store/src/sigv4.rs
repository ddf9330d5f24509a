//! AWS Signature Version 4 in query form (presigned URLs), pure: method, URL parts, time and
//! credentials in, URL out. Every S3 call of this crate is a presigned URL, including the ones the
//! operator sends itself (create/complete/abort multipart, delete, head): one signing path to get
//! right instead of two. The payload is `UNSIGNED-PAYLOAD`, so bodies can stream; an upload URL
//! signs its `Content-Length` instead, so that whoever holds the URL can store exactly the bytes
//! it was asked for and no more (S3 refuses another length with `SignatureDoesNotMatch`).

use std::time::{Duration, SystemTime};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use ring::{digest, hmac};

/// Characters SigV4 leaves alone: `A-Z a-z 0-9 - _ . ~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// For paths, `/` stays as it is (S3 keys are not double-encoded).
const PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// S3 refuses presigned URLs valid for longer than seven days.
pub const MAX_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// For temporary credentials (STS); sent as `X-Amz-Security-Token`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    // Never print the secret, not even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// What to sign: `scheme://host/path?query`.
pub struct Request<'a> {
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host with the port when it is not the scheme's default, exactly as the client sends it.
    pub host: &'a str,
    /// Unencoded path, starting with `/`.
    pub path: &'a str,
    /// Unencoded query parameters of the action (`uploadId`, `partNumber`, `uploads`, ...).
    pub query: &'a [(&'a str, &'a str)],
    /// Sign the `Content-Length` header too (uploads): the request must then send exactly this.
    pub content_length: Option<u64>,
}

pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

pub fn encode_path(s: &str) -> String {
    utf8_percent_encode(s, PATH).to_string()
}

/// The presigned URL of `req`, valid `expires` (clamped to 1 s ..= 7 days) from `now`.
pub fn presign(req: &Request, creds: &Credentials, region: &str, now: SystemTime, expires: Duration) -> String {
    let expires = expires.clamp(Duration::from_secs(1), MAX_EXPIRY).as_secs();
    let (date, amz_date) = timestamps(now);
    let scope = format!("{date}/{region}/s3/aws4_request");
    let mut query: Vec<(String, String)> = req.query.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    query.push(("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()));
    query.push(("X-Amz-Credential".into(), encode(&format!("{}/{scope}", creds.access_key_id))));
    query.push(("X-Amz-Date".into(), amz_date.clone()));
    query.push(("X-Amz-Expires".into(), expires.to_string()));
    if let Some(token) = &creds.session_token {
        query.push(("X-Amz-Security-Token".into(), encode(token)));
    }
    let (headers, signed) = match req.content_length {
        Some(n) => (format!("content-length:{n}\nhost:{}\n", req.host), "content-length;host"),
        None => (format!("host:{}\n", req.host), "host"),
    };
    query.push(("X-Amz-SignedHeaders".into(), encode(signed)));
    query.sort();
    let canonical_query = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let path = encode_path(req.path);
    let canonical_request = format!("{}\n{path}\n{canonical_query}\n{headers}\n{signed}\nUNSIGNED-PAYLOAD", req.method);
    let string_to_sign =
        format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(sha256(canonical_request.as_bytes())));
    let key = signing_key(&creds.secret_access_key, &date, region);
    let signature = hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
    format!("{}://{}{path}?{canonical_query}&X-Amz-Signature={signature}", req.scheme, req.host)
}

fn signing_key(secret: &str, date: &str, region: &str) -> hmac::Key {
    let mut k = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, format!("AWS4{secret}").as_bytes()), date.as_bytes());
    for part in [region, "s3", "aws4_request"] {
        k = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, k.as_ref()), part.as_bytes());
    }
    hmac::Key::new(hmac::HMAC_SHA256, k.as_ref())
}

fn sha256(b: &[u8]) -> digest::Digest {
    digest::digest(&digest::SHA256, b)
}

pub fn hex(b: impl AsRef<[u8]>) -> String {
    b.as_ref().iter().map(|x| format!("{x:02x}")).collect()
}

/// (`YYYYMMDD`, `YYYYMMDDTHHMMSSZ`) in UTC.
fn timestamps(t: SystemTime) -> (String, String) {
    // Before 1970 or past jiff's range (year 9999) a clock is broken: sign as of the epoch, which
    // S3 refuses as expired rather than as garbage.
    let t = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    (t.strftime("%Y%m%d").to_string(), t.strftime("%Y%m%dT%H%M%SZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn example_creds() -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    /// The worked example of AWS's "Authenticating Requests: Using Query Parameters (AWS
    /// Signature Version 4)": GET examplebucket/test.txt on 2013-05-24, valid 86400 s.
    #[test]
    fn the_documented_aws_example_signs_to_the_documented_signature() {
        let now = UNIX_EPOCH + Duration::from_secs(1_369_353_600); // 2013-05-24T00:00:00Z
        let req = Request {
            method: "GET",
            scheme: "https",
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            query: &[],
            content_length: None,
        };
        let url = presign(&req, &example_creds(), "us-east-1", now, Duration::from_secs(86400));
        assert_eq!(
            url,
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    /// Signatures computed by botocore (the AWS SDK for Python, from moto's venv) for the same
    /// inputs at 2026-11-28T02:34:56Z: a part upload, and a multipart create with a session token.
    #[test]
    fn signatures_match_botocore() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_833_296);
        let req = Request {
            method: "PUT",
            scheme: "http",
            host: "127.0.0.1:9000",
            path: "/bucket/ns/pod a/c+1/core.zst",
            query: &[("partNumber", "2"), ("uploadId", "a/b=c")],
            content_length: None,
        };
        let url = presign(&req, &example_creds(), "us-east-1", now, Duration::from_secs(60));
        assert!(
            url.ends_with("X-Amz-Signature=ba81c03416d26c35d57331c030c8fbe142168910bdcd1a2f3c06b906dafe7ade"),
            "{url}"
        );
        let creds = Credentials { session_token: Some("tok/en==".into()), ..example_creds() };
        let req = Request {
            method: "POST",
            scheme: "http",
            host: "127.0.0.1:9000",
            path: "/dumps/p/k.zst",
            query: &[("uploads", "")],
            content_length: None,
        };
        let url = presign(&req, &creds, "eu-west-1", now, Duration::from_secs(900));
        assert!(url.contains("&X-Amz-Security-Token=tok%2Fen%3D%3D&"), "{url}");
        assert!(
            url.ends_with("X-Amz-Signature=bccb2e8a626d03e1ed04c7f0be5b6ea201dc363f158c94109ad611d7077e50a9"),
            "{url}"
        );
    }

    /// An upload URL signs its length: botocore's `S3SigV4QueryAuth` over a request with a
    /// `Content-Length` header, at the same instant, gives these signatures (whole PUT, and part 2).
    #[test]
    fn upload_urls_sign_their_content_length_as_botocore_does() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_833_296);
        let put = |query: &'static [(&'static str, &'static str)], n: u64| {
            let req = Request {
                method: "PUT",
                scheme: "http",
                host: "127.0.0.1:9000",
                path: "/dumps/ns/pod/c1/core.1.zst",
                query,
                content_length: Some(n),
            };
            presign(&req, &example_creds(), "us-east-1", now, Duration::from_secs(900))
        };
        let whole = put(&[], 1234);
        assert!(whole.contains("&X-Amz-SignedHeaders=content-length%3Bhost&"), "{whole}");
        assert!(
            whole.ends_with("X-Amz-Signature=1aab17202e3162c6ef0572f7a524d3eb9f2c718ecb2a9e10bd37738e90967044"),
            "{whole}"
        );
        let part = put(&[("partNumber", "2"), ("uploadId", "a/b=c")], 5_242_880);
        assert!(
            part.ends_with("X-Amz-Signature=04c81ebbdb15f47d3e609764767f2896f65c352a5d9a17c6b8b3a86dc30d7967"),
            "{part}"
        );
        assert_ne!(whole, put(&[], 1235), "another length, another signature");
    }

    #[test]
    fn expiry_is_clamped_to_what_s3_accepts() {
        let req =
            Request { method: "PUT", scheme: "http", host: "h:9000", path: "/b/k", query: &[], content_length: None };
        let url = presign(&req, &example_creds(), "r", SystemTime::now(), Duration::from_secs(30 * 86400));
        assert!(url.contains("X-Amz-Expires=604800&"), "{url}");
        let url = presign(&req, &example_creds(), "r", SystemTime::now(), Duration::ZERO);
        assert!(url.contains("X-Amz-Expires=1&"), "{url}");
    }

    #[test]
    fn keys_and_action_parameters_are_encoded_once() {
        let req = Request {
            method: "PUT",
            scheme: "http",
            host: "127.0.0.1:9000",
            path: "/bucket/ns/pod a/c+1/core.zst",
            query: &[("uploadId", "a/b=c"), ("partNumber", "2")],
            content_length: None,
        };
        let url = presign(&req, &example_creds(), "us-east-1", SystemTime::now(), Duration::from_secs(60));
        assert!(url.starts_with("http://127.0.0.1:9000/bucket/ns/pod%20a/c%2B1/core.zst?X-Amz-Algorithm="), "{url}");
        // Byte order: the upper-case X-Amz-* parameters sort before partNumber and uploadId.
        assert!(url.contains("&X-Amz-SignedHeaders=host&partNumber=2&uploadId=a%2Fb%3Dc&X-Amz-Signature="), "{url}");
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        assert!(!format!("{:?}", example_creds()).contains("EXAMPLEKEY"));
    }

    #[test]
    fn timestamps_match_known_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_833_296); // 2026-11-28T02:34:56Z
        assert_eq!(timestamps(t), ("20261128".into(), "20261128T023456Z".into()));
    }
}
