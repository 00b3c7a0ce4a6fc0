//! Helpers of the quickstart: child processes whose output goes to a log file, waiting for
//! their "listening on http://ADDR" line, and stopping them with SIGINT (then SIGKILL).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A child process of the quickstart, logging to a file.
#[derive(Debug)]
pub struct Service {
    name: &'static str,
    child: Child,
    /// The address it printed (`http://host:port`).
    pub url: String,
}

impl Service {
    /// Starts `command` with stdout and stderr appended to `log`, and waits (up to `timeout`)
    /// for a line containing `listening on http://`.
    pub fn start(
        name: &'static str,
        mut command: Command,
        log: &Path,
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let file = std::fs::File::create(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        let mut service = Self {
            name,
            child,
            url: String::new(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(url) = text
                .lines()
                .find_map(|l| {
                    l.split_once("listening on ")
                        .map(|(_, u)| u.trim().to_owned())
                })
                .filter(|u| u.starts_with("http://"))
            {
                service.url = url;
                return Ok(service);
            }
            if let Some(status) = service.child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "{name} exited with {status}; see {}",
                    log.display()
                )));
            }
            if Instant::now() > deadline {
                service.stop();
                return Err(std::io::Error::other(format!(
                    "{name} did not start within {timeout:?}; see {}",
                    log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether it has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGINT, up to 5 s to exit, then SIGKILL; reaps the process.
    pub fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}
