//! One function per subcommand: resolve the process, call `diag`, hand the result to `render`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use diag::client::{DiagnosticsClient, Endpoint};
use diag::discovery::{DotnetProcess, ProcFs};
use diag::protocol::DumpType;
use nettrace::{Event, TraceInfo};

use crate::render;

pub(crate) fn resolve(pid: u32) -> Result<(DotnetProcess, DiagnosticsClient)> {
    let process =
        ProcFs::default().process(pid).with_context(|| format!("cannot reach pid {pid} (try `dumpwatch ps`)"))?;
    let client = DiagnosticsClient::new(Endpoint::Socket(process.socket.clone()));
    Ok((process, client))
}

pub fn ps(json: bool) -> Result<()> {
    let procs = ProcFs::default().dotnet_processes();
    if json {
        println!("{}", serde_json::to_string_pretty(&procs)?);
    } else {
        print!("{}", render::process_table(&procs));
    }
    Ok(())
}

pub async fn counters(pid: u32, interval: f64, watch: bool, duration: Option<f64>, json: bool) -> Result<()> {
    if !(interval > 0.0 && interval <= 3600.0) {
        bail!("--interval must be between 0 and 3600 seconds");
    }
    let (_, client) = resolve(pid)?;
    let cfg = diag::counters::session_config(&[diag::counters::SYSTEM_RUNTIME], interval);
    let mut session = diag::session::TraceSession::start(&client, &cfg).await?;
    let deadline = duration.map(|d| Instant::now() + Duration::from_secs_f64(d));
    // The runtime publishes one event per counter; a set is complete when a name repeats.
    let mut current: BTreeMap<String, diag::counters::CounterSample> = BTreeMap::new();
    let mut sets: Vec<BTreeMap<String, diag::counters::CounterSample>> = Vec::new();
    let wait_first = Duration::from_secs_f64(interval * 3.0 + 5.0);
    let started = Instant::now();
    loop {
        let mut sink = |info: &TraceInfo, ev: &Event<'_>| {
            if let Some(s) = diag::counters::sample_from_event(info, ev) {
                if current.contains_key(&s.name) {
                    sets.push(std::mem::take(&mut current));
                }
                current.insert(s.name.clone(), s);
            }
        };
        let more = match tokio::time::timeout(Duration::from_millis(250), session.pump(&mut sink)).await {
            Ok(r) => r?,
            Err(_) => true,
        };
        for set in sets.drain(..) {
            print_counter_set(pid, &set, json)?;
            if !watch {
                let _ = session.stop().await;
                return Ok(());
            }
        }
        if !more {
            bail!("the process ended the counter session (did it exit?)");
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if !watch && started.elapsed() > wait_first {
            // Counters arrive once per interval; a complete set needs the next interval's
            // first event, so print what we have rather than wait forever.
            if !current.is_empty() {
                print_counter_set(pid, &current, json)?;
                break;
            }
            bail!("no counters arrived within {:.0} s (is System.Runtime available?)", wait_first.as_secs_f64());
        }
    }
    let _ = session.stop().await;
    Ok(())
}

fn print_counter_set(pid: u32, set: &BTreeMap<String, diag::counters::CounterSample>, json: bool) -> Result<()> {
    if json {
        let obj: BTreeMap<&str, &diag::counters::CounterSample> = set.iter().map(|(k, v)| (k.as_str(), v)).collect();
        println!("{}", serde_json::to_string(&serde_json::json!({ "pid": pid, "counters": obj }))?);
    } else {
        print!("{}", render::counter_set(pid, set));
    }
    Ok(())
}

pub async fn stacks(pid: u32, json: bool) -> Result<()> {
    let (process, client) = resolve(pid)?;
    let threads = diag::stacks::capture(&client, Duration::from_millis(50), Duration::from_secs(60)).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "pid": pid, "threads": threads }))?);
    } else {
        print!("{}", render::stacks(&process, &threads));
    }
    Ok(())
}

