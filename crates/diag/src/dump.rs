//! Core dumps through the runtime (it forks its own createdump), written where the caller
//! wants them, with the matching DAC beside, never a half file, never a full disk.
//!
//! The runtime writes the dump in *its* mount namespace. When the target shares ours we ask for
//! a hidden temporary name in the destination folder and rename it when complete. When it does
//! not (private `/tmp`, another container), it writes into its own temp dir and we move the
//! file out through `/proc/<pid>/root`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::Error;
use crate::client::DiagnosticsClient;
use crate::discovery::DotnetProcess;
use crate::protocol::DumpType;

/// Free space to leave on the destination file system besides the dump itself.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, serde::Serialize)]
pub struct DumpResult {
    pub path: PathBuf,
    pub bytes: u64,
    pub dump_type: DumpType,
    pub seconds: f64,
    /// The runtime's own `libmscordaccore.so`, copied next to the dump for offline analysis.
    pub dac: Option<PathBuf>,
    pub runtime_version: Option<String>,
}

/// Upper bound of the dump size: a heap or full dump holds every resident page and can hold
/// more (mapped but swapped or file-backed pages), so take the larger of RSS and the
/// anonymous + file mappings that are resident, with a margin. Mini dumps are small.
pub fn estimate_dump_bytes(proc_status: &str, dump_type: DumpType) -> u64 {
    let kb = |key: &str| -> u64 {
        proc_status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l[key.len()..].split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let rss = kb("VmRSS:") * 1024;
    match dump_type {
        DumpType::Mini | DumpType::Triage => 64 << 20,
        DumpType::WithHeap => rss + rss / 4 + (64 << 20),
        DumpType::Full => (kb("VmRSS:") + kb("VmSwap:")) * 1024 * 2 + (128 << 20),
    }
}

/// Free bytes for an unprivileged writer on the file system holding `dir`.
pub fn available_bytes(dir: &Path) -> Result<u64, Error> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| Error::Io { what: format!("checking free space in {}", dir.display()), source: e.into() })?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// Refuse a dump that would not fit with `min_free` to spare.
pub fn check_disk(dir: &Path, needed: u64, min_free: u64) -> Result<(), Error> {
    let available = available_bytes(dir)?;
    if available < needed.saturating_add(min_free) {
        return Err(Error::InsufficientDisk { dir: dir.to_path_buf(), needed: needed + min_free, available });
    }
    Ok(())
}

pub struct DumpRequest<'a> {
    pub process: &'a DotnetProcess,
    pub output: &'a Path,
    pub dump_type: DumpType,
    pub min_free_bytes: u64,
    pub copy_dac: bool,
}

/// Write a core dump of `req.process` to `req.output`.
pub async fn write_dump(client: &DiagnosticsClient, req: &DumpRequest<'_>) -> Result<DumpResult, Error> {
    let started = Instant::now();
    let out = absolute(req.output)?;
    let dir = out.parent().ok_or_else(|| Error::Invalid(format!("{} has no parent folder", out.display())))?;
    if !dir.is_dir() {
        return Err(Error::Invalid(format!("output folder {} does not exist", dir.display())));
    }
    if out.exists() {
        return Err(Error::Invalid(format!("{} already exists; refusing to overwrite it", out.display())));
    }
    let status = fs::read_to_string(format!("/proc/{}/status", req.process.pid)).unwrap_or_default();
    let estimate = estimate_dump_bytes(&status, req.dump_type);
    check_disk(dir, estimate, req.min_free_bytes)?;

    let file_name = out.file_name().and_then(|n| n.to_str()).unwrap_or("core");
    let partial_name = format!(".{file_name}.{}.partial", std::process::id());
    let result = if req.process.foreign_mount_ns {
        dump_via_target_tmp(client, req, &partial_name, dir, &out, estimate).await
    } else {
        let partial = dir.join(&partial_name);
        let guard = RemoveOnDrop(Some(partial.clone()));
        request_dump(client, path_str(&partial)?, &partial, req.dump_type).await?;
        fs::rename(&partial, &out).map_err(Error::io(format!(
            "renaming {} to {}",
            partial.display(),
            out.display()
        )))?;
        guard.disarm();
        Ok(())
    };
    result?;
    let bytes = fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let dac = if req.copy_dac { copy_dac(req.process, dir)? } else { None };
    Ok(DumpResult {
        path: out,
        bytes,
        dump_type: req.dump_type,
        seconds: started.elapsed().as_secs_f64(),
        dac,
        runtime_version: req.process.runtime_version.clone(),
    })
}

