//! [`LibvirtCloud`]: the [`Cloud`] implementation on one libvirt connection.
//!
//! Every libvirt call is blocking; they run on tokio's blocking pool, one at a time through a
//! mutex around the connection (the `test:///` driver keeps its state per connection, so the
//! adapter must keep using the one it opened; with `qemu:///system` the calls are short, except
//! the one-time base image upload).
//!
//! A lost connection (libvirtd restarted or killed) or a silent one (libvirtd stopped or hung:
//! libvirt's client keepalive closes it after [`LibvirtConfig::keepalive_timeout`], which needs
//! the event loop this module runs on a thread of its own) fails the call in flight with a
//! retryable [`CloudError::Unreachable`] naming the URI; the next call opens a new connection.
//! Opening is bounded by the same timeout; while an open that timed out is still waiting for
//! libvirtd, further calls fail at once instead of waiting again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex, Once};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorNumber};
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;
use virt::sys;

use super::seed::{build_seed_iso, meta_data};
use super::xml::*;
use super::{
    cluster_object_name, volume_prefix, BaseImage, DomainType, LibvirtConfig, NetworkMode,
    PROVIDER, USER_NET_GUEST_ADDRESS, USER_NET_HOST_ALIAS,
};
use crate::{
    Arch, Cloud, CloudError, CloudResult, GpuInfo, GpuMode, GpuRequest, ImageInfo, Instance,
    InstanceRequest, Inventory, MachineSize, Network, NetworkRequest, PlanProblem, Resource,
    ResourceKind, TAG_CLUSTER,
};

const GIB: u64 = 1 << 30;

/// The libvirt adapter.
pub struct LibvirtCloud {
    cfg: LibvirtConfig,
    conn: Arc<Mutex<Link>>,
    /// SHA-256 (first 12 hex digits) of each base image file, computed once.
    image_ids: Arc<Mutex<HashMap<Arch, String>>>,
}

impl std::fmt::Debug for LibvirtCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtCloud")
            .field("cfg", &self.cfg)
            .finish()
    }
}

fn fatal(code: &str, message: impl Into<String>, fix: impl Into<String>) -> CloudError {
    CloudError::Fatal {
        provider: PROVIDER,
        code: code.into(),
        message: message.into(),
        fix: fix.into(),
    }
}

/// Map a libvirt error to a [`CloudError`], saying what kprov was doing.
fn verr(what: &str, e: VirtError) -> CloudError {
    let code = e.code();
    let msg = format!("{what}: {}", e.message());
    let known = |n: ErrorNumber| code == virt::enumutil::Enum::Known(n);
    if known(ErrorNumber::AuthFailed)
        || known(ErrorNumber::AuthCancelled)
        || known(ErrorNumber::AccessDenied)
    {
        CloudError::Auth {
            provider: PROVIDER,
            message: msg,
            fix: "check the libvirt URI's user and permissions (e.g. membership of group libvirt)"
                .into(),
        }
    } else if known(ErrorNumber::SystemError)
        || known(ErrorNumber::Rpc)
        || known(ErrorNumber::NoConnect)
    {
        CloudError::Unreachable {
            provider: PROVIDER,
            endpoint: "libvirt".into(),
            message: msg,
        }
    } else if known(ErrorNumber::OperationTimeout) || known(ErrorNumber::AgentUnresponsive) {
        CloudError::Transient {
            provider: PROVIDER,
            code: format!("{code:?}"),
            message: msg,
        }
    } else {
        fatal(
            &format!("{code:?}"),
            msg,
            "see libvirtd's log on the libvirt host for details",
        )
    }
}

fn is(e: &VirtError, n: ErrorNumber) -> bool {
    e.code() == virt::enumutil::Enum::Known(n)
}

fn not_found(e: &VirtError) -> bool {
    is(e, ErrorNumber::NoDomain)
        || is(e, ErrorNumber::NoNetwork)
        || is(e, ErrorNumber::NoStoragePool)
        || is(e, ErrorNumber::NoStorageVolume)
}

/// The connection, reopened when libvirt reports it closed (see the module docs).
struct Link {
    /// `None` after a dead connection was dropped and reopening failed.
    conn: Option<Connect>,
    /// An open that did not finish within the timeout: when it started, and where its thread
    /// will deliver the connection.
    pending: Option<(Instant, mpsc::Receiver<CloudResult<Connect>>)>,
    /// When a connection that worked was found closed (until a new one is open).
    lost_since: Option<Instant>,
}

/// Register libvirt's default event loop and run it on a thread (once per process, before the
/// first connection is opened): libvirt's client keepalive — kprov's only bound on a call to a
/// libvirtd that stopped answering — works only with an event loop.
fn ensure_event_loop() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = virt::event::event_register_default_impl() {
            tracing::warn!(
                "libvirt event loop: {}; calls to a libvirtd that stops answering may hang",
                e.message()
            );
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                if virt::event::event_run_default_impl().is_err() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("libvirt event loop thread: {e}");
        }
    });
}

/// Open `uri` and turn on keepalive (not on the in-process `test:///` driver).
fn open_now(uri: &str, keepalive: Duration) -> CloudResult<Connect> {
    let conn = Connect::open(Some(uri)).map_err(|e| {
        let mut err = verr(&format!("opening {uri}"), e);
        if let CloudError::Unreachable {
            endpoint, message, ..
        } = &mut err
        {
            *endpoint = uri.to_string();
            message.push_str(
                "; is libvirtd running on that host (`libvirtd -d` / `systemctl start libvirtd`)?",
            );
        }
        err
    })?;
    if driver(uri) != "test" {
        let (interval, count) = super::keepalive_params(keepalive);
        if let Err(e) = conn.set_keep_alive(interval, count) {
            tracing::warn!(
                uri,
                "libvirt keepalive not enabled: {}; a call to a libvirtd that stops answering may hang",
                e.message()
            );
        }
    }
    Ok(conn)
}

/// Open `uri` on a thread of its own (an open to a libvirtd that accepts the socket but never
/// answers would block for good: keepalive starts only once the connection is open).
fn start_open(uri: &str, keepalive: Duration) -> mpsc::Receiver<CloudResult<Connect>> {
    ensure_event_loop();
    let (tx, rx) = mpsc::channel();
    let u = uri.to_string();
    let spawned = std::thread::Builder::new()
        .name("libvirt-open".into())
        .spawn(move || {
            // a receiver that gave up drops the late connection (closing it)
            let _ = tx.send(open_now(&u, keepalive));
        });
    if let Err(e) = spawned {
        let (tx, rx2) = mpsc::channel();
        let _ = tx.send(Err(CloudError::Protocol {
            provider: PROVIDER,
            message: format!("cannot start a thread to open {uri}: {e}"),
        }));
        return rx2;
    }
    rx
}

/// The error for an open that did not finish in time.
fn open_hung(uri: &str, waited: Duration) -> CloudError {
    CloudError::Unreachable {
        provider: PROVIDER,
        endpoint: uri.to_string(),
        message: format!(
            "opening the connection: libvirtd accepted it but has not answered for {}s (stopped, hung or overloaded?); check it with `virsh -c {uri} version` and re-run (kprov waits {}, default 30s)",
            waited.as_secs(),
            super::KEEPALIVE_TIMEOUT_ENV
        ),
    }
}

