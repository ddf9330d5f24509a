//! The controller's storage traits ([`ArtifactDeleter`], [`ArtifactUrls`]) for `s3://`
//! artifacts, with the credentials of the snapshot's `DumpStore`: what the finalizer deletes
//! with, and how the analysis Job gets a presigned GET.
//!
//! A snapshot's artifact URIs are data, not instructions: only keys under that snapshot's own
//! `<store prefix>/<namespace>/<pod>/` in its store are fetched or deleted, whatever it lists.

use std::time::Duration;

use api::{DumpPolicy, DumpSnapshot, DumpStore};
use futures::future::BoxFuture;
use kube::ResourceExt;

use crate::controller::storage::StorageError;
use crate::controller::{ArtifactDeleter, ArtifactUrls};

/// How long an analysis Job's download URLs live: through its deadline and retries.
pub const JOB_URL_EXPIRY: Duration = Duration::from_secs(6 * 3600);

/// What fetching or deleting is for: reading checks that the store still allows the namespace;
/// deleting does not (a finalizer must not hang because an admin narrowed a store later).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Read,
    Delete,
}

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

    /// The store of `snapshot` for `uri`, refused unless `uri` lies under the snapshot's own
    /// prefix in it. The store is the one recorded in the snapshot (`spec.store`), else its
    /// policy's, else (snapshots recorded before stores were) the store whose bucket and prefix
    /// hold the URI.
    async fn store(
        &self,
        snapshot: &DumpSnapshot,
        policy: Option<&DumpPolicy>,
        uri: &str,
        purpose: Use,
    ) -> Result<store::Store, StorageError> {
        let namespace = snapshot.namespace().unwrap_or_default();
        let named = snapshot
            .spec
            .store
            .clone()
            .or_else(|| policy.and_then(|p| p.spec.storage.s3.as_ref()).map(|s3| s3.store_ref.clone()))
            .filter(|s| !s.is_empty());
        let name = match named {
            Some(n) => n,
            None => {
                let all: kube::Api<DumpStore> = kube::Api::all(self.api.inner.client.clone());
                let stores = all.list(&Default::default()).await?.items;
                stores
                    .iter()
                    .find(|s| holds(s, &namespace, &snapshot.spec.pod, uri))
                    .map(|s| s.name_any())
                    .ok_or_else(|| format!("no DumpStore holds {uri} under this snapshot's own prefix"))?
            }
        };
        let s3 = self.api.store_named(&name, &namespace, purpose == Use::Read).await?;
        let own = super::stores::own_prefix(&s3, &namespace, &snapshot.spec.pod);
        check_own(uri, &own)?;
        Ok(store::Store::S3(Box::new(s3)))
    }
}

/// `uri` must lie under `own` (a snapshot's `s3://bucket/<prefix>/<namespace>/<pod>/`), with no
/// `.`/`..` or empty segments after it.
fn check_own(uri: &str, own: &str) -> Result<(), String> {
    let inside = uri
        .strip_prefix(own)
        .filter(|rest| !rest.is_empty() && rest.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
    match inside {
        Some(_) => Ok(()),
        None => Err(format!("{uri} is not under this snapshot's own {own}: left alone")),
    }
}

/// Whether the store holds `uri` under `<prefix>/<namespace>/<pod>/`.
fn holds(store: &DumpStore, namespace: &str, pod: &str, uri: &str) -> bool {
    let s3 = &store.spec.s3;
    let prefix = s3.prefix.trim_matches('/');
    let base = if prefix.is_empty() { format!("s3://{}/", s3.bucket) } else { format!("s3://{}/{prefix}/", s3.bucket) };
    check_own(uri, &format!("{base}{namespace}/{pod}/")).is_ok()
}

impl ArtifactDeleter for ObjectStorage {
    fn delete<'a>(
        &'a self,
        snapshot: &'a DumpSnapshot,
        policy: Option<&'a DumpPolicy>,
        uri: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let store = self.store(snapshot, policy, uri, Use::Delete).await?;
            Ok(store.delete(uri).await?)
        })
    }
}

impl ArtifactUrls for ObjectStorage {
    fn fetchable<'a>(
        &'a self,
        snapshot: &'a DumpSnapshot,
        policy: Option<&'a DumpPolicy>,
        uri: &'a str,
    ) -> BoxFuture<'a, Result<String, StorageError>> {
        Box::pin(async move {
            if uri.starts_with("file://") {
                return Ok(uri.to_string());
            }
            let store = self.store(snapshot, policy, uri, Use::Read).await?;
            Ok(store.presign_get(uri, JOB_URL_EXPIRY)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_under_the_snapshots_own_prefix_are_touched() {
        let own = "s3://dumps/dw/shop/cart-1/";
        assert!(check_own("s3://dumps/dw/shop/cart-1/c1/core.42.zst", own).is_ok());
        for elsewhere in [
            "s3://dumps/dw/other-tenant/db-0/c1/core.zst",
            "s3://dumps/dw/shop/cart-10/c1/core.zst",
            "s3://dumps/dw/shop/cart-1/../../other-tenant/db-0/core.zst",
            "s3://dumps/dw/shop/cart-1/",
            "s3://dumps/dw/shop/cart-1//x",
            "s3://dumpsters/dw/shop/cart-1/x",
            "https://evil.example/dw/shop/cart-1/x",
        ] {
            assert!(check_own(elsewhere, own).is_err(), "{elsewhere}");
        }
    }

    #[test]
    fn a_store_holds_the_uris_under_its_bucket_prefix_namespace_and_pod() {
        let store = DumpStore::new(
            "team",
            api::DumpStoreSpec {
                s3: api::StoreS3 { bucket: "dumps".into(), prefix: "/dw/".into(), ..Default::default() },
                allowed_namespaces: None,
            },
        );
        assert!(holds(&store, "shop", "cart-1", "s3://dumps/dw/shop/cart-1/c1/core.42.zst"));
        assert!(!holds(&store, "shop", "cart-1", "s3://dumps/dw/shop/cart-2/c1/core.42.zst"));
        assert!(!holds(&store, "shop", "cart-1", "s3://dumps/other/shop/cart-1/x"));
        assert!(!holds(&store, "shop", "cart-1", "s3://dumpsters/dw/shop/cart-1/x"));
    }
}
