//! Typed libvirt XML: the domain, network, storage pool and volume documents kprov defines,
//! serialized with `quick-xml`'s serde support (no string concatenation), and the reader of
//! kprov's `<metadata>` element and of the host documents kprov inspects (capabilities, node
//! devices, pool target path, hostdevs in use).

use serde::Serialize;

mod parse;
#[cfg(test)]
mod tests;

pub use parse::{
    attrs_of, hostdev_addresses, parse_metadata, parse_pci_device, texts_of, ParsedMetadata,
    PciDevice,
};

/// The XML namespace of kprov's domain metadata.
pub const METADATA_NS: &str = "https://kprov.io/xmlns/libvirt/1";
/// The namespace of `<qemu:commandline>`.
pub const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

/// Serialize a typed document to an XML string.
pub fn to_xml<T: Serialize>(doc: &T) -> Result<String, quick_xml::SeError> {
    let mut out = String::new();
    let mut ser = quick_xml::se::Serializer::new(&mut out);
    ser.indent(' ', 2);
    doc.serialize(ser)?;
    Ok(out)
}

/// An element with only text content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Text {
    /// The element's text content.
    #[serde(rename = "$text")]
    pub text: String,
}

impl Text {
    /// A text element.
    pub fn new(s: impl Into<String>) -> Text {
        Text { text: s.into() }
    }
}

/// An empty element (`<acpi/>`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Empty {}

/// `<domain>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename = "domain")]
pub struct DomainXml {
    /// `kvm`, `qemu` or `test`.
    #[serde(rename = "@type")]
    pub domain_type: String,
    /// Declares the `qemu:` prefix when [`Self::qemu_commandline`] is used.
    #[serde(rename = "@xmlns:qemu", skip_serializing_if = "Option::is_none")]
    pub xmlns_qemu: Option<String>,
    /// Domain name.
    pub name: String,
    /// Domain UUID (kprov's instance id, so a re-run finds the same domain).
    pub uuid: String,
    /// kprov's metadata.
    pub metadata: MetadataXml,
    /// Guest memory (`<memory unit='MiB'>`).
    pub memory: Memory,
    /// vCPUs.
    pub vcpu: u32,
    /// Boot settings.
    pub os: Os,
    /// Platform features.
    pub features: Features,
    /// CPU model, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// `destroy`.
    pub on_poweroff: String,
    /// `restart`.
    pub on_reboot: String,
    /// `destroy`.
    pub on_crash: String,
    /// Disks, NICs, passed-through devices, serial console.
    pub devices: Devices,
    /// Extra QEMU arguments (user-mode networking with `restrict=on`).
    #[serde(rename = "qemu:commandline", skip_serializing_if = "Option::is_none")]
    pub qemu_commandline: Option<QemuCommandline>,
}

/// `<metadata>` holding kprov's element.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetadataXml {
    /// `<kprov:instance>`.
    #[serde(rename = "kprov:instance")]
    pub instance: KprovInstance,
}

/// `<kprov:instance xmlns:kprov=… cluster=… role=… …>` with one `<kprov:tag>` per tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KprovInstance {
    /// Namespace declaration ([`METADATA_NS`]).
    #[serde(rename = "@xmlns:kprov")]
    pub xmlns: String,
    /// Name of the kprov cluster the domain belongs to.
    #[serde(rename = "@cluster")]
    pub cluster: String,
    /// `control-plane` or `node`.
    #[serde(rename = "@role")]
    pub role: String,
    /// Instance group.
    #[serde(rename = "@instance-group")]
    pub instance_group: String,
    /// Index in the group.
    #[serde(rename = "@index")]
    pub index: u32,
    /// Instance id.
    #[serde(rename = "@instance-id")]
    pub instance_id: String,
    /// Spec hash.
    #[serde(rename = "@spec-hash")]
    pub spec_hash: String,
    /// All tags of the request.
    #[serde(rename = "kprov:tag", default)]
    pub tags: Vec<KprovTag>,
}

/// `<kprov:tag key=… value=…/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KprovTag {
    /// Tag key, e.g. `kprov.io/role`.
    #[serde(rename = "@key")]
    pub key: String,
    /// Tag value.
    #[serde(rename = "@value")]
    pub value: String,
}