pub async fn gcdump(
    pid: u32,
    output: Option<PathBuf>,
    top: usize,
    timeout: u64,
    paths: usize,
    json: bool,
) -> Result<()> {
    let (process, client) = resolve(pid)?;
    let raw: Option<Box<dyn std::io::Write + Send>> = match &output {
        Some(p) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        ))),
        None => None,
    };
    let show_progress = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = |p: diag::heap::Progress| {
        if show_progress {
            eprint!(
                "\r  {:.1} s: {} objects, {:.1} MB received   ",
                p.elapsed.as_secs_f64(),
                p.objects,
                p.bytes as f64 / 1e6
            );
        }
    };
    let result = diag::heap::capture(&client, paths > 0, raw, Duration::from_secs(timeout), &mut progress).await;
    if show_progress {
        eprintln!();
    }
    let snapshot = match result {
        Ok(s) => s,
        Err(e) => {
            if let Some(p) = &output {
                let _ = std::fs::remove_file(p);
            }
            return Err(e.into());
        }
    };
    let retainers = snapshot.graph.as_ref().map(|g| render::retainers(g, paths)).unwrap_or_default();
    if json {
        let types: Vec<_> = snapshot.histogram.top(top).to_vec();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "pid": pid,
                "total_objects": snapshot.histogram.total_objects(),
                "total_bytes": snapshot.histogram.total_bytes(),
                "types": types,
                "retainers": retainers,
                "raw": output,
            }))?
        );
    } else {
        print!("{}", render::histogram(&process, &snapshot.histogram, top));
        print!("{}", render::retainers_text(&retainers));
        if let Some(p) = output {
            println!("raw snapshot stream saved to {}", p.display());
        }
    }
    Ok(())
}

pub async fn dump(pid: u32, output: Option<PathBuf>, dump_type: DumpType, min_free_mib: u64, json: bool) -> Result<()> {
    let (process, client) = resolve(pid)?;
    let output = output.unwrap_or_else(|| PathBuf::from(format!("core.{pid}")));
    let req = diag::dump::DumpRequest {
        process: &process,
        output: &output,
        dump_type,
        min_free_bytes: min_free_mib << 20,
        copy_dac: true,
    };
    let result = diag::dump::write_dump(&client, &req).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", render::dump_result(&result));
    }
    Ok(())
}

pub async fn watch(pid: u32, confirm_ms: u64, duration: Option<f64>, once: bool, json: bool) -> Result<()> {
    let (process, client) = resolve(pid)?;
    if let Some(major) = process.runtime_major()
        && major < 8
    {
        bail!(
            "live deadlock detection needs .NET 8 or later (contention events name the lock owner only from 8.0); \
             pid {pid} runs .NET {}. Take a dump instead: dumpwatch dump {pid}",
            process.runtime_version.as_deref().unwrap_or("?")
        );
    }
    let graph = analysis::wait_for::WaitForGraph::new(analysis::wait_for::WaitForConfig {
        confirm_window: Duration::from_millis(confirm_ms),
        ..Default::default()
    })?;
    let mut tracker = diag::contention::ContentionTracker::new(graph);
    let mut session = diag::session::TraceSession::start(&client, &diag::contention::session_config()).await?;
    if !json {
        eprintln!("watching pid {pid} for deadlocks (Ctrl-C to stop)...");
    }
    let deadline = duration.map(|d| Instant::now() + Duration::from_secs_f64(d));
    let mut reported: HashSet<analysis::wait_for::DeadlockKey> = HashSet::new();
    let mut methods: Option<diag::symbols::MethodMap> = None;
    loop {
        let mut sink = |info: &TraceInfo, ev: &Event<'_>| tracker.on_event(info, ev);
        let more = tokio::select! {
            r = session.pump(&mut sink) => r?,
            _ = tokio::time::sleep(Duration::from_millis(100)) => true,
            _ = tokio::signal::ctrl_c() => break,
        };
        for d in tracker.deadlocks() {
            if !reported.insert(d.key()) {
                continue;
            }
            // Method names come from a rundown, taken once a deadlock exists (and refreshed
            // if the deadlock's code was jitted after the last one).
            let needs_refresh = methods.as_ref().is_none_or(|m| !render::all_symbolized(m, &d));
            if needs_refresh {
                methods = Some(diag::stacks::method_map(&client, Duration::from_secs(30)).await?);
            }
            let report = render::DeadlockReport::new(pid, &d, methods.as_ref().expect("loaded"));
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.text());
            }
            if once {
                let _ = session.stop().await;
                return Ok(());
            }
        }
        if !more {
            bail!("pid {pid} ended the contention session (did it exit?)");
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    let _ = session.stop().await;
    if !json && reported.is_empty() {
        eprintln!("no deadlock seen ({} contended lock acquisitions)", tracker.contentions);
    }
    Ok(())
}

