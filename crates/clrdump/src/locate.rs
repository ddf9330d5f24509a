//! Which DAC to use for a dump, and only from a source the person running the analysis trusts
//! (docs/security.md, "DAC provenance"). Loading a DAC runs its native code (ELF constructors
//! first), so a DAC chosen by the dumped app would be code execution in the analyzer.
//!
//! In order:
//! 1. `--dac`: the person at the CLI chose it.
//! 2. An admin DAC store ([`Trust::store`]): `<store>/<libcoreclr build-id>/libmscordaccore.so`,
//!    listed with its SHA-256 in `<store>/<build-id>/SHA256SUMS` (what `dumpwatch dac-store add`
//!    writes). Looked up by the dumped `libcoreclr.so`'s build-id, read from the dump.
//! 3. A DAC that travelled with the capture (beside the dump: `libmscordaccore.so` or
//!    `libmscordaccore-<version>.so`, as `dumpwatch dump` and the sidecar write it): only with
//!    [`Trust::beside_dump`] (`--trust-dac-beside-dump`), because whoever could write the
//!    capture folder (the app pod) chose that file. Otherwise it is ignored with a warning.
//! 4. The runtime installed here ([`Trust::local_runtimes`]): the dumped process' runtime folder
//!    when it exists on this machine, then the usual install roots; a candidate counts only
//!    when the `libcoreclr.so` beside it has the dumped build-id (when both are known), else the
//!    dumped version.
//!
//! (A symbol server by build-id is the CLI's business: it runs after this finds nothing.)
//!
//! Every DAC must carry an `@(#)Version` string equal to the dumped runtime's: a missing string
//! is a mismatch, never a match. When the dump does not tell its version (.NET 8 heap dumps
//! leave that page out), the build-id (store, local runtime) is what identifies the build.

use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::core::file_version;
use crate::error::{Error, Result};

/// Installed-runtime roots searched last.
const RUNTIME_ROOTS: &[&str] = &["/usr/share/dotnet", "/usr/lib/dotnet", "/usr/local/share/dotnet", "/opt/dotnet"];
/// The DAC's file name in a store entry and a runtime folder.
pub const DAC_NAME: &str = "libmscordaccore.so";
/// The checksum list of a store entry.
pub const SUMS_NAME: &str = "SHA256SUMS";

/// Which sources besides `--dac` may provide the DAC.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// An admin DAC store (read-only in the analysis Job).
    pub store: Option<PathBuf>,
    /// Use a DAC found beside the dump (it travelled with the capture: the app pod chose it).
    pub beside_dump: bool,
    /// Search the dumped process' runtime folder and runtimes installed here.
    pub local_runtimes: bool,
}

/// Where the chosen DAC came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// `--dac`.
    Explicit,
    /// The admin DAC store.
    Store,
    /// Beside the dump, trusted explicitly.
    BesideDump,
    /// A runtime installed on this machine.
    LocalRuntime,
    /// Downloaded from a symbol server by build-id (set by the CLI).
    SymbolServer,
}

impl std::fmt::Display for Provenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provenance::Explicit => "given with --dac",
            Provenance::Store => "from the DAC store",
            Provenance::BesideDump => "beside the dump (trusted with --trust-dac-beside-dump)",
            Provenance::LocalRuntime => "from a runtime installed here",
            Provenance::SymbolServer => "from a symbol server",
        })
    }
}

/// What the dump tells about its runtime.
#[derive(Clone, Debug, Default)]
pub struct Dumped<'a> {
    /// `libcoreclr.so`'s path in the dumped process.
    pub runtime_path: Option<&'a str>,
    /// Its `@(#)Version`, when the dump (or that file here) tells it.
    pub version: Option<&'a str>,
    /// Its GNU build-id, from the dump's memory.
    pub build_id: Option<&'a [u8]>,
}

/// The DAC chosen, where from, and what the person should know.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub path: PathBuf,
    pub provenance: Provenance,
    /// E.g. a DAC beside the dump that was ignored.
    pub warnings: Vec<String>,
}