/// `<memory unit='MiB'>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    /// Unit (`MiB`).
    #[serde(rename = "@unit")]
    pub unit: String,
    /// Size in `unit`s.
    #[serde(rename = "$text")]
    pub amount: u64,
}

/// `<os>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Os {
    /// `efi` for UEFI firmware auto-selection.
    #[serde(rename = "@firmware", skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// `<type arch machine>hvm</type>`.
    #[serde(rename = "type")]
    pub os_type: OsType,
    /// Direct kernel boot: kernel path on the libvirt host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// Direct kernel boot: initrd path on the libvirt host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// Direct kernel boot: kernel command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// `<boot dev='hd'/>` for disk boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<Boot>,
}

/// `<type arch='x86_64' machine='pc'>hvm</type>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OsType {
    /// `x86_64` / `aarch64`.
    #[serde(rename = "@arch")]
    pub arch: String,
    /// `pc`, `q35`, `virt`.
    #[serde(rename = "@machine")]
    pub machine: String,
    /// `hvm`.
    #[serde(rename = "$text")]
    pub kind: String,
}

/// `<boot dev=…/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Boot {
    /// `hd`.
    #[serde(rename = "@dev")]
    pub dev: String,
}

/// `<features>`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Features {
    /// ACPI (x86_64; aarch64 only with UEFI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acpi: Option<Empty>,
    /// APIC (x86_64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apic: Option<Empty>,
    /// GIC version (aarch64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gic: Option<Gic>,
}

/// `<gic version='3'/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gic {
    /// GIC version (`3`).
    #[serde(rename = "@version")]
    pub version: String,
}

/// `<cpu>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cpu {
    /// `host-passthrough` or `custom`.
    #[serde(rename = "@mode")]
    pub mode: String,
    /// `exact` with a custom model.
    #[serde(rename = "@match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<String>,
    /// The CPU model to emulate (`mode='custom'` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<CpuModel>,
}

/// `<model fallback='forbid'>cortex-a57</model>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuModel {
    /// `forbid`.
    #[serde(rename = "@fallback")]
    pub fallback: String,
    /// Model name.
    #[serde(rename = "$text")]
    pub name: String,
}

/// `<devices>`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Devices {
    /// Controllers (virtio-scsi for the aarch64 seed cdrom).
    #[serde(rename = "controller", skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<Controller>,
    /// The root disk and the seed cdrom.
    #[serde(rename = "disk")]
    pub disks: Vec<Disk>,
    /// NICs on libvirt networks.
    #[serde(rename = "interface", skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceXml>,
    /// PCI passthrough devices.
    #[serde(rename = "hostdev", skip_serializing_if = "Vec::is_empty")]
    pub hostdevs: Vec<Hostdev>,
    /// Serial ports.
    #[serde(rename = "serial")]
    pub serials: Vec<Serial>,
    /// The console on the serial port.
    #[serde(rename = "console")]
    pub consoles: Vec<Console>,
    /// `<memballoon model='none'/>`.
    pub memballoon: Model,
}

/// `<controller type='scsi' model='virtio-scsi'/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Controller {
    /// `scsi`.
    #[serde(rename = "@type")]
    pub kind: String,
    /// `virtio-scsi`.
    #[serde(rename = "@model")]
    pub model: String,
}

/// `<disk type='volume' device='disk|cdrom'>` with a pool/volume source (no host paths).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disk {
    /// `volume`.
    #[serde(rename = "@type")]
    pub kind: String,
    /// `disk` or `cdrom`.
    #[serde(rename = "@device")]
    pub device: String,
    /// QEMU's driver and the image format (`qcow2`, `raw`).
    pub driver: Driver,
    /// Source volume.
    pub source: VolumeSource,
    /// Guest device name and bus (`vda`/`virtio`, `sda`/`scsi`, `hdc`/`ide`).
    pub target: Target,
    /// `<readonly/>` for the seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readonly: Option<Empty>,
}

