//! Serde types for the parts of ZStack inventories kprov reads (see `docs/providers/zstack-api.md`
//! §4–§7). Every field is optional or defaulted: ZStack versions differ in what they return,
//! and unknown fields are ignored.

use serde::Deserialize;

/// `ErrorCode` (API doc §3): the `error` object of a failed call, with its `cause` chain.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ErrorCode {
    /// Code such as `SYS.1012`, `ID.1001`, `VM.1010`.
    pub code: Option<String>,
    /// Short description.
    pub description: Option<String>,
    /// Longer technical details of the failure, if the management node gives any.
    pub details: Option<String>,
    /// Elaboration (localized explanation), if any.
    pub elaboration: Option<String>,
    /// The error that caused this one.
    pub cause: Option<Box<ErrorCode>>,
    /// Several causes (list errors).
    pub causes: Vec<ErrorCode>,
}

/// The 503 body of a failed API: `{"error": ErrorCode}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ErrorReply {
    /// The error, when the reply is one.
    pub error: Option<ErrorCode>,
}

/// `SessionInventory` returned by login.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Session {
    /// Session uuid (a secret: never log it).
    pub uuid: String,
}

/// The 202 reply of an asynchronous API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct JobAccepted {
    /// `http://<mn>:8080/zstack/v1/api-jobs/<jobId>`.
    pub location: Option<String>,
    /// Server-side API timeout in ms.
    pub api_timeout: Option<u64>,
}

/// One VM NIC.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct VmNic {
    /// NIC uuid.
    pub uuid: Option<String>,
    /// L3 network of the NIC.
    pub l3_network_uuid: Option<String>,
    /// IP address.
    pub ip: Option<String>,
}

/// `VmInstanceInventory`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct VmInstance {
    /// VM uuid.
    pub uuid: String,
    /// VM name (kprov sets it to the instance name, `CLUSTER-IG-INDEX`).
    pub name: String,
    /// State (`Running`, `Destroyed`, ...).
    pub state: Option<String>,
    /// Uuid of the zone the VM runs in.
    pub zone_uuid: Option<String>,
    /// Uuid of the ZStack cluster (of hosts) the VM runs in.
    pub cluster_uuid: Option<String>,
    /// Current host.
    pub host_uuid: Option<String>,
    /// Uuid of the image the VM's root volume was made from.
    pub image_uuid: Option<String>,
    /// Default L3 network.
    pub default_l3_network_uuid: Option<String>,
    /// CPU architecture (`x86_64`, `aarch64`).
    pub architecture: Option<String>,
    /// vCPUs.
    pub cpu_num: Option<u32>,
    /// Memory, bytes.
    pub memory_size: Option<u64>,
    /// NICs.
    pub vm_nics: Vec<VmNic>,
}

impl VmInstance {
    /// The state, or `Unknown`.
    pub fn state(&self) -> &str {
        self.state.as_deref().unwrap_or("Unknown")
    }

    /// Primary address: the NIC on the default L3, else the first NIC with an IP.
    pub fn address(&self) -> Option<String> {
        let has_ip = |n: &&VmNic| n.ip.as_deref().is_some_and(|ip| !ip.is_empty());
        self.vm_nics
            .iter()
            .filter(has_ip)
            .find(|n| {
                n.l3_network_uuid.is_some() && n.l3_network_uuid == self.default_l3_network_uuid
            })
            .or_else(|| self.vm_nics.iter().find(has_ip))
            .and_then(|n| n.ip.clone())
    }
}

/// `ZoneInventory`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Zone {
    /// Zone uuid.
    pub uuid: String,
    /// Zone name, as `spec.provider.zstack.zone` may give it.
    pub name: String,
    /// `Enabled` / `Disabled`.
    pub state: Option<String>,
}

/// `ClusterInventory`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Cluster {
    /// Cluster uuid (`clusterUuid` of a create).
    pub uuid: String,
    /// Cluster name, for messages.
    pub name: String,
    /// Uuid of the zone the cluster belongs to.
    pub zone_uuid: Option<String>,
    /// `x86_64`, `aarch64`, ...
    pub architecture: Option<String>,
    /// `Enabled` / `Disabled`.
    pub state: Option<String>,
    /// `KVM`, ...
    pub hypervisor_type: Option<String>,
}