/// DACs beside the dump, most specific first.
pub fn beside_dump(dump: &Path) -> Vec<PathBuf> {
    let dir = dump.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut out = vec![dir.join(DAC_NAME)];
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
    out.retain(|p| p.is_file());
    out
}

/// DACs of local runtimes: the dumped process' runtime folder, then installed runtimes.
///
/// The dump names the runtime folder, so a hostile dump can point it into a folder its author
/// filled (the capture folder a person copied, with a `libcoreclr.so` of the claimed build-id
/// and a "DAC" beside it). That folder counts only when it lies outside the dump's folder and
/// the one above it, and the DAC and its folder are owned by root or by us and writable by
/// nobody else.
fn local_candidates(runtime_path: Option<&str>, dump: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(rt) = runtime_path.and_then(|p| Path::new(p).parent()) {
        let dac = rt.join(DAC_NAME);
        if !near_the_dump(rt, dump) && admin_owned(&dac) && admin_owned(rt) {
            out.push(dac);
        }
    }
    let mut roots: Vec<PathBuf> = RUNTIME_ROOTS.iter().map(PathBuf::from).collect();
    if let Some(r) = std::env::var_os("DOTNET_ROOT") {
        roots.insert(0, PathBuf::from(r));
    }
    for root in roots {
        if let Ok(entries) = std::fs::read_dir(root.join("shared/Microsoft.NETCore.App")) {
            let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path().join(DAC_NAME))).collect();
            dirs.sort();
            out.extend(dirs);
        }
    }
    out.retain(|p| p.is_file());
    out.dedup();
    out
}

/// `dir` is the dump's folder or the one above it, or lies under them.
fn near_the_dump(dir: &Path, dump: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let dump_dir = canon(dump).parent().map(Path::to_path_buf);
    let top = dump_dir.as_deref().and_then(Path::parent).or(dump_dir.as_deref());
    let dir = canon(dir);
    top.is_some_and(|t| t != Path::new("/") && dir.starts_with(t))
}

/// A directory whose files we may trust as our own (a cache of downloaded DACs): created with
/// mode 0700 when missing; otherwise it must be ours and writable by neither group nor others
/// (a default under a shared `/tmp` could have been made by another user, who would then choose
/// the DAC).
pub fn private_dir(dir: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot be created: {e}"))?;
    #[allow(unsafe_code)]
    // SAFETY: geteuid takes no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    let m = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    if m.uid() != me {
        return Err(format!("belongs to uid {}, not to you (uid {me})", m.uid()));
    }
    if m.mode() & 0o022 != 0 {
        return Err(format!("is writable by others (mode {:o})", m.mode() & 0o777));
    }
    Ok(())
}

/// Owned by root or by us, and writable by neither group nor others.
fn admin_owned(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid takes no arguments and cannot fail.
    #[allow(unsafe_code)]
    let me = unsafe { libc::geteuid() };
    std::fs::metadata(path).is_ok_and(|m| (m.uid() == 0 || m.uid() == me) && m.mode() & 0o022 == 0)
}

/// The DAC's own `@(#)Version` agrees with the dumped one: it must have one, and equal the
/// dump's when the dump tells it.
fn version_ok(dac: &Path, want: Option<&str>) -> Result<bool> {
    Ok(match (file_version(dac)?, want) {
        (None, _) => false,
        (Some(have), Some(want)) => have == want,
        (Some(_), None) => true,
    })
}

