//! L3 networks, their IP ranges and the network services (DHCP, Userdata, ...) enabled on them.

use crate::time::GsonTime;
use serde::{Deserialize, Serialize};

/// `IpRangeInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IpRange {
    /// 32-hex uuid.
    pub uuid: String,
    /// The L3 network.
    pub l3_network_uuid: String,
    /// Range name (`<l3 name>-range-<n>` when a fixture leaves it empty); the derived uuid uses it.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// First allocatable address (data only).
    pub start_ip: String,
    /// Last allocatable address (data only).
    pub end_ip: String,
    /// Dotted netmask.
    pub netmask: String,
    /// Gateway (never allocated to a NIC).
    pub gateway: String,
    /// e.g. `172.20.0.0/22` (computed on load when empty).
    pub network_cidr: String,
    /// Prefix length (computed on load when 0).
    pub prefix_len: u32,
    /// Always 4: the simulator models IPv4 only.
    pub ip_version: u32,
    /// Null for IPv4.
    pub address_mode: Option<String>,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for IpRange {
    fn default() -> Self {
        IpRange {
            uuid: String::new(),
            l3_network_uuid: String::new(),
            name: String::new(),
            description: None,
            start_ip: String::new(),
            end_ip: String::new(),
            netmask: String::new(),
            gateway: String::new(),
            network_cidr: String::new(),
            prefix_len: 0,
            ip_version: 4,
            address_mode: None,
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `NetworkServiceL3NetworkRefInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkServiceRef {
    /// The L3 network.
    pub l3_network_uuid: String,
    /// Provider (the flat provider in the seed).
    pub network_service_provider_uuid: String,
    /// `DHCP`, `Userdata`, `DNS`, `SecurityGroup`, ...
    pub network_service_type: String,
}

/// `L3NetworkInventory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct L3Network {
    /// 32-hex uuid.
    pub uuid: String,
    /// Network name; fixtures and `SimHandle::uuid_of` can refer to the network by it.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// `L3BasicNetwork`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Zone (a fixture may name it, or omit it when there is only one); a VM's host must be in it.
    pub zone_uuid: String,
    /// L2 network (synthetic).
    pub l2_network_uuid: String,
    /// `Enabled`.
    pub state: String,
    /// System network flag.
    pub system: bool,
    /// `Private` / `Public` / `System`.
    pub category: String,
    /// Always 4: the simulator models IPv4 only.
    pub ip_version: u32,
    /// DNS domain.
    pub dns_domain: Option<String>,
    /// DNS servers.
    pub dns: Vec<String>,
    /// Address ranges.
    pub ip_ranges: Vec<IpRange>,
    /// Enabled network services.
    pub network_services: Vec<NetworkServiceRef>,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for L3Network {
    fn default() -> Self {
        L3Network {
            uuid: String::new(),
            name: String::new(),
            description: None,
            type_: "L3BasicNetwork".into(),
            zone_uuid: String::new(),
            l2_network_uuid: String::new(),
            state: "Enabled".into(),
            system: false,
            category: "Private".into(),
            ip_version: 4,
            dns_domain: None,
            dns: Vec::new(),
            ip_ranges: Vec::new(),
            network_services: Vec::new(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}
