//! Writes the `DumpPolicy` and `DumpSnapshot` CRDs to `crds/` at the workspace root (or to the
//! directory given as the only argument). CI regenerates them and fails on drift.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds"));
    std::fs::create_dir_all(&dir)?;
    for (name, text) in api::crd_yaml() {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}
