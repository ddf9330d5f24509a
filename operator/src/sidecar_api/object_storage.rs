//! The controller's storage traits ([`ArtifactDeleter`], [`ArtifactUrls`]) for `s3://`
//! artifacts, with the credentials of the policy's Secret: what the finalizer deletes with, and
//! how the analysis Job gets a presigned GET.

use std::time::Duration;

use api::DumpPolicy;
use futures::future::BoxFuture;

use crate::controller::storage::StorageError;
use crate::controller::{ArtifactDeleter, ArtifactUrls};

/// How long an analysis Job's download URLs live: through its deadline and retries.
pub const JOB_URL_EXPIRY: Duration = Duration::from_secs(6 * 3600);

/// S3 storage as the controller sees it.
#[derive(Clone)]
pub struct ObjectStorage {
    api: super::SidecarApi,
}

impl ObjectStorage {
    /// `client` with the operator's credentials; the Secrets are read in `operator_namespace`.
    pub fn new(client: kube::Client, operator_namespace: impl Into<String>) -> Self {
        Self { api: super::SidecarApi::new(client, operator_namespace) }
    }

    /// The store for `uri`: the policy's, or when the policy is gone, the storage of any policy
    /// whose bucket and prefix hold the URI (so a finalizer is not stuck on a deleted policy).
    async fn store(&self, policy: Option<&DumpPolicy>, uri: &str) -> Result<store::Store, StorageError> {
        let candidates = match policy {
            Some(p) => vec![p.clone()],
            None => {
                let all: kube::Api<DumpPolicy> = kube::Api::all(self.api.inner.client.clone());
                all.list(&Default::default()).await?.items.into_iter().filter(|p| holds(p, uri)).collect()
            }
        };
        let p = candidates.first().ok_or_else(|| format!("no DumpPolicy names the storage of {uri}"))?;
        Ok(self.api.store_for(&p.spec).await?)
    }
}

/// Whether the policy's S3 storage (bucket and prefix) holds `uri`.
fn holds(p: &DumpPolicy, uri: &str) -> bool {
    let Some(s3) = &p.spec.storage.s3 else { return false };
    let prefix = s3.prefix.trim_matches('/');
    let base = if prefix.is_empty() { format!("s3://{}/", s3.bucket) } else { format!("s3://{}/{prefix}/", s3.bucket) };
    uri.starts_with(&base)
}

impl ArtifactDeleter for ObjectStorage {
    fn delete<'a>(&'a self, policy: Option<&'a DumpPolicy>, uri: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let store = self.store(policy, uri).await?;
            Ok(store.delete(uri).await?)
        })
    }
}

impl ArtifactUrls for ObjectStorage {
    fn fetchable<'a>(
        &'a self,
        policy: Option<&'a DumpPolicy>,
        uri: &'a str,
    ) -> BoxFuture<'a, Result<String, StorageError>> {
        Box::pin(async move {
            if uri.starts_with("file://") {
                return Ok(uri.to_string());
            }
            let store = self.store(policy, uri).await?;
            Ok(store.presign_get(uri, JOB_URL_EXPIRY)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_holds_the_uris_under_its_bucket_and_prefix() {
        let mut p = DumpPolicy::new("leaks", Default::default());
        assert!(!holds(&p, "s3://dumps/dw/x"), "a volume policy holds no s3:// URI");
        p.spec.storage = api::Storage {
            volume: None,
            s3: Some(api::S3Storage { bucket: "dumps".into(), prefix: "/dw/".into(), ..Default::default() }),
        };
        assert!(holds(&p, "s3://dumps/dw/shop/cart-1/c1/core.42.zst"));
        assert!(!holds(&p, "s3://dumps/other/shop/x"));
        assert!(!holds(&p, "s3://dumpsters/dw/x"));
    }
}
