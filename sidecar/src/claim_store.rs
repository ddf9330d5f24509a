//! Volume storage on a claim (operator mode, `storage.volume.claimName`): each finished capture is
//! compressed from the pod's capture dir onto the claim as
//! `<store>/<namespace>/<pod>/<capture>/<file>.zst` (docs/operator.md). Each file is written
//! under a hidden name and renamed, so no half file is ever visible; a file that would leave less
//! than `limits.minFreeDisk` on the claim's file system is refused before it is written.

use std::path::{Path, PathBuf};

use crate::Error;
use crate::artifacts::{self, Planned};
use crate::operator_client::ArtifactRef;
use crate::upload::segment;

/// Where a capture's files go on the claim. Every part is one tame path segment.
pub fn capture_dir(store: &Path, namespace: &str, pod: &str, capture: &str) -> PathBuf {
    store.join(segment(namespace)).join(segment(pod)).join(segment(capture))
}

/// Compress `planned` into `dir` on the claim; the `file://` artifacts to report. A file stored
/// by an earlier attempt is measured, not written again. The originals stay: the caller removes
/// the local capture once the report is confirmed.
pub fn store(dir: &Path, planned: &[Planned], min_free: u64) -> Result<Vec<ArtifactRef>, Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    let mut out = Vec::new();
    for p in planned {
        let dst = dir.join(&p.name);
        let (size, sha256) = if dst.exists() {
            artifacts::sha256_of(&dst)?
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
            artifacts::compress_to_file(&p.source, &dst, available - min_free)?
        };
        out.push(ArtifactRef { kind: p.kind, uri: format!("file://{}", dst.display()), size, sha256 });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_land_compressed_under_namespace_pod_and_capture() {
        let local = tempfile::tempdir().unwrap();
        let claim = tempfile::tempdir().unwrap();
        std::fs::write(local.path().join("core.42"), vec![7u8; 100_000]).unwrap();
        std::fs::write(local.path().join("manifest.json"), b"{}").unwrap();
        let planned = artifacts::plan(local.path()).unwrap();
        let dir = capture_dir(claim.path(), "shop", "orders-1", "c/../1");
        assert_eq!(dir, claim.path().join("shop/orders-1/c-..-1"), "one segment each, no traversal");
        let stored = store(&dir, &planned, 0).unwrap();
        assert_eq!(stored.len(), 1);
        let file = dir.join("core.42.zst");
        assert_eq!(stored[0].uri, format!("file://{}", file.display()));
        let (size, sha) = artifacts::sha256_of(&file).unwrap();
        assert_eq!((stored[0].size, stored[0].sha256.as_str()), (size, sha.as_str()));
        let back = zstd::decode_all(std::fs::File::open(&file).unwrap()).unwrap();
        assert_eq!(back, vec![7u8; 100_000]);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "no partial file left: {names:?}");
        // A retry measures what is there instead of writing again.
        assert_eq!(store(&dir, &planned, 0).unwrap(), stored);
    }

    #[test]
    fn a_claim_short_of_min_free_disk_is_refused_before_writing() {
        let local = tempfile::tempdir().unwrap();
        let claim = tempfile::tempdir().unwrap();
        std::fs::write(local.path().join("core.42"), b"dump").unwrap();
        let planned = artifacts::plan(local.path()).unwrap();
        let dir = capture_dir(claim.path(), "shop", "orders-1", "c1");
        let err = store(&dir, &planned, u64::MAX).unwrap_err();
        assert!(err.to_string().contains("minFreeDisk"), "{err}");
        assert!(!dir.join("core.42.zst").exists());
    }
}
