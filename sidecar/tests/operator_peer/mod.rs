//! A minimal stand-in for the operator's sidecar API (docs/operator.md), for testing the
//! sidecar's client against the contract: it answers every route, presigns real S3 URLs for a
//! real S3 server (moto) with rusty-s3, completes multipart uploads, and records what the
//! sidecar sent. It is NOT the operator's router (operator/src/sidecar_api/).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde_json::{Value, json};

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
    pub requests: Mutex<VecDeque<Value>>,
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
        self.requests.lock().unwrap().push_back(json!({"snapshot": snapshot, "pid": pid}));
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

    async fn uploads(&self, body: &Value) -> Value {
        let capture = body["capture"].as_str().unwrap();
        let mut files = Vec::new();
        for f in body["files"].as_array().unwrap() {
            let name = f["name"].as_str().unwrap();
            let size = f["size"].as_u64().unwrap();
            let key = key(capture, name);
            let uri = format!("s3://{}/{key}", self.bucket.name());
            let hour = Duration::from_secs(3600);
            if size > self.multipart_above {
                let create = self.bucket.create_multipart_upload(Some(&self.creds), &key).sign(hour);
                let text =
                    self.http.post(create).send().await.unwrap().error_for_status().unwrap().text().await.unwrap();
                let created = rusty_s3::actions::CreateMultipartUpload::parse_response(&text).unwrap();
                let id = created.upload_id().to_string();
                let parts: Vec<String> = (1..=size.div_ceil(self.part_size))
                    .map(|n| self.bucket.upload_part(Some(&self.creds), &key, n as u16, &id).sign(hour).to_string())
                    .collect();
                files.push(json!({"name": name, "uri": uri,
                    "multipart": {"uploadId": id, "partSize": self.part_size, "parts": parts}}));
            } else {
                let url = self.bucket.put_object(Some(&self.creds), &key).sign(hour).to_string();
                files.push(json!({"name": name, "uri": uri, "url": url}));
            }
        }
        json!({ "files": files })
    }

    async fn complete(&self, body: &Value) -> StatusCode {
        let key = key(body["capture"].as_str().unwrap(), body["name"].as_str().unwrap());
        let id = body["uploadId"].as_str().unwrap();
        let etags: Vec<&str> = body["etags"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        let action = self.bucket.complete_multipart_upload(Some(&self.creds), &key, id, etags.into_iter());
        let url = action.sign(Duration::from_secs(3600));
        let resp = self.http.post(url).body(action.body()).send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        if status.is_success() && !text.contains("<Error>") { StatusCode::OK } else { StatusCode::BAD_GATEWAY }
    }
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
    if token.is_empty() {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if peer.down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    match (method.as_str(), uri.path()) {
        ("GET", "/v1/sidecar/policy") => {
            let (rv, spec) = peer.policy.lock().unwrap().clone();
            axum::Json(json!({"name": "orders", "resourceVersion": rv, "spec": spec})).into_response()
        }
        ("POST", "/v1/sidecar/uploads") => axum::Json(peer.uploads(&body).await).into_response(),
        ("POST", "/v1/sidecar/uploads/complete") => peer.complete(&body).await.into_response(),
        ("POST", "/v1/sidecar/captures") => {
            if peer.fail_reports.load(Ordering::Relaxed) > 0 {
                peer.fail_reports.fetch_sub(1, Ordering::Relaxed);
                return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
            }
            let name = body["snapshot"].as_str().map(str::to_string).unwrap_or_else(|| "dsnap-new".into());
            axum::Json(json!({ "snapshot": name })).into_response()
        }
        ("GET", "/v1/sidecar/requests") => {
            let wait: u64 =
                uri.query().and_then(|q| q.strip_prefix("wait=")).and_then(|w| w.parse().ok()).unwrap_or(30);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            loop {
                let next: Vec<Value> = peer.requests.lock().unwrap().drain(..).collect();
                if !next.is_empty() || tokio::time::Instant::now() >= deadline {
                    return axum::Json(json!({ "requests": next })).into_response();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
