//! The controller's view of artifact storage: delete an artifact (finalizer), and turn a stored
//! URI into one the analysis Job can fetch. The storage crate implements both for S3;
//! volumes (`file://`) are handled here.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use api::DumpPolicy;
use futures::future::BoxFuture;

/// Finalizer on every snapshot: removed once its artifacts are deleted from storage.
pub const ARTIFACTS_FINALIZER: &str = "dumpwatch.dev/artifacts";

/// What a storage backend reports; its own error type, boxed.
pub type StorageError = Box<dyn std::error::Error + Send + Sync>;

/// Deletes one stored artifact by its URI (`s3://bucket/key`, `file:///path`). Deleting what is
/// already gone succeeds. `policy` (when it still exists) names the storage and its credentials
/// (`spec.storage`). The storage crate implements it for S3; [`VolumeDeleter`] does volumes.
pub trait ArtifactDeleter: Send + Sync {
    fn delete<'a>(&'a self, policy: Option<&'a DumpPolicy>, uri: &'a str) -> BoxFuture<'a, Result<(), StorageError>>;
}

/// Turns a stored artifact's URI into one the analysis Job can fetch without credentials
/// (a presigned `GET` URL for `s3://`).
pub trait ArtifactUrls: Send + Sync {
    fn fetchable<'a>(
        &'a self,
        policy: Option<&'a DumpPolicy>,
        uri: &'a str,
    ) -> BoxFuture<'a, Result<String, StorageError>>;
}

/// Artifacts stored on a volume the operator mounts: `file://` URIs under `root` only (a URI
/// elsewhere, or with `..`, is refused rather than followed).
pub struct VolumeDeleter {
    pub root: PathBuf,
}

impl VolumeDeleter {
    pub fn path_of(&self, uri: &str) -> Result<PathBuf, StorageError> {
        let path = uri.strip_prefix("file://").ok_or_else(|| format!("{uri} is not a file:// URI"))?;
        let path = Path::new(path);
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) || !path.starts_with(&self.root)
        {
            return Err(format!("{uri} is outside the artifact volume {}", self.root.display()).into());
        }
        Ok(path.to_path_buf())
    }
}

impl ArtifactDeleter for VolumeDeleter {
    fn delete<'a>(&'a self, _policy: Option<&'a DumpPolicy>, uri: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let path = self.path_of(uri)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("deleting {}: {e}", path.display()).into()),
            }
            // The capture's directory goes with its last file; a non-empty one stays.
            if let Some(dir) = path.parent().filter(|d| *d != self.root) {
                let _ = tokio::fs::remove_dir(dir).await;
            }
            Ok(())
        })
    }
}

/// Routes `file://` to the volume deleter and everything else to object storage.
pub struct Deleters {
    pub volume: Option<VolumeDeleter>,
    pub object: Option<Arc<dyn ArtifactDeleter>>,
}

impl ArtifactDeleter for Deleters {
    fn delete<'a>(&'a self, policy: Option<&'a DumpPolicy>, uri: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            if uri.starts_with("file://") {
                match &self.volume {
                    Some(v) => v.delete(policy, uri).await,
                    None => {
                        Err(format!("cannot delete {uri}: the operator has no artifact volume (--artifact-volume)")
                            .into())
                    }
                }
            } else {
                match &self.object {
                    Some(o) => o.delete(policy, uri).await,
                    None => Err(format!("cannot delete {uri}: no object storage is configured in the operator").into()),
                }
            }
        })
    }
}

/// No object storage: only `file://` artifacts can be handed to a Job.
pub struct NoObjectStorage;

impl ArtifactUrls for NoObjectStorage {
    fn fetchable<'a>(
        &'a self,
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
    async fn the_volume_deleter_deletes_inside_its_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let capture = dir.path().join("shop/orders-1/cap1");
        std::fs::create_dir_all(&capture).unwrap();
        let core = capture.join("core.42.zst");
        std::fs::write(&core, b"x").unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        let d = VolumeDeleter { root: dir.path().to_path_buf() };
        d.delete(None, &format!("file://{}", core.display())).await.unwrap();
        assert!(!core.exists() && !capture.exists());
        d.delete(None, &format!("file://{}", core.display())).await.expect("deleting twice succeeds");
        let err = d.delete(None, &format!("file://{}", outside.path().display())).await.unwrap_err();
        assert!(err.to_string().contains("outside the artifact volume"), "{err}");
        assert!(d.delete(None, &format!("file://{}/../x", dir.path().display())).await.is_err());
        let none = Deleters { volume: None, object: None };
        assert!(none.delete(None, "s3://b/k").await.unwrap_err().to_string().contains("no object storage"));
    }
}
