//! The host's libvirtd as the fault tests handle it: its PID, signals to it, whether it answers,
//! started or resumed again (also on the way out of a failed test, [`LibvirtdRestore`]).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::wait::wait_for;

/// The PID in libvirtd's pidfile (`/run/libvirtd.pid`, written by `libvirtd -d`).
pub fn libvirtd_pid() -> Option<i32> {
    std::fs::read_to_string("/run/libvirtd.pid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Send `sig` (`STOP`, `CONT`, `KILL`, `0`) to `pid`; whether it was delivered.
pub fn signal(pid: i32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether libvirtd answers on qemu:///system (one `virsh version`, at most 5 s).
pub fn libvirtd_answers() -> bool {
    Command::new("timeout")
        .args(["5", "virsh", "-q", "-c", "qemu:///system", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Start libvirtd (`libvirtd -d`, as `tests/vm/host-setup.sh` does) unless its pidfile's
/// process runs, resume it if it is stopped, and wait (≤ 60 s) until it answers.
pub fn try_ensure_libvirtd() -> Result<(), String> {
    match libvirtd_pid() {
        Some(pid) if signal(pid, "0") => {
            signal(pid, "CONT");
        }
        _ => {
            let st = Command::new("/usr/sbin/libvirtd")
                .arg("-d")
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("/usr/sbin/libvirtd -d: {e}"))?;
            if !st.success() {
                return Err(format!("libvirtd -d failed: {st}"));
            }
        }
    }
    if wait_for(
        "libvirtd to answer",
        Duration::from_secs(60),
        libvirtd_answers,
    ) {
        Ok(())
    } else {
        Err("libvirtd does not answer on qemu:///system".into())
    }
}

/// [`try_ensure_libvirtd`], panicking on failure.
pub fn ensure_libvirtd() {
    if let Err(e) = try_ensure_libvirtd() {
        panic!("{e}");
    }
}

/// On drop (also after a failed assertion): libvirtd resumed or started again
/// ([`try_ensure_libvirtd`]). For tests that stop or kill it.
pub struct LibvirtdRestore;

impl Drop for LibvirtdRestore {
    fn drop(&mut self) {
        if let Err(e) = try_ensure_libvirtd() {
            eprintln!("[vm] could not restore libvirtd ({e}): start it with `libvirtd -d`");
        }
    }
}
