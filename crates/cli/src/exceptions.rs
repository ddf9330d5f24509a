//! `dumpwatch exceptions`: the exceptions a live process throws, the way the sidecar's
//! `exceptions` capture lists them, for a person at a terminal.

use std::time::Duration;

use anyhow::Result;

/// Watches `pid` for `duration` and prints the last `last` exceptions whose type matches
/// `pattern`, each with its first `frames` frames (all of them with `json`).
pub async fn exceptions(
    pid: u32,
    duration: Duration,
    pattern: &str,
    last: usize,
    frames: usize,
    json: bool,
) -> Result<()> {
    let (process, client) = crate::commands::resolve(pid)?;
    if !json {
        eprintln!(
            "watching the exceptions of pid {pid} ({}) for {:.0} s ...",
            process.command_line,
            duration.as_secs_f64()
        );
    }
    let watched = diag::exceptions::capture(&client, duration, pattern, last, Duration::from_secs(60)).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "pid": pid, "type": pattern, "watched": watched }))?
        );
        return Ok(());
    }
    let shown = watched.exceptions.len();
    println!(
        "{} exceptions thrown in {:.0} s, {} of type {pattern}{}",
        watched.thrown,
        duration.as_secs_f64(),
        watched.matching,
        if (shown as u64) < watched.matching { format!("; the last {shown}:") } else { String::new() }
    );
    for e in &watched.exceptions {
        println!(
            "\n{}: {}  (thread {}, HRESULT {}{})",
            e.exception_type,
            e.message,
            e.thread,
            e.hresult,
            if e.rethrown { ", rethrown" } else { "" }
        );
        for f in e.stack.iter().take(frames) {
            println!("    at {f}");
        }
        if e.stack.len() > frames {
            println!("    ... {} more frames (--frames, or --json for all)", e.stack.len() - frames);
        }
    }
    Ok(())
}
