//! The controller's view of artifact storage: delete an artifact (finalizer), and turn a stored
//! URI into one the analysis Job can fetch. The storage crate implements both for S3;
//! files on a claim (`file://`) are deleted by a Job (cleanup.rs).

use std::sync::Arc;

use api::{DumpPolicy, DumpSnapshot};
use futures::future::BoxFuture;

/// Finalizer on every snapshot: removed once its artifacts are deleted from storage.
pub const ARTIFACTS_FINALIZER: &str = "dumpwatch.dev/artifacts";

/// What a storage backend reports; its own error type, boxed.
pub type StorageError = Box<dyn std::error::Error + Send + Sync>;

/// Deletes one stored artifact of `snapshot` by its URI (`s3://bucket/key`). Deleting what is
/// already gone succeeds. The snapshot's `spec.store` (or its `policy`'s, when it still exists)
/// names the store and its credentials; a URI outside the snapshot's own
/// `<store prefix>/<namespace>/<pod>/` is refused, never followed.
pub trait ArtifactDeleter: Send + Sync {
    fn delete<'a>(
        &'a self,
        snapshot: &'a DumpSnapshot,
        policy: Option<&'a DumpPolicy>,
        uri: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>>;
}

/// Turns a stored artifact's URI into one the analysis Job can fetch without credentials
/// (a presigned `GET` URL for `s3://`), under the same rule as [`ArtifactDeleter`].
pub trait ArtifactUrls: Send + Sync {
    fn fetchable<'a>(
        &'a self,
        snapshot: &'a DumpSnapshot,
        policy: Option<&'a DumpPolicy>,
        uri: &'a str,
    ) -> BoxFuture<'a, Result<String, StorageError>>;
}

/// Routes artifacts to the object storage that deletes them. `file://` artifacts never come
/// here: those on a claim are deleted by the cleanup Job, those in a pod's emptyDir went with it.
pub struct Deleters {
    pub object: Option<Arc<dyn ArtifactDeleter>>,
}

impl ArtifactDeleter for Deleters {
    fn delete<'a>(
        &'a self,
        snapshot: &'a DumpSnapshot,
        policy: Option<&'a DumpPolicy>,
        uri: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            if uri.starts_with("file://") {
                return Err(
                    format!("{uri}: files are deleted by the snapshot's cleanup Job, not by the operator").into()
                );
            }
            match &self.object {
                Some(o) => o.delete(snapshot, policy, uri).await,
                None => Err(format!("cannot delete {uri}: no object storage is configured in the operator").into()),
            }
        })
    }
}

/// No object storage: only `file://` artifacts can be handed to a Job.
pub struct NoObjectStorage;

impl ArtifactUrls for NoObjectStorage {
    fn fetchable<'a>(
        &'a self,
        _snapshot: &'a DumpSnapshot,
        _policy: Option<&'a DumpPolicy>,
        uri: &'a str,
    ) -> BoxFuture<'a, Result<String, StorageError>> {
        Box::pin(async move {
            if uri.starts_with("file://") {
                Ok(uri.to_string())
            } else {
                Err(format!("cannot give the analysis Job {uri}: no object storage is configured in the operator")
                    .into())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn deleters_route_objects_and_refuse_files() {
        let none = Deleters { object: None };
        let s = crate::controller::testing::snapshot("s", "Analyzed");
        assert!(none.delete(&s, None, "s3://b/k").await.unwrap_err().to_string().contains("no object storage"));
        let file = none.delete(&s, None, "file:///dumps/shop/p/c1/core.zst").await.unwrap_err().to_string();
        assert!(file.contains("cleanup Job"), "{file}");
    }
}