/// `HostInventory` (capacity fields exist on real ZStack; they are optional here).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Host {
    /// Host uuid (`hostUuid` of a create that pins GPUs).
    pub uuid: String,
    /// Host name, for messages (the uuid when empty).
    pub name: String,
    /// Uuid of the zone the host belongs to.
    pub zone_uuid: Option<String>,
    /// Uuid of the cluster the host belongs to.
    pub cluster_uuid: Option<String>,
    /// Management IP.
    pub management_ip: Option<String>,
    /// `Enabled` / `Disabled` / `Maintenance` ...
    pub state: Option<String>,
    /// `Connected` / `Disconnected` / `Connecting`.
    pub status: Option<String>,
    /// Architecture, when the host reports it.
    pub architecture: Option<String>,
    /// Physical CPUs.
    pub cpu_num: Option<i64>,
    /// Total CPU capacity (vCPUs, after over-provisioning).
    pub total_cpu_capacity: Option<i64>,
    /// Free CPU capacity.
    pub available_cpu_capacity: Option<i64>,
    /// Total memory, bytes.
    pub total_memory_capacity: Option<i64>,
    /// Free memory, bytes.
    pub available_memory_capacity: Option<i64>,
}

/// `ImageInventory`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Image {
    /// Image uuid (`imageUuid` of a create).
    pub uuid: String,
    /// Image name, as an instance group's `image:` may give it.
    pub name: String,
    /// `Enabled` / `Disabled`.
    pub state: Option<String>,
    /// `Ready`, `Downloading`, ...
    pub status: Option<String>,
    /// `RootVolumeTemplate`, `ISO`, `DataVolumeTemplate`.
    pub media_type: Option<String>,
    /// `qcow2`, `raw`, `iso`.
    pub format: Option<String>,
    /// `x86_64`, `aarch64`, ...
    pub architecture: Option<String>,
    /// `Linux`, ...
    pub platform: Option<String>,
    /// Virtual size, bytes.
    pub size: Option<u64>,
}

impl Image {
    /// Ready, enabled root-volume template.
    pub fn usable(&self) -> bool {
        self.status.as_deref() == Some("Ready")
            && self.media_type.as_deref() == Some("RootVolumeTemplate")
            && self.state.as_deref() != Some("Disabled")
    }
}

/// `InstanceOfferingInventory`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct InstanceOffering {
    /// Offering uuid (`instanceOfferingUuid` of a create).
    pub uuid: String,
    /// Offering name, as an instance group's `flavor` gives it.
    pub name: String,
    /// vCPUs.
    pub cpu_num: u32,
    /// Memory, bytes.
    pub memory_size: u64,
    /// `Enabled` / `Disabled`.
    pub state: Option<String>,
    /// `UserVm`, `VirtualRouter`, ...
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// One IP range of an L3 network.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct IpRange {
    /// L3 network.
    pub l3_network_uuid: Option<String>,
    /// First address.
    pub start_ip: Option<String>,
    /// Last address.
    pub end_ip: Option<String>,
    /// Netmask of the range, e.g. `255.255.255.0`.
    pub netmask: Option<String>,
    /// Gateway address of the range.
    pub gateway: Option<String>,
    /// CIDR, e.g. `192.168.1.0/24`.
    pub network_cidr: Option<String>,
}

/// A network service enabled on an L3 network.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct NetworkServiceRef {
    /// `DHCP`, `Userdata`, `DNS`, `SNAT`, ...
    pub network_service_type: Option<String>,
}

/// `L3NetworkInventory`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct L3Network {
    /// L3 network uuid (`l3NetworkUuids` of a create).
    pub uuid: String,
    /// L3 network name, as `spec.provider.zstack.l3Network` may give it.
    pub name: String,
    /// Uuid of the zone the L3 network belongs to.
    pub zone_uuid: Option<String>,
    /// `Enabled` / `Disabled`.
    pub state: Option<String>,
    /// System (management / appliance) network.
    pub system: Option<bool>,
    /// `Public` / `Private` / `System`.
    pub category: Option<String>,
    /// IP ranges.
    pub ip_ranges: Vec<IpRange>,
    /// Network services.
    pub network_services: Vec<NetworkServiceRef>,
}

impl L3Network {
    /// Whether the `Userdata` service (user-data delivery at 169.254.169.254) is enabled.
    pub fn has_userdata(&self) -> bool {
        self.has_service("Userdata")
    }

