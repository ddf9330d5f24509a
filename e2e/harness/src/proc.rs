//! Child processes that die with their owner: each runs in its own process group, logs to a
//! file, and is stopped (SIGTERM, then SIGKILL) on drop.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A child process in its own process group. Dropping it stops the whole group.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    grace: Duration,
}

impl Proc {
    /// Starts `cmd` in a new process group with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> io::Result<Proc> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting {name} ({:?}): {e}", cmd.get_program())))?;
        Ok(Proc { name: name.to_string(), child, log: log.to_path_buf(), grace: Duration::from_secs(5) })
    }

    /// How long [`Proc::stop`] waits after SIGTERM before SIGKILL.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` bytes of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let data = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&data[data.len().saturating_sub(n)..]).into_owned()
    }

    /// Fails with the log tail if the process has exited.
    pub fn check_alive(&mut self) -> io::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            return Err(io::Error::other(format!(
                "{} exited early ({status}); log {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(4000)
            )));
        }
        Ok(())
    }

    /// SIGTERM to the group, SIGKILL after the grace period, and reap.
    pub fn stop(&mut self) {
        let pgid = Pid::from_raw(self.child.id() as i32);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = killpg(pgid, Signal::SIGTERM);
            let deadline = Instant::now() + self.grace;
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Also catches grandchildren left in the group after the leader exited.
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
