//! Writes the `DumpPolicy` and `DumpSnapshot` CRDs to `crds/` at the workspace root and to the
//! chart's `charts/dumpwatch/crds/` (Helm installs that directory before the templates), or only
//! to the directory given as the only argument. CI regenerates them and fails on drift in either.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dirs = match std::env::args_os().nth(1) {
        Some(dir) => vec![PathBuf::from(dir)],
        None => vec![root.join("crds"), root.join("charts/dumpwatch/crds")],
    };
    for dir in dirs {
        std::fs::create_dir_all(&dir)?;
        for (name, text) in api::crd_yaml() {
            std::fs::write(dir.join(name), text)?;
        }
    }
    Ok(())
}
