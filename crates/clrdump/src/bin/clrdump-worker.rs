//! The isolated DAC worker as a standalone program (used by this crate's tests; the
//! `dumpwatch` CLI re-runs itself with a hidden subcommand instead).

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(clrdump::worker_main(&args));
}
