//! The capture store on the shared volume: one directory per capture, made visible only when
//! complete.
//!
//! A capture is written into a hidden `.tmp-<id>` directory and renamed to `<id>` once every file
//! and the manifest are on disk: a reader (the operator, a human, the analysis Job) never sees
//! half a capture. A sidecar killed mid-capture leaves only the hidden directory, which the next
//! start sweeps away.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use sha2::{Digest, Sha256};

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
        self.dir.as_deref().expect("not committed")
    }

    /// Every file written so far, with its size and SHA-256. Hashing a multi-GB dump takes
    /// seconds: async callers use [`Pending::files_async`] so the sessions keep being read.
    pub fn files(&self) -> Result<Vec<FileEntry>, Error> {
        list_files(self.dir())
    }

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
            let (bytes, sha256) = hash_file(&e.path())?;
            out.push(FileEntry { name, bytes, sha256 });
        }
        Ok(out)
    }
}

impl Pending {
    /// Write the manifest last, then make the capture visible with one rename.
    pub fn commit<M: Serialize>(mut self, manifest: &M) -> Result<PathBuf, Error> {
        let dir = self.dir.take().expect("not committed");
        let guard = Pending { dir: Some(dir.clone()), target: PathBuf::new() };
        let json = serde_json::to_vec_pretty(manifest).expect("manifest serializes");
        fs::write(dir.join("manifest.json"), json).map_err(Error::io("writing manifest.json"))?;
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

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

fn hash_file(p: &Path) -> Result<(u64, String), Error> {
    let mut f = fs::File::open(p).map_err(Error::io(format!("reading {}", p.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(Error::io(format!("reading {}", p.display())))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((total, hex))
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

/// `2026-11-28T02:15:00Z` (UTC), without a date crate: days-from-civil inverted.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_appears_whole_or_not_at_all() {
        let root = tempfile::tempdir().unwrap();
        let s = Storage::open(root.path()).unwrap();
        let p = s.begin("c1").unwrap();
        fs::write(p.dir().join("stacks.json"), b"[]").unwrap();
        assert!(s.stored().is_empty(), "pending captures are hidden");
        let files = p.files().unwrap();
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

    #[test]
    fn dates_are_utc() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_832_100);
        assert_eq!(rfc3339(t), "2026-11-28T02:15:00Z");
    }
}
