//! `dumpwatch`: the seed article's whole ritual (find the process, createdump, copy the core,
//! dotnet-dump analyze, clrstack -all, syncblk, dumpheap -stat) as single commands that need no
//! .NET SDK and work across PID and mount namespaces.

mod analyze;
mod args;
mod commands;
mod delete_artifacts;
mod diff;
mod exceptions;
mod heap_file;
mod remote;
mod render;
mod symbols;
mod views;

use std::path::PathBuf;

use anyhow::{Context, Result};
use args::{Cli, Command, DacStoreCommand};
use clap::Parser;

fn main() {
    // Analyses allocate and free arrays of hundreds of MiB on several threads.
    clrdump::memory::unmap_large_blocks_when_freed();
    // The isolated DAC worker of `analyze`: this binary re-run by itself, outside clap.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == analyze::WORKER_SUBCOMMAND) {
        std::process::exit(clrdump::worker_main(&args[2..]));
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    if let Err(e) = rt.block_on(run(cli.command)) {
        // The whole cause chain, without presigned signatures (a URL's query is a credential).
        eprintln!("dumpwatch: error: {}", store::redact::error_chain(e.as_ref()));
        std::process::exit(1);
    }
}

async fn run(command: Command) -> Result<()> {
    use commands::*;
    match command {
        Command::Ps { json } => ps(json),
        Command::Counters { pid, interval, watch, duration, json } => {
            counters(pid, interval, watch, duration, json).await
        }
        Command::Stacks { pid, json } => stacks(pid, json).await,
        Command::Trace { pid, duration, output, top, json } => trace(pid, duration, output, top, json).await,
        Command::Exceptions { pid, duration, type_pattern, last, frames, json } => {
            exceptions::exceptions(pid, duration, &type_pattern, last, frames, json).await
        }
        Command::Gcdump { pid, output, top, timeout, paths, json } => {
            gcdump(pid, output, top, timeout, paths, json).await
        }
        Command::Dump { pid, output, dump_type, min_free_mib, json } => {
            dump(pid, output, dump_type, min_free_mib, json).await
        }
        Command::Watch { pid, confirm_ms, duration, once, json } => watch(pid, confirm_ms, duration, once, json).await,
        Command::Hangs { pid, json } => hangs(pid, json).await,
        Command::Diff { snapshots, top, intervals, no_symbol_server, timeout, json } => {
            let sources = symbols::DacSources {
                servers: symbols::DacSources::servers_from(
                    Vec::new(),
                    std::env::var("DUMPWATCH_SYMBOL_SERVER").ok(),
                    no_symbol_server,
                ),
                cache: symbols::DacSources::default_cache(),
                trust: clrdump::locate::Trust { local_runtimes: true, ..Default::default() },
            };
            symbols::DacSources::check_servers(&sources.servers)?;
            let mut inputs = Vec::new();
            for path in snapshots {
                let display = path.display().to_string();
                let r = dump_reading(&path, None, None, &display, &sources).await?;
                inputs.push(diff::DiffInput { path, dac: r.dac, replacements: r.replacements });
            }
            let args = diff::DiffArgs { inputs, top, intervals: intervals as usize, timeout };
            let d = tokio::task::spawn_blocking(move || diff::run(args)).await??;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", diff::report(&d, top));
            }
            Ok(())
        }
        Command::DeleteArtifacts { under, uris } => {
            let (done, errors) = delete_artifacts::delete_all(&under, &uris);
            for d in done {
                match d {
                    delete_artifacts::Deleted::Removed(p) => println!("deleted {}", p.display()),
                    delete_artifacts::Deleted::AlreadyGone(p) => println!("already gone {}", p.display()),
                }
            }
            if !errors.is_empty() {
                anyhow::bail!("{} of {} artifacts not deleted:\n{}", errors.len(), uris.len(), errors.join("\n"));
            }
            Ok(())
        }
        Command::DacStore(DacStoreCommand::Add { store, dac, runtime }) => {
            let entry = clrdump::locate::store_add(&store, &dac, runtime.as_deref())
                .with_context(|| format!("adding {} to the DAC store {}", dac.display(), store.display()))?;
            println!("{}", entry.join(clrdump::locate::DAC_NAME).display());
            Ok(())
        }
        Command::Analyze {
            core,
            view,
            view_args,
            sha256,
            dac,
            dac_sha256,
            artifacts,
            report_to,
            snapshot,
            token_file,
            ca_file,
            top,
            histogram_only,
            timings,
            symbol_server,
            no_symbol_server,
            dac_cache,
            no_local_runtime,
            dac_store,
            trust_dac_beside_dump,
            no_sandbox,
            crashed,
            crash_report,
            timeout,
            json,
        } => {
            // `explicit`: chosen by the person at the CLI; `captured`: stored with the capture.
            let (core, explicit, captured, crash_report) = match &artifacts {
                Some(list) => {
                    let list: Vec<remote::ArtifactSource> =
                        serde_json::from_str(list).context("--artifacts: a JSON list of {kind, uri, size, sha256}")?;
                    let (core, captured) = remote::pick(&list)?;
                    (core, None, captured, remote::pick_crash_report(&list))
                }
                None => {
                    let core = remote::ArtifactSource::new(&core.expect("clap requires it"), sha256);
                    let crash_report = crash_report.map(|r| remote::ArtifactSource::new(&r, None));
                    (core, dac.map(|d| remote::ArtifactSource::new(&d, dac_sha256)), None, crash_report)
                }
            };
            let report_to = match report_to {
                Some(url) => Some(remote::ReportTo {
                    url,
                    snapshot: snapshot.expect("clap requires it"),
                    token_file: token_file.expect("clap requires it"),
                    ca_pem: match ca_file {
                        Some(f) => {
                            Some(std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?)
                        }
                        None => std::env::var("DUMPWATCH_OPERATOR_CA").ok().filter(|s| !s.trim().is_empty()),
                    },
                }),
                None => None,
            };
            // Dropped at the end of this arm, success or not: fetched files go with it.
            let prepared = remote::prepare(&core, explicit.as_ref(), captured.as_ref(), trust_dac_beside_dump).await?;
            let sources = symbols::DacSources {
                servers: symbols::DacSources::servers_from(
                    symbol_server,
                    std::env::var("DUMPWATCH_SYMBOL_SERVER").ok(),
                    no_symbol_server,
                ),
                cache: dac_cache.unwrap_or_else(symbols::DacSources::default_cache),
                trust: clrdump::locate::Trust {
                    store: dac_store,
                    beside_dump: trust_dac_beside_dump,
                    local_runtimes: !no_local_runtime,
                },
            };
            symbols::DacSources::check_servers(&sources.servers)?;
            let reading = dump_reading(
                &prepared.core,
                prepared.dac.as_deref(),
                prepared.captured.as_deref(),
                &prepared.display,
                &sources,
            )
            .await?;
            let crash_report = match &crash_report {
                Some(r) => Some(prepared.fetch(r).await?),
                None => remote::crash_report_beside(&prepared.core),
            };
            let args = analyze::AnalyzeArgs {
                core: prepared.core.clone(),
                display: prepared.display.clone(),
                dac: reading.dac,
                dac_warnings: reading.dac_warnings,
                runtime_version: reading.runtime_version,
                replacements: reading.replacements,
                json,
                top,
                histogram_only,
                timings,
                crashed: crashed || crash_report.is_some(),
                crash_report,
                view: view.map(|v| (v, view_args)),
                sandbox: !no_sandbox,
                timeout,
            };
            let findings = tokio::task::spawn_blocking(move || analyze::analyze(args)).await??;
            if let (Some(to), Some(findings)) = (&report_to, &findings) {
                remote::report(to, &serde_json::to_value(findings)?).await?;
                eprintln!("findings sent to {} for {}", to.url, to.snapshot);
            }
            Ok(())
        }
    }
}

