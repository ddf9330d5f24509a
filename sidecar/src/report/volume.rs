//! Volume storage: the sidecar writes the artifacts itself and reports `file://` URIs. Blocking
//! (compression): callers run these with [`super::blocking`].
//!
//! - On a claim (operator mode, `storage.volume.claimName`): each capture is compressed from the
//!   pod's capture dir onto the claim as `<claim>/<namespace>/<pod>/<capture>/<file>.zst`
//!   (docs/operator.md). A file that would leave less than `limits.minFreeDisk` on the claim's
//!   file system is refused before it is written.
//! - Without a claim: compressed in place, each original removed once its `.zst` is complete,
//!   never passing `limits.maxBytes`.
//!
//! Either way each file is written under a hidden name and renamed: no half file is visible.

use std::path::{Path, PathBuf};

use api::Artifact;

use super::{Planned, artifact};
use crate::Error;
use crate::ids::segment;

/// Where a capture's files go on the claim. Every part is one tame path segment.
pub fn claim_capture_dir(claim: &Path, namespace: &str, pod: &str, capture: &str) -> PathBuf {
    claim.join(segment(namespace)).join(segment(pod)).join(segment(capture))
}

/// Compress `planned` into `dir` on the claim; the `file://` artifacts to report. A file stored
/// by an earlier attempt is measured, not written again. The originals stay: the caller removes
/// the local capture once the report is confirmed.
pub fn store_on_claim(dir: &Path, planned: &[Planned], min_free: u64) -> Result<Vec<Artifact>, Error> {
    // A finding alone (a growth verdict): no folder on the claim that no snapshot would delete.
    if planned.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    // The sidecar runs as the app's user; the cleanup Job that deletes these files later runs
    // as dumpwatch's. Deleting needs write access to the directories only: the namespace, pod
    // and capture directories are open to every user of the claim (which only dumpwatch's
    // sidecars and Jobs mount); the files keep their owner's mode.
    for d in dir.ancestors().take(3) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777));
    }
    let mut out = Vec::new();
    for p in planned {
        let dst = dir.join(&p.name);
        let stored = if dst.exists() {
            measure_stored(&dst)?
        } else {
            let available = diag::dump::available_bytes(dir)?;
            if available <= min_free {
                return Err(Error::Io {
                    what: format!("storing {} on the claim", p.name),
                    source: std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        format!("{available} bytes free, limits.minFreeDisk keeps {min_free}"),
                    ),
                });
            }
            // The compressed bytes may use what is free beyond minFreeDisk, no more.
            compress(&p.source, &dst, available - min_free)?
        };
        out.push(artifact(p, format!("file://{}", dst.display()), &stored));
    }
    Ok(out)
}

/// Each file becomes `<file>.zst` beside it, the original removed once that is complete.
pub fn compress_in_place(root: &Path, planned: &[Planned], max_bytes: u64) -> Result<Vec<Artifact>, Error> {
    let mut out = Vec::new();
    for p in planned {
        let dst = p.source.with_file_name(&p.name);
        let stored = if p.source == dst {
            measure_stored(&dst)? // compressed by an earlier attempt
        } else {
            let headroom = max_bytes.saturating_sub(crate::storage::dir_size(root));
            let c = compress(&p.source, &dst, headroom)?;
            std::fs::remove_file(&p.source).map_err(Error::io(format!("removing {}", p.source.display())))?;
            c
        };
        let abs = std::path::absolute(&dst).map_err(Error::io("resolving the artifact path"))?;
        out.push(artifact(p, format!("file://{}", abs.display()), &stored));
    }
    Ok(out)
}

fn compress(src: &Path, dst: &Path, max_bytes: u64) -> Result<store::Compressed, Error> {
    store::compress_file(src, dst, max_bytes).map_err(Error::store(format!("compressing {}", src.display())))
}

/// Size and SHA-256 of a file stored by an earlier attempt.
fn measure_stored(path: &Path) -> Result<store::Compressed, Error> {
    let (size, sha256) = store::sha256_file(path).map_err(Error::store(format!("reading {}", path.display())))?;
    Ok(store::Compressed { size, sha256, raw_size: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::plan;

    fn decompressed(path: &Path, sha256: &str) -> Vec<u8> {
        let mut out = Vec::new();
        store::verify_and_decompress(std::fs::File::open(path).unwrap(), sha256, &mut out).unwrap();
        out
    }

    #[test]
    fn captures_land_compressed_under_namespace_pod_and_capture() {
        let local = tempfile::tempdir().unwrap();
        let claim = tempfile::tempdir().unwrap();
        std::fs::write(local.path().join("core.42"), vec![7u8; 100_000]).unwrap();
        std::fs::write(local.path().join("manifest.json"), b"{}").unwrap();
        let planned = plan(local.path()).unwrap();
        let dir = claim_capture_dir(claim.path(), "shop", "orders-1", "c/../1");
        assert_eq!(dir, claim.path().join("shop/orders-1/c-..-1"), "one segment each, no traversal");
        let stored = store_on_claim(&dir, &planned, 0).unwrap();
        assert_eq!(stored.len(), 1);
        let file = dir.join("core.42.zst");
        assert_eq!(stored[0].uri, format!("file://{}", file.display()));
        let (size, sha) = store::sha256_file(&file).unwrap();
        assert_eq!((stored[0].size, stored[0].sha256.as_str()), (size, sha.as_str()));
        assert_eq!(decompressed(&file, &sha), vec![7u8; 100_000]);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no partial file left: {names:?}");
        // A retry measures what is there instead of writing again.
        assert_eq!(store_on_claim(&dir, &planned, 0).unwrap(), stored);
    }

    #[test]
    fn a_claim_short_of_min_free_disk_is_refused_before_writing() {
        let local = tempfile::tempdir().unwrap();
        let claim = tempfile::tempdir().unwrap();
        std::fs::write(local.path().join("core.42"), b"dump").unwrap();
        let planned = plan(local.path()).unwrap();
        let dir = claim_capture_dir(claim.path(), "shop", "orders-1", "c1");
        let err = store_on_claim(&dir, &planned, u64::MAX).unwrap_err();
        assert!(err.to_string().contains("minFreeDisk"), "{err}");
        assert!(!err.is_transient(), "a full claim is reported, not retried for minutes");
        assert!(!dir.join("core.42.zst").exists());
    }

    #[test]
    fn in_place_each_file_becomes_its_zst_and_a_retry_measures_it() {
        let root = tempfile::tempdir().unwrap();
        let capture = root.path().join("c1");
        std::fs::create_dir(&capture).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        std::fs::write(capture.join("core.1"), &data).unwrap();
        let first = compress_in_place(root.path(), &plan(&capture).unwrap(), u64::MAX).unwrap();
        assert!(!capture.join("core.1").exists(), "the original goes once its .zst is complete");
        assert!(first[0].size < data.len() as u64 / 5, "compresses: {}", first[0].size);
        assert_eq!(decompressed(&capture.join("core.1.zst"), &first[0].sha256), data);
        assert_eq!(compress_in_place(root.path(), &plan(&capture).unwrap(), u64::MAX).unwrap(), first);
    }
}
