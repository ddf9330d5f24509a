//! The pod's capture log on the capture volume (`<storage>/.state/capture-log.json`): the
//! volume lives as long as the pod, so `maxPerHour` and the cooldown survive a restarted runtime
//! and a restarted sidecar.
//!
//! The app's containers mount that volume too: the file is read with bounds, and one that
//! cannot be read is logged and replaced. (An app that deletes it only lets more captures of
//! itself through, still within the byte budget and the disk reserve.)

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::limits::{CaptureLog, MAX_LOGGED_STARTS};

const DIR: &str = ".state";
const FILE: &str = "capture-log.json";
/// Far above what [`MAX_LOGGED_STARTS`] numbers take.
const MAX_BYTES: u64 = 64 * MAX_LOGGED_STARTS as u64;

fn path(root: &Path) -> PathBuf {
    root.join(DIR).join(FILE)
}

/// The log kept under `root`, or an empty one (with the reason logged) when there is none or it
/// cannot be used.
pub fn load(root: &Path, now: f64) -> CaptureLog {
    let p = path(root);
    let read = std::fs::File::open(&p).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(MAX_BYTES + 1).read_to_end(&mut bytes).map(|_| bytes)
    });
    let bytes = match read {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return CaptureLog::default(),
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "capture log unreadable: starting a new one");
            return CaptureLog::default();
        }
    };
    if bytes.len() as u64 > MAX_BYTES {
        tracing::warn!(path = %p.display(), "capture log larger than any real one: starting a new one");
        return CaptureLog::default();
    }
    match serde_json::from_slice::<CaptureLog>(&bytes) {
        Ok(mut log) => {
            log.prune(now);
            if !log.is_empty() {
                tracing::info!(captures = log.len(), "captures of the last hour carried over (maxPerHour, cooldown)");
            }
            log
        }
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "capture log is not ours: starting a new one");
            CaptureLog::default()
        }
    }
}

/// Writes the log atomically (a temporary file renamed over the old one). A failure is logged:
/// the limits still hold in memory until the sidecar restarts.
pub fn save(root: &Path, log: &CaptureLog) {
    let p = path(root);
    let tmp = p.with_extension("json.partial");
    let written = std::fs::create_dir_all(root.join(DIR))
        .and_then(|()| std::fs::write(&tmp, serde_json::to_vec(log).unwrap_or_default()))
        .and_then(|()| std::fs::rename(&tmp, &p));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(path = %p.display(), error = %e, "capture log not saved: a restarted sidecar would forget it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_survives_a_restart_and_forgets_what_left_the_hour() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = CaptureLog::default();
        log.record(1000.0);
        log.record(4000.0);
        save(dir.path(), &log);
        let back = load(dir.path(), 5000.0);
        assert_eq!(back.len(), 1, "1000 left the hour by 5000");
        assert_eq!(load(dir.path(), 3000.0).len(), 1, "4000 is in the future of 3000, beyond the slack");
    }

    #[test]
    fn a_missing_garbled_or_huge_file_is_a_new_log() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), 0.0).is_empty());
        std::fs::create_dir_all(dir.path().join(DIR)).unwrap();
        for junk in [b"{not json".to_vec(), b"{\"starts\": [\"x\"]}".to_vec(), vec![b' '; MAX_BYTES as usize + 1]] {
            std::fs::write(path(dir.path()), &junk).unwrap();
            assert!(load(dir.path(), 0.0).is_empty());
        }
        // A directory where the file should be: not saved, and no panic.
        std::fs::remove_file(path(dir.path())).unwrap();
        std::fs::create_dir(path(dir.path())).unwrap();
        save(dir.path(), &CaptureLog::default());
    }
}
