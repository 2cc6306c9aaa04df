//! A real containerd daemon for tests, with a private root, state and socket in a temp dir,
//! stopped by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::peers;
use crate::process::ChildGuard;
use crate::wait::wait_until;

/// A running containerd.
pub struct Containerd {
    /// Its gRPC socket.
    pub socket: PathBuf,
    /// Its log.
    pub log: PathBuf,
    /// `ctr`.
    pub ctr: PathBuf,
    _guard: ChildGuard,
}

/// `config` (a containerd config.toml, version 2) with root, state and sockets moved under `dir`.
pub fn private_config(config: &str, dir: &Path) -> String {
    let d = dir.display();
    format!(
        "root = \"{d}/root\"\nstate = \"{d}/state\"\n\n[grpc]\n  address = \"{d}/c.sock\"\n\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\n{config}"
    )
}

/// `containerd --config FILE config dump`.
pub fn config_dump(bin: &Path, file: &Path) -> Output {
    Command::new(bin)
        .arg("--config")
        .arg(file)
        .args(["config", "dump"])
        .output()
        .expect("run containerd config dump")
}

/// Start containerd with `config` (already made private with [`private_config`]) written to
/// `dir/config.toml`; `None` when peers are skipped.
pub fn start(test: &str, config: &str, dir: &Path) -> Option<Containerd> {
    let bin = peers::require(test, "containerd")?;
    let ctr = peers::require(test, "ctr")?;
    let file = dir.join("config.toml");
    std::fs::write(&file, config).expect("write config");
    let log = dir.join("containerd.log");
    let out = std::fs::File::create(&log).expect("log");
    let child = Command::new(bin)
        .arg("--config")
        .arg(&file)
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("start containerd");
    let mut guard = ChildGuard::new("containerd", child);
    let socket = dir.join("c.sock");
    let up = wait_until(Duration::from_secs(30), || {
        socket.exists()
            && Command::new(&ctr)
                .arg("-a")
                .arg(&socket)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
    });
    if !up {
        let status = guard.exited();
        panic!(
            "containerd did not answer on {} within 30 s (exit {status:?}); log:\n{}",
            socket.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    Some(Containerd {
        socket,
        log,
        ctr,
        _guard: guard,
    })
}

impl Containerd {
    /// Run `ctr -a SOCKET ARGS…`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new(&self.ctr)
            .arg("-a")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run ctr")
    }
}
