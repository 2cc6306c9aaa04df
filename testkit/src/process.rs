//! The child-process guard: every peer a test starts is stopped by its PID when the guard drops
//! (SIGTERM, then SIGKILL after 5 s), also when the test fails; plus starting a peer with its
//! output in a log file and waiting for it to listen or answer.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::raw_http;
use crate::wait::wait_until;

/// A child process stopped by PID when dropped: SIGTERM, then SIGKILL after 5 s.
pub struct ChildGuard {
    /// What it is (for messages).
    pub name: String,
    /// The process.
    pub child: Child,
    /// Where its stdout and stderr go, when started with [`ChildGuard::spawn`].
    pub log: Option<PathBuf>,
}

impl ChildGuard {
    /// Guard a spawned child.
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        ChildGuard {
            name: name.into(),
            child,
            log: None,
        }
    }

    /// Spawn `cmd` (stdin closed) with stdout and stderr in `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> ChildGuard {
        let out = std::fs::File::create(log).expect("create peer log");
        let child = cmd
            .stdout(out.try_clone().expect("clone log handle"))
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        ChildGuard {
            name: name.into(),
            child,
            log: Some(log.to_path_buf()),
        }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Has it exited already? (with its status)
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last 30 lines of its log.
    pub fn log_tail(&self) -> String {
        let s = self
            .log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Wait until something listens on 127.0.0.1:`port`; panics with `log` when the peer died
    /// or did not come up within 30 s.
    pub fn wait_listening(&mut self, port: u16, log: &Path) {
        let up = wait_until(Duration::from_secs(30), || {
            self.exited().is_none() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if !up {
            let status = self.exited();
            panic!(
                "{} did not listen on 127.0.0.1:{port} (exit {status:?}); log:\n{}",
                self.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }

    /// Poll `GET path` on 127.0.0.1:`port` until it answers 200; panics with the log's tail
    /// when the peer exits or 90 s pass.
    pub fn wait_ready(&mut self, port: u16, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited early ({status}); its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if matches!(raw_http::request(port, "GET", path, ""), Ok((200, _))) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not answer GET {path} on port {port} within 90 s; its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // Only the process we started, by its PID.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let stopped = wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
