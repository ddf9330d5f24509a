//! Self-provisioned certificates: the CA and the serving certificate live in one Secret of the
//! operator's namespace, so every replica serves a certificate of the same CA and the
//! `caBundle` they write agrees. Writes use optimistic concurrency (create-if-absent, replace
//! at a resourceVersion): when two replicas race, one wins and the other adopts its result.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use time::OffsetDateTime;

use super::certs::{self, CertPem};
use super::config::ca_bundle_patch;
use super::tls::CertSource;
use crate::Error;

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
/// Conflicts in a row before giving up until the next check.
const ATTEMPTS: usize = 5;
/// First retry while the `caBundle` cannot be written yet, and the longest.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Where the certificates live and whom they must name.
#[derive(Clone)]
pub struct SelfProvisioned {
    pub client: kube::Client,
    /// The operator's namespace (the Secret's).
    pub namespace: String,
    pub secret_name: String,
    /// The `MutatingWebhookConfiguration` whose `caBundle` is kept up to date.
    pub webhook_config_name: String,
    pub sans: Vec<String>,
}

/// The CA and serving certificate read from (or written to) the Secret.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCerts {
    pub ca: CertPem,
    pub serving: CertPem,
}

impl SelfProvisioned {
    /// Makes sure the Secret holds a CA and a current serving certificate, serves it through
    /// `source`, and writes the CA into the webhook configuration. Safe to call again and again.
    pub async fn ensure(&self, source: &CertSource) -> Result<StoredCerts, Error> {
        self.ensure_with(source, false).await
    }

    /// Like [`ensure`](Self::ensure) but replaces the serving certificate even when it is current.
    pub async fn rotate_now(&self, source: &CertSource) -> Result<StoredCerts, Error> {
        self.ensure_with(source, true).await
    }