/// Live hangs (`dumpwatch hangs`): every thread's stack from the sampler, the pool's queue
/// length from the runtime's counter, and the same analysis as a dump's.
pub async fn hangs(pid: u32, json: bool) -> Result<()> {
    let (process, client) = resolve(pid)?;
    let stacks = diag::stacks::capture(&client, Duration::from_millis(50), Duration::from_secs(60)).await?;
    let queued = pool_queue_length(&client).await?;
    let threads: Vec<analysis::monitors::DumpThread> = stacks
        .iter()
        .map(|t| analysis::monitors::DumpThread {
            os_tid: t.os_thread_id,
            // The sampler knows OS ids only; 0 is no managed id (they start at 1).
            managed_id: 0,
            stack: t.frames.clone(),
            lock_refs: Vec::new(),
        })
        .collect();
    let found = analysis::hangs::find_hangs(&threads, queued, &analysis::hangs::HangThresholds::default());
    if json {
        let doc =
            serde_json::json!({ "pid": pid, "threads": threads.len(), "queued_work_items": queued, "hangs": found });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render::hangs(&process, threads.len(), queued, &found));
    }
    Ok(())
}

/// The runtime's `threadpool-queue-length` counter (work items waiting in the pool's queues),
/// from one counter interval; `None` if the runtime does not publish it in time.
async fn pool_queue_length(client: &DiagnosticsClient) -> Result<Option<u64>> {
    const QUEUE: &str = "threadpool-queue-length";
    let cfg = diag::counters::session_config(&[diag::counters::SYSTEM_RUNTIME], 1.0);
    let mut session = diag::session::TraceSession::start(client, &cfg).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut value = None;
    while value.is_none() && Instant::now() < deadline {
        let mut sink = |info: &TraceInfo, ev: &Event<'_>| {
            if let Some(s) = diag::counters::sample_from_event(info, ev).filter(|s| s.name == QUEUE) {
                value = Some(s.value.max(0.0).round() as u64);
            }
        };
        if let Ok(more) = tokio::time::timeout(Duration::from_millis(250), session.pump(&mut sink)).await
            && !more?
        {
            break;
        }
    }
    let _ = session.stop().await;
    Ok(value)
}

/// `dumpwatch trace`: a CPU trace of `duration`, the raw `.nettrace` and a speedscope profile
/// beside it, and the methods that burned the CPU.
pub async fn trace(pid: u32, duration: Duration, output: Option<PathBuf>, top: usize, json: bool) -> Result<()> {
    let (process, client) = resolve(pid)?;
    let base = output.unwrap_or_else(|| PathBuf::from(format!("trace-{pid}")));
    let base = base.to_string_lossy();
    let base = base.strip_suffix(".nettrace").unwrap_or(&base).to_string();
    let nettrace = PathBuf::from(format!("{base}.nettrace"));
    let speedscope = PathBuf::from(format!("{base}.speedscope.json"));
    // Written under a temporary name and renamed when whole: no half trace is ever left.
    let partial = PathBuf::from(format!("{base}.nettrace.partial"));
    let raw = std::io::BufWriter::new(
        std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?,
    );
    if !json {
        eprintln!("sampling pid {pid} ({}) for {:.0} s ...", process.command_line, duration.as_secs_f64());
    }
    let mut trace = match diag::cpu::capture(&client, duration, Some(Box::new(raw)), Duration::from_secs(60)).await {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    std::fs::rename(&partial, &nettrace).with_context(|| format!("writing {}", nettrace.display()))?;
    let all = trace.samples.len();
    let samples = trace.named();
    let profile = diag::cpu::speedscope(&samples, &format!("pid {pid}: {}", process.command_line));
    std::fs::write(&speedscope, serde_json::to_vec(&profile)?)
        .with_context(|| format!("writing {}", speedscope.display()))?;
    let methods = diag::cpu::top_methods(&samples, top);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "pid": pid, "samples": all, "running_samples": samples.len(), "dropped_samples": trace.dropped,
                "nettrace": nettrace, "speedscope": speedscope, "top_methods": methods,
            }))?
        );
    } else {
        println!(
            "{} samples, {} of them running managed code; {} and {} (open it at https://www.speedscope.app)",
            all,
            samples.len(),
            nettrace.display(),
            speedscope.display()
        );
        println!("\n  {:>9}  {:>6}  {:>9}  method (by inclusive samples)", "inclusive", "%", "exclusive");
        for m in &methods {
            println!("  {:>9}  {:>5.1}%  {:>9}  {}", m.inclusive, m.inclusive_percent, m.exclusive, m.method);
        }
    }
    Ok(())
}