/// Picks the DAC (see the module's doc for the order). `explicit` is `--dac`; `captured` is a
/// DAC that travelled with the capture but was fetched elsewhere (the analysis Job's
/// artifacts), treated like one beside the dump.
pub fn choose(
    explicit: Option<&Path>,
    captured: Option<&Path>,
    dump: &Path,
    dumped: &Dumped<'_>,
    trust: &Trust,
) -> Result<Chosen> {
    let mut warnings = Vec::new();
    if let Some(dac) = explicit {
        if !dac.is_file() {
            return Err(Error::io(format!("DAC {}", dac.display()), std::io::ErrorKind::NotFound.into()));
        }
        if !version_ok(dac, dumped.version)? {
            return Err(mismatch(dac, dumped.version));
        }
        if dumped.version.is_none() {
            warnings.push(unverified(dac));
        }
        return Ok(Chosen { path: dac.to_path_buf(), provenance: Provenance::Explicit, warnings });
    }
    let mut looked = Vec::new();
    let mut first_mismatch: Option<PathBuf> = None;
    let mut beside = beside_dump(dump);
    beside.extend(captured.map(Path::to_path_buf).filter(|c| !beside.contains(c)));
    if !trust.beside_dump {
        // Said whichever source serves the dump: the person should know it was there.
        warnings.extend(beside.iter().map(|dac| ignored_beside(dac)));
    }

    if let Some(store) = &trust.store {
        match dumped.build_id {
            Some(id) => {
                let hex = crate::buildid::hex(id);
                let entry = store.join(&hex);
                if entry.join(DAC_NAME).is_file() {
                    let dac = store_entry(&entry)?;
                    if !version_ok(&dac, dumped.version)? {
                        return Err(mismatch(&dac, dumped.version));
                    }
                    return Ok(Chosen { path: dac, provenance: Provenance::Store, warnings });
                }
                looked.push(format!("the DAC store ({} has no entry)", entry.display()));
            }
            None => looked.push(format!(
                "the DAC store {} (not usable: the dump does not tell libcoreclr.so's build-id)",
                store.display()
            )),
        }
    }

    if trust.beside_dump {
        for dac in &beside {
            if version_ok(dac, dumped.version)? {
                if dumped.version.is_none() {
                    warnings.push(unverified(dac));
                }
                return Ok(Chosen { path: dac.clone(), provenance: Provenance::BesideDump, warnings });
            }
            first_mismatch.get_or_insert(dac.clone());
        }
        looked.push("beside the dump".into());
    }

    if trust.local_runtimes {
        for dac in local_candidates(dumped.runtime_path, dump) {
            let runtime = dac.with_file_name("libcoreclr.so");
            let local_id = crate::buildid::file_build_id(&runtime).ok();
            let same_build = match (dumped.build_id, local_id.as_deref()) {
                (Some(want), Some(have)) => want == have,
                // Without both ids the version is all there is: it must be known.
                _ => dumped.version.is_some(),
            };
            if same_build && version_ok(&dac, dumped.version)? {
                return Ok(Chosen { path: dac, provenance: Provenance::LocalRuntime, warnings });
            }
            first_mismatch.get_or_insert(dac);
        }
        looked.push(format!("the dumped process' runtime folder, {}", RUNTIME_ROOTS.join(", ")));
    } else {
        looked.push("(local runtimes not searched)".into());
    }

    if let Some(dac) = first_mismatch {
        return Err(mismatch(&dac, dumped.version));
    }
    let mut looked_in = looked.join(", ");
    for w in &warnings {
        looked_in.push_str("; ");
        looked_in.push_str(w);
    }
    Err(Error::DacNotFound { runtime_version: dumped.version.unwrap_or("unknown").to_string(), looked_in })
}

/// The DAC of a store entry, checked against the entry's `SHA256SUMS`.
fn store_entry(entry: &Path) -> Result<PathBuf> {
    let dac = entry.join(DAC_NAME);
    let sums_path = entry.join(SUMS_NAME);
    let bad = |why: String| Error::DacStore { entry: entry.to_path_buf(), why };
    let sums = std::fs::read_to_string(&sums_path)
        .map_err(|e| bad(format!("{} unreadable ({e}); lay entries out with `dumpwatch dac-store add`", SUMS_NAME)))?;
    let want = sums_entry(&sums, DAC_NAME).ok_or_else(|| bad(format!("{SUMS_NAME} does not list {DAC_NAME}")))?;
    let bytes = std::fs::read(&dac).map_err(|e| Error::io(format!("reading {}", dac.display()), e))?;
    let have = crate::buildid::hex(&sha2::Sha256::digest(&bytes));
    if have != want {
        return Err(bad(format!("{DAC_NAME} has SHA-256 {have}, {SUMS_NAME} says {want}")));
    }
    Ok(dac)
}