async fn dump_via_target_tmp(
    client: &DiagnosticsClient,
    req: &DumpRequest<'_>,
    partial_name: &str,
    dir: &Path,
    out: &Path,
    estimate: u64,
) -> Result<(), Error> {
    let inside = format!("{}/{partial_name}", req.process.tmpdir.trim_end_matches('/'));
    let seen_from_us = PathBuf::from(format!("/proc/{}/root{inside}", req.process.pid));
    // The target's temp dir must hold the dump too, until we move it out.
    let tmp_parent = seen_from_us.parent().map(Path::to_path_buf).unwrap_or_default();
    check_disk(&tmp_parent, estimate, req.min_free_bytes)?;
    let src_guard = RemoveOnDrop(Some(seen_from_us.clone()));
    request_dump(client, &inside, &seen_from_us, req.dump_type).await?;
    let partial = dir.join(partial_name);
    let dst_guard = RemoveOnDrop(Some(partial.clone()));
    // A dump is gigabytes: copy without blocking the caller's runtime thread (a sidecar keeps
    // its sessions on that thread).
    tokio::fs::copy(&seen_from_us, &partial)
        .await
        .map_err(Error::io(format!("copying the dump out of {}", seen_from_us.display())))?;
    fs::rename(&partial, out).map_err(Error::io(format!("renaming {} to {}", partial.display(), out.display())))?;
    dst_guard.disarm();
    drop(src_guard);
    Ok(())
}

/// How often a refused dump is retried.
const DUMP_ATTEMPTS: u32 = 3;

/// Ask the runtime for a dump at `inside` (its own view of the path; `local` is ours), retrying
/// a refusal: createdump attaches to every thread with ptrace, and a thread that exits in that
/// moment makes the whole dump fail (ESRCH) although the process is fine.
async fn request_dump(
    client: &DiagnosticsClient,
    inside: &str,
    local: &Path,
    dump_type: DumpType,
) -> Result<(), Error> {
    let mut attempt = 1;
    loop {
        match client.write_dump(inside, dump_type, false).await {
            Err(e @ Error::Runtime { .. }) if attempt < DUMP_ATTEMPTS => {
                tracing::warn!(attempt, error = %e, "the runtime could not write the dump; retrying");
                let _ = fs::remove_file(local);
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt as u64)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Copy the runtime's DAC next to the dump as `libmscordaccore.so`; if a different DAC is
/// already there (a dump of another runtime version in the same folder), name it by version.
fn copy_dac(process: &DotnetProcess, dir: &Path) -> Result<Option<PathBuf>, Error> {
    let Some(src) = process.dac_path() else { return Ok(None) };
    if !src.exists() {
        return Ok(None);
    }
    let plain = dir.join("libmscordaccore.so");
    let versioned = dir.join(format!("libmscordaccore-{}.so", process.runtime_version.as_deref().unwrap_or("unknown")));
    for candidate in [&plain, &versioned] {
        if !candidate.exists() {
            let tmp = dir.join(format!(".libmscordaccore.{}.partial", std::process::id()));
            let guard = RemoveOnDrop(Some(tmp.clone()));
            fs::copy(&src, &tmp).map_err(Error::io(format!("copying the DAC from {}", src.display())))?;
            fs::rename(&tmp, candidate).map_err(Error::io("placing the DAC next to the dump"))?;
            guard.disarm();
            return Ok(Some(candidate.clone()));
        }
        if same_contents(&src, candidate) {
            return Ok(Some(candidate.clone()));
        }
    }
    Ok(Some(versioned))
}

fn same_contents(a: &Path, b: &Path) -> bool {
    match (fs::read(a), fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn absolute(p: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(p).map_err(Error::io(format!("resolving {}", p.display())))
}

fn path_str(p: &Path) -> Result<&str, Error> {
    p.to_str().ok_or_else(|| Error::Invalid(format!("{} is not valid UTF-8", p.display())))
}

/// Deletes a partial file unless disarmed: a failed or cancelled dump leaves nothing behind.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_grows_with_rss_and_type() {
        let status = "VmRSS:\t  102400 kB\nVmSwap:\t 0 kB\n";
        let heap = estimate_dump_bytes(status, DumpType::WithHeap);
        assert!((100 << 20..300 << 20).contains(&heap), "{heap}");
        assert!(estimate_dump_bytes(status, DumpType::Full) > heap);
        assert_eq!(estimate_dump_bytes(status, DumpType::Mini), 64 << 20);
    }

    #[test]
    fn disk_guard_refuses_what_cannot_fit() {
        let dir = tempfile::tempdir().unwrap();
        let avail = available_bytes(dir.path()).unwrap();
        assert!(check_disk(dir.path(), 1, 0).is_ok());
        let err = check_disk(dir.path(), avail + 1, 0).unwrap_err();
        assert!(matches!(err, Error::InsufficientDisk { .. }), "{err}");
    }

    #[test]
    fn remove_on_drop_cleans_unless_disarmed() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, b"x").unwrap();
        fs::write(&b, b"x").unwrap();
        drop(RemoveOnDrop(Some(a.clone())));
        RemoveOnDrop(Some(b.clone())).disarm();
        assert!(!a.exists());
        assert!(b.exists());
    }
}
