//! Where a runtime writes its crash dump for the sidecar to find: the contract between the
//! operator's webhook (which sets the app's environment), a standalone sidecar's docs, and the
//! sidecar (which watches the directory).

use std::path::Path;

/// The directory under the sidecar's storage (the volume shared with the app) where crash dumps land.
pub const CRASH_DIR: &str = ".crash";

/// The environment a .NET app needs for its crash dumps to land under `storage` (the shared
/// volume as the app sees it): a heap dump named `core.<pid>` (.NET Core 3.1 writes the pid in
/// hex, `core.0x1f2e`), and on .NET 6+ the runtime's crash report beside it. Both the `DOTNET_`
/// and the `COMPlus_` spellings: .NET Core 3.1 reads only `COMPlus_` for these (checked: with
/// `DOTNET_` alone it crashes without a dump), later runtimes read either.
pub fn app_environment(storage: &Path) -> Vec<(String, String)> {
    let name = storage.join(CRASH_DIR).join("core.%p").display().to_string();
    // 2: with heap, what the analysis needs for leak suspects and lock owners.
    let settings = [("DbgEnableMiniDump", "1"), ("DbgMiniDumpType", "2"), ("DbgMiniDumpName", name.as_str())];
    let mut env: Vec<(String, String)> = ["DOTNET_", "COMPlus_"]
        .iter()
        .flat_map(|prefix| settings.iter().map(move |(k, v)| (format!("{prefix}{k}"), v.to_string())))
        .collect();
    env.push(("DOTNET_EnableCrashReport".into(), "1".into()));
    env
}

/// The pid in a crash dump's file name (`core.4242`, or `core.0x1092` from .NET Core 3.1).
pub fn pid_of_dump_name(name: &str) -> Option<u32> {
    let pid = name.strip_prefix("core.")?;
    match pid.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => pid.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_in_decimal_and_in_3_1_hex() {
        assert_eq!(pid_of_dump_name("core.4242"), Some(4242));
        assert_eq!(pid_of_dump_name("core.0x367d"), Some(0x367d));
        assert_eq!(pid_of_dump_name("core.x"), None);
        assert_eq!(pid_of_dump_name("core.4242.crashreport.json"), None);
        assert_eq!(pid_of_dump_name("heap.4242"), None);
    }

    #[test]
    fn dumps_land_in_the_crash_dir_of_the_storage() {
        let env = app_environment(Path::new("/dumpwatch"));
        let name = env.iter().find(|(k, _)| k == "DOTNET_DbgMiniDumpName").map(|(_, v)| v.as_str());
        assert_eq!(name, Some("/dumpwatch/.crash/core.%p"));
    }
}