/// Adds the DAC `dac` to the store `store` under the build-id of `runtime` (the
/// `libcoreclr.so` of the same runtime build, by default the one beside the DAC): copies it to
/// `<store>/<build-id>/libmscordaccore.so` and writes `SHA256SUMS`. Both files must carry the
/// same `@(#)Version`. Returns the entry's directory.
pub fn store_add(store: &Path, dac: &Path, runtime: Option<&Path>) -> Result<PathBuf> {
    let runtime = runtime.map(Path::to_path_buf).unwrap_or_else(|| dac.with_file_name("libcoreclr.so"));
    let id = crate::buildid::file_build_id(&runtime)?;
    let dac_version = file_version(dac)?;
    let runtime_version = file_version(&runtime)?;
    if dac_version.is_none() || dac_version != runtime_version {
        return Err(Error::DacMismatch {
            dac: dac.to_path_buf(),
            dac_version: dac_version.unwrap_or_else(|| "none (no @(#)Version string)".into()),
            runtime_version: runtime_version.unwrap_or_else(|| "unknown".into()),
        });
    }
    let bytes = std::fs::read(dac).map_err(|e| Error::io(format!("reading {}", dac.display()), e))?;
    let entry = store.join(crate::buildid::hex(&id));
    let io = |what: &str, e| Error::io(format!("{what} {}", entry.display()), e);
    std::fs::create_dir_all(&entry).map_err(|e| io("creating", e))?;
    // Written under temporary names and renamed: an analysis reading the store meanwhile sees
    // the old entry or the new one, never half of it.
    let tmp = entry.join(format!(".{DAC_NAME}.new"));
    std::fs::write(&tmp, &bytes).map_err(|e| io("writing into", e))?;
    std::fs::rename(&tmp, entry.join(DAC_NAME)).map_err(|e| io("writing into", e))?;
    let sums = format!("{}  {DAC_NAME}\n", crate::buildid::hex(&sha2::Sha256::digest(&bytes)));
    let tmp = entry.join(format!(".{SUMS_NAME}.new"));
    std::fs::write(&tmp, sums).map_err(|e| io("writing into", e))?;
    std::fs::rename(&tmp, entry.join(SUMS_NAME)).map_err(|e| io("writing into", e))?;
    Ok(entry)
}

/// The lower-case hex digest `sums` (`sha256sum` output: `<hex>  <name>` or `<hex> *<name>`)
/// lists for `name`.
pub fn sums_entry(sums: &str, name: &str) -> Option<String> {
    sums.lines().find_map(|l| {
        let (hash, file) = l.trim().split_once(char::is_whitespace)?;
        let file = file.trim_start().trim_start_matches('*');
        (file == name && hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| hash.to_ascii_lowercase())
    })
}

/// The warnings for DACs that travelled with the capture and were not used (none when they
/// are trusted): what a caller that found the DAC elsewhere (a symbol server) still reports.
pub fn ignored_warnings(dump: &Path, captured: Option<&Path>, trust: &Trust) -> Vec<String> {
    if trust.beside_dump {
        return Vec::new();
    }
    let mut all = beside_dump(dump);
    all.extend(captured.map(Path::to_path_buf).filter(|c| !all.contains(c)));
    all.iter().map(|p| ignored_beside(p)).collect()
}

fn ignored_beside(dac: &Path) -> String {
    format!(
        "ignored the DAC {} that travelled with the capture: the app pod chose that file and loading it runs its code. \
         Pass --dac, set up a DAC store (--dac-store, `dumpwatch dac-store add`) or a symbol server, or, if you trust \
         the app pods, --trust-dac-beside-dump (chart: analysis.trustCapturedDacs)",
        dac.display()
    )
}

