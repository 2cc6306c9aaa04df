//! Typed libvirt XML: the domain, network, storage pool and volume documents kprov defines,
//! serialized with `quick-xml`'s serde support (no string concatenation), and the reader of
//! kprov's `<metadata>` element and of the host documents kprov inspects (capabilities, node
//! devices, pool target path, hostdevs in use).

use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use serde::Serialize;

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
    /// The text.
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
    /// Memory.
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
    /// Devices.
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
    /// Cluster.
    #[serde(rename = "@cluster")]
    pub cluster: String,
    /// Role.
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
    /// Key.
    #[serde(rename = "@key")]
    pub key: String,
    /// Value.
    #[serde(rename = "@value")]
    pub value: String,
}

/// `<memory unit='MiB'>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    /// Unit (`MiB`).
    #[serde(rename = "@unit")]
    pub unit: String,
    /// Amount.
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
    /// Version.
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
    /// Model.
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
    /// Disks.
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
    /// Console.
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
    /// Driver.
    pub driver: Driver,
    /// Source volume.
    pub source: VolumeSource,
    /// Target.
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
    /// Address.
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
    /// Type.
    #[serde(rename = "@type")]
    pub kind: String,
}

/// `<memballoon model=…/>`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Model {
    /// Model.
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
    /// Address.
    pub address: PciAddress,
}

/// A PCI address as libvirt spells it (`0x0000`, `0x01`, `0x00`, `0x0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PciAddress {
    /// Domain.
    #[serde(rename = "@domain")]
    pub domain: String,
    /// Bus.
    #[serde(rename = "@bus")]
    pub bus: String,
    /// Slot.
    #[serde(rename = "@slot")]
    pub slot: String,
    /// Function.
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
    /// Path.
    #[serde(rename = "@file")]
    pub file: String,
    /// `off`.
    #[serde(rename = "@append")]
    pub append: String,
}

/// `<target port='0'/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SerialTarget {
    /// Port.
    #[serde(rename = "@port")]
    pub port: u32,
}

/// `<console type='pty'><target type='serial' port='0'/></console>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Console {
    /// `pty`.
    #[serde(rename = "@type")]
    pub kind: String,
    /// Target.
    pub target: ConsoleTarget,
}

/// `<target type='serial' port='0'/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsoleTarget {
    /// `serial`.
    #[serde(rename = "@type")]
    pub kind: String,
    /// Port.
    #[serde(rename = "@port")]
    pub port: u32,
}

/// `<qemu:commandline>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QemuCommandline {
    /// Arguments.
    #[serde(rename = "qemu:arg")]
    pub args: Vec<QemuArg>,
}

/// `<qemu:arg value=…/>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QemuArg {
    /// Value.
    #[serde(rename = "@value")]
    pub value: String,
}

/// `<network>` (a NAT network with DHCP).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename = "network")]
pub struct NetworkXml {
    /// Name.
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
    /// Netmask.
    #[serde(rename = "@netmask")]
    pub netmask: String,
    /// DHCP.
    pub dhcp: Dhcp,
}

/// `<dhcp><range …/></dhcp>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dhcp {
    /// Range.
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
    /// Name.
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
    /// Name.
    pub name: String,
    /// Capacity.
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
    /// Amount.
    #[serde(rename = "$text")]
    pub amount: u64,
}

/// `<target><format type=…/></target>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VolTarget {
    /// Format.
    pub format: ModelType,
}

/// `<backingStore><path/><format/></backingStore>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackingStore {
    /// Path of the backing volume on the libvirt host (from `virStorageVolGetPath`).
    pub path: String,
    /// Its format.
    pub format: ModelType,
}

/// kprov's metadata as read back from a domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedMetadata {
    /// Cluster.
    pub cluster: String,
    /// All tags.
    pub tags: BTreeMap<String, String>,
}

fn attrs(e: &quick_xml::events::BytesStart<'_>) -> BTreeMap<String, String> {
    e.attributes()
        .flatten()
        .filter_map(|a| {
            let k = String::from_utf8_lossy(a.key.local_name().as_ref()).to_string();
            let v = a.unescape_value().ok()?.to_string();
            Some((k, v))
        })
        .collect()
}

