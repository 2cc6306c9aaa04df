//! The real-VM libvirt tests' and benchmarks' harness: host peers and daemons, the cached test
//! images, what the guests see (stand-ins, file repository, phone-home recorder: one loopback
//! [`Server`] each), libvirt's view through `virsh`, and a [`Kprov`] driver that creates
//! libvirt clusters.
//!
//! Network rule: everything listens on 127.0.0.1 only; the VMs use QEMU user networking with
//! `restrict=on` and reach nothing but `10.0.2.100:{8080,8081,8082,5000}`, forwarded to these
//! listeners.
//!
//! One VM test at a time: every test that uses the host's libvirtd holds [`vm_lock`] (tests of
//! one binary run in parallel threads) and [`host_lock`] (other processes: another `cargo test`,
//! CI).

mod bare_image;
mod cluster;
mod host;
mod libvirtd;
mod stand_ins;
mod virsh;

use std::sync::{Mutex, MutexGuard};

pub use crate::http_server::{serve_suffix, Seen, Server};
pub use crate::kprov_cmd::{Kprov, KprovBin};
pub use crate::peers::repo_root;
pub use crate::wait::wait_for;
pub use bare_image::*;
pub use cluster::delete_cluster_and_leftovers;
pub use host::*;
pub use libvirtd::*;
pub use stand_ins::*;
pub use virsh::*;

/// The process-wide VM lock: the tests that boot VMs or stop, kill or reconfigure the host's
/// libvirtd run one after another, never concurrently (a poisoned lock — a test that failed
/// holding it — is taken over).
pub fn vm_lock() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}
