//! Finding the test peers `tests/peers/install.sh` installs, and stopping what tests start.
//! Include with `#[path = "support/peers.rs"] mod peers;`.
//!
//! A missing peer fails the test with a message naming `bash tests/peers/install.sh`, unless
//! `KPROV_SKIP_PEERS=1`: then the test prints a loud SKIPPED line and returns.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The venv and peers prefix (`KPROV_PEERS`, default `/opt/kprov-peers`).
pub fn prefix() -> PathBuf {
    std::env::var_os("KPROV_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/kprov-peers"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Is `KPROV_SKIP_PEERS=1` set?
pub fn skipping() -> bool {
    std::env::var("KPROV_SKIP_PEERS").is_ok_and(|v| v == "1")
}

/// Path of a peer program (a name on PATH, or an absolute path). `None` (after a loud SKIPPED
/// line) only when `KPROV_SKIP_PEERS=1`; otherwise a missing peer panics.
pub fn require(test: &str, program: &str) -> Option<PathBuf> {
    if let Some(p) = on_path(program) {
        return Some(p);
    }
    let msg = format!("test peer `{program}` is missing; install the test peers with `bash tests/peers/install.sh`");
    if skipping() {
        eprintln!("\n!!!!! SKIPPED {test}: {msg} (KPROV_SKIP_PEERS=1) !!!!!\n");
        None
    } else {
        panic!("{test}: {msg} (or set KPROV_SKIP_PEERS=1 to skip peer tests)");
    }
}

/// The venv's `kubernetes-validate`.
pub fn kubernetes_validate(test: &str) -> Option<PathBuf> {
    require(
        test,
        prefix()
            .join("venv/bin/kubernetes-validate")
            .to_str()
            .expect("utf-8 path"),
    )
}

/// The venv's python (has `jsonschema` and `yaml` through kubernetes-validate's dependencies).
pub fn venv_python(test: &str) -> Option<PathBuf> {
    require(
        test,
        prefix()
            .join("venv/bin/python")
            .to_str()
            .expect("utf-8 path"),
    )
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("addr")
        .port()
}

/// Poll `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A child process stopped by PID when dropped: SIGTERM, then SIGKILL after 5 s.
pub struct ChildGuard {
    /// What it is (for messages).
    pub name: String,
    /// The process.
    pub child: Child,
}

impl ChildGuard {
    /// Guard a spawned child.
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        ChildGuard {
            name: name.into(),
            child,
        }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Has it exited already? (with its status)
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let stopped = wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