/// `<driver name='qemu' type='qcow2'/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Driver {
    /// `qemu`.
    #[serde(rename = "@name")]
    pub name: String,
    /// `qcow2` / `raw`.
    #[serde(rename = "@type")]
    pub format: String,
}

/// `<source pool=… volume=…/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolumeSource {
    /// Pool name.
    #[serde(rename = "@pool")]
    pub pool: String,
    /// Volume name.
    #[serde(rename = "@volume")]
    pub volume: String,
}

/// `<target dev=… bus=…/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// `vda`, `hdc`, `sda`.
    #[serde(rename = "@dev")]
    pub dev: String,
    /// `virtio`, `ide`, `scsi`.
    #[serde(rename = "@bus")]
    pub bus: String,
}

/// `<interface type='network'>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterfaceXml {
    /// `network`.
    #[serde(rename = "@type")]
    pub kind: String,
    /// `<mac address=…/>`.
    pub mac: Mac,
    /// `<source network=…/>`.
    pub source: NetworkSource,
    /// `<model type='virtio'/>`.
    pub model: ModelType,
}

/// `<mac address=…/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mac {
    /// MAC address (`52:54:00:…`, derived from the instance id).
    #[serde(rename = "@address")]
    pub address: String,
}

/// `<source network=…/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkSource {
    /// Network name.
    #[serde(rename = "@network")]
    pub network: String,
}

/// `<model type=…/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelType {
    /// Value of the `type` attribute (`virtio`, `raw`, `qcow2`).
    #[serde(rename = "@type")]
    pub kind: String,
}

/// `<memballoon model=…/>`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Model {
    /// Value of the `model` attribute (`none` for the memory balloon).
    #[serde(rename = "@model")]
    pub model: String,
}

/// `<hostdev mode='subsystem' type='pci' managed='yes'>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hostdev {
    /// `subsystem`.
    #[serde(rename = "@mode")]
    pub mode: String,
    /// `pci`.
    #[serde(rename = "@type")]
    pub kind: String,
    /// `yes`: libvirt detaches the device from its host driver.
    #[serde(rename = "@managed")]
    pub managed: String,
    /// The host PCI address.
    pub source: HostdevSource,
}

/// `<source><address …/></source>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostdevSource {
    /// PCI address of the host device.
    pub address: PciAddress,
}

/// A PCI address as libvirt spells it (`0x0000`, `0x01`, `0x00`, `0x0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PciAddress {
    /// PCI domain, `0x0000`.
    #[serde(rename = "@domain")]
    pub domain: String,
    /// PCI bus, `0x00`.
    #[serde(rename = "@bus")]
    pub bus: String,
    /// PCI slot, `0x00`.
    #[serde(rename = "@slot")]
    pub slot: String,
    /// PCI function, `0x0`.
    #[serde(rename = "@function")]
    pub function: String,
}

impl PciAddress {
    /// From numbers.
    pub fn new(domain: u32, bus: u32, slot: u32, function: u32) -> PciAddress {
        PciAddress {
            domain: format!("0x{domain:04x}"),
            bus: format!("0x{bus:02x}"),
            slot: format!("0x{slot:02x}"),
            function: format!("0x{function:x}"),
        }
    }
    /// Parse libvirt's attribute spellings (hex with `0x` or decimal).
    pub fn parse(domain: &str, bus: &str, slot: &str, function: &str) -> Option<PciAddress> {
        let n = |s: &str| -> Option<u32> {
            let s = s.trim();
            match s.strip_prefix("0x") {
                Some(h) => u32::from_str_radix(h, 16).ok(),
                None => s.parse().ok(),
            }
        };
        Some(PciAddress::new(n(domain)?, n(bus)?, n(slot)?, n(function)?))
    }
}

/// `<serial type='pty'>` with an optional `<log file=…/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Serial {
    /// `pty`.
    #[serde(rename = "@type")]
    pub kind: String,
    /// Console log on the libvirt host (written by virtlogd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Log>,
    /// `<target port='0'/>`.
    pub target: SerialTarget,
}

/// `<log file=… append='off'/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Log {
    /// Path of the log file on the libvirt host.
    #[serde(rename = "@file")]
    pub file: String,
    /// `off`.
    #[serde(rename = "@append")]
    pub append: String,
}