fn unverified(dac: &Path) -> String {
    format!(
        "the dump does not tell its runtime's version: the DAC {} was not checked against it (taken on your word)",
        dac.display()
    )
}

fn mismatch(dac: &Path, version: Option<&str>) -> Error {
    Error::DacMismatch {
        dac: dac.to_path_buf(),
        dac_version: file_version(dac).ok().flatten().unwrap_or_else(|| "none (no @(#)Version string)".into()),
        runtime_version: version.unwrap_or("unknown").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_dac(path: &Path, version: Option<&str>) {
        let mut b = b"\x7fELF not really a DAC ".to_vec();
        if let Some(v) = version {
            b.extend_from_slice(format!("@(#)Version {v} @Commit: x\0").as_bytes());
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b).unwrap();
    }

    fn sums_for(path: &Path) -> String {
        format!("{}  {DAC_NAME}\n", crate::buildid::hex(&sha2::Sha256::digest(std::fs::read(path).unwrap())))
    }

    const V: &str = "8.0.424.16909";
    const ID: &[u8] = &[0xab; 20];

    fn dumped() -> Dumped<'static> {
        Dumped { runtime_path: Some("/nowhere/libcoreclr.so"), version: Some(V), build_id: Some(ID) }
    }

    #[test]
    fn a_dac_beside_the_dump_is_ignored_with_a_warning_unless_trusted() {
        let d = tempfile::tempdir().unwrap();
        let core = d.path().join("core.1");
        std::fs::write(&core, b"").unwrap();
        fake_dac(&d.path().join(DAC_NAME), Some(V));
        let e = choose(None, None, &core, &dumped(), &Trust::default()).unwrap_err().to_string();
        assert!(e.contains("ignored the DAC") && e.contains("--trust-dac-beside-dump"), "{e}");
        let trust = Trust { beside_dump: true, ..Default::default() };
        let c = choose(None, None, &core, &dumped(), &trust).unwrap();
        assert_eq!((c.path, c.provenance), (d.path().join(DAC_NAME), Provenance::BesideDump));
        // A fetched capture DAC is the same: ignored, named in the warning.
        let captured = d.path().join("elsewhere.so");
        fake_dac(&captured, Some(V));
        std::fs::remove_file(d.path().join(DAC_NAME)).unwrap();
        let e = choose(None, Some(&captured), &core, &dumped(), &Trust::default()).unwrap_err().to_string();
        assert!(e.contains("elsewhere.so"), "{e}");
    }

    #[test]
    fn a_missing_version_string_is_a_mismatch_never_a_match() {
        let d = tempfile::tempdir().unwrap();
        let core = d.path().join("core.1");
        std::fs::write(&core, b"").unwrap();
        let dac = d.path().join(DAC_NAME);
        fake_dac(&dac, None);
        let trust = Trust { beside_dump: true, ..Default::default() };
        // Not even when the dump does not tell its version either.
        for version in [Some(V), None] {
            let dumped = Dumped { version, ..dumped() };
            assert!(matches!(choose(Some(&dac), None, &core, &dumped, &trust), Err(Error::DacMismatch { .. })));
            assert!(matches!(choose(None, None, &core, &dumped, &trust), Err(Error::DacMismatch { .. })));
        }
        fake_dac(&dac, Some("4.700.22.11601"));
        assert!(matches!(choose(Some(&dac), None, &core, &dumped(), &trust), Err(Error::DacMismatch { .. })));
    }

    #[test]
    fn the_store_is_looked_up_by_build_id_and_checked_against_its_sums() {
        let d = tempfile::tempdir().unwrap();
        let core = d.path().join("dump/core.1");
        fake_dac(&core, None);
        let store = d.path().join("store");
        let entry = store.join(crate::buildid::hex(ID));
        fake_dac(&entry.join(DAC_NAME), Some(V));
        let trust = Trust { store: Some(store.clone()), ..Default::default() };
        let e = choose(None, None, &core, &dumped(), &trust).unwrap_err();
        assert!(matches!(e, Error::DacStore { .. }) && e.to_string().contains("dac-store add"), "{e}");
        std::fs::write(entry.join(SUMS_NAME), sums_for(&entry.join(DAC_NAME))).unwrap();
        // A DAC beside the dump is still named as ignored when the store serves the dump.
        fake_dac(&core.with_file_name(DAC_NAME), Some(V));
        let c = choose(None, None, &core, &dumped(), &trust).unwrap();
        assert_eq!((c.path, c.provenance), (entry.join(DAC_NAME), Provenance::Store));
        assert!(c.warnings.len() == 1 && c.warnings[0].contains("ignored the DAC"), "{:?}", c.warnings);
        // Swapped after the sums were written: refused.
        fake_dac(&entry.join(DAC_NAME), Some("8.0.424.16910"));
        let e = choose(None, None, &core, &dumped(), &trust).unwrap_err().to_string();
        assert!(e.contains("SHA-256"), "{e}");
        // Another build-id has no entry: not found, and the message says where it looked.
        let other = Dumped { build_id: Some(&[1; 20]), ..dumped() };
        let e = choose(None, None, &core, &other, &trust).unwrap_err().to_string();
        assert!(e.contains("has no entry"), "{e}");
        // The right sums but another version than the dump's: a mismatch, not a match.
        std::fs::write(entry.join(SUMS_NAME), sums_for(&entry.join(DAC_NAME))).unwrap();
        assert!(matches!(choose(None, None, &core, &dumped(), &trust), Err(Error::DacMismatch { .. })));
    }

    /// The dump names its runtime folder: one planted beside the capture (with a runtime of
    /// the claimed build-id) is no local runtime.
    #[test]
    fn a_runtime_folder_the_dump_points_into_its_own_capture_is_not_trusted() {
        let d = tempfile::tempdir().unwrap();
        let core = d.path().join("captures/c1/core.1");
        fake_dac(&core, None);
        let rt = d.path().join("captures/rt");
        fake_dac(&rt.join(DAC_NAME), Some(V));
        let path = rt.join("libcoreclr.so").display().to_string();
        let dumped = Dumped { runtime_path: Some(&path), version: Some(V), build_id: None };
        assert!(local_candidates(dumped.runtime_path, &core).iter().all(|c| !c.starts_with(d.path())));
        let trust = Trust { local_runtimes: true, ..Default::default() };
        let chosen = choose(None, None, &core, &dumped, &trust);
        assert!(chosen.is_err() || !chosen.unwrap().path.starts_with(d.path()));
        // Elsewhere, ours and not writable by others: a local runtime.
        let other = tempfile::tempdir().unwrap();
        fake_dac(&other.path().join(DAC_NAME), Some(V));
        let path = other.path().join("libcoreclr.so").display().to_string();
        assert_eq!(local_candidates(Some(&path), &core).first(), Some(&other.path().join(DAC_NAME)));
    }

    #[test]
    fn only_a_private_directory_may_cache_dacs() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("a/b");
        private_dir(&cache).unwrap();
        assert_eq!(std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(private_dir(&cache).unwrap_err().contains("writable by others"));
    }

    #[test]
    fn sums_lines_in_both_sha256sum_forms() {
        let h = "A".repeat(64);
        assert_eq!(sums_entry(&format!("{h}  {DAC_NAME}\n"), DAC_NAME), Some("a".repeat(64)));
        assert_eq!(sums_entry(&format!("x\n{h} *{DAC_NAME}"), DAC_NAME), Some("a".repeat(64)));
        assert_eq!(sums_entry(&format!("{h}  other.so"), DAC_NAME), None);
        assert_eq!(sums_entry(&format!("abc  {DAC_NAME}"), DAC_NAME), None);
    }
}
