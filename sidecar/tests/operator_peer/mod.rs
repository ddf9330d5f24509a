//! A minimal stand-in for the operator's sidecar API, for testing the sidecar's client against
//! the contract (`api::wire`: the same request and reply types as the operator's routes): it
//! answers every route, presigns real S3 URLs for a real S3 server (moto) with rusty-s3,
//! completes multipart uploads, and records what the sidecar sent. It is NOT the operator's
//! router (operator/src/sidecar_api/; `operator_e2e.rs` tests against that one).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use api::wire::{
    self, CaptureReply, CaptureRequest, CompleteRequest, MultipartUpload, PolicyReply, RequestsReply, UploadReply,
    UploadRequest, UploadTarget,
};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub token: String,
    pub body: Value,
}

pub struct Peer {
    pub bucket: Bucket,
    pub creds: Credentials,
    /// (resourceVersion, spec)
    pub policy: Mutex<(String, Value)>,
    /// Every route answers 503 while set (an operator outage).
    pub down: AtomicBool,
    /// The next N capture reports answer 503.
    pub fail_reports: AtomicU32,
    /// Upload URLs point at a storage that refuses every PUT with S3's `AccessDenied` (moto
    /// cannot: with authentication on, it answers a presigned URL with 500, not 403).
    pub deny_uploads: AtomicBool,
    /// The base URL it serves on (set by `serve`).
    base: OnceLock<String>,
    pub requests: Mutex<VecDeque<CaptureRequest>>,
    pub log: Mutex<Vec<Recorded>>,
    pub multipart_above: u64,
    pub part_size: u64,
    http: reqwest::Client,
}

impl Peer {
    pub fn new(s3_endpoint: &str, bucket: &str, multipart_above: u64, part_size: u64) -> Arc<Peer> {
        let url: reqwest::Url = s3_endpoint.parse().unwrap();
        Arc::new(Peer {
            bucket: Bucket::new(url, UrlStyle::Path, bucket.to_string(), "us-east-1").unwrap(),
            creds: Credentials::new("testing", "testing"),
            policy: Mutex::new((String::new(), Value::Null)),
            down: AtomicBool::new(false),
            fail_reports: AtomicU32::new(0),
            deny_uploads: AtomicBool::new(false),
            base: OnceLock::new(),
            requests: Mutex::default(),
            log: Mutex::default(),
            multipart_above,
            part_size,
            http: reqwest::Client::new(),
        })
    }

    pub fn set_policy(&self, rv: &str, spec: Value) {
        *self.policy.lock().unwrap() = (rv.to_string(), spec);
    }

    pub fn request(&self, snapshot: &str, pid: Option<u32>) {
        self.requests.lock().unwrap().push_back(CaptureRequest { snapshot: snapshot.into(), pid });
    }

    pub fn recorded(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.log.lock().unwrap().iter().filter(|r| r.method == method && r.path == path).cloned().collect()
    }

    /// Presigned GET of an `s3://bucket/key` URI (moto refuses anonymous reads).
    pub fn get_url(&self, uri: &str) -> String {
        let key = uri.split_once(&format!("s3://{}/", self.bucket.name())).unwrap().1;
        self.bucket.get_object(Some(&self.creds), key).sign(Duration::from_secs(3600)).to_string()
    }

