//! A child process whose output goes to a log file, killed on drop, logged on failure.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{HarnessError, Result};

/// Most of a log printed when a test fails; the start of a long log is the least useful part.
const LOG_TAIL_BYTES: usize = 64 * 1024;

pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `<dir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| HarnessError::Io(log.display().to_string(), e))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::Io(log.display().to_string(), e))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| HarnessError::Io(format!("start {name} ({cmd:?})"), e))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the process's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process has written so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// Fails with the log if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.exited() {
            Some(status) => Err(HarnessError::Exited {
                name: self.name.clone(),
                status,
                log: self.log(),
            }),
            None => Ok(()),
        }
    }

    /// Waits for the process to exit by itself and returns its log.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<(String, String)> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.exited() {
                return Ok((status, self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(HarnessError::StillRunning(self.name.clone(), timeout))
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (graceful stop) and waits up to `timeout`, then kills.
    pub fn terminate(&mut self, timeout: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        if self.wait_exit(timeout).is_err() {
            self.kill();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail = if log.len() > LOG_TAIL_BYTES {
                let mut cut = log.len() - LOG_TAIL_BYTES;
                while !log.is_char_boundary(cut) {
                    cut += 1;
                }
                &log[cut..]
            } else {
                &log[..]
            };
            eprintln!(
                "----- {} log ({}) -----\n{tail}\n----- end of {} log -----",
                self.name,
                self.log.display(),
                self.name
            );
        }
    }
}