/// `<target port='0'/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SerialTarget {
    /// Serial port number (`0`).
    #[serde(rename = "@port")]
    pub port: u32,
}

/// `<console type='pty'><target type='serial' port='0'/></console>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Console {
    /// `pty`.
    #[serde(rename = "@type")]
    pub kind: String,
    /// The serial port it is on.
    pub target: ConsoleTarget,
}

/// `<target type='serial' port='0'/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsoleTarget {
    /// `serial`.
    #[serde(rename = "@type")]
    pub kind: String,
    /// Serial port number (`0`).
    #[serde(rename = "@port")]
    pub port: u32,
}

/// `<qemu:commandline>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QemuCommandline {
    /// Arguments appended to QEMU's command line, in order.
    #[serde(rename = "qemu:arg")]
    pub args: Vec<QemuArg>,
}

/// `<qemu:arg value=…/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QemuArg {
    /// One QEMU command-line argument.
    #[serde(rename = "@value")]
    pub value: String,
}

/// `<network>` (a NAT network with DHCP).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename = "network")]
pub struct NetworkXml {
    /// Network name (`kprov.CLUSTER`).
    pub name: String,
    /// `<forward mode='nat'/>`.
    pub forward: Forward,
    /// `<bridge name=… stp='on' delay='0'/>`.
    pub bridge: Bridge,
    /// `<ip address netmask><dhcp><range/></dhcp></ip>`.
    pub ip: Ip,
}

/// `<forward mode=…/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forward {
    /// `nat`.
    #[serde(rename = "@mode")]
    pub mode: String,
}

/// `<bridge …/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bridge {
    /// Bridge device name (≤ 15 chars).
    #[serde(rename = "@name")]
    pub name: String,
    /// `on`.
    #[serde(rename = "@stp")]
    pub stp: String,
    /// `0`.
    #[serde(rename = "@delay")]
    pub delay: String,
}

/// `<ip>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ip {
    /// Gateway address.
    #[serde(rename = "@address")]
    pub address: String,
    /// Netmask (`255.255.255.0`).
    #[serde(rename = "@netmask")]
    pub netmask: String,
    /// DHCP.
    pub dhcp: Dhcp,
}

/// `<dhcp><range …/></dhcp>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dhcp {
    /// Addresses handed out.
    pub range: Range,
}

/// `<range start end/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Range {
    /// First lease.
    #[serde(rename = "@start")]
    pub start: String,
    /// Last lease.
    #[serde(rename = "@end")]
    pub end: String,
}

/// `<pool type='dir'>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename = "pool")]
pub struct PoolXml {
    /// `dir`.
    #[serde(rename = "@type")]
    pub kind: String,
    /// Pool name (`kprov.CLUSTER`).
    pub name: String,
    /// `<target><path>…</path></target>`.
    pub target: PathTarget,
}

/// `<target><path>…</path></target>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathTarget {
    /// Directory on the libvirt host.
    pub path: String,
}

/// `<volume>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename = "volume")]
pub struct VolumeXml {
    /// Volume name (`kprov.CLUSTER.…`).
    pub name: String,
    /// Size of the volume.
    pub capacity: Capacity,
    /// `<target><format type=…/></target>`.
    pub target: VolTarget,
    /// Backing volume (copy-on-write overlays).
    #[serde(rename = "backingStore", skip_serializing_if = "Option::is_none")]
    pub backing_store: Option<BackingStore>,
}

/// `<capacity unit='bytes'>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    /// `bytes`.
    #[serde(rename = "@unit")]
    pub unit: String,
    /// Size in `unit`s.
    #[serde(rename = "$text")]
    pub amount: u64,
}

/// `<target><format type=…/></target>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolTarget {
    /// Format of the volume (`raw`, `qcow2`).
    pub format: ModelType,
}

/// `<backingStore><path/><format/></backingStore>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackingStore {
    /// Path of the backing volume on the libvirt host (from `virStorageVolGetPath`).
    pub path: String,
    /// Format of the backing file (`qcow2`).
    pub format: ModelType,
}