    /// Whether network service `kind` (`Userdata`, `LoadBalancer`, ...) is enabled.
    pub fn has_service(&self, kind: &str) -> bool {
        self.network_services.iter().any(|s| {
            s.network_service_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(kind))
        })
    }

    /// CIDR of the first IP range (from `networkCidr`, else computed from start IP + netmask).
    pub fn cidr(&self) -> Option<String> {
        self.ip_ranges.iter().find_map(|r| {
            if let Some(c) = r.network_cidr.as_deref().filter(|c| !c.is_empty()) {
                return Some(c.to_string());
            }
            let start: std::net::Ipv4Addr = r.start_ip.as_deref()?.parse().ok()?;
            let mask: std::net::Ipv4Addr = r.netmask.as_deref()?.parse().ok()?;
            let m = u32::from(mask);
            if m.leading_ones() + m.trailing_zeros() != 32 {
                return None;
            }
            let net = std::net::Ipv4Addr::from(u32::from(start) & m);
            Some(format!("{net}/{}", m.leading_ones()))
        })
    }
}

/// `PciDeviceInventory` (§6).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct PciDevice {
    /// Device uuid (used in `pciDevice::<uuid>` system tags).
    pub uuid: String,
    /// Device name, if the management node gives one.
    pub name: Option<String>,
    /// Uuid of the host the device is plugged into.
    pub host_uuid: Option<String>,
    /// VM it is attached to; `None` when free.
    pub vm_instance_uuid: Option<String>,
    /// Uuid of the PCI device spec the device matches, if any (for spec tags).
    pub pci_spec_uuid: Option<String>,
    /// `GPU_3D_Controller`, `Ethernet_Controller`, ...
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `Enabled` / `Disabled`.
    pub state: Option<String>,
    /// `Active` / `System` / `Attached` / `Reserved`.
    pub status: Option<String>,
    /// `UNVIRTUALIZABLE`, `VFIO_MDEV_VIRTUALIZED` (split into mdev slices), ...
    pub virt_status: Option<String>,
    /// Vendor name.
    pub vendor: Option<String>,
    /// Vendor id.
    pub vendor_id: Option<String>,
    /// Device (model) name.
    pub device: Option<String>,
    /// Device id.
    pub device_id: Option<String>,
    /// PCI address.
    pub pci_device_address: Option<String>,
}

impl PciDevice {
    /// A GPU function (`GPU_*` type, without the HDMI audio function `GPU_Audio_Controller`).
    pub fn is_gpu(&self) -> bool {
        self.kind
            .as_deref()
            .is_some_and(|t| t.starts_with("GPU_") && t != "GPU_Audio_Controller")
    }

    /// Free for passthrough to a new VM: not attached, not disabled, not held by the host
    /// system or reserved, and not split into mdev / SR-IOV slices (`*_VIRTUALIZED`).
    pub fn is_free(&self) -> bool {
        self.vm_instance_uuid.as_deref().is_none_or(str::is_empty)
            && !self
                .virt_status
                .as_deref()
                .is_some_and(|v| v.ends_with("_VIRTUALIZED"))
            && self.state.as_deref() != Some("Disabled")
            && !matches!(
                self.status.as_deref(),
                Some("System" | "Reserved" | "Attached")
            )
    }

    /// Model name (`device`, else `name`).
    pub fn model(&self) -> String {
        self.device
            .clone()
            .or_else(|| self.name.clone())
            .unwrap_or_default()
    }
}

/// `PciDeviceSpecInventory`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct PciDeviceSpec {
    /// Spec uuid (used in `pciDeviceSpec::<uuid>::<count>` system tags).
    pub uuid: String,
    /// Spec name, if any.
    pub name: Option<String>,
    /// Vendor name.
    pub vendor: Option<String>,
    /// Device (model) name.
    pub device: Option<String>,
    /// Device type as ZStack classifies it (e.g. `GPU_Video_Controller`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `Enabled` / `Disabled`.
    pub state: Option<String>,
}

/// `MdevDeviceSpecInventory`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct MdevDeviceSpec {
    /// Spec uuid (used in `mdevDeviceSpec::<uuid>::<count>` system tags).
    pub uuid: String,
    /// Name, e.g. `GRID T4-4Q`.
    pub name: Option<String>,
    /// Specification text.
    pub specification: Option<String>,
    /// Mediated device type as ZStack names it (e.g. `GRID`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `Enabled` / `Disabled`.
    pub state: Option<String>,
}

