//! The libvirt adapter: [`LibvirtCloud`] implements [`crate::Cloud`] on the libvirt API (the
//! `virt` crate), so it works the same on `qemu:///system`, a remote `qemu+ssh://HOST/system`
//! (nothing assumes that the libvirt host's files are local: images and seeds are uploaded
//! through storage-volume streams, disks are referenced as pool volumes) and the in-process
//! `test:///default` driver. User documentation: `docs/providers/libvirt.md`.
//!
//! What kprov creates for cluster `C` (everything is found again by name or metadata, so
//! `delete` also removes what a crashed run left):
//! * storage pool `kprov.C` (a `dir` pool, unless the spec names a pool);
//! * volumes named `kprov.C.*`: the base image per architecture (uploaded once, with a `.ok`
//!   marker volume written after the upload completed), per node a copy-on-write qcow2 root disk
//!   backed by it and a NoCloud `cidata` seed ISO, and its console log;
//! * per node a domain whose UUID is kprov's instance id (so a re-run can never define a
//!   second one) carrying `<metadata>` in namespace [`xml::METADATA_NS`];
//! * with the NAT network mode, network `kprov.C`.
//!
//! Submodules: [`xml`] (typed XML documents), [`seed`] (the seed ISO), [`cloud`] (the adapter and
//! its [`crate::Cloud`] impl; it re-exports the domain definition of a node from the private
//! `domain`), and the private `connection` (keepalive and reopening), `errors` (libvirt errors
//! as [`crate::CloudError`]s), `storage` (pool, base image, root disk, seed volume),
//! `passthrough` (host PCI devices for GPUs), `network` (the cluster network) and `resources`
//! (listing and deleting what a cluster owns).

pub mod cloud;
mod connection;
mod domain;
mod endpoint;
mod errors;
mod network;
mod passthrough;
mod resources;
pub mod seed;
mod storage;
pub mod xml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Arch;

pub use cloud::LibvirtCloud;

/// Provider name used in errors and by [`crate::Cloud::name`].
pub const PROVIDER: &str = "libvirt";

/// The guest address of every node in [`NetworkMode::User`] (slirp's fixed DHCP lease).
pub const USER_NET_GUEST_ADDRESS: &str = "10.0.2.15";
/// The address under which a user-mode guest reaches the host's forwarded loopback ports.
pub const USER_NET_HOST_ALIAS: &str = "10.0.2.100";

/// How nodes are networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// A NAT network `kprov.CLUSTER` with DHCP, created and deleted by kprov.
    Nat {
        /// Its IPv4 /24 (default: a free `192.168.X.0/24`).
        cidr: Option<String>,
    },
    /// An existing libvirt network, by name (never deleted by kprov).
    Existing(String),
    /// QEMU user-mode networking with `restrict=on`: the guest reaches nothing but
    /// `10.0.2.100:GUEST_PORT`, which QEMU hands to `127.0.0.1:HOST_PORT` on the libvirt host.
    /// Nodes cannot reach each other; every node is `10.0.2.15`. For tests and air-gap proofs.
    User {
        /// Guest port on `10.0.2.100` → host port on `127.0.0.1`.
        forwards: BTreeMap<u16, u16>,
    },
}

/// libvirt domain type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DomainType {
    /// `kvm` when the host's domain capabilities offer it for the guest arch, else `qemu`.
    #[default]
    Auto,
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation (TCG).
    Qemu,
}

/// Kernel and initrd for direct kernel boot (images without a boot loader, e.g. aarch64 images
/// without an EFI partition). Files on the kprov machine; uploaded as volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectBoot {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: PathBuf,
    /// Kernel command line (e.g. `root=UUID=… ro console=ttyAMA0`).
    pub cmdline: String,
}

/// A base image of one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// qcow2 cloud image on the kprov machine (with cloud-init and the NoCloud datasource).
    pub path: PathBuf,
    /// Boot its kernel directly instead of the image's boot loader / firmware.
    pub direct_boot: Option<DirectBoot>,
}

/// Settings of the adapter (built from the cluster spec's `provider.libvirt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtConfig {
    /// Connection URI (`qemu:///system`, `qemu+ssh://HOST/system`, `test:///default`).
    pub uri: String,
    /// An existing storage pool to put volumes in; `None`: pool `kprov.CLUSTER`, created by kprov.
    pub pool: Option<String>,
    /// Directory of the per-cluster pool on the libvirt host (default
    /// `/var/lib/libvirt/images/kprov.CLUSTER`).
    pub pool_dir: Option<String>,
    /// How nodes are networked (NAT network, existing network, user-mode).
    pub network: NetworkMode,
    /// Domain type.
    pub domain_type: DomainType,
    /// Base image per architecture.
    pub images: BTreeMap<Arch, BaseImage>,
    /// x86_64 machine type: `pc` (default; seed cdrom on IDE) or `q35` (seed on virtio-scsi).
    pub machine_x86: String,
    /// How long `create_instance` waits for a DHCP lease (NAT / existing networks).
    pub address_timeout: Duration,
    /// How long libvirtd may stay silent — answering neither the call in flight nor libvirt's
    /// keepalive pings — before kprov gives the connection up: the call fails naming the URI
    /// (a retryable error; the next call opens a new connection). Also bounds opening a
    /// connection. Default [`DEFAULT_KEEPALIVE_TIMEOUT`]; [`KEEPALIVE_TIMEOUT_ENV`] overrides it.
    /// A daemon that is merely slow (a long domain start, a big upload) answers the pings and
    /// is waited for.
    pub keepalive_timeout: Duration,
}