    /// Serve on a loopback port from a runtime of its own; returns the base URL.
    pub fn serve(self: &Arc<Self>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let _ = self.base.set(format!("http://{addr}"));
        let me = self.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(me);
                axum::serve(l, app).await.unwrap();
            });
        });
        format!("http://{addr}")
    }

    async fn uploads(&self, req: UploadRequest) -> UploadReply {
        let mut files = Vec::new();
        for f in req.files {
            let key = key(&req.capture, &f.name);
            let uri = format!("s3://{}/{key}", self.bucket.name());
            let hour = Duration::from_secs(3600);
            let (url, multipart) = if self.deny_uploads.load(Ordering::Relaxed) {
                (Some(format!("{}/s3/{key}", self.base.get().unwrap())), None)
            } else if f.size > self.multipart_above {
                let create = self.bucket.create_multipart_upload(Some(&self.creds), &key).sign(hour);
                let text =
                    self.http.post(create).send().await.unwrap().error_for_status().unwrap().text().await.unwrap();
                let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&text).unwrap();
                let upload_id = created.upload_id().to_string();
                let parts: Vec<String> = (1..=f.size.div_ceil(self.part_size))
                    .map(|n| {
                        self.bucket.upload_part(Some(&self.creds), &key, n as u16, &upload_id).sign(hour).to_string()
                    })
                    .collect();
                (None, Some(MultipartUpload { upload_id, part_size: self.part_size, parts }))
            } else {
                (Some(self.bucket.put_object(Some(&self.creds), &key).sign(hour).to_string()), None)
            };
            files.push(UploadTarget { name: f.name, uri, url, multipart });
        }
        UploadReply { files }
    }

    async fn complete(&self, req: CompleteRequest) -> StatusCode {
        let key = key(&req.capture, &req.name);
        let etags = req.etags.iter().map(String::as_str);
        let action = self.bucket.complete_multipart_upload(Some(&self.creds), &key, &req.upload_id, etags);
        let url = action.sign(Duration::from_secs(3600));
        let resp = self.http.post(url).body(action.body()).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        if status.is_success() && !text.contains("<Error>") { StatusCode::OK } else { StatusCode::BAD_GATEWAY }
    }
}

/// The body as the contract's type, or the 400 the operator would answer.
fn parse<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T, (StatusCode, String)> {
    serde_json::from_value(body.clone()).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))
}

fn key(capture: &str, name: &str) -> String {
    format!("dumps/default/test-pod/{capture}/{name}")
}

async fn handle(State(peer): State<Arc<Peer>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    peer.log.lock().unwrap().push(Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        token: token.clone(),
        body: body.clone(),
    });
    if method == Method::PUT && uri.path().starts_with("/s3/") {
        let denied = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
            <Message>Access Denied</Message><RequestId>0</RequestId></Error>";
        return (StatusCode::FORBIDDEN, [("content-type", "application/xml")], denied).into_response();
    }
    if token.is_empty() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if peer.down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let route = |r: wire::Route| method.as_str() == r.method.as_str() && uri.path() == r.path;
    if route(wire::POLICY) {
        let (rv, spec) = peer.policy.lock().unwrap().clone();
        let spec = serde_json::from_value(spec).expect("the test's policy is a DumpPolicySpec");
        axum::Json(PolicyReply { name: "orders".into(), resource_version: rv, spec }).into_response()
    } else if route(wire::UPLOADS) {
        match parse(&body) {
            Ok(req) => axum::Json(peer.uploads(req).await).into_response(),
            Err(bad) => bad.into_response(),
        }
    } else if route(wire::COMPLETE) {
        match parse(&body) {
            Ok(req) => peer.complete(req).await.into_response(),
            Err(bad) => bad.into_response(),
        }
    } else if route(wire::CAPTURES) {
        if let Err(bad) = parse::<wire::CaptureReport>(&body) {
            return bad.into_response();
        }
        if peer.fail_reports.load(Ordering::Relaxed) > 0 {
            peer.fail_reports.fetch_sub(1, Ordering::Relaxed);
            return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
        }
        let snapshot = body["snapshot"].as_str().map(str::to_string).unwrap_or_else(|| "dsnap-new".into());
        axum::Json(CaptureReply { snapshot }).into_response()
    } else if route(wire::REQUESTS) {
        let wait: u64 = uri.query().and_then(|q| q.strip_prefix("wait=")).and_then(|w| w.parse().ok()).unwrap_or(30);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        loop {
            let requests: Vec<CaptureRequest> = peer.requests.lock().unwrap().drain(..).collect();
            if !requests.is_empty() || tokio::time::Instant::now() >= deadline {
                return axum::Json(RequestsReply { requests }).into_response();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}