/// `MdevDeviceInventory` (a vGPU slice).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct MdevDevice {
    /// Mediated device uuid (used in `mdevDevice::<uuid>` system tags).
    pub uuid: String,
    /// Mediated device name, if any.
    pub name: Option<String>,
    /// Uuid of the host of the parent GPU.
    pub host_uuid: Option<String>,
    /// Parent PCI device.
    pub parent_uuid: Option<String>,
    /// Uuid of the mdev spec (profile) of the slice.
    pub mdev_spec_uuid: Option<String>,
    /// VM it is attached to.
    pub vm_instance_uuid: Option<String>,
    /// `Enabled` / `Disabled`.
    pub state: Option<String>,
    /// `Active` / `Attached` / ...
    pub status: Option<String>,
}

impl MdevDevice {
    /// Free for a new VM.
    pub fn is_free(&self) -> bool {
        self.vm_instance_uuid.as_deref().is_none_or(str::is_empty)
            && self.state.as_deref() != Some("Disabled")
            && !matches!(
                self.status.as_deref(),
                Some("System" | "Reserved" | "Attached")
            )
    }
}

/// `TagInventory` (user and system tags).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Tag {
    /// Tag uuid.
    pub uuid: String,
    /// Resource the tag is on.
    pub resource_uuid: String,
    /// `VmInstanceVO`, ...
    pub resource_type: Option<String>,
    /// The tag text.
    pub tag: String,
    /// `User` / `System`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `VipInventory` (API doc §8): a virtual IP on an L3 network.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Vip {
    /// VIP uuid.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// The L3 network the address is on.
    pub l3_network_uuid: Option<String>,
    /// The address.
    pub ip: Option<String>,
}

/// `LoadBalancerListenerVmNicRefInventory`: one backend NIC of a listener.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct ListenerNicRef {
    /// The backend NIC.
    pub vm_nic_uuid: String,
    /// `Active`, `Inactive` (its VM is stopped) or `Pending`.
    pub status: Option<String>,
}

/// `LoadBalancerListenerInventory`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct Listener {
    /// Listener uuid.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// The load balancer it belongs to.
    pub load_balancer_uuid: Option<String>,
    /// The port the VIP serves.
    pub load_balancer_port: Option<u16>,
    /// The backends' port.
    pub instance_port: Option<u16>,
    /// `tcp`, `udp`, `http`, `https`.
    pub protocol: Option<String>,
    /// Backend NICs.
    pub vm_nic_refs: Vec<ListenerNicRef>,
}

/// `LoadBalancerInventory`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase")]
pub struct LoadBalancer {
    /// Load balancer uuid.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// The VIP it serves.
    pub vip_uuid: Option<String>,
    /// Its listeners.
    pub listeners: Vec<Listener>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_inventory_parses_and_picks_address() {
        let vm: VmInstance = serde_json::from_value(serde_json::json!({
            "uuid": "a", "name": "n", "state": "Running", "defaultL3NetworkUuid": "l3b",
            "vmNics": [{"l3NetworkUuid": "l3a", "ip": "10.0.0.2"}, {"l3NetworkUuid": "l3b", "ip": "10.1.0.2"}],
            "createDate": "Jan 6, 2017 3:51:16 AM", "unknownField": 1
        }))
        .unwrap();
        assert_eq!(vm.address().as_deref(), Some("10.1.0.2"));
        assert_eq!(vm.state(), "Running");
    }

    #[test]
    fn l3_cidr_from_range() {
        let l3: L3Network = serde_json::from_value(serde_json::json!({
            "uuid": "x", "name": "flat",
            "ipRanges": [{"startIp": "192.168.10.100", "endIp": "192.168.10.200", "netmask": "255.255.255.0"}],
            "networkServices": [{"networkServiceType": "DHCP"}, {"networkServiceType": "Userdata"}]
        }))
        .unwrap();
        assert_eq!(l3.cidr().as_deref(), Some("192.168.10.0/24"));
        assert!(l3.has_userdata());
    }

    #[test]
    fn gpu_types_and_freedom() {
        let mut d = PciDevice {
            kind: Some("GPU_3D_Controller".into()),
            ..Default::default()
        };
        assert!(d.is_gpu() && d.is_free());
        d.virt_status = Some("VFIO_MDEV_VIRTUALIZED".into());
        assert!(!d.is_free());
        d.virt_status = Some("UNVIRTUALIZABLE".into());
        assert!(d.is_free());
        d.vm_instance_uuid = Some("vm".into());
        assert!(!d.is_free());
        d.kind = Some("GPU_Audio_Controller".into());
        assert!(!d.is_gpu());
    }
}
