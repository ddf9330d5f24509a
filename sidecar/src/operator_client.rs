//! The sidecar's side of the operator's API (docs/operator.md): policy, upload URLs, capture
//! reports, on-demand requests. HTTPS with the operator's CA only; every request carries the
//! projected ServiceAccount token, read from its file each time because the kubelet rotates it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::DumpPolicySpec;
use api::wire::{
    self, CaptureReply, CaptureReport, CaptureRequest, CompleteRequest, ErrorReply, FailureReport, PolicyReply,
    RequestsReply, Route, UploadReply, UploadRequest,
};
use serde::de::DeserializeOwned;
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

impl OperatorClient {
    pub fn new(cfg: &OperatorConfig) -> Result<Self, Error> {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("dumpwatch-sidecar/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.ca_pem {
            let ca = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| Error::OperatorConfig(format!("the operator CA (--operator-ca) is not PEM: {e}")))?;
            // The operator's own CA and nothing else: a public CA must not vouch for it.
            b = b.tls_built_in_root_certs(false).add_root_certificate(ca);
        }
        let http = b.build().map_err(|e| Error::OperatorConfig(format!("building the HTTP client: {e}")))?;
        Ok(Self { base: cfg.url.trim_end_matches('/').to_string(), token_file: cfg.token_file.clone(), http })
    }

    fn token(&self) -> Result<String, Error> {
        let t = std::fs::read_to_string(&self.token_file)
            .map_err(Error::io(format!("reading the token {}", self.token_file.display())))?;
        Ok(t.trim().to_string())
    }

    /// Calls `route` (with `body` as JSON, if any) within `timeout`; a refusal becomes
    /// [`Error::OperatorRefused`] with the operator's reason.
    async fn call(
        &self,
        route: Route,
        query: &str,
        body: Option<&impl serde::Serialize>,
        timeout: Duration,
        what: &str,
    ) -> Result<reqwest::Response, Error> {
        let url = format!("{}{}{query}", self.base, route.path);
        let req = match route.method {
            wire::Method::Get => self.http.get(url),
            wire::Method::Post => self.http.post(url),
        };
        let req = match body {
            Some(b) => req.json(b),
            None => req,
        };
        let resp = req.bearer_auth(self.token()?).timeout(timeout).send().await.map_err(|e| {
            Error::OperatorUnreachable { what: what.to_string(), detail: store::redact::error_chain(&e) }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let (reason, message) = match serde_json::from_str::<ErrorReply>(&text) {
            Ok(e) => (Some(e.error), e.message),
            Err(_) => (None, text.chars().take(300).collect()),
        };
        Err(Error::OperatorRefused { what: what.to_string(), status, reason, message })
    }

    async fn json<T: DeserializeOwned>(resp: reqwest::Response, what: &str) -> Result<T, Error> {
        resp.json()
            .await
            .map_err(|e| Error::OperatorAnswer { what: what.to_string(), detail: store::redact::error_chain(&e) })
    }

    pub async fn policy(&self) -> Result<PolicyReply, Error> {
        let what = "fetching the policy";
        let resp = self.call(wire::POLICY, "", None::<&()>, TIMEOUT, what).await?;
        let p: PolicyReply = Self::json(resp, what).await?;
        p.spec.validate().map_err(|e| Error::OperatorAnswer {
            what: what.into(),
            detail: format!("the operator's policy {}: {e}", p.name),
        })?;
        Ok(p)
    }

    pub async fn uploads(&self, req: &UploadRequest) -> Result<UploadReply, Error> {
        let what = "asking for upload URLs";
        Self::json(self.call(wire::UPLOADS, "", Some(req), TIMEOUT, what).await?, what).await
    }

    pub async fn complete(&self, req: &CompleteRequest) -> Result<(), Error> {
        // Completing a large multipart upload can take S3 a while.
        self.call(wire::COMPLETE, "", Some(req), TIMEOUT * 4, "completing a multipart upload").await?;
        Ok(())
    }

    pub async fn report(&self, report: &CaptureReport) -> Result<CaptureReply, Error> {
        let what = "reporting a capture";
        Self::json(self.call(wire::CAPTURES, "", Some(report), TIMEOUT, what).await?, what).await
    }

    pub async fn report_failure(&self, failure: &FailureReport) -> Result<CaptureReply, Error> {
        let what = "reporting a failed capture";
        Self::json(self.call(wire::FAILURES, "", Some(failure), TIMEOUT, what).await?, what).await
    }

    /// Long poll: the on-demand requests for this pod, or none after `wait`.
    pub async fn requests(&self, wait: Duration) -> Result<Vec<CaptureRequest>, Error> {
        let what = "polling on-demand requests";
        let query = format!("?wait={}", wait.as_secs());
        let resp = self.call(wire::REQUESTS, &query, None::<&()>, wait + TIMEOUT, what).await?;
        Ok(Self::json::<RequestsReply>(resp, what).await?.requests)
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

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
pub async fn first_policy(client: &OperatorClient) -> PolicyReply {
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
    mut current: PolicyReply,
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
        let e = Error::OperatorUnreachable { what: "x".into(), detail: "refused".into() };
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
}
