//! `dumpwatch delete-artifacts`: the operator's cleanup Job deletes a DumpSnapshot's `file://`
//! artifacts on the claim with it. The Job holds the claim read-write, so this refuses anything
//! that is not under `--under` (the snapshot's `<path>/<namespace>/<pod>`), after resolving the
//! symlinks of each file's directory: a pod that wrote a symlink into its own capture directory
//! cannot make the cleanup delete another pod's files.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

/// What happened to one URI.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted {
    Removed(PathBuf),
    AlreadyGone(PathBuf),
}

/// Deletes each `file://` URI under `under`: every URI is tried; what was done and the errors
/// (one line each).
pub fn delete_all(under: &Path, uris: &[String]) -> (Vec<Deleted>, Vec<String>) {
    let (mut done, mut errors) = (Vec::new(), Vec::new());
    for uri in uris {
        match delete_one(under, uri) {
            Ok(d) => done.push(d),
            Err(e) => errors.push(e),
        }
    }
    (done, errors)
}

fn is_plain_absolute(p: &Path) -> bool {
    p.is_absolute() && p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Deletes one URI's file, then the directories it leaves empty, up to (not including) `under`.
pub fn delete_one(under: &Path, uri: &str) -> Result<Deleted, String> {
    if !is_plain_absolute(under) {
        return Err(format!("--under {}: must be an absolute path without . or ..", under.display()));
    }
    let path = uri
        .strip_prefix("file://")
        .map(Path::new)
        .ok_or_else(|| format!("{uri}: not a file:// URI (object storage is deleted by the operator itself)"))?;
    if !is_plain_absolute(path) {
        return Err(format!("{uri}: the path must be absolute, without . or .."));
    }
    if path == under || !path.starts_with(under) {
        return Err(format!("{uri}: refused, not under {}", under.display()));
    }
    let (Some(parent), Some(file)) = (path.parent(), path.file_name()) else {
        return Err(format!("{uri}: no file name"));
    };
    // Nothing left of `under` or the file's directory: the file is gone with it.
    let root = match std::fs::canonicalize(under) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Deleted::AlreadyGone(path.to_path_buf())),
        Err(e) => return Err(format!("{}: {e}", under.display())),
    };
    let dir = match std::fs::canonicalize(parent) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Deleted::AlreadyGone(path.to_path_buf())),
        Err(e) => return Err(format!("{}: {e}", parent.display())),
    };
    if !dir.starts_with(&root) {
        return Err(format!(
            "{uri}: refused, its directory resolves to {} (a symlink out of {})",
            dir.display(),
            under.display()
        ));
    }
    let target = dir.join(file);
    // lstat: a symlink named like the file is removed itself, its target is never followed.
    match std::fs::symlink_metadata(&target) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Deleted::AlreadyGone(path.to_path_buf())),
        Err(e) => return Err(format!("{}: {e}", target.display())),
        Ok(m) if m.is_dir() => return Err(format!("{uri}: refused, a directory, not an artifact file")),
        Ok(_) => {}
    }
    match std::fs::remove_file(&target) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Deleted::AlreadyGone(path.to_path_buf())),
        Err(e) => return Err(format!("deleting {}: {e}", target.display())),
    }
    // The capture's directory goes with its last file; a non-empty one (or `under`) stays.
    let mut up = Some(dir.as_path());
    while let Some(d) = up.filter(|d| *d != root && d.starts_with(&root)) {
        if std::fs::remove_dir(d).is_err() {
            break;
        }
        up = d.parent();
    }
    Ok(Deleted::Removed(path.to_path_buf()))
}
