//! What kprov puts on a node and how it gets there: user-data rendering (`bootstrap_render`,
//! golden snapshots), the bootstrap script run for real (`bootstrap_script`), containerd's
//! configuration against real containerd (`bootstrap_containerd`), the CNI and add-on manifests
//! (`bootstrap_manifests`), `kprov get userdata` (`bootstrap_cli`), the PKI (`pki`), and the
//! mirror catalogue against what rendered nodes fetch (`mirror_catalogue`). Shared clusters and
//! secrets: `fixtures`.

use kprov_testkit::KprovBin;

/// The kprov binary under test.
const KPROV: KprovBin = KprovBin::new(env!("CARGO_BIN_EXE_kprov"));

mod bootstrap_cli;
mod bootstrap_containerd;
mod bootstrap_manifests;
mod bootstrap_render;
mod bootstrap_script;
mod fixtures;
mod mirror_catalogue;
mod pki;
