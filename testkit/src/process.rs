//! Child processes under supervision: spawned with stdin closed, stdout and stderr kept in
//! files (stdout also read line by line, so a test can wait for a readiness line such as
//! `… listening on http://ADDR`), resident memory read from `/proc`, stopped with SIGTERM then
//! SIGKILL after a grace period, and killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A supervised child process. Its stdout is appended to `<dir>/<name>.stdout` and its stderr
/// to `<dir>/<name>.stderr` (appended: a process started again under the same name keeps one
/// log across its starts). Killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: PathBuf,
    stderr: PathBuf,
    lines: mpsc::Receiver<String>,
    copier: Option<JoinHandle<()>>,
}

impl Supervised {
    /// Spawns `command` with stdin closed, its stdout and stderr going to `<dir>/<name>.stdout`
    /// and `<dir>/<name>.stderr`.
    pub fn spawn(name: &str, command: Command, dir: &Path) -> std::io::Result<Self> {
        Self::spawn_with(name, command, dir, false)
    }

    /// As [`Supervised::spawn`], with stdin a pipe this side holds until [`Supervised::close_stdin`]
    /// (or drop, or this process's death): for a program that stops at the end of its input, so
    /// that it stops even when the test that started it is killed.
    pub fn spawn_with_stdin(name: &str, command: Command, dir: &Path) -> std::io::Result<Self> {
        Self::spawn_with(name, command, dir, true)
    }

    fn spawn_with(
        name: &str,
        mut command: Command,
        dir: &Path,
        stdin_pipe: bool,
    ) -> std::io::Result<Self> {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let append = |p: &Path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
        };
        let mut out_file = append(&stdout)?;
        let mut child = command
            .stdin(if stdin_pipe {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::from(append(&stderr)?))
            .spawn()
            .map_err(|e| {
                let program = command.get_program().to_string_lossy().into_owned();
                std::io::Error::new(e.kind(), format!("spawning {name} ({program}): {e}"))
            })?;
        let pipe = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other(format!("{name}: no stdout pipe")))?;
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        // Copies stdout into its file line by line (a line is in the file before it is seen
        // by `wait_for_line`), and keeps draining it until the process closes it.
        let copier = std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let _ = out_file.write_all(&line);
                let text = String::from_utf8_lossy(&line);
                let _ = tx.send(text.trim_end_matches(['\r', '\n']).to_owned());
                line.clear();
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            stdin,
            stdout,
            stderr,
            lines,
            copier: Some(copier),
        })
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest of it, trimmed
    /// (e.g. the address after `listening on `). Fails, with the process's output, when it
    /// exits first or `timeout` passes.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait();
                    self.join_copier();
                    return Err(format!(
                        "{} exited ({status:?}) before printing {prefix:?}:\n{}",
                        self.name,
                        self.logs()
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} printed no {prefix:?} line within {timeout:?}:\n{}",
                    self.name,
                    self.logs()
                ));
            }
        }
    }

    /// Closes its stdin (the end of its input), if [`Supervised::spawn_with_stdin`] kept it open.
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    /// The name it was spawned under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs (not exited, not killed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit by itself; `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.join_copier();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its resident set size in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> std::io::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or_else(|| std::io::Error::other(format!("no VmRSS for {}", self.name)))
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Stdout then stderr.
    pub fn logs(&self) -> String {
        self.stdout() + &self.stderr()
    }

    /// SIGKILL (no shutdown code runs) and reap; its output files are then complete.
    pub fn kill(&mut self) {
        self.close_stdin();
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.join_copier();
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`; reaps it and returns how it
    /// ended. Its output files are then complete.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.is_running() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(status) = self.wait_exit(grace) {
            return Some(status);
        }
        self.kill();
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the stdout copier to reach the end of the pipe (at once when the process is
    /// gone, unless a process it started still holds the pipe: then it is left behind after 2 s).
    fn join_copier(&mut self) {
        let Some(copier) = self.copier.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while !copier.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if copier.is_finished() {
            let _ = copier.join();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn waits_for_the_readiness_line_and_keeps_the_output_in_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Supervised::spawn(
            "ready",
            sh("echo starting; echo oops >&2; echo 'listening on 127.0.0.1:9'; exec sleep 30"),
            dir.path(),
        )
        .unwrap();
        let addr = p.wait_for_line("listening on ", Duration::from_secs(10));
        assert_eq!(addr.as_deref(), Ok("127.0.0.1:9"));
        assert!(p.is_running());
        assert!(p.rss_bytes().unwrap() > 0);
        assert_eq!(p.stdout(), "starting\nlistening on 127.0.0.1:9\n");
        p.stop(Duration::from_secs(5));
        assert!(!p.is_running());
        assert_eq!(p.stderr(), "oops\n");
        assert!(dir.path().join("ready.stdout").is_file());
    }

    #[test]
    fn an_exit_before_the_line_is_an_error_with_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut p =
            Supervised::spawn("early", sh("echo no config >&2; exit 3"), dir.path()).unwrap();
        let err = p
            .wait_for_line("listening on ", Duration::from_secs(10))
            .unwrap_err();
        assert!(
            err.contains("early exited") && err.contains("no config"),
            "{err}"
        );
        assert!(!p.wait_exit(Duration::ZERO).unwrap().success());
    }

    #[test]
    fn a_kept_stdin_is_its_input_until_closed() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Supervised::spawn_with_stdin(
            "reader",
            sh("echo up; cat >/dev/null; echo eof"),
            dir.path(),
        )
        .unwrap();
        p.wait_for_line("up", Duration::from_secs(10)).unwrap();
        assert!(
            p.wait_exit(Duration::from_millis(300)).is_none(),
            "waits for its input"
        );
        p.close_stdin();
        assert!(p.wait_exit(Duration::from_secs(10)).unwrap().success());
        assert_eq!(p.stdout(), "up\neof\n");
    }

    #[test]
    fn stop_falls_back_to_sigkill_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Supervised::spawn(
            "stubborn",
            sh("trap '' TERM; echo up; while true; do sleep 1; done"),
            dir.path(),
        )
        .unwrap();
        p.wait_for_line("up", Duration::from_secs(10)).unwrap();
        let started = Instant::now();
        p.stop(Duration::from_millis(300));
        assert!(!p.is_running());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
