//! The certificate the HTTPS server presents, swappable while it runs: every TLS handshake asks
//! [`CertSource`] (a rustls `ResolvesServerCert`), so a rotated or re-mounted certificate is
//! served from the next connection on, without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::CertPem;
use crate::Error;

/// Where the server's certificate comes from.
#[derive(Clone)]
pub struct CertSource {
    inner: Arc<RwLock<Loaded>>,
    /// Self-provisioned mode: the API server trusts the served certificate only once its CA is in
    /// the webhook configuration's `caBundle`; until then `/readyz` must not say ready, or a pod
    /// created in between is admitted unchanged (`failurePolicy: Ignore`). `None`: someone else
    /// keeps the `caBundle` (cert-manager's CA injector), a loaded certificate is all we can know.
    ca_bundle: Option<Arc<RwLock<String>>>,
    /// Counts swaps, so open connections can close and clients reconnect to the new certificate.
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for CertSource {
    fn default() -> Self {
        Self { inner: Arc::default(), ca_bundle: None, generation: Arc::new(tokio::sync::watch::Sender::new(0)) }
    }
}

#[derive(Default)]
struct Loaded {
    key: Option<Arc<CertifiedKey>>,
    /// The PEM texts loaded last (to tell a change from a re-read of the same files).
    serving: Option<CertPem>,
    ca_pem: String,
}

impl std::fmt::Debug for CertSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSource").field("loaded", &self.is_loaded()).field("trusted", &self.is_trusted()).finish()
    }
}

impl CertSource {
    /// No certificate yet: handshakes fail (and `/readyz` says so) until [`CertSource::set`].
    pub fn empty() -> Self {
        Self::default()
    }

    /// Like [`CertSource::empty`], for a certificate whose CA we write into the `caBundle`
    /// ourselves: [`CertSource::is_trusted`] stays false until [`CertSource::ca_bundle_holds`]
    /// reports the served CA there.
    pub fn awaiting_ca_bundle() -> Self {
        Self { ca_bundle: Some(Arc::default()), ..Self::default() }
    }

    /// The webhook configuration's `caBundle` now holds `ca_pem`.
    pub fn ca_bundle_holds(&self, ca_pem: &str) {
        if let Some(bundle) = &self.ca_bundle {
            *bundle.write().expect("ca bundle lock") = ca_pem.to_string();
        }
    }

    /// Whether the API server can verify the served certificate: a certificate is loaded and,
    /// when we keep the `caBundle`, it holds the CA of that certificate (a new CA is untrusted
    /// again until written).
    pub fn is_trusted(&self) -> bool {
        let ca = self.ca_pem();
        self.is_loaded() && self.ca_bundle.as_ref().is_none_or(|b| *b.read().expect("ca bundle lock") == ca)
    }

    /// Serves `serving` (chain PEM + key PEM) from the next handshake on; `ca_pem` is the CA
    /// injected sidecars are told to trust. Nothing changes when the PEM does not parse.
    pub fn set(&self, serving: &CertPem, ca_pem: &str) -> Result<(), Error> {
        let key = certified_key(serving)?;
        let mut loaded = self.inner.write().expect("cert lock");
        loaded.key = Some(Arc::new(key));
        loaded.serving = Some(serving.clone());
        loaded.ca_pem = ca_pem.to_string();
        drop(loaded);
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Changes each time another certificate is served.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn is_loaded(&self) -> bool {
        self.inner.read().expect("cert lock").key.is_some()
    }

    /// PEM of the CA that signs the served certificate (empty when unknown).
    pub fn ca_pem(&self) -> String {
        self.inner.read().expect("cert lock").ca_pem.clone()
    }

    /// The PEM served now.
    pub fn serving(&self) -> Option<CertPem> {
        self.inner.read().expect("cert lock").serving.clone()
    }

    /// cert-manager mode: loads `tls.crt`, `tls.key` (and `ca.crt` when present) from `dir`,
    /// then re-reads them every `every` and swaps when they change. Kubernetes updates a mounted
    /// Secret by swapping a symlink, so polling the contents is exact and needs no inotify.
    pub async fn watch_dir(self, dir: PathBuf, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            match self.reload_dir(&dir) {
                Ok(true) => tracing::info!(dir = %dir.display(), "serving certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "keeping the current certificate"),
            }
        }
    }

    /// Loads the files of `dir` when they differ from what is served; `true` when it swapped.
    pub fn reload_dir(&self, dir: &Path) -> Result<bool, Error> {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| Error::io(name.to_string(), e));
        let serving = CertPem { cert: read("tls.crt")?, key: read("tls.key")? };
        let ca = match std::fs::read_to_string(dir.join("ca.crt")) {
            Ok(ca) => ca,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io("ca.crt", e)),
        };
        if self.serving().as_ref() == Some(&serving) && self.ca_pem() == ca {
            return Ok(false);
        }
        self.set(&serving, &ca)?;
        Ok(true)
    }

    /// The rustls resolver that reads this source at every handshake.
    pub(crate) fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::new(self.clone())
    }
}

impl ResolvesServerCert for CertSource {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.inner.read().ok()?.key.clone()
    }
}

fn certified_key(pem: &CertPem) -> Result<CertifiedKey, Error> {
    let chain = CertificateDer::pem_slice_iter(pem.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::bad_cert("tls.crt", e))?;
    if chain.is_empty() {
        return Err(Error::bad_cert("tls.crt", "no certificate in the PEM"));
    }
    let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).map_err(|e| Error::bad_cert("tls.key", e))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)?;
    let certified = CertifiedKey::new(chain, signer);
    // A key that does not belong to the certificate would fail every handshake: refuse it here.
    certified.keys_match()?;
    Ok(certified)
}
