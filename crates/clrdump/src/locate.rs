//! Which DAC to use for a dump: `--dac`, else one beside the dump (as `dumpwatch dump`
//! writes it: `libmscordaccore.so` or `libmscordaccore-<version>.so`), else the runtime
//! folder the dumped process used, else installed runtimes. The DAC's `@(#)Version` must
//! equal the dumped runtime's: a mismatched DAC reads garbage or crashes.
//!
//! `local_runtimes = false` skips the last two: the analysis then depends only on files that
//! travel with the dump (or come from a symbol server by the runtime's build-id), not on
//! whatever runtimes this machine happens to have.

use std::path::{Path, PathBuf};

use crate::core::file_version;
use crate::error::{Error, Result};

/// Installed-runtime roots searched last.
const RUNTIME_ROOTS: &[&str] = &["/usr/share/dotnet", "/usr/lib/dotnet", "/usr/local/share/dotnet", "/opt/dotnet"];

/// Candidate DAC files, most specific first.
pub fn candidates(dump: &Path, runtime_path: Option<&str>, local_runtimes: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let dir = dump.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    out.push(dir.join("libmscordaccore.so"));
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut named: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libmscordaccore-") && n.ends_with(".so"))
            })
            .collect();
        named.sort();
        out.extend(named);
    }
    if !local_runtimes {
        out.retain(|p| p.is_file());
        return out;
    }
    if let Some(rt) = runtime_path.and_then(|p| Path::new(p).parent()) {
        out.push(rt.join("libmscordaccore.so"));
    }
    let mut roots: Vec<PathBuf> = RUNTIME_ROOTS.iter().map(PathBuf::from).collect();
    if let Some(r) = std::env::var_os("DOTNET_ROOT") {
        roots.insert(0, PathBuf::from(r));
    }
    for root in roots {
        if let Ok(entries) = std::fs::read_dir(root.join("shared/Microsoft.NETCore.App")) {
            let mut dirs: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path().join("libmscordaccore.so"))).collect();
            dirs.sort();
            out.extend(dirs);
        }
    }
    out.retain(|p| p.is_file());
    out.dedup();
    out
}

/// Picks the DAC: the explicit one must match; otherwise the first candidate that matches.
/// When the dump's version is unknown, the first candidate is used.
pub fn choose(
    explicit: Option<&Path>,
    dump: &Path,
    runtime_path: Option<&str>,
    version: Option<&str>,
    local_runtimes: bool,
) -> Result<PathBuf> {
    let matches = |dac: &Path| -> Result<bool> {
        let Some(want) = version else { return Ok(true) };
        Ok(file_version(dac)?.as_deref() == Some(want))
    };
    if let Some(dac) = explicit {
        if !dac.is_file() {
            return Err(Error::io(format!("DAC {}", dac.display()), std::io::ErrorKind::NotFound.into()));
        }
        if !matches(dac)? {
            return Err(mismatch(dac, version));
        }
        return Ok(dac.to_path_buf());
    }
    let found = candidates(dump, runtime_path, local_runtimes);
    for c in &found {
        if matches(c)? {
            return Ok(c.clone());
        }
    }
    match found.first() {
        Some(first) => Err(mismatch(first, version)),
        None => Err(Error::DacNotFound {
            runtime_version: version.unwrap_or("unknown").to_string(),
            looked_in: if local_runtimes {
                format!(
                    "{} (beside the dump), the runtime folder of the dumped process, {}",
                    dump.parent().map(|p| p.display().to_string()).unwrap_or_default(),
                    RUNTIME_ROOTS.join(", ")
                )
            } else {
                format!(
                    "{} (beside the dump; local runtimes not searched)",
                    dump.parent().map(|p| p.display().to_string()).unwrap_or_default()
                )
            },
        }),
    }
}

fn mismatch(dac: &Path, version: Option<&str>) -> Error {
    Error::DacMismatch {
        dac: dac.to_path_buf(),
        dac_version: file_version(dac).ok().flatten().unwrap_or_else(|| "unknown".into()),
        runtime_version: version.unwrap_or("unknown").to_string(),
    }
}