/// What reading a core dump needs: its DAC (with the runtime version found on the way and
/// what to warn about its choice) and local copies of assemblies missing at their dumped paths.
#[derive(Default)]
struct DumpReading {
    dac: Option<PathBuf>,
    dac_warnings: Vec<String>,
    runtime_version: Option<String>,
    replacements: Vec<(String, PathBuf)>,
}

/// [`DumpReading`] for `core`; nothing for a heap snapshot.
async fn dump_reading(
    core: &std::path::Path,
    explicit: Option<&std::path::Path>,
    captured: Option<&std::path::Path>,
    display: &str,
    sources: &symbols::DacSources,
) -> Result<DumpReading> {
    if heap_file::is_heap_snapshot(core) {
        return Ok(DumpReading::default());
    }
    let found = symbols::find_dac(core, explicit, captured, sources)
        .await
        .with_context(|| format!("finding the DAC for {display}"))?;
    eprintln!("DAC: {} ({})", found.path.display(), found.provenance);
    for w in &found.warnings {
        eprintln!("warning: {w}");
    }
    let replacements = symbols::fetch_assemblies(core, sources).await?;
    Ok(DumpReading {
        dac: Some(found.path),
        dac_warnings: found.warnings,
        runtime_version: found.runtime_version,
        replacements,
    })
}
