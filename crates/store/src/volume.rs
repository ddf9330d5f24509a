//! A directory on a volume (a PVC mounted by whoever holds this store): artifacts are plain files
//! under `root`, addressed as `file:///<absolute path>`.

use std::path::{Component, Path, PathBuf};

use crate::{Error, ObjectInfo};

#[derive(Debug, Clone)]
pub struct VolumeStore {
    root: PathBuf,
}

impl VolumeStore {
    /// `root` as the holder of this store sees it (e.g. the sidecar's mount `/dumpwatch`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<segments...>`, each segment stripped of `/`.
    pub fn path(&self, segments: &[&str]) -> PathBuf {
        segments.iter().fold(self.root.clone(), |p, s| p.join(s.replace('/', "_")))
    }

    pub fn uri(&self, path: &Path) -> String {
        format!("file://{}", path.display())
    }

    /// The path of a `file://` URI, refused unless it lies under the root (no `..`).
    pub fn path_of(&self, uri: &str) -> Result<PathBuf, Error> {
        let path = Path::new(uri.strip_prefix("file://").ok_or_else(|| Error::InvalidUri(uri.to_string()))?);
        let inside = path.starts_with(&self.root)
            && path.components().all(|c| !matches!(c, Component::ParentDir | Component::CurDir))
            && path != self.root;
        if !path.is_absolute() {
            return Err(Error::InvalidUri(uri.to_string()));
        }
        if !inside {
            return Err(Error::NotThisStore { uri: uri.to_string(), store: self.uri(&self.root) });
        }
        Ok(path.to_path_buf())
    }

    /// Deletes the file; a missing file is not an error. The capture directory goes too once empty.
    pub async fn delete(&self, uri: &str) -> Result<(), Error> {
        let path = self.path_of(uri)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { what: format!("deleting {}", path.display()), source }),
        }
        if let Some(parent) = path.parent().filter(|p| *p != self.root) {
            let _ = tokio::fs::remove_dir(parent).await; // fails while other artifacts remain: fine
        }
        Ok(())
    }

    pub async fn head(&self, uri: &str) -> Result<Option<ObjectInfo>, Error> {
        let path = self.path_of(uri)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(ObjectInfo { size: m.len(), etag: None })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io { what: format!("reading {}", path.display()), source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delete_stays_inside_the_root_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let v = VolumeStore::new(dir.path());
        let p = v.path(&["ns", "pod", "c1", "core.zst"]);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"abc").unwrap();
        let uri = v.uri(&p);
        assert_eq!(v.head(&uri).await.unwrap().unwrap().size, 3);
        v.delete(&uri).await.unwrap();
        assert!(v.head(&uri).await.unwrap().is_none() && !p.parent().unwrap().exists());
        v.delete(&uri).await.unwrap();
        let escape = format!("file://{}/../etc/passwd", dir.path().display());
        assert!(matches!(v.delete(&escape).await, Err(Error::NotThisStore { .. })));
        assert!(matches!(v.delete("file://relative/x").await, Err(Error::InvalidUri(_))));
        assert!(matches!(v.delete("s3://b/k").await, Err(Error::InvalidUri(_))));
    }
}