/// Read kprov's `<instance>` element (namespace [`METADATA_NS`], any prefix) from a domain XML.
/// `None` when the domain has none (not kprov's).
pub fn parse_metadata(domain_xml: &str) -> Option<ParsedMetadata> {
    let mut r = NsReader::from_str(domain_xml);
    let mut found: Option<ParsedMetadata> = None;
    loop {
        let ev = r.read_resolved_event();
        let (ns, ev) = match ev {
            Ok(x) => x,
            Err(_) => return None,
        };
        let ours = matches!(ns, ResolveResult::Bound(n) if n.as_ref() == METADATA_NS.as_bytes());
        match ev {
            Event::Start(e) | Event::Empty(e) if ours => {
                let a = attrs(&e);
                match e.local_name().as_ref() {
                    b"instance" => {
                        found = Some(ParsedMetadata {
                            cluster: a.get("cluster").cloned().unwrap_or_default(),
                            tags: BTreeMap::new(),
                        });
                    }
                    b"tag" => {
                        if let (Some(m), Some(k), Some(v)) =
                            (found.as_mut(), a.get("key"), a.get("value"))
                        {
                            m.tags.insert(k.clone(), v.clone());
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    found
}

/// The first text of every element with local name `name` (no namespace handling), in order.
pub fn texts_of(xml: &str, name: &str) -> Vec<String> {
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut inside = false;
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) => inside = e.local_name().as_ref() == name.as_bytes(),
            Ok(Event::Text(t)) if inside => {
                if let Ok(s) = t.unescape() {
                    out.push(s.trim().to_string());
                }
                inside = false;
            }
            Ok(Event::End(_)) => inside = false,
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

/// Attributes of every element with local name `name`, in document order.
pub fn attrs_of(xml: &str, name: &str) -> Vec<BTreeMap<String, String>> {
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e))
                if e.local_name().as_ref() == name.as_bytes() =>
            {
                out.push(attrs(&e))
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

/// Host PCI addresses of the `<hostdev type='pci'>` devices in a domain XML.
pub fn hostdev_addresses(domain_xml: &str) -> Vec<PciAddress> {
    let mut r = quick_xml::Reader::from_str(domain_xml);
    let mut out = Vec::new();
    let mut depth_hostdev = false;
    let mut in_source = false;
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) => match e.local_name().as_ref() {
                b"hostdev" => {
                    depth_hostdev = attrs(&e).get("type").map(String::as_str) == Some("pci")
                }
                b"source" if depth_hostdev => in_source = true,
                _ => {}
            },
            Ok(Event::Empty(e)) if in_source && e.local_name().as_ref() == b"address" => {
                let a = attrs(&e);
                let g = |k: &str| a.get(k).map(String::as_str).unwrap_or("0");
                if let Some(p) = PciAddress::parse(g("domain"), g("bus"), g("slot"), g("function"))
                {
                    out.push(p);
                }
            }
            Ok(Event::End(e)) => match e.local_name().as_ref() {
                b"hostdev" => depth_hostdev = false,
                b"source" => in_source = false,
                _ => {}
            },
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

/// A PCI device of the host, from its node-device XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// Node device name (`pci_0000_01_00_0`).
    pub name: String,
    /// Address.
    pub address: PciAddress,
    /// Vendor name (or id when unnamed).
    pub vendor: String,
    /// Product name (or id when unnamed).
    pub product: String,
    /// PCI class (`0x030200` for 3D controllers), when given.
    pub class: Option<String>,
}

/// Parse a node device XML of capability `pci`; `None` for other devices.
pub fn parse_pci_device(xml: &str) -> Option<PciDevice> {
    let caps = attrs_of(xml, "capability");
    if !caps
        .iter()
        .any(|c| c.get("type").map(String::as_str) == Some("pci"))
    {
        return None;
    }
    let first = |n: &str| texts_of(xml, n).into_iter().next();
    let name = first("name")?;
    let address = PciAddress::parse(
        &first("domain").unwrap_or_else(|| "0".into()),
        &first("bus")?,
        &first("slot")?,
        &first("function")?,
    )?;
    let named = |el: &str| {
        let text = first(el).filter(|s| !s.is_empty());
        let id = attrs_of(xml, el)
            .into_iter()
            .next()
            .and_then(|a| a.get("id").cloned());
        match (text, id) {
            (Some(t), Some(i)) => format!("{t} ({i})"),
            (Some(t), None) => t,
            (None, Some(i)) => i,
            (None, None) => String::new(),
        }
    };
    Some(PciDevice {
        name,
        address,
        vendor: named("vendor"),
        product: named("product"),
        class: first("class"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_with_any_prefix() {
        let md = MetadataXml {
            instance: KprovInstance {
                xmlns: METADATA_NS.into(),
                cluster: "demo".into(),
                role: "node".into(),
                instance_group: "nodes".into(),
                index: 2,
                instance_id: "abc".into(),
                spec_hash: "h".into(),
                tags: vec![KprovTag {
                    key: "kprov.io/cluster".into(),
                    value: "demo".into(),
                }],
            },
        };
        let xml = to_xml(&md).unwrap();
        let m = parse_metadata(&xml).unwrap();
        assert_eq!(m.cluster, "demo");
        assert_eq!(m.tags["kprov.io/cluster"], "demo");
        // libvirt may re-emit the element with another prefix
        let other = xml
            .replace("kprov:", "k:")
            .replace("xmlns:kprov", "xmlns:k");
        assert_eq!(parse_metadata(&other).unwrap().cluster, "demo");
        // a foreign namespace with the same local names is not ours
        let foreign = xml.replace(METADATA_NS, "https://example.com/x");
        assert!(parse_metadata(&foreign).is_none());
    }

    #[test]
    fn pci_node_device_is_parsed() {
        let xml = r#"<device><name>pci_0000_3b_00_0</name><parent>computer</parent>
          <capability type='pci'><class>0x030200</class><domain>0</domain><bus>59</bus><slot>0</slot><function>0</function>
          <product id='0x20b5'>GA100 [A100 PCIe 80GB]</product><vendor id='0x10de'>NVIDIA Corporation</vendor></capability></device>"#;
        let d = parse_pci_device(xml).unwrap();
        assert_eq!(d.address, PciAddress::new(0, 0x3b, 0, 0));
        assert!(d.vendor.starts_with("NVIDIA Corporation"));
        assert!(d.product.contains("A100"));
        assert!(
            parse_pci_device("<device><name>net_lo</name><capability type='net'/></device>")
                .is_none()
        );
    }

    #[test]
    fn hostdevs_in_use_are_found() {
        let xml = r#"<domain><devices><hostdev mode='subsystem' type='pci' managed='yes'><source>
            <address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></source>
            <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></hostdev></devices></domain>"#;
        assert_eq!(hostdev_addresses(xml), vec![PciAddress::new(0, 0x3b, 0, 0)]);
    }
}