    /// Runs [`ensure`](Self::ensure) now and then every `every`: rotation, adopting a
    /// certificate another replica rotated, restoring a `caBundle` that a chart upgrade reset.
    /// Until the `caBundle` holds our CA (the configuration may not exist yet, the API server may
    /// refuse a write) it tries again after [`RETRY_FIRST`], doubling up to [`RETRY_MAX`]: the
    /// operator is not ready meanwhile, so waiting the full period would leave it unready.
    pub async fn run(self, source: CertSource, every: Duration) {
        let mut retry = RETRY_FIRST;
        loop {
            let wait = match self.ensure(&source).await {
                Ok(_) if source.is_trusted() => {
                    retry = RETRY_FIRST;
                    every
                }
                Ok(_) => {
                    tracing::warn!(name = %self.webhook_config_name, retry = ?retry, "the caBundle does not hold our CA yet");
                    retry
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry = ?retry, "webhook certificates: will retry");
                    retry
                }
            };
            if wait == retry {
                retry = (retry * 2).min(RETRY_MAX).min(every);
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn ensure_with(&self, source: &CertSource, mut force: bool) -> Result<StoredCerts, Error> {
        let certs = self.ensure_secret(&mut force).await?;
        if source.serving().as_ref() != Some(&certs.serving) {
            source.set(&certs.serving, &certs.ca.cert)?;
            tracing::info!(serial = %serial_hex(&certs.serving.cert), "serving certificate loaded");
        }
        if self.ensure_ca_bundle(&certs.ca.cert).await? {
            source.ca_bundle_holds(&certs.ca.cert);
        }
        Ok(certs)
    }

    async fn ensure_secret(&self, force: &mut bool) -> Result<StoredCerts, Error> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        for _ in 0..ATTEMPTS {
            let now = OffsetDateTime::now_utc();
            let Some(secret) = secrets.get_opt(&self.secret_name).await? else {
                let ca = certs::generate_ca(now)?;
                let serving = certs::issue_serving(&ca, &self.sans, now, certs::SERVING_VALIDITY)?;
                let fresh = StoredCerts { ca, serving };
                match secrets.create(&PostParams::default(), &self.secret(&fresh, None)).await {
                    Ok(_) => {
                        tracing::info!(secret = %self.secret_name, "created the webhook CA and serving certificate");
                        return Ok(fresh);
                    }
                    Err(e) if is_conflict(&e) => continue, // another replica created it first
                    Err(e) => return Err(e.into()),
                }
            };
            let version = secret.metadata.resource_version.clone();
            // The chart creates the Secret empty (type fixed then: it is immutable).
            let type_ = secret.type_.clone();
            let (ca, serving) = match read_secret(&secret) {
                Ok(found) => found,
                Err(reason) => {
                    // Unreadable: start over with a new CA (sidecars injected before keep the old
                    // CA until their pods are recreated).
                    tracing::warn!(secret = %self.secret_name, %reason, "replacing an unusable webhook certificate secret");
                    let ca = certs::generate_ca(now)?;
                    (ca, None)
                }
            };
            let reason = match &serving {
                _ if *force => Some("rotation was asked for".to_string()),
                None => Some("there is none".to_string()),
                Some(s) => certs::rotation_reason(&certs::inspect(&s.cert)?, &self.sans, now),
            };
            let Some(reason) = reason else {
                return Ok(StoredCerts { ca, serving: serving.expect("checked above") });
            };
            let serving = certs::issue_serving(&ca, &self.sans, now, certs::SERVING_VALIDITY)?;
            let rotated = StoredCerts { ca, serving };
            let mut updated = self.secret(&rotated, version);
            updated.type_ = type_.or(updated.type_);
            updated.metadata.labels = secret.metadata.labels.clone().or(updated.metadata.labels);
            updated.metadata.annotations = secret.metadata.annotations.clone();
            match secrets.replace(&self.secret_name, &PostParams::default(), &updated).await {
                Ok(_) => {
                    tracing::info!(%reason, serial = %serial_hex(&rotated.serving.cert), "rotated the serving certificate");
                    return Ok(rotated);
                }
                Err(e) if is_conflict(&e) => {
                    // Someone else wrote it meanwhile: re-read and adopt theirs, unless forced.
                    *force = false;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::CertSecret {
            namespace: self.namespace.clone(),
            name: self.secret_name.clone(),
            reason: format!("still conflicting after {ATTEMPTS} attempts"),
        })
    }

    /// Writes `ca_pem` into the webhook configuration's `caBundle`; `true` once it is there.
    async fn ensure_ca_bundle(&self, ca_pem: &str) -> Result<bool, Error> {
        let configs: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        for _ in 0..ATTEMPTS {
            let Some(config) = configs.get_opt(&self.webhook_config_name).await? else {
                // The chart creates it; until then there is nothing to patch.
                tracing::warn!(name = %self.webhook_config_name, "no MutatingWebhookConfiguration to write the CA into");
                return Ok(false);
            };
            let Some(patch) = ca_bundle_patch(&config, ca_pem) else { return Ok(true) };
            match configs.patch(&self.webhook_config_name, &PatchParams::default(), &Patch::Json::<()>(patch)).await {
                Ok(_) => {
                    tracing::info!(name = %self.webhook_config_name, "caBundle written");
                    return Ok(true);
                }
                // 422 from the failed `test` op: changed meanwhile, read again.
                Err(e) if is_conflict(&e) || is_invalid(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    fn secret(&self, certs: &StoredCerts, resource_version: Option<String>) -> Secret {
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version,
                labels: Some(BTreeMap::from([("app.kubernetes.io/part-of".into(), "dumpwatch".into())])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([
                (CA_CERT.into(), bytes(&certs.ca.cert)),
                (CA_KEY.into(), bytes(&certs.ca.key)),
                (TLS_CERT.into(), bytes(&certs.serving.cert)),
                (TLS_KEY.into(), bytes(&certs.serving.key)),
            ])),
            ..Default::default()
        }
    }
}

/// The CA (required) and serving certificate (optional) of the Secret.
pub fn read_secret(secret: &Secret) -> Result<(CertPem, Option<CertPem>), String> {
    let data = secret.data.as_ref().ok_or("no data")?;
    let text = |key: &str| -> Option<String> { data.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok()) };
    let ca = match (text(CA_CERT), text(CA_KEY)) {
        (Some(cert), Some(key)) => CertPem { cert, key },
        _ => return Err(format!("no {CA_CERT} / {CA_KEY}")),
    };
    certs::inspect(&ca.cert).map_err(|e| e.to_string())?;
    let serving = match (text(TLS_CERT), text(TLS_KEY)) {
        (Some(cert), Some(key)) if certs::inspect(&cert).is_ok() => Some(CertPem { cert, key }),
        _ => None,
    };
    Ok((ca, serving))
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_invalid(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 422)
}

fn serial_hex(cert_pem: &str) -> String {
    certs::inspect(cert_pem).map(|i| i.serial.iter().map(|b| format!("{b:02x}")).collect()).unwrap_or_default()
}