impl Link {
    fn alive(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.is_alive().unwrap_or(false))
    }

    /// Make sure a live connection is open: reopen a closed one. A libvirtd that refuses
    /// connections after a lost one (restarting) is tried again every 0.5 s for up to `timeout`
    /// after the loss; an open libvirtd does not answer is abandoned after `timeout`.
    fn ensure_open(&mut self, uri: &str, timeout: Duration) -> CloudResult<&Connect> {
        if !self.alive() {
            if let Some(dead) = self.conn.take() {
                // its socket is closed: dropping it makes no call
                drop(dead);
                tracing::warn!(uri, "the libvirt connection was closed; reopening it");
                self.lost_since = Some(Instant::now());
            }
            loop {
                match self.open_once(uri, timeout) {
                    Ok(c) => {
                        if self.lost_since.take().is_some() {
                            tracing::warn!(uri, "reconnected to libvirtd");
                        }
                        self.conn = Some(c);
                        break;
                    }
                    Err(CloudError::Unreachable { .. })
                        if self.pending.is_none()
                            && self.lost_since.is_some_and(|t| {
                                t.elapsed() + Duration::from_millis(500) < timeout
                            }) =>
                    {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(self.conn.as_ref().expect("open"))
    }

    /// One attempt to open the connection, bounded by `timeout`; while an earlier attempt is
    /// still waiting for libvirtd, fail at once (or take its connection if it arrived).
    fn open_once(&mut self, uri: &str, timeout: Duration) -> CloudResult<Connect> {
        let (since, rx) = match self.pending.take() {
            Some((since, rx)) => match rx.try_recv() {
                Ok(Ok(c)) => return Ok(c),
                Err(mpsc::TryRecvError::Empty) => {
                    let waited = since.elapsed();
                    self.pending = Some((since, rx));
                    return Err(open_hung(uri, waited));
                }
                // that open failed: try again
                Ok(Err(_)) | Err(mpsc::TryRecvError::Disconnected) => {
                    (Instant::now(), start_open(uri, timeout))
                }
            },
            None => (Instant::now(), start_open(uri, timeout)),
        };
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.pending = Some((since, rx));
                Err(open_hung(uri, since.elapsed()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(CloudError::Protocol {
                provider: PROVIDER,
                message: format!("opening {uri}: the opening thread ended without an answer"),
            }),
        }
    }

    /// Classify the error of a call made on this connection: on a connection that is now
    /// closed every error is the lost connection (retryable, naming the URI and the fix); a
    /// system error on a live one is the libvirt host refusing (e.g. permission denied, disk
    /// full, a file in the way) — not retryable.
    fn classify(&self, e: CloudError, uri: &str, timeout: Duration) -> CloudError {
        let alive = self.alive();
        match e {
            CloudError::Unreachable { message, .. } if alive => fatal(
                "HostError",
                format!("{message} (libvirtd on {uri} refused)"),
                "fix the cause on the libvirt host (permissions, free space, a file or object in the way) and re-run",
            ),
            e if alive => e,
            e => {
                let message = match e {
                    CloudError::Unreachable { message, .. }
                    | CloudError::Transient { message, .. }
                    | CloudError::Protocol { message, .. }
                    | CloudError::Fatal { message, .. }
                    | CloudError::Auth { message, .. } => message,
                    other => other.to_string(),
                };
                CloudError::Unreachable {
                    provider: PROVIDER,
                    endpoint: uri.to_string(),
                    message: format!(
                        "{message}; the connection to libvirtd was lost (libvirtd restarted or stopped, or it answered nothing — not even keepalive pings — for {}s, {}); check it with `virsh -c {uri} version`, then re-run",
                        timeout.as_secs(),
                        super::KEEPALIVE_TIMEOUT_ENV
                    ),
                }
            }
        }
    }
}

/// The libvirt driver of a URI (`qemu`, `test`, …).
fn driver(uri: &str) -> &str {
    let scheme = uri.split(':').next().unwrap_or("");
    scheme.split('+').next().unwrap_or(scheme)
}

/// Virtual size of a qcow2 image from its header (bytes 24..32, big endian); `None` if the
/// file is not qcow2.
pub fn qcow2_virtual_size(path: &Path) -> std::io::Result<Option<u64>> {
    let mut f = std::fs::File::open(path)?;
    let mut h = [0u8; 32];
    if f.read_exact(&mut h).is_err() || &h[0..4] != b"QFI\xfb" {
        return Ok(None);
    }
    Ok(Some(u64::from_be_bytes(
        h[24..32].try_into().expect("8 bytes"),
    )))
}

/// A MAC address derived from the instance id (stable across re-creates).
pub fn mac_for(instance_id: &str) -> String {
    let d = Sha256::digest(instance_id.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", d[0], d[1], d[2])
}

/// kprov's instance id (32 hex digits) as a UUID string.
pub fn domain_uuid(instance_id: &str) -> String {
    match uuid::Uuid::parse_str(instance_id) {
        Ok(u) => u.hyphenated().to_string(),
        Err(_) => uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, instance_id.as_bytes())
            .hyphenated()
            .to_string(),
    }
}

/// Direct kernel boot on the libvirt host: kernel path, initrd path, kernel command line.
pub type DirectBootPaths = (String, String, String);

/// How a node's NIC is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nic {
    /// On a libvirt network.
    Network(String),
    /// Restricted user-mode networking with these forwards (guest port → host loopback port).
    User(BTreeMap<u16, u16>),
}

/// Everything the domain XML of one node depends on (pure data: unit-testable).
#[derive(Debug, Clone)]
pub struct DomainParams<'a> {
    /// The request.
    pub req: &'a InstanceRequest,
    /// `kvm`, `qemu` or `test`.
    pub domain_type: String,
    /// x86_64 machine type (`pc` / `q35`).
    pub machine_x86: String,
    /// Pool holding the volumes.
    pub pool: String,
    /// Root disk volume.
    pub root_volume: String,
    /// Seed ISO volume.
    pub seed_volume: String,
    /// Direct kernel boot: kernel path, initrd path (on the libvirt host), command line.
    pub direct_boot: Option<DirectBootPaths>,
    /// NIC.
    pub nic: Nic,
    /// Host PCI devices to pass through.
    pub hostdevs: Vec<PciAddress>,
    /// Console log path on the libvirt host.
    pub console_log: Option<String>,
}

/// vCPUs and MiB of a request.
pub fn shape(req: &InstanceRequest) -> CloudResult<(u32, u64)> {
    match &req.size {
        MachineSize::Shape { cpus, memory_mib } => Ok((*cpus, *memory_mib)),
        MachineSize::Flavor(f) => Err(fatal(
            "NoFlavors",
            format!(
                "{}: size {f:?} is a flavor name, but libvirt has no flavors",
                req.name
            ),
            "give the instance group's size as CPU:MEMORY, e.g. 2:4Gi",
        )),
    }
}

/// The typed domain document of a node.
pub fn domain_xml(p: &DomainParams<'_>) -> CloudResult<DomainXml> {
    let req = p.req;
    let (cpus, mem) = shape(req)?;
    let tag = |k: &str| req.tags.get(k).cloned().unwrap_or_default();
    let metadata = MetadataXml {
        instance: KprovInstance {
            xmlns: METADATA_NS.into(),
            cluster: req.cluster.clone(),
            role: req.role.as_str().into(),
            instance_group: req.instance_group.clone(),
            index: req.index,
            instance_id: req.id.clone(),
            spec_hash: tag(crate::TAG_SPEC_HASH),
            tags: req
                .tags
                .iter()
                .map(|(k, v)| KprovTag {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        },
    };
    let arm = req.arch == Arch::Arm64;
    let machine = if arm {
        "virt".to_string()
    } else {
        p.machine_x86.clone()
    };
    let pc = machine == "pc" || machine.starts_with("pc-i440fx");
    let uefi = arm && p.direct_boot.is_none();
    let os = Os {
        firmware: uefi.then(|| "efi".to_string()),
        os_type: OsType {
            arch: req.arch.machine().into(),
            machine: machine.clone(),
            kind: "hvm".into(),
        },
        kernel: p.direct_boot.as_ref().map(|d| d.0.clone()),
        initrd: p.direct_boot.as_ref().map(|d| d.1.clone()),
        cmdline: p.direct_boot.as_ref().map(|d| d.2.clone()),
        boot: p.direct_boot.is_none().then(|| Boot { dev: "hd".into() }),
    };
    let features = if arm {
        Features {
            acpi: uefi.then_some(Empty {}),
            apic: None,
            gic: Some(Gic {
                version: "3".into(),
            }),
        }
    } else {
        Features {
            acpi: Some(Empty {}),
            apic: Some(Empty {}),
            gic: None,
        }
    };
    let cpu = match (p.domain_type.as_str(), arm) {
        ("kvm", _) => Some(Cpu {
            mode: "host-passthrough".into(),
            match_: None,
            model: None,
        }),
        ("qemu", true) => Some(Cpu {
            mode: "custom".into(),
            match_: Some("exact".into()),
            model: Some(CpuModel {
                fallback: "forbid".into(),
                name: "cortex-a57".into(),
            }),
        }),
        _ => None,
    };
    // The seed cdrom: IDE on i440fx (the Debian cloud kernel has no AHCI), else virtio-scsi.
    let (cd_dev, cd_bus) = if pc { ("hdc", "ide") } else { ("sda", "scsi") };
    let controllers = if pc {
        vec![]
    } else {
        vec![Controller {
            kind: "scsi".into(),
            model: "virtio-scsi".into(),
        }]
    };
    let disks = vec![
        Disk {
            kind: "volume".into(),
            device: "disk".into(),
            driver: Driver {
                name: "qemu".into(),
                format: "qcow2".into(),
            },
            source: VolumeSource {
                pool: p.pool.clone(),
                volume: p.root_volume.clone(),
            },
            target: Target {
                dev: "vda".into(),
                bus: "virtio".into(),
            },
            readonly: None,
        },
        Disk {
            kind: "volume".into(),
            device: "cdrom".into(),
            driver: Driver {
                name: "qemu".into(),
                format: "raw".into(),
            },
            source: VolumeSource {
                pool: p.pool.clone(),
                volume: p.seed_volume.clone(),
            },
            target: Target {
                dev: cd_dev.into(),
                bus: cd_bus.into(),
            },
            readonly: Some(Empty {}),
        },
    ];
    let mac = mac_for(&req.id);
    let (interfaces, qemu_commandline) = match &p.nic {
        Nic::Network(n) => (
            vec![InterfaceXml {
                kind: "network".into(),
                mac: Mac { address: mac },
                source: NetworkSource { network: n.clone() },
                model: ModelType {
                    kind: "virtio".into(),
                },
            }],
            None,
        ),
        Nic::User(forwards) => {
            // libvirt 9's <interface type='user'> cannot set restrict=on: the NIC is passed to
            // QEMU directly. An explicit PCI slot, else QEMU takes one libvirt gave a disk.
            let mut netdev = "user,id=kprovnet,restrict=on".to_string();
            for (g, h) in forwards {
                netdev.push_str(&format!(
                    ",guestfwd=tcp:{USER_NET_HOST_ALIAS}:{g}-cmd:nc 127.0.0.1 {h}"
                ));
            }
            let bus = if pc { "pci.0" } else { "pcie.0" };
            let args = vec![
                "-netdev".to_string(),
                netdev,
                "-device".to_string(),
                format!("virtio-net-pci,netdev=kprovnet,mac={mac},bus={bus},addr=0x10"),
            ];
            (
                vec![],
                Some(QemuCommandline {
                    args: args.into_iter().map(|value| QemuArg { value }).collect(),
                }),
            )
        }
    };
    let hostdevs = p
        .hostdevs
        .iter()
        .map(|a| Hostdev {
            mode: "subsystem".into(),
            kind: "pci".into(),
            managed: "yes".into(),
            source: HostdevSource { address: a.clone() },
        })
        .collect();
    Ok(DomainXml {
        domain_type: p.domain_type.clone(),
        xmlns_qemu: qemu_commandline.as_ref().map(|_| QEMU_NS.to_string()),
        name: req.name.clone(),
        uuid: domain_uuid(&req.id),
        metadata,
        memory: Memory {
            unit: "MiB".into(),
            amount: mem,
        },
        vcpu: cpus,
        os,
        features,
        cpu,
        on_poweroff: "destroy".into(),
        on_reboot: "restart".into(),
        on_crash: "destroy".into(),
        devices: Devices {
            controllers,
            disks,
            interfaces,
            hostdevs,
            serials: vec![Serial {
                kind: "pty".into(),
                log: p.console_log.as_ref().map(|f| Log {
                    file: f.clone(),
                    append: "off".into(),
                }),
                target: SerialTarget { port: 0 },
            }],
            consoles: vec![Console {
                kind: "pty".into(),
                target: ConsoleTarget {
                    kind: "serial".into(),
                    port: 0,
                },
            }],
            memballoon: Model {
                model: "none".into(),
            },
        },
        qemu_commandline,
    })
}

/// Pick `req.count` devices matching the request's filters that are not in `used`, in address
/// order. `None` when there are not enough.
pub fn pick_gpus(
    devices: &[PciDevice],
    used: &BTreeSet<PciAddress>,
    req: &GpuRequest,
) -> Option<Vec<PciAddress>> {
    let mut free: Vec<&PciDevice> = devices
        .iter()
        .filter(|d| !used.contains(&d.address))
        .filter(|d| gpu_info(d, None).matches(req))
        .collect();
    free.sort_by(|a, b| a.address.cmp(&b.address));
    (free.len() >= req.count as usize).then(|| {
        free.into_iter()
            .take(req.count as usize)
            .map(|d| d.address.clone())
            .collect()
    })
}

fn gpu_info(d: &PciDevice, attached_to: Option<String>) -> GpuInfo {
    GpuInfo {
        id: d.name.clone(),
        vendor: d.vendor.clone(),
        model: d.product.clone(),
        host: String::new(),
        arch: None,
        attached_to,
    }
}

/// One domain of a cluster as listed.
struct Listed {
    dom: Domain,
    uuid: String,
    name: String,
    meta: ParsedMetadata,
}

impl LibvirtCloud {
    /// Open the connection named by `cfg.uri`.
    pub fn connect(cfg: LibvirtConfig) -> CloudResult<LibvirtCloud> {
        // libvirt prints every error to stderr by default; kprov reports them itself (many are
        // expected: "not found" while looking for leftovers).
        virt::error::clear_error_callback();
        let mut link = Link {
            conn: None,
            pending: None,
            lost_since: None,
        };
        link.ensure_open(&cfg.uri, cfg.keepalive_timeout)?;
        Ok(LibvirtCloud {
            cfg,
            conn: Arc::new(Mutex::new(link)),
            image_ids: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The adapter's settings.
    pub fn config(&self) -> &LibvirtConfig {
        &self.cfg
    }

    fn is_test_driver(&self) -> bool {
        driver(&self.cfg.uri) == "test"
    }

    /// Run `f` with the connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> CloudResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> CloudResult<T> + Send + 'static,
    {
        let link = self.conn.clone();
        let (uri, timeout) = (self.cfg.uri.clone(), self.cfg.keepalive_timeout);
        tokio::task::spawn_blocking(move || {
            let mut guard = link.lock().unwrap_or_else(|p| p.into_inner());
            let conn = guard.ensure_open(&uri, timeout)?;
            f(conn).map_err(|e| guard.classify(e, &uri, timeout))
        })
        .await
        .map_err(|e| CloudError::Protocol {
            provider: PROVIDER,
            message: format!("libvirt worker: {e}"),
        })?
    }

    fn pool_name(&self, cluster: &str) -> String {
        self.cfg
            .pool
            .clone()
            .unwrap_or_else(|| cluster_object_name(cluster))
    }

    fn image(&self, arch: Arch) -> CloudResult<&BaseImage> {
        self.cfg.images.get(&arch).ok_or_else(|| {
            fatal(
                "NoImage",
                format!("no base image for {arch} in spec.provider.libvirt.images"),
                format!("set spec.provider.libvirt.images.{arch} to a qcow2 cloud image with cloud-init (see docs/providers/libvirt.md)"),
            )
        })
    }

    /// First 12 hex digits of the base image's SHA-256 (names its volume: a changed file is
    /// uploaded again under a new name).
    fn image_id(&self, arch: Arch) -> CloudResult<String> {
        if let Some(id) = self
            .image_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&arch)
        {
            return Ok(id.clone());
        }
        let img = self.image(arch)?;
        let mut f = std::fs::File::open(&img.path).map_err(|e| {
            fatal(
                "ImageUnreadable",
                format!("base image {}: {e}", img.path.display()),
                "build or download the image first (tests/vm/build-image.sh)",
            )
        })?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(|e| {
                fatal(
                    "ImageUnreadable",
                    format!("{}: {e}", img.path.display()),
                    "check the file",
                )
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let id = hex::encode(h.finalize())[..12].to_string();
        self.image_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(arch, id.clone());
        Ok(id)
    }

    /// The domain type for an arch: the configured one, or kvm when the host offers it.
    fn domain_type_for(&self, conn: &Connect, arch: Arch) -> String {
        if self.is_test_driver() {
            return "test".into();
        }
        match self.cfg.domain_type {
            DomainType::Kvm => "kvm".into(),
            DomainType::Qemu => "qemu".into(),
            DomainType::Auto => {
                let machine = if arch == Arch::Arm64 {
                    "virt"
                } else {
                    self.cfg.machine_x86.as_str()
                };
                match conn.domain_capabilities(
                    None,
                    Some(arch.machine()),
                    Some(machine),
                    Some("kvm"),
                    0,
                ) {
                    Ok(_) => "kvm".into(),
                    Err(_) => "qemu".into(),
                }
            }
        }
    }

    fn list_cluster_domains(conn: &Connect, cluster: &str) -> CloudResult<Vec<Listed>> {
        let mut out = Vec::new();
        for dom in conn
            .list_all_domains(0)
            .map_err(|e| verr("listing domains", e))?
        {
            let Ok(xml) = dom.xml_desc(0) else { continue };
            let Some(meta) = parse_metadata(&xml) else {
                continue;
            };
            if meta.cluster != cluster {
                continue;
            }
            let uuid = dom.uuid_string().map_err(|e| verr("domain uuid", e))?;
            let name = dom.name().map_err(|e| verr("domain name", e))?;
            out.push(Listed {
                dom,
                uuid,
                name,
                meta,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn instance_of(&self, conn: &Connect, l: &Listed) -> Instance {
        use virt::domain::DomainState as S;
        let state = match l.dom.info().map(|i| i.state.unwrap_or(S::NoState)) {
            Ok(S::Running) => "Running",
            Ok(S::Blocked) => "Blocked",
            Ok(S::Paused) => "Paused",
            Ok(S::Shutdown) => "ShuttingDown",
            Ok(S::Shutoff) => "Stopped",
            Ok(S::Crashed) => "Crashed",
            Ok(S::PMSuspended) => "Suspended",
            _ => "Unknown",
        };
        let address = if matches!(self.cfg.network, NetworkMode::User { .. }) {
            Some(USER_NET_GUEST_ADDRESS.to_string())
        } else {
            Self::address_now(conn, &l.dom)
        };
        Instance {
            id: l.uuid.clone(),
            name: l.name.clone(),
            state: state.into(),
            address,
            tags: l.meta.tags.clone(),
        }
    }

    /// The domain's IPv4 address from DHCP leases, else the ARP table.
    fn address_now(_conn: &Connect, dom: &Domain) -> Option<String> {
        if !dom.is_active().unwrap_or(false) {
            return None;
        }
        for src in [
            sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            sys::VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
        ] {
            if let Ok(ifaces) = dom.interface_addresses(src, 0) {
                for i in ifaces {
                    for a in i.addrs {
                        if a.typed == sys::VIR_IP_ADDR_TYPE_IPV4 as i64 && !a.addr.is_empty() {
                            return Some(a.addr);
                        }
                    }
                }
            }
        }
        None
    }

    /// Make sure the pool exists and is active; returns it and its directory (dir pools).
    fn ensure_pool(
        &self,
        conn: &Connect,
        cluster: &str,
    ) -> CloudResult<(StoragePool, Option<String>)> {
        let name = self.pool_name(cluster);
        let pool = match conn.lookup_storage_pool_by_name(&name) {
            Ok(p) => p,
            Err(e) if not_found(&e) && self.cfg.pool.is_some() => {
                return Err(fatal(
                    "NoPool",
                    format!("storage pool {name:?} (spec.provider.libvirt.pool) does not exist"),
                    "create it (virsh pool-define-as …) or remove `pool` to let kprov create one per cluster",
                ))
            }
            Err(e) if not_found(&e) => {
                let dir = self
                    .cfg
                    .pool_dir
                    .clone()
                    .unwrap_or_else(|| format!("/var/lib/libvirt/images/{name}"));
                let doc = PoolXml { kind: "dir".into(), name: name.clone(), target: PathTarget { path: dir } };
                let x = to_xml(&doc).map_err(|e| CloudError::Protocol { provider: PROVIDER, message: e.to_string() })?;
                let p = match conn.define_storage_pool_xml(&x, 0) {
                    Ok(p) => p,
                    // another run defined it in between
                    Err(_) => conn.lookup_storage_pool_by_name(&name).map_err(|e| verr("defining pool", e))?,
                };
                if !self.is_test_driver() {
                    p.build(0).map_err(|e| verr(&format!("building pool {name}"), e))?;
                }
                let _ = p.set_autostart(true);
                p
            }
            Err(e) => return Err(verr("looking up pool", e)),
        };
        if !pool.is_active().unwrap_or(false) {
            pool.create(0)
                .map_err(|e| verr(&format!("starting pool {name}"), e))?;
        }
        let pxml = pool.xml_desc(0).unwrap_or_default();
        let is_dir = attrs_of(&pxml, "pool")
            .first()
            .and_then(|a| a.get("type"))
            .map(String::as_str)
            == Some("dir");
        let dir = is_dir
            .then(|| texts_of(&pxml, "path").into_iter().next())
            .flatten();
        Ok((pool, dir))
    }

    /// Upload `data` (a file or bytes) into a new raw volume `name` of `pool`. The `test:///`
    /// driver has no `virStorageVolUpload`: there the volume stays empty.
    fn upload_volume(
        &self,
        conn: &Connect,
        pool: &StoragePool,
        name: &str,
        src: Upload<'_>,
    ) -> CloudResult<StorageVol> {
        if let Ok(old) = pool.lookup_storage_vol_by_name(name) {
            old.delete(0)
                .map_err(|e| verr(&format!("deleting stale volume {name}"), e))?;
        }
        let len = match &src {
            Upload::File(p) => std::fs::metadata(p)
                .map_err(|e| {
                    fatal(
                        "FileUnreadable",
                        format!("{}: {e}", p.display()),
                        "check the path",
                    )
                })?
                .len(),
            Upload::Bytes(b) => b.len() as u64,
        };
        let doc = VolumeXml {
            name: name.into(),
            capacity: Capacity {
                unit: "bytes".into(),
                amount: len.max(1),
            },
            target: VolTarget {
                format: ModelType { kind: "raw".into() },
            },
            backing_store: None,
        };
        let x = to_xml(&doc).map_err(|e| CloudError::Protocol {
            provider: PROVIDER,
            message: e.to_string(),
        })?;
        let vol = StorageVol::create_xml(pool, &x, 0)
            .map_err(|e| verr(&format!("creating volume {name}"), e))?;
        let stream = Stream::new(conn, 0).map_err(|e| verr("opening a stream", e))?;
        match vol.upload(&stream, 0, len, 0) {
            Ok(()) => {}
            Err(e) if is(&e, ErrorNumber::NoSupport) && self.is_test_driver() => {
                tracing::debug!(
                    volume = name,
                    "test driver: no volume upload, volume left empty"
                );
                let _ = stream.abort();
                return Ok(vol);
            }
            Err(e) => return Err(verr(&format!("uploading volume {name}"), e)),
        }
        let sent = std::cell::Cell::new(0u64);
        let (started, last_report) = (Instant::now(), std::cell::Cell::new(Instant::now()));
        let send_all = |chunk: &[u8]| -> CloudResult<()> {
            let mut off = 0;
            while off < chunk.len() {
                let n = stream
                    .send(&chunk[off..])
                    .map_err(|e| verr(&format!("uploading volume {name}"), e))?;
                if n <= 0 {
                    return Err(fatal(
                        "UploadFailed",
                        format!("uploading volume {name}: stream refused data"),
                        "see libvirtd's log",
                    ));
                }
                off += n as usize;
            }
            sent.set(sent.get() + chunk.len() as u64);
            // a big upload (the base image) shows its progress with `-v`
            if last_report.get().elapsed() >= Duration::from_secs(2) {
                last_report.set(Instant::now());
                tracing::info!(
                    "uploading volume {name}: {} of {} MiB ({:.0}%, {:.0}s)",
                    sent.get() >> 20,
                    len >> 20,
                    100.0 * sent.get() as f64 / len.max(1) as f64,
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(())
        };
        // an unfinished stream is aborted, so libvirtd drops its side of the transfer
        let sent_all = (|| -> CloudResult<()> {
            match src {
                Upload::File(p) => {
                    let unreadable = |e: std::io::Error| {
                        fatal(
                            "FileUnreadable",
                            format!("{}: {e}", p.display()),
                            "check the path",
                        )
                    };
                    let mut f = std::fs::File::open(p).map_err(unreadable)?;
                    let mut buf = vec![0u8; 4 << 20];
                    loop {
                        let n = f.read(&mut buf).map_err(unreadable)?;
                        if n == 0 {
                            return Ok(());
                        }
                        send_all(&buf[..n])?;
                    }
                }
                Upload::Bytes(b) => b.chunks(4 << 20).try_for_each(send_all),
            }
        })();
        if let Err(e) = sent_all {
            let _ = stream.abort();
            return Err(e);
        }
        stream
            .finish()
            .map_err(|e| verr(&format!("finishing upload of {name}"), e))?;
        Ok(vol)
    }

    /// The base image volume of `arch` (uploaded once; the `.ok` marker volume is written after
    /// a complete upload, so a crash mid-upload causes a re-upload), plus kernel/initrd volume
    /// paths for direct boot.
    fn ensure_base(
        &self,
        conn: &Connect,
        pool: &StoragePool,
        cluster: &str,
        arch: Arch,
        image_id: &str,
    ) -> CloudResult<(StorageVol, Option<DirectBootPaths>)> {
        let img = self.image(arch)?.clone();
        let base = format!("{}base-{arch}-{image_id}", volume_prefix(cluster));
        let marker = format!("{base}.ok");
        let vol_name = format!("{base}.qcow2");
        let done = pool.lookup_storage_vol_by_name(&marker).is_ok();
        let vol = match (done, pool.lookup_storage_vol_by_name(&vol_name)) {
            (true, Ok(v)) => v,
            _ => {
                let started = Instant::now();
                let v = self.upload_volume(conn, pool, &vol_name, Upload::File(&img.path))?;
                let mut boot_files = Vec::new();
                if let Some(db) = &img.direct_boot {
                    boot_files.push((format!("{base}.vmlinuz"), db.kernel.clone()));
                    boot_files.push((format!("{base}.initrd"), db.initrd.clone()));
                }
                for (n, p) in &boot_files {
                    self.upload_volume(conn, pool, n, Upload::File(p))?;
                }
                self.upload_volume(conn, pool, &marker, Upload::Bytes(b"ok\n"))?;
                tracing::info!(volume = %vol_name, secs = started.elapsed().as_secs_f64(), "base image uploaded");
                v
            }
        };
        let direct = match &img.direct_boot {
            Some(db) => {
                let k = pool
                    .lookup_storage_vol_by_name(&format!("{base}.vmlinuz"))
                    .map_err(|e| verr("kernel volume", e))?;
                let i = pool
                    .lookup_storage_vol_by_name(&format!("{base}.initrd"))
                    .map_err(|e| verr("initrd volume", e))?;
                Some((
                    k.path().map_err(|e| verr("kernel path", e))?,
                    i.path().map_err(|e| verr("initrd path", e))?,
                    db.cmdline.clone(),
                ))
            }
            None => None,
        };
        Ok((vol, direct))
    }

    fn pci_devices(conn: &Connect) -> Vec<PciDevice> {
        let devs = conn
            .list_all_node_devices(sys::VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
            .or_else(|_| conn.list_all_node_devices(0))
            .unwrap_or_default();
        devs.iter()
            .filter_map(|d| d.xml_desc(0).ok())
            .filter_map(|x| parse_pci_device(&x))
            .collect()
    }

    /// PCI addresses passed through to any domain, with the domain's name.
    fn hostdevs_in_use(conn: &Connect, except_uuid: Option<&str>) -> BTreeMap<PciAddress, String> {
        let mut used = BTreeMap::new();
        for d in conn.list_all_domains(0).unwrap_or_default() {
            let uuid = d.uuid_string().unwrap_or_default();
            if Some(uuid.as_str()) == except_uuid {
                continue;
            }
            let name = d.name().unwrap_or_default();
            for a in hostdev_addresses(&d.xml_desc(0).unwrap_or_default()) {
                used.insert(a, name.clone());
            }
        }
        used
    }

    /// The blocking part of `create_instance`, under the connection lock.
    fn create_blocking(
        &self,
        conn: &Connect,
        req: &InstanceRequest,
        image_id: &str,
    ) -> CloudResult<(Domain, bool)> {
        let uuid = domain_uuid(&req.id);
        if let Ok(dom) = conn.lookup_domain_by_uuid_string(&uuid) {
            // exists (a re-run after a crash): make sure it runs
            Self::ensure_running(&dom, &req.name)?;
            return Ok((dom, false));
        }
        // A domain of this name that is not this node (another UUID: made by someone else)
        // would make the define fail after the volumes were made: refuse before anything.
        if let Ok(other) = conn.lookup_domain_by_name(&req.name) {
            let theirs = other.uuid_string().unwrap_or_default();
            return Err(fatal(
                "DomainNameTaken",
                format!(
                    "domain {} on {} has uuid {theirs}, so it is not kprov's node {} (uuid {uuid}): a domain kprov did not make holds the name",
                    req.name, self.cfg.uri, req.name
                ),
                format!(
                    "remove or rename that domain (e.g. `virsh -c {} undefine {}` if nothing needs it), or rename the instance group, then re-run; kprov never changes domains it did not make",
                    self.cfg.uri, req.name
                ),
            ));
        }
        let (cpus, _) = shape(req)?;
        if cpus == 0 {
            return Err(fatal(
                "BadSize",
                format!("{}: 0 vCPUs", req.name),
                "give at least 1 CPU",
            ));
        }
        let (pool, dir) = self.ensure_pool(conn, &req.cluster)?;
        let pool_name = self.pool_name(&req.cluster);
        let (base, direct) = self.ensure_base(conn, &pool, &req.cluster, req.arch, image_id)?;
        let prefix = volume_prefix(&req.cluster);
        // Root disk: a qcow2 overlay on the base, sized to the instance group's root disk.
        let base_size = qcow2_virtual_size(&self.image(req.arch)?.path)
            .ok()
            .flatten()
            .unwrap_or(2 * GIB);
        let want = req
            .root_disk_gib
            .map(|g| g as u64 * GIB)
            .unwrap_or(base_size);
        if want < base_size {
            return Err(fatal(
                "RootDiskTooSmall",
                format!(
                    "{}: root disk {} GiB is smaller than the base image ({} bytes)",
                    req.name,
                    want / GIB,
                    base_size
                ),
                "raise the instance group's rootVolumeSize",
            ));
        }
        let root = format!("{prefix}{}.root.qcow2", req.name);
        if let Ok(old) = pool.lookup_storage_vol_by_name(&root) {
            // left by a crashed run before the domain was defined: never booted, start afresh
            old.delete(0)
                .map_err(|e| verr(&format!("deleting stale volume {root}"), e))?;
        }
        let doc = VolumeXml {
            name: root.clone(),
            capacity: Capacity {
                unit: "bytes".into(),
                amount: want,
            },
            target: VolTarget {
                format: ModelType {
                    kind: "qcow2".into(),
                },
            },
            backing_store: Some(BackingStore {
                path: base.path().map_err(|e| verr("base volume path", e))?,
                format: ModelType {
                    kind: "qcow2".into(),
                },
            }),
        };
        let x = to_xml(&doc).map_err(|e| CloudError::Protocol {
            provider: PROVIDER,
            message: e.to_string(),
        })?;
        StorageVol::create_xml(&pool, &x, 0)
            .map_err(|e| verr(&format!("creating root volume {root}"), e))?;
        // NoCloud seed
        let seed_name = format!("{prefix}{}.seed.iso", req.name);
        let iso = build_seed_iso(&req.user_data, &meta_data(&req.id, &req.name)).map_err(|e| {
            CloudError::Protocol {
                provider: PROVIDER,
                message: format!("building the seed ISO: {e}"),
            }
        })?;
        self.upload_volume(conn, &pool, &seed_name, Upload::Bytes(&iso))?;
        // GPUs
        let hostdevs = match &req.gpu {
            None => vec![],
            Some(g) if g.mode == GpuMode::Mdev => {
                return Err(fatal(
                    "NoMdev",
                    format!(
                        "{}: mediated GPUs are not supported by the libvirt adapter",
                        req.name
                    ),
                    "use gpu mode passthrough",
                ))
            }
            Some(g) => {
                let used: BTreeSet<PciAddress> =
                    Self::hostdevs_in_use(conn, None).into_keys().collect();
                pick_gpus(&Self::pci_devices(conn), &used, g).ok_or_else(|| {
                    fatal(
                        "NoFreeGpu",
                        format!("{}: not enough free PCI devices match {:?}/{:?} (need {})", req.name, g.vendor, g.model, g.count),
                        "free devices or lower the GPU count (`kprov update` checks this before creating anything)",
                    )
                })?
            }
        };
        let nic = match &self.cfg.network {
            NetworkMode::Nat { .. } => Nic::Network(cluster_object_name(&req.cluster)),
            NetworkMode::Existing(n) => Nic::Network(n.clone()),
            NetworkMode::User { forwards } => Nic::User(forwards.clone()),
        };
        let console_log = match (&dir, self.is_test_driver()) {
            (Some(d), false) => Some(format!(
                "{}/{prefix}{}.console.log",
                d.trim_end_matches('/'),
                req.name
            )),
            _ => None,
        };
        let params = DomainParams {
            req,
            domain_type: self.domain_type_for(conn, req.arch),
            machine_x86: self.cfg.machine_x86.clone(),
            pool: pool_name,
            root_volume: root,
            seed_volume: seed_name,
            direct_boot: direct,
            nic,
            hostdevs,
            console_log,
        };
        let dx = to_xml(&domain_xml(&params)?).map_err(|e| CloudError::Protocol {
            provider: PROVIDER,
            message: e.to_string(),
        })?;
        let dom = conn
            .define_domain_xml(&dx)
            .map_err(|e| verr(&format!("defining domain {}", req.name), e))?;
        dom.create()
            .map_err(|e| verr(&format!("starting domain {}", req.name), e))?;
        Ok((dom, true))
    }

    /// Start a domain that is defined but shut off, resume one that is paused (a run killed
    /// between defining and starting it, or during the start, leaves it so).
    fn ensure_running(dom: &Domain, name: &str) -> CloudResult<()> {
        use virt::domain::DomainState as S;
        let start = || {
            dom.create()
                .map(|_| ())
                .map_err(|e| verr(&format!("starting domain {name}"), e))
        };
        match dom.info().map(|i| i.state.unwrap_or(S::NoState)) {
            Ok(S::Paused) => match dom.resume() {
                Ok(_) => Ok(()),
                // libvirtd settled the start a dead run (or a lost connection) left half done
                // in the meantime: it finished it, or — restarted mid-start — it killed the
                // half-started QEMU ("wasn't fully started yet"), leaving the domain shut off
                Err(e) if is(&e, ErrorNumber::OperationInvalid) => {
                    match dom.info().map(|i| i.state.unwrap_or(S::NoState)) {
                        Ok(S::Running) => Ok(()),
                        Ok(S::Shutoff) => start(),
                        _ => Err(verr(&format!("resuming domain {name}"), e)),
                    }
                }
                Err(e) => Err(verr(&format!("resuming domain {name}"), e)),
            },
            _ if !dom.is_active().unwrap_or(false) => start(),
            _ => Ok(()),
        }
    }

    /// The XML kprov would define for a request (for `kprov` debugging and tests); does not
    /// touch pools or volumes except to read the pool's path.
    pub async fn render_domain_xml(&self, req: &InstanceRequest) -> CloudResult<String> {
        let req = req.clone();
        let this = self.shallow();
        self.with_conn(move |conn| {
            let prefix = volume_prefix(&req.cluster);
            let nic = match &this.cfg.network {
                NetworkMode::Nat { .. } => Nic::Network(cluster_object_name(&req.cluster)),
                NetworkMode::Existing(n) => Nic::Network(n.clone()),
                NetworkMode::User { forwards } => Nic::User(forwards.clone()),
            };
            let direct = this
                .cfg
                .images
                .get(&req.arch)
                .and_then(|i| i.direct_boot.as_ref())
                .map(|d| {
                    (
                        d.kernel.display().to_string(),
                        d.initrd.display().to_string(),
                        d.cmdline.clone(),
                    )
                });
            let p = DomainParams {
                req: &req,
                domain_type: this.domain_type_for(conn, req.arch),
                machine_x86: this.cfg.machine_x86.clone(),
                pool: this.pool_name(&req.cluster),
                root_volume: format!("{prefix}{}.root.qcow2", req.name),
                seed_volume: format!("{prefix}{}.seed.iso", req.name),
                direct_boot: direct,
                nic,
                hostdevs: vec![],
                console_log: None,
            };
            to_xml(&domain_xml(&p)?).map_err(|e| CloudError::Protocol {
                provider: PROVIDER,
                message: e.to_string(),
            })
        })
        .await
    }

    /// A copy sharing the connection and the image-hash cache (for moving into blocking
    /// closures).
    fn shallow(&self) -> Arc<LibvirtCloud> {
        Arc::new(LibvirtCloud {
            cfg: self.cfg.clone(),
            conn: self.conn.clone(),
            image_ids: self.image_ids.clone(),
        })
    }

    fn network_cidr(xml: &str) -> Option<String> {
        let ip = attrs_of(xml, "ip").into_iter().next()?;
        let addr: std::net::Ipv4Addr = ip.get("address")?.parse().ok()?;
        let prefix = match (ip.get("prefix"), ip.get("netmask")) {
            (Some(p), _) => p.parse::<u32>().ok()?,
            (None, Some(m)) => u32::from(m.parse::<std::net::Ipv4Addr>().ok()?).count_ones(),
            _ => 24,
        };
        let net = u32::from(addr) & (u32::MAX.checked_shl(32 - prefix).unwrap_or(0));
        Some(format!("{}/{prefix}", std::net::Ipv4Addr::from(net)))
    }
}

enum Upload<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

#[async_trait]
impl Cloud for LibvirtCloud {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn default_concurrency(&self) -> usize {
        4
    }

    async fn discover(&self) -> CloudResult<Inventory> {
        let this = self.shallow();
        self.with_conn(move |conn| {
            let host = conn.hostname().unwrap_or_else(|_| "libvirt".into());
            let caps = conn
                .capabilities()
                .map_err(|e| verr("reading capabilities", e))?;
            let mut arches: Vec<Arch> = attrs_of(&caps, "arch")
                .iter()
                .filter_map(|a| a.get("name").and_then(|n| Arch::parse(n)))
                .collect();
            arches.sort();
            arches.dedup();
            let images = this
                .cfg
                .images
                .iter()
                .map(|(a, i)| ImageInfo {
                    id: i.path.display().to_string(),
                    name: i.path.display().to_string(),
                    arch: Some(*a),
                })
                .collect();
            let mut networks = Vec::new();
            for n in conn.list_all_networks(0).unwrap_or_default() {
                let name = n.name().unwrap_or_default();
                let x = n.xml_desc(0).unwrap_or_default();
                networks.push(Network {
                    id: name.clone(),
                    cidr: Self::network_cidr(&x),
                    owned: name.starts_with("kprov."),
                    name,
                });
            }
            let used = Self::hostdevs_in_use(conn, None);
            let gpus = Self::pci_devices(conn)
                .iter()
                .map(|d| {
                    let mut g = gpu_info(d, used.get(&d.address).cloned());
                    g.host = host.clone();
                    g
                })
                .collect();
            Ok(Inventory {
                zones: vec![host.clone()],
                arches,
                images,
                flavors: vec![],
                networks,
                gpus,
            })
        })
        .await
    }

    async fn check(&self, desired: &[InstanceRequest]) -> CloudResult<Vec<PlanProblem>> {
        let mut problems = Vec::new();
        let problem = |ig: &str, p: String, f: &str| PlanProblem {
            instance_group: ig.into(),
            problem: p,
            fix: f.into(),
        };
        let mut seen_arch = BTreeSet::new();
        for r in desired {
            if let Err(CloudError::Fatal { message, fix, .. }) = shape(r) {
                problems.push(problem(&r.instance_group, message, &fix));
            }
            if seen_arch.insert(r.arch) {
                match self.cfg.images.get(&r.arch) {
                    None => problems.push(problem(&r.instance_group, format!("no base image for {}", r.arch), &format!("set spec.provider.libvirt.images.{} to a local qcow2 cloud image (tests/vm/build-image.sh builds one)", r.arch))),
                    Some(i) if !i.path.is_file() => problems.push(problem(&r.instance_group, format!("base image {} for {} does not exist on this machine", i.path.display(), r.arch), "build or download it first; URLs are not fetched by kprov")),
                    Some(i) => {
                        for f in i.direct_boot.iter().flat_map(|d| [&d.kernel, &d.initrd]) {
                            if !f.is_file() {
                                problems.push(problem(&r.instance_group, format!("direct-boot file {} does not exist", f.display()), "export the image's kernel and initrd next to it"));
                            }
                        }
                    }
                }
            }
            if let Some(g) = &r.gpu {
                if g.mode == GpuMode::Mdev {
                    problems.push(problem(
                        &r.instance_group,
                        "mediated GPU devices (mdev) are not supported by the libvirt adapter"
                            .into(),
                        "use passthrough",
                    ));
                }
            }
        }
        let desired = desired.to_vec();
        let this = self.shallow();
        let more = self
            .with_conn(move |conn| {
                let mut problems = Vec::new();
                if this.is_test_driver() {
                    // capabilities of the test driver do not describe a real host
                } else {
                    let caps = conn.capabilities().map_err(|e| verr("reading capabilities", e))?;
                    let arches: BTreeSet<Arch> = attrs_of(&caps, "arch").iter().filter_map(|a| a.get("name").and_then(|n| Arch::parse(n))).collect();
                    for a in desired.iter().map(|r| r.arch).collect::<BTreeSet<_>>() {
                        if !arches.contains(&a) {
                            let ig = desired.iter().find(|r| r.arch == a).map(|r| r.instance_group.clone()).unwrap_or_default();
                            problems.push(PlanProblem { instance_group: ig, problem: format!("the libvirt host cannot run {a} guests (no {} emulator in its capabilities)", a.machine()), fix: format!("install qemu-system-{} on the libvirt host (and restart libvirtd)", if a == Arch::Arm64 { "arm" } else { "x86" }) });
                        }
                        if this.cfg.domain_type == DomainType::Kvm {
                            let m = if a == Arch::Arm64 { "virt" } else { this.cfg.machine_x86.as_str() };
                            if conn.domain_capabilities(None, Some(a.machine()), Some(m), Some("kvm"), 0).is_err() {
                                problems.push(PlanProblem { instance_group: String::new(), problem: format!("domainType kvm, but the host offers no KVM for {a}"), fix: "set spec.provider.libvirt.domainType to auto or qemu".into() });
                            }
                        }
                    }
                }
                // GPUs: free devices (not used by domains other than the desired ones) per request
                let wanted: Vec<&InstanceRequest> = desired.iter().filter(|r| r.gpu.as_ref().is_some_and(|g| g.mode == GpuMode::Passthrough)).collect();
                if !wanted.is_empty() {
                    let mine: BTreeSet<String> = desired.iter().map(|r| domain_uuid(&r.id)).collect();
                    let mut used: BTreeSet<PciAddress> = BTreeSet::new();
                    for d in conn.list_all_domains(0).unwrap_or_default() {
                        if mine.contains(&d.uuid_string().unwrap_or_default()) {
                            continue;
                        }
                        used.extend(hostdev_addresses(&d.xml_desc(0).unwrap_or_default()));
                    }
                    let devices = Self::pci_devices(conn);
                    let mut short: BTreeMap<String, (u32, u32)> = BTreeMap::new();
                    for r in wanted {
                        let g = r.gpu.as_ref().expect("filtered");
                        match pick_gpus(&devices, &used, g) {
                            Some(got) => used.extend(got),
                            None => {
                                let e = short.entry(r.instance_group.clone()).or_insert((0, g.count));
                                e.0 += 1;
                            }
                        }
                    }
                    for (ig, (n, per)) in short {
                        let total = devices.len();
                        problems.push(PlanProblem {
                            instance_group: ig,
                            problem: format!("{n} instance(s) cannot get {per} free matching PCI device(s) for passthrough (host has {total} PCI devices, {} in use)", used.len()),
                            fix: "lower the GPU count or node count, loosen the vendor/model filter, or free devices held by other domains".into(),
                        });
                    }
                }
                Ok(problems)
            })
            .await?;
        problems.extend(more);
        Ok(problems)
    }

    async fn ensure_network(&self, req: &NetworkRequest) -> CloudResult<Network> {
        match &self.cfg.network {
            NetworkMode::User { .. } => Ok(Network {
                id: "user".into(),
                name: "user (QEMU user-mode, restrict=on)".into(),
                cidr: Some("10.0.2.0/24".into()),
                owned: false,
            }),
            NetworkMode::Existing(name) => {
                let name = name.clone();
                self.with_conn(move |conn| {
                    let n = conn.lookup_network_by_name(&name).map_err(|e| {
                        if not_found(&e) {
                            fatal(
                                "NoNetwork",
                                format!("libvirt network {name:?} does not exist"),
                                "create it or use network: nat",
                            )
                        } else {
                            verr("looking up network", e)
                        }
                    })?;
                    if !n.is_active().unwrap_or(false) {
                        n.create()
                            .map_err(|e| verr(&format!("starting network {name}"), e))?;
                    }
                    let x = n.xml_desc(0).unwrap_or_default();
                    Ok(Network {
                        id: name.clone(),
                        cidr: Self::network_cidr(&x),
                        name,
                        owned: false,
                    })
                })
                .await
            }
            NetworkMode::Nat { cidr } => {
                let name = cluster_object_name(&req.cluster);
                let cidr = cidr.clone();
                self.with_conn(move |conn| {
                    let n = match conn.lookup_network_by_name(&name) {
                        Ok(n) => n,
                        Err(e) if not_found(&e) => {
                            let taken: BTreeSet<String> = conn
                                .list_all_networks(0)
                                .unwrap_or_default()
                                .iter()
                                .filter_map(|n| Self::network_cidr(&n.xml_desc(0).unwrap_or_default()))
                                .collect();
                            let h = Sha256::digest(name.as_bytes());
                            let cidr = match cidr {
                                Some(c) => c,
                                None => (0..100u32)
                                    .map(|i| format!("192.168.{}.0/24", 100 + (h[0] as u32 + i) % 100))
                                    .find(|c| !taken.contains(c))
                                    .ok_or_else(|| fatal("NoFreeCidr", "no free 192.168.100-199.0/24 for the NAT network", "set spec.provider.libvirt.natCIDR"))?,
                            };
                            let base: std::net::Ipv4Addr = cidr.split('/').next().unwrap_or("").parse().map_err(|_| {
                                fatal("BadCidr", format!("NAT CIDR {cidr:?} is not an IPv4 /24"), "use e.g. 192.168.150.0/24")
                            })?;
                            let o = base.octets();
                            let at = |last: u8| std::net::Ipv4Addr::new(o[0], o[1], o[2], last).to_string();
                            let doc = NetworkXml {
                                name: name.clone(),
                                forward: Forward { mode: "nat".into() },
                                bridge: Bridge { name: format!("kp{}", &hex::encode(h)[..10]), stp: "on".into(), delay: "0".into() },
                                ip: Ip { address: at(1), netmask: "255.255.255.0".into(), dhcp: Dhcp { range: Range { start: at(2), end: at(254) } } },
                            };
                            let x = to_xml(&doc).map_err(|e| CloudError::Protocol { provider: PROVIDER, message: e.to_string() })?;
                            let n = conn.define_network_xml(&x).map_err(|e| verr(&format!("defining network {name}"), e))?;
                            let _ = n.set_autostart(true);
                            n
                        }
                        Err(e) => return Err(verr("looking up network", e)),
                    };
                    if !n.is_active().unwrap_or(false) {
                        n.create().map_err(|e| {
                            let mut err = verr(&format!("starting network {name}"), e);
                            if let CloudError::Fatal { fix, .. } = &mut err {
                                *fix = "a NAT network needs dnsmasq on the libvirt host (Debian: dnsmasq-base)".into();
                            }
                            err
                        })?;
                    }
                    let x = n.xml_desc(0).unwrap_or_default();
                    Ok(Network { id: name.clone(), cidr: Self::network_cidr(&x), name, owned: true })
                })
                .await
            }
        }
    }

    async fn list_instances(&self, cluster: &str) -> CloudResult<Vec<Instance>> {
        let cluster = cluster.to_string();
        let this = self.shallow();
        self.with_conn(move |conn| {
            Ok(Self::list_cluster_domains(conn, &cluster)?
                .iter()
                .map(|l| this.instance_of(conn, l))
                .collect())
        })
        .await
    }

    /// Domains of the cluster that exist but do not run (`Stopped`, `Paused`): a run killed
    /// between defining and starting one, or during its start, leaves it so, and the plan — which
    /// finds it by its metadata — would otherwise never create (and so start) it again.
    async fn pending_repairs(
        &self,
        _cluster: &str,
        instances: &[Instance],
    ) -> CloudResult<Vec<String>> {
        Ok(instances
            .iter()
            .filter(|i| matches!(i.state.as_str(), "Stopped" | "Paused"))
            .map(|i| {
                format!(
                    "start domain {} ({}: left so by a run that did not finish)",
                    i.name,
                    i.state.to_lowercase()
                )
            })
            .collect())
    }

    async fn repair(&self, _cluster: &str, instances: &[Instance]) -> CloudResult<()> {
        for i in instances
            .iter()
            .filter(|i| matches!(i.state.as_str(), "Stopped" | "Paused"))
        {
            let (id, name) = (i.id.clone(), i.name.clone());
            self.with_conn(move |conn| match conn.lookup_domain_by_uuid_string(&id) {
                Ok(dom) => Self::ensure_running(&dom, &name),
                Err(e) if not_found(&e) => Ok(()),
                Err(e) => Err(verr("looking up domain", e)),
            })
            .await?;
        }
        Ok(())
    }

    async fn create_instance(&self, req: &InstanceRequest) -> CloudResult<Instance> {
        let this = self.shallow();
        let r = req.clone();
        let (created, uuid) = self
            .with_conn(move |conn| {
                // hashed once per arch (cached), off the async threads, one caller at a time
                let image_id = this.image_id(r.arch)?;
                let (dom, created) = this.create_blocking(conn, &r, &image_id)?;
                Ok((
                    created,
                    dom.uuid_string().map_err(|e| verr("domain uuid", e))?,
                ))
            })
            .await?;
        tracing::info!(node = %req.name, created, "libvirt domain running");
        // Wait for the address (DHCP lease) on libvirt networks.
        let deadline = Instant::now() + self.cfg.address_timeout;
        loop {
            let u = uuid.clone();
            let this = self.shallow();
            let inst = self
                .with_conn(move |conn| {
                    let dom = conn
                        .lookup_domain_by_uuid_string(&u)
                        .map_err(|e| verr("looking up the new domain", e))?;
                    let xml = dom.xml_desc(0).map_err(|e| verr("domain xml", e))?;
                    let l = Listed {
                        name: dom.name().unwrap_or_default(),
                        uuid: u,
                        meta: parse_metadata(&xml).unwrap_or_default(),
                        dom,
                    };
                    Ok(this.instance_of(conn, &l))
                })
                .await?;
            if inst.address.is_some() || Instant::now() >= deadline {
                if inst.address.is_none() {
                    tracing::warn!(node = %req.name, "no DHCP lease within {:?}", self.cfg.address_timeout);
                }
                return Ok(inst);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn list_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        let cluster = cluster.to_string();
        let own_pool = self.cfg.pool.is_none();
        self.with_conn(move |conn| {
            let mut out = Vec::new();
            let tags = |extra: &[(&str, &str)]| {
                let mut t = BTreeMap::from([(TAG_CLUSTER.to_string(), cluster.clone())]);
                for (k, v) in extra {
                    t.insert(k.to_string(), v.to_string());
                }
                t
            };
            for l in Self::list_cluster_domains(conn, &cluster)? {
                out.push(Resource {
                    kind: ResourceKind::Instance,
                    id: l.uuid,
                    name: l.name,
                    tags: l.meta.tags,
                });
            }
            let prefix = volume_prefix(&cluster);
            let own = cluster_object_name(&cluster);
            for pool in conn
                .list_all_storage_pools(0)
                .map_err(|e| verr("listing pools", e))?
            {
                let pname = pool.name().unwrap_or_default();
                if !pool.is_active().unwrap_or(false) {
                    if pname != own {
                        continue;
                    }
                    // kprov's own pool, stopped: start it to see its volumes
                    let _ = pool.create(0);
                }
                let _ = pool.refresh(0);
                for v in pool.list_volumes().unwrap_or_default() {
                    if v.starts_with(&prefix) {
                        out.push(Resource {
                            kind: ResourceKind::Volume,
                            id: format!("{pname}/{v}"),
                            name: v,
                            tags: tags(&[]),
                        });
                    }
                }
                if own_pool && pname == own {
                    out.push(Resource {
                        kind: ResourceKind::StoragePool,
                        id: pname.clone(),
                        name: pname,
                        tags: tags(&[]),
                    });
                }
            }
            if let Ok(n) = conn.lookup_network_by_name(&own) {
                let name = n.name().unwrap_or(own.clone());
                out.push(Resource {
                    kind: ResourceKind::Network,
                    id: name.clone(),
                    name,
                    tags: tags(&[]),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn delete_resource(&self, resource: &Resource) -> CloudResult<()> {
        let r = resource.clone();
        self.with_conn(move |conn| match r.kind {
            ResourceKind::Instance => {
                let dom = match conn.lookup_domain_by_uuid_string(&r.id) {
                    Ok(d) => d,
                    Err(e) if not_found(&e) => return Ok(()),
                    Err(e) => return Err(verr("looking up domain", e)),
                };
                if dom.is_active().unwrap_or(false) {
                    if let Err(e) = dom.destroy() {
                        if !is(&e, ErrorNumber::OperationInvalid) {
                            return Err(verr(&format!("destroying domain {}", r.name), e));
                        }
                    }
                }
                let flags = sys::VIR_DOMAIN_UNDEFINE_NVRAM
                    | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                    | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
                match dom.undefine_flags(flags) {
                    Ok(()) => Ok(()),
                    Err(e) if not_found(&e) => Ok(()),
                    Err(_) => match dom.undefine() {
                        Ok(()) => Ok(()),
                        Err(e) if not_found(&e) => Ok(()),
                        Err(e) => Err(verr(&format!("undefining domain {}", r.name), e)),
                    },
                }
            }
            ResourceKind::Volume => {
                let (pool, vol) = r.id.split_once('/').unwrap_or(("", r.id.as_str()));
                let pool = match conn.lookup_storage_pool_by_name(pool) {
                    Ok(p) => p,
                    Err(e) if not_found(&e) => return Ok(()),
                    Err(e) => return Err(verr("looking up pool", e)),
                };
                match pool.lookup_storage_vol_by_name(vol) {
                    Ok(v) => match v.delete(0) {
                        Ok(()) => Ok(()),
                        Err(e) if not_found(&e) => Ok(()),
                        Err(e) => Err(verr(&format!("deleting volume {vol}"), e)),
                    },
                    Err(e) if not_found(&e) => Ok(()),
                    Err(e) => Err(verr(&format!("looking up volume {vol}"), e)),
                }
            }
            ResourceKind::StoragePool => {
                let pool = match conn.lookup_storage_pool_by_name(&r.id) {
                    Ok(p) => p,
                    Err(e) if not_found(&e) => return Ok(()),
                    Err(e) => return Err(verr("looking up pool", e)),
                };
                if pool.is_active().unwrap_or(false) {
                    let _ = pool.refresh(0);
                    let left = pool.list_volumes().unwrap_or_default();
                    if !left.is_empty() {
                        return Err(fatal(
                            "PoolNotEmpty",
                            format!("pool {} still holds {left:?}", r.id),
                            "delete those volumes or re-run `kprov delete cluster`",
                        ));
                    }
                    pool.destroy()
                        .map_err(|e| verr(&format!("stopping pool {}", r.id), e))?;
                }
                if let Err(e) = pool.delete(0) {
                    // the test driver has no directories; a remaining directory is harmless
                    tracing::debug!(pool = %r.id, "pool delete: {}", e.message());
                }
                match pool.undefine() {
                    Ok(()) => Ok(()),
                    Err(e) if not_found(&e) => Ok(()),
                    Err(e) => Err(verr(&format!("undefining pool {}", r.id), e)),
                }
            }
            ResourceKind::Network => {
                let n = match conn.lookup_network_by_name(&r.id) {
                    Ok(n) => n,
                    Err(e) if not_found(&e) => return Ok(()),
                    Err(e) => return Err(verr("looking up network", e)),
                };
                if n.is_active().unwrap_or(false) {
                    n.destroy()
                        .map_err(|e| verr(&format!("stopping network {}", r.id), e))?;
                }
                match n.undefine() {
                    Ok(()) => Ok(()),
                    Err(e) if not_found(&e) => Ok(()),
                    Err(e) => Err(verr(&format!("undefining network {}", r.id), e)),
                }
            }
            other => Err(fatal(
                "UnknownKind",
                format!("libvirt has no {other} resources"),
                "report this as a kprov bug",
            )),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_of_uris() {
        assert_eq!(driver("qemu+ssh://h/system"), "qemu");
        assert_eq!(driver("test:///default"), "test");
        assert_eq!(driver("qemu:///system"), "qemu");
    }

    #[test]
    fn uuid_of_instance_id() {
        let id = crate::instance_id("demo", "nodes", 0);
        let u = domain_uuid(&id);
        assert_eq!(u.replace('-', ""), id);
    }
}
