//! The sidecar's side of the operator's API (docs/operator.md): policy, upload URLs, capture
//! reports, on-demand requests. HTTPS with the operator's CA only; every request carries the
//! projected ServiceAccount token, read from its file each time because the kubelet rotates it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::DumpPolicySpec;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::Error;
use crate::policy::OnDemand;

/// How to reach the operator.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// `https://dumpwatch-operator.dumpwatch.svc:8443`.
    pub url: String,
    /// PEM of the operator's CA (the text, not a path: the webhook puts it in the environment).
    pub ca_pem: Option<String>,
    pub token_file: PathBuf,
    /// How often the policy is fetched again.
    pub policy_refresh: Duration,
}

pub struct OperatorClient {
    base: String,
    token_file: PathBuf,
    http: reqwest::Client,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAnswer {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub resource_version: String,
    pub spec: DumpPolicySpec,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileSize {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UploadsRequest {
    pub capture: String,
    pub files: Vec<FileSize>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UploadsAnswer {
    pub files: Vec<UploadTarget>,
}

/// Where one file goes: a presigned PUT, or a multipart upload.
#[derive(Debug, Clone, Deserialize)]
pub struct UploadTarget {
    pub name: String,
    /// What to report: `s3://bucket/key`.
    pub uri: String,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub multipart: Option<Multipart>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Multipart {
    pub upload_id: String,
    pub part_size: u64,
    pub parts: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompleteRequest {
    pub capture: String,
    pub name: String,
    pub upload_id: String,
    pub etags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub kind: api::CaptureKind,
    pub uri: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaptureReport {
    pub manifest: serde_json::Value,
    pub artifacts: Vec<ArtifactRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<serde_json::Value>,
}

/// A capture that failed (or an on-demand request the limits refused): `POST /v1/sidecar/failures`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureReport {
    /// Unique per failure, one path segment (names the snapshot of a trigger's failure).
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub pid: u32,
    pub process: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    pub trigger: String,
    /// The value that fired the trigger.
    pub value: f64,
    /// The on-demand `DumpSnapshot` this failure answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Why, in words a user acts on.
    pub reason: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReportAnswer {
    #[serde(default)]
    pub snapshot: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SnapshotRequest {
    pub snapshot: String,
    #[serde(default)]
    pub pid: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct RequestsAnswer {
    #[serde(default)]
    requests: Vec<SnapshotRequest>,
}

impl OperatorClient {
    pub fn new(cfg: &OperatorConfig) -> Result<Self, Error> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("dumpwatch-sidecar/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| Error::Operator(format!("the operator CA (--operator-ca) is not PEM: {e}")))?;
            // The operator's own CA and nothing else: a public CA must not vouch for it.
            b = b.tls_built_in_root_certs(false).add_root_certificate(ca);
        }
        let http = b.build().map_err(|e| Error::Operator(format!("building the HTTP client: {e}")))?;
        Ok(Self { base: cfg.url.trim_end_matches('/').to_string(), token_file: cfg.token_file.clone(), http })
    }

    fn token(&self) -> Result<String, Error> {
        let t = std::fs::read_to_string(&self.token_file)
            .map_err(Error::io(format!("reading the token {}", self.token_file.display())))?;
        Ok(t.trim().to_string())
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response, Error> {
        let resp = req
            .bearer_auth(self.token()?)
            .send()
            .await
            .map_err(|e| Error::Operator(format!("{what}: {}", error_chain(&e))))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(Error::OperatorStatus {
            what: what.to_string(),
            status: status.as_u16(),
            body: body.chars().take(300).collect(),
        })
    }

    async fn json<T: for<'de> Deserialize<'de>>(resp: reqwest::Response, what: &str) -> Result<T, Error> {
        resp.json().await.map_err(|e| Error::Operator(format!("{what}: unexpected answer: {e}")))
    }

    pub async fn policy(&self) -> Result<PolicyAnswer, Error> {
        let what = "fetching the policy";
        let resp = self.call(self.http.get(format!("{}/v1/sidecar/policy", self.base)).timeout(TIMEOUT), what).await?;
        let p: PolicyAnswer = Self::json(resp, what).await?;
        p.spec.validate().map_err(|e| Error::Operator(format!("the operator's policy {}: {e}", p.name)))?;
        Ok(p)
    }

    pub async fn uploads(&self, req: &UploadsRequest) -> Result<UploadsAnswer, Error> {
        let what = "asking for upload URLs";
        let url = format!("{}/v1/sidecar/uploads", self.base);
        let resp = self.call(self.http.post(url).json(req).timeout(TIMEOUT), what).await?;
        Self::json(resp, what).await
    }

    pub async fn complete(&self, req: &CompleteRequest) -> Result<(), Error> {
        let url = format!("{}/v1/sidecar/uploads/complete", self.base);
        // Completing a large multipart upload can take S3 a while.
        self.call(self.http.post(url).json(req).timeout(TIMEOUT * 4), "completing a multipart upload").await?;
        Ok(())
    }

    pub async fn report(&self, report: &CaptureReport) -> Result<ReportAnswer, Error> {
        let what = "reporting a capture";
        let url = format!("{}/v1/sidecar/captures", self.base);
        let resp = self.call(self.http.post(url).json(report).timeout(TIMEOUT), what).await?;
        let text = resp.text().await.unwrap_or_default();
        Ok(serde_json::from_str(&text).unwrap_or_default())
    }

    pub async fn report_failure(&self, failure: &FailureReport) -> Result<ReportAnswer, Error> {
        let what = "reporting a failed capture";
        let url = format!("{}/v1/sidecar/failures", self.base);
        let resp = self.call(self.http.post(url).json(failure).timeout(TIMEOUT), what).await?;
        let text = resp.text().await.unwrap_or_default();
        Ok(serde_json::from_str(&text).unwrap_or_default())
    }

    /// Long poll: the on-demand requests for this pod, or none after `wait`.
    pub async fn requests(&self, wait: Duration) -> Result<Vec<SnapshotRequest>, Error> {
        let what = "polling on-demand requests";
        let url = format!("{}/v1/sidecar/requests?wait={}", self.base, wait.as_secs());
        let resp = self.call(self.http.get(url).timeout(wait + TIMEOUT), what).await?;
        Ok(Self::json::<RequestsAnswer>(resp, what).await?.requests)
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// reqwest's Display stops at "error sending request": the cause (refused, TLS) is below.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Logs an operator outage once when it starts and once when it ends, not on every attempt.
#[derive(Debug, Default)]
pub struct Outage {
    failing_since: Option<std::time::Instant>,
    failures: u64,
}

impl Outage {
    /// Returns whether this failure starts an outage (and so should be logged).
    pub fn failed(&mut self, what: &str, e: &Error) -> bool {
        self.failures += 1;
        if self.failing_since.is_some() {
            return false;
        }
        self.failing_since = Some(std::time::Instant::now());
        tracing::warn!(error = %e, "{what} failed; retrying quietly until the operator answers");
        true
    }

    /// Returns whether this success ends an outage.
    pub fn ok(&mut self, what: &str) -> bool {
        let Some(since) = self.failing_since.take() else { return false };
        tracing::info!(
            attempts = self.failures,
            seconds = since.elapsed().as_secs(),
            "{what}: the operator answers again"
        );
        self.failures = 0;
        true
    }
}

/// Exponential backoff from `base`, capped.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16)).min(cap)
}

/// The first policy: the sidecar has nothing to enforce without one, so it waits for it.
pub async fn first_policy(client: &OperatorClient) -> PolicyAnswer {
    let mut outage = Outage::default();
    let mut attempt = 0;
    loop {
        match client.policy().await {
            Ok(p) => {
                outage.ok("fetching the policy");
                tracing::info!(policy = %p.name, resource_version = %p.resource_version, "policy from the operator");
                return p;
            }
            Err(e) => {
                outage.failed("fetching the policy", &e);
                tokio::time::sleep(backoff(attempt, Duration::from_millis(500), Duration::from_secs(10))).await;
                attempt += 1;
            }
        }
    }
}

/// Refresh the policy every `every`; an unreachable operator or a broken answer leaves the last
/// good policy in force.
pub async fn policy_loop(
    client: Arc<OperatorClient>,
    tx: watch::Sender<Arc<DumpPolicySpec>>,
    mut current: PolicyAnswer,
    every: Duration,
) {
    let mut outage = Outage::default();
    loop {
        tokio::time::sleep(every).await;
        match client.policy().await {
            Ok(p) => {
                outage.ok("fetching the policy");
                let changed = if p.resource_version.is_empty() {
                    p.spec != current.spec
                } else {
                    p.resource_version != current.resource_version || p.name != current.name
                };
                if changed {
                    tracing::info!(policy = %p.name, resource_version = %p.resource_version, triggers = p.spec.triggers.len(),
                        "policy changed");
                    // The storage kind applies to the next upload (the local folder is --storage);
                    // the mode decides at start whether a socket is bound.
                    if p.spec.mode != current.spec.mode {
                        tracing::warn!("policy changed mode: it takes effect when the sidecar restarts");
                    }
                    let _ = tx.send(Arc::new(p.spec.clone()));
                    current = p;
                }
            }
            Err(e) => {
                outage.failed("fetching the policy", &e);
            }
        }
    }
}

/// Long-poll on-demand requests and hand each to the watchers.
pub async fn requests_loop(client: Arc<OperatorClient>, tx: broadcast::Sender<OnDemand>, wait: Duration) {
    let mut outage = Outage::default();
    let mut attempt = 0;
    loop {
        match client.requests(wait).await {
            Ok(reqs) => {
                outage.ok("polling on-demand requests");
                attempt = 0;
                // The operator hands a request out once: right after start nobody may be
                // watching yet, so wait (up to a minute) for a first watcher to listen.
                for _ in 0..60 {
                    if reqs.is_empty() || tx.receiver_count() > 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                for r in reqs {
                    tracing::info!(snapshot = %r.snapshot, pid = ?r.pid, "on-demand capture requested by the operator");
                    let _ = tx.send(OnDemand {
                        source: format!("DumpSnapshot {}", r.snapshot),
                        snapshot: Some(r.snapshot),
                        pid: r.pid,
                    });
                }
            }
            Err(e) => {
                outage.failed("polling on-demand requests", &e);
                tokio::time::sleep(backoff(attempt, Duration::from_secs(1), Duration::from_secs(30))).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_logged_once() {
        let mut o = Outage::default();
        let e = Error::Operator("refused".into());
        assert!(o.failed("x", &e));
        assert!(!o.failed("x", &e));
        assert!(!o.failed("x", &e));
        assert!(o.ok("x"));
        assert!(!o.ok("x"));
        assert!(o.failed("x", &e), "a new outage is logged again");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(backoff(0, s(1), s(30)), s(1));
        assert_eq!(backoff(3, s(1), s(30)), s(8));
        assert_eq!(backoff(40, s(1), s(30)), s(30));
    }

    #[test]
    fn answers_parse_as_documented() {
        let p: PolicyAnswer =
            serde_json::from_str(r#"{"name":"p","resourceVersion":"7","spec":{"triggers":[{"type":"deadlock"}]}}"#)
                .unwrap();
        assert_eq!((p.name.as_str(), p.resource_version.as_str(), p.spec.triggers.len()), ("p", "7", 1));
        let u: UploadsAnswer = serde_json::from_str(
            r#"{"files":[{"name":"a.zst","uri":"s3://b/k/a.zst","url":"https://x"},
                {"name":"core.1.zst","uri":"s3://b/k/core.1.zst","multipart":{"uploadId":"u","partSize":5,"parts":["p1","p2"]}}]}"#,
        )
        .unwrap();
        assert_eq!(u.files[0].url.as_deref(), Some("https://x"));
        assert_eq!(u.files[1].multipart.as_ref().unwrap().parts.len(), 2);
        let r: RequestsAnswer =
            serde_json::from_str(r#"{"requests":[{"snapshot":"s1","pid":null},{"snapshot":"s2","pid":7}]}"#).unwrap();
        assert_eq!(r.requests[1], SnapshotRequest { snapshot: "s2".into(), pid: Some(7) });
    }
}
