//! The capture store on the shared volume: one directory per capture, made visible only when
//! complete.
//!
//! A capture is written into a hidden `.tmp-<id>` directory and renamed to `<id>` once every file
//! and the manifest are on disk: a reader (the operator, a human, the analysis Job) never sees
//! half a capture. A sidecar killed mid-capture leaves only the hidden directory, which the next
//! start sweeps away.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use api::wire::FileEntry;
use serde::Serialize;

use crate::Error;
use crate::limits::{Stored, retention_victims};

const PENDING_PREFIX: &str = ".tmp-";

pub struct Storage {
    root: PathBuf,
}

impl Storage {
    /// Open (create) the store and remove what an interrupted capture left behind.
    pub fn open(root: &Path) -> Result<Self, Error> {
        fs::create_dir_all(root).map_err(Error::io(format!("creating the capture folder {}", root.display())))?;
        let s = Self { root: root.to_path_buf() };
        for swept in s.sweep() {
            tracing::info!(path = %swept.display(), "removed what an interrupted capture left behind");
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Remove hidden leftovers: pending capture folders and partial files.
    pub fn sweep(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for e in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let gone = if name.starts_with(PENDING_PREFIX) && path.is_dir() {
                fs::remove_dir_all(&path).is_ok()
            } else if name.starts_with('.') && name.ends_with(".partial") {
                fs::remove_file(&path).is_ok()
            } else {
                false
            };
            if gone {
                removed.push(path);
            }
        }
        removed
    }

    /// Bytes held by the store, pending captures included (they count against the budget).
    pub fn used_bytes(&self) -> u64 {
        dir_size(&self.root)
    }

    /// Completed captures with their age.
    pub fn stored(&self) -> Vec<Stored> {
        let now = SystemTime::now();
        fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let m = fs::metadata(e.path().join("manifest.json")).ok()?;
                let age = now.duration_since(m.modified().ok()?).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                Some(Stored { path: e.path(), age_secs: age })
            })
            .collect()
    }

    /// Delete captures beyond the retention policy; returns what was deleted.
    pub fn apply_retention(&self, r: &api::Retention) -> Vec<PathBuf> {
        let victims = retention_victims(&self.stored(), r);
        victims.into_iter().filter(|p| fs::remove_dir_all(p).is_ok()).collect()
    }

    /// Start a capture named `id`.
    pub fn begin(&self, id: &str) -> Result<Pending, Error> {
        let dir = self.root.join(format!("{PENDING_PREFIX}{id}"));
        fs::create_dir(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        Ok(Pending { dir: Some(dir), target: self.root.join(id) })
    }
}

/// A capture being written. Dropped without [`Pending::commit`] (failure, cancellation), it
/// removes its folder.
pub struct Pending {
    dir: Option<PathBuf>,
    target: PathBuf,
}

impl Pending {
    pub fn dir(&self) -> &Path {
        // Only `commit`, which consumes the Pending, takes the directory out.
        self.dir.as_deref().expect("a pending capture has its directory until committed")
    }

    /// Every file written so far, with its size and SHA-256, hashed on a blocking thread (a
    /// multi-GB dump takes seconds: the sessions keep being read meanwhile).
    pub async fn files_async(&self) -> Result<Vec<FileEntry>, Error> {
        let dir = self.dir().to_path_buf();
        tokio::task::spawn_blocking(move || list_files(&dir))
            .await
            .map_err(|e| Error::Io { what: "hashing the capture".into(), source: std::io::Error::other(e) })?
    }
}

fn list_files(dir: &Path) -> Result<Vec<FileEntry>, Error> {
    {
        let mut out = Vec::new();
        let mut entries: Vec<_> = fs::read_dir(dir).map_err(Error::io("listing the capture"))?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "manifest.json" || !e.path().is_file() {
                continue;
            }
            let (bytes, sha256) = store::sha256_file(&e.path()).map_err(Error::store(format!("hashing {name}")))?;
            out.push(FileEntry { name, bytes, sha256 });
        }
        Ok(out)
    }
}

impl Pending {
    /// Write the manifest last, then make the capture visible with one rename.
    pub fn commit<M: Serialize>(mut self, manifest: &M) -> Result<PathBuf, Error> {
        let dir = self.dir.take().expect("a pending capture has its directory until committed");
        let guard = Pending { dir: Some(dir.clone()), target: PathBuf::new() };
        write_json(&dir.join("manifest.json"), manifest)?;
        fs::rename(&dir, &self.target).map_err(Error::io(format!("publishing {}", self.target.display())))?;
        std::mem::forget(guard);
        Ok(self.target.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// Pretty JSON into `path` (a capture's small documents: manifest, finding, stacks, histogram).
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), Error> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Io { what: format!("writing {name}"), source: std::io::Error::other(e) })?;
    fs::write(path, text).map_err(Error::io(format!("writing {name}")))
}

pub fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_capture_appears_whole_or_not_at_all() {
        let root = tempfile::tempdir().unwrap();
        let s = Storage::open(root.path()).unwrap();
        let p = s.begin("c1").unwrap();
        fs::write(p.dir().join("stacks.json"), b"[]").unwrap();
        assert!(s.stored().is_empty(), "pending captures are hidden");
        let files = p.files_async().await.unwrap();
        assert_eq!(files[0].bytes, 2);
        assert_eq!(files[0].sha256, "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945");
        let dir = p.commit(&serde_json::json!({"files": files})).unwrap();
        assert!(dir.join("manifest.json").exists());
        assert_eq!(s.stored().len(), 1);

        let p = s.begin("c2").unwrap();
        fs::write(p.dir().join("core.1"), b"half").unwrap();
        drop(p);
        assert!(!root.path().join(".tmp-c2").exists(), "a dropped capture removes itself");
    }

    #[test]
    fn leftovers_of_a_killed_capture_are_swept_at_open() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join(".tmp-x")).unwrap();
        fs::write(root.path().join(".tmp-x/core.1"), b"half").unwrap();
        fs::write(root.path().join(".core.9.123.partial"), b"half").unwrap();
        fs::create_dir(root.path().join("kept")).unwrap();
        let s = Storage::open(root.path()).unwrap();
        let names: Vec<_> = fs::read_dir(s.root()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("kept")]);
    }
}
