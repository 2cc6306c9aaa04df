//! The host side of the real-VM libvirt tests: the VM peers checked, the host lock shared with
//! other processes, libvirtd/virtlogd set up and torn down (`tests/vm/host-setup.sh`,
//! `host-teardown.sh`), the cached Debian test images (`tests/vm/build-image.sh`), blank base
//! images for tests that boot nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::peers::{missing, on_path, repo_root};

/// Check the VM peers. `false` (after a loud SKIPPED line) only with `KPROV_SKIP_PEERS=1`;
/// otherwise a missing peer panics naming `bash tests/peers/install.sh`.
pub fn require_vm_peers(test: &str) -> bool {
    let need = [
        "/usr/sbin/libvirtd",
        "/usr/sbin/virtlogd",
        "virsh",
        "qemu-system-x86_64",
        "qemu-img",
        "mmdebstrap",
        "sfdisk",
        "mkfs.ext4",
        "/usr/lib/grub/i386-pc/boot.img",
        "nc",
    ];
    let absent: Vec<&str> = need
        .iter()
        .copied()
        .filter(|p| on_path(p).is_none())
        .collect();
    if absent.is_empty() {
        return true;
    }
    let msg = format!(
        "VM test peers missing: {}; install the test peers with `bash tests/peers/install.sh`",
        absent.join(", ")
    );
    missing::<()>(test, &msg).is_some()
}

fn run_script(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut c = Command::new("bash");
    c.arg(repo_root().join("tests/vm").join(script))
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    eprint!("{err}");
    assert!(out.status.success(), "tests/vm/{script} failed: {err}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// An exclusive lock on `/run/kprov-vm-test.lock`, held while a VM test or benchmark uses the
/// host's libvirtd (other processes — another engineer's `cargo test`, CI — wait for it, so one
/// run's teardown never stops libvirtd under another).
pub struct HostLock {
    _file: std::fs::File,
}

/// Take the host lock (blocks while another run holds it).
pub fn host_lock() -> HostLock {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/kprov-vm-test.lock")
        .expect("open /run/kprov-vm-test.lock");
    if f.try_lock().is_err() {
        eprintln!("[vm] another VM test run holds /run/kprov-vm-test.lock; waiting");
        f.lock().expect("lock /run/kprov-vm-test.lock");
    }
    HostLock { _file: f }
}

/// Start libvirtd/virtlogd if needed (`tests/vm/host-setup.sh`).
pub fn host_setup() {
    run_script("host-setup.sh", &[], &[]);
}

/// Undo what `host_setup` changed (stops only daemons it started).
pub fn host_teardown() {
    run_script("host-teardown.sh", &[], &[]);
}

/// Also remove the qemu-aarch64 binfmt registration `host-setup.sh --arm64` added.
pub fn host_teardown_arm64() {
    run_script("host-teardown.sh", &["--arm64"], &[]);
}

/// Build (or reuse the cached) test image of `arch`; returns the image directory.
pub fn image(arch: &str) -> PathBuf {
    let t = Instant::now();
    let out = run_script("build-image.sh", &[], &[("ARCH", arch)]);
    let dir = PathBuf::from(out.lines().last().expect("image dir").trim());
    eprintln!(
        "[vm] {arch} image ready in {:.1}s: {}",
        t.elapsed().as_secs_f64(),
        dir.display()
    );
    dir
}

/// A blank qcow2 of `size` (`16M`, `256M`) at `dir/base.qcow2`, for tests that check only
/// kprov's libvirt objects (nothing boots from it). `preallocate`: write every byte (a file as
/// big as the image, so its upload takes time), else a few hundred KiB.
pub fn blank_base_image(dir: &Path, size: &str, preallocate: bool) -> PathBuf {
    let path = dir.join("base.qcow2");
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", "qcow2"]);
    if preallocate {
        c.args(["-o", "preallocation=full"]);
    }
    let st = c.arg(&path).arg(size).status().expect("qemu-img");
    assert!(st.success(), "qemu-img create {size} failed");
    path
}
