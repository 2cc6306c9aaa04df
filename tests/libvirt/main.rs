//! libvirt against the host's real libvirtd (qemu:///system, TCG): every domain XML kprov can
//! produce validated and defined (`libvirt_domain_xml`), kill -9 of update and delete
//! (`libvirt_kill`), faults done to the daemon itself (`libvirt_faults`), and real VMs booting
//! from a mirror (`libvirt_vm`). Harness: `kprov_testkit::vm`.
//!
//! These tests share the host's libvirtd (and its setup and teardown), and the VM ones boot
//! qemu under TCG on few cores: every test holds `vm_lock()` (the tests of one binary run in
//! parallel threads) and the host lock (other processes), so they run one at a time.

use kprov_testkit::KprovBin;

/// The kprov binary under test.
const KPROV: KprovBin = KprovBin::new(env!("CARGO_BIN_EXE_kprov"));

mod libvirt_domain_xml;
mod libvirt_faults;
mod libvirt_kill;
mod libvirt_vm;