/// Default of [`LibvirtConfig::keepalive_timeout`].
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variable setting [`LibvirtConfig::keepalive_timeout`] (`30s`, `2m`; at least 2 s).
pub const KEEPALIVE_TIMEOUT_ENV: &str = "KPROV_LIBVIRT_KEEPALIVE_TIMEOUT";

/// Parse a [`KEEPALIVE_TIMEOUT_ENV`] value: whole seconds (`45`, `45s`) or minutes (`2m`), at
/// least 2 s (libvirt's keepalive works in whole seconds: one interval plus one unanswered ping).
pub fn parse_keepalive_timeout(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || {
        format!("{KEEPALIVE_TIMEOUT_ENV}={s:?}: not a duration of at least 2 s; write it like 30s or 2m")
    };
    let (num, mult) = if let Some(n) = t.strip_suffix('m') {
        (n, 60)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1)
    } else {
        (t, 1)
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = n.checked_mul(mult).ok_or_else(bad)?;
    if secs < 2 {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

/// libvirt keepalive `(interval, count)` for a timeout: pings every `interval` seconds of
/// silence, the connection is closed after `count` unanswered ones, i.e. after about
/// `interval × (count + 1)` seconds ≤ the timeout.
pub fn keepalive_params(timeout: Duration) -> (i32, u32) {
    let t = timeout.as_secs().clamp(2, i32::MAX as u64);
    let interval = t.div_ceil(6).max(1);
    let count = (t / interval).saturating_sub(1).max(1);
    (interval as i32, count as u32)
}

impl LibvirtConfig {
    /// Defaults for a URI: per-cluster pool, NAT network, auto domain type, no images.
    pub fn new(uri: impl Into<String>) -> LibvirtConfig {
        LibvirtConfig {
            uri: uri.into(),
            pool: None,
            pool_dir: None,
            network: NetworkMode::Nat { cidr: None },
            domain_type: DomainType::Auto,
            images: BTreeMap::new(),
            machine_x86: "pc".into(),
            address_timeout: Duration::from_secs(300),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
        }
    }
}

/// Name of the per-cluster storage pool and NAT network: `kprov.CLUSTER` (a dot cannot occur in
/// a cluster name, so no cluster's names are a prefix of another's).
pub fn cluster_object_name(cluster: &str) -> String {
    format!("kprov.{cluster}")
}

/// Prefix of every volume of a cluster: `kprov.CLUSTER.`.
pub fn volume_prefix(cluster: &str) -> String {
    format!("kprov.{cluster}.")
}

/// Build a [`LibvirtConfig`] from the cluster spec's parts. Each `images` value is a qcow2 file
/// or an image directory: `DIR/base.qcow2`, plus — for direct kernel boot — `DIR/vmlinuz`,
/// `DIR/initrd.img` and `DIR/cmdline` (one line), as `tests/vm/build-image.sh` writes them.
/// URLs are refused (kprov does not download images). [`KEEPALIVE_TIMEOUT_ENV`] is read here.
pub fn config_from_parts(
    uri: &str,
    pool: Option<String>,
    network: NetworkMode,
    domain_type: DomainType,
    images: &BTreeMap<Arch, String>,
) -> Result<LibvirtConfig, String> {
    let mut cfg = LibvirtConfig::new(uri);
    cfg.pool = pool;
    cfg.network = network;
    cfg.domain_type = domain_type;
    match std::env::var(KEEPALIVE_TIMEOUT_ENV) {
        Ok(v) if !v.trim().is_empty() => cfg.keepalive_timeout = parse_keepalive_timeout(&v)?,
        _ => {}
    }
    for (arch, loc) in images {
        if loc.contains("://") {
            return Err(format!(
                "spec.provider.libvirt.images.{arch}: {loc:?} is a URL; download the image and give its local path"
            ));
        }
        cfg.images.insert(*arch, base_image_at(Path::new(loc)));
    }
    Ok(cfg)
}

/// The [`BaseImage`] at a file or image directory (see [`config_from_parts`]).
pub fn base_image_at(p: &Path) -> BaseImage {
    if !p.is_dir() {
        return BaseImage {
            path: p.to_path_buf(),
            direct_boot: None,
        };
    }
    let (kernel, initrd, cmdline) = (p.join("vmlinuz"), p.join("initrd.img"), p.join("cmdline"));
    let direct_boot = match std::fs::read_to_string(&cmdline) {
        Ok(c) if kernel.is_file() && initrd.is_file() => Some(DirectBoot {
            kernel,
            initrd,
            cmdline: c.trim().to_string(),
        }),
        _ => None,
    };
    BaseImage {
        path: p.join("base.qcow2"),
        direct_boot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_timeout_values() {
        assert_eq!(
            parse_keepalive_timeout("30s").unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            parse_keepalive_timeout(" 45 ").unwrap(),
            Duration::from_secs(45)
        );
        assert_eq!(
            parse_keepalive_timeout("2m").unwrap(),
            Duration::from_secs(120)
        );
        for bad in ["1s", "0", "", "x", "3h", "-5s"] {
            let e = parse_keepalive_timeout(bad).unwrap_err();
            assert!(e.contains(KEEPALIVE_TIMEOUT_ENV), "{e}");
        }
    }

    #[test]
    fn keepalive_params_stay_within_the_timeout() {
        for t in [2u64, 3, 4, 5, 8, 10, 30, 60, 600] {
            let (i, c) = keepalive_params(Duration::from_secs(t));
            assert!(i >= 1 && c >= 1, "{t}: {i} {c}");
            let dead = i as u64 * (c as u64 + 1);
            assert!(
                dead <= t && dead * 2 > t,
                "{t}s: interval {i} × ({c} + 1) = {dead}"
            );
        }
        assert_eq!(keepalive_params(DEFAULT_KEEPALIVE_TIMEOUT), (5, 5));
    }
}
