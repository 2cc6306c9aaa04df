//! Virtual IPs and the load balancers on them: listeners and the VM NICs they forward to
//! (`sdk/VipInventory.java`, `sdk/LoadBalancerInventory.java`,
//! `sdk/LoadBalancerListenerInventory.java` and their ref inventories).

use crate::time::GsonTime;
use serde::{Deserialize, Serialize};

/// `VipNetworkServicesRefInventory`: one network service (here: a load balancer) using a VIP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VipServicesRef {
    /// The service's uuid (a load balancer's uuid).
    pub uuid: String,
    /// `LoadBalancer` (also `Eip`, `PortForwarding`, `IPsec`, `SNAT`, `SLB` on a real MN).
    pub service_type: String,
    /// The VIP.
    pub vip_uuid: String,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for VipServicesRef {
    fn default() -> Self {
        VipServicesRef {
            uuid: String::new(),
            service_type: "LoadBalancer".into(),
            vip_uuid: String::new(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `VipInventory`: an address taken from an L3's IP ranges (the same pool VM NICs use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Vip {
    /// 32-hex uuid (the create call's `resourceUuid` when given).
    pub uuid: String,
    /// Name from the create call.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The L3 network the address belongs to.
    pub l3_network_uuid: String,
    /// The address (data only).
    pub ip: String,
    /// `Enabled` (`Disabled` only through ChangeVipState, not simulated).
    pub state: String,
    /// Gateway of the range the address came from.
    pub gateway: String,
    /// Netmask of that range.
    pub netmask: String,
    /// Prefix length of that range.
    pub prefix_len: u32,
    /// Set when a backend is bound to the VIP (first NIC added to a load balancer on it).
    pub service_provider: Option<String>,
    /// Guest L3s of the backends behind the VIP; null until one is bound.
    pub peer_l3_network_uuids: Option<Vec<String>>,
    /// The services using the VIP.
    pub services_refs: Vec<VipServicesRef>,
    /// Comma-joined service types of `servicesRefs` (`LoadBalancer`), null when unused.
    pub use_for: Option<String>,
    /// System VIPs cannot be deleted by API; API-created ones are never system.
    pub system: bool,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for Vip {
    fn default() -> Self {
        Vip {
            uuid: String::new(),
            name: String::new(),
            description: None,
            l3_network_uuid: String::new(),
            ip: String::new(),
            state: "Enabled".into(),
            gateway: String::new(),
            netmask: String::new(),
            prefix_len: 0,
            service_provider: None,
            peer_l3_network_uuids: None,
            services_refs: Vec::new(),
            use_for: None,
            system: false,
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `LoadBalancerListenerVmNicRefInventory`: a VM NIC a listener forwards to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LbVmNicRef {
    /// Row id (a number, unique across all listeners).
    pub id: u64,
    /// The listener.
    pub listener_uuid: String,
    /// The NIC (`vmNics[].uuid` of a VM).
    pub vm_nic_uuid: String,
    /// `Active`; `Inactive` while its VM is stopped (`Pending` is never shown by the simulator).
    pub status: String,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

impl Default for LbVmNicRef {
    fn default() -> Self {
        LbVmNicRef {
            id: 0,
            listener_uuid: String::new(),
            vm_nic_uuid: String::new(),
            status: "Active".into(),
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        }
    }
}

/// `LoadBalancerListenerServerGroupRefInventory`: the listener's link to its server group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct LbServerGroupRef {
    /// Row id.
    pub id: u64,
    /// The listener.
    pub listener_uuid: String,
    /// The server group (not otherwise simulated).
    pub server_group_uuid: String,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
}

/// `LoadBalancerListenerInventory`: a port of a load balancer forwarded to VM NICs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LbListener {
    /// 32-hex uuid (the create call's `resourceUuid` when given).
    pub uuid: String,
    /// Name from the create call.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The load balancer.
    pub load_balancer_uuid: String,
    /// Port on the backends (defaults to `loadBalancerPort`).
    pub instance_port: u32,
    /// Port on the VIP.
    pub load_balancer_port: u32,
    /// HTTPS cipher policy; null (not simulated).
    pub security_policy_type: Option<String>,
    /// `tcp` (default), `udp`, `http` or `https`.
    pub protocol: String,
    /// The listener's default server group: null until the first NIC is added.
    pub server_group_uuid: Option<String>,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
    /// The NICs it forwards to.
    pub vm_nic_refs: Vec<LbVmNicRef>,
    /// Access-control lists (always empty).
    pub acl_refs: Vec<serde_json::Value>,
    /// Certificates (always empty).
    pub certificate_refs: Vec<serde_json::Value>,
    /// The link to the default server group, once it exists.
    pub server_group_refs: Vec<LbServerGroupRef>,
}

impl Default for LbListener {
    fn default() -> Self {
        LbListener {
            uuid: String::new(),
            name: String::new(),
            description: None,
            load_balancer_uuid: String::new(),
            instance_port: 0,
            load_balancer_port: 0,
            security_policy_type: None,
            protocol: "tcp".into(),
            server_group_uuid: None,
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
            vm_nic_refs: Vec::new(),
            acl_refs: Vec::new(),
            certificate_refs: Vec::new(),
            server_group_refs: Vec::new(),
        }
    }
}

/// `LoadBalancerInventory`: a load balancer on a VIP, with its listeners embedded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LoadBalancer {
    /// 32-hex uuid (the create call's `resourceUuid` when given).
    pub uuid: String,
    /// Name from the create call.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// The default server group created with it (`default-server-group-<name>`; not otherwise
    /// simulated).
    pub server_group_uuid: Option<String>,
    /// `Enabled`.
    pub state: String,
    /// `Shared`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The IPv4 VIP.
    pub vip_uuid: Option<String>,
    /// The IPv6 VIP (always null: the simulator models IPv4 only).
    pub ipv6_vip_uuid: Option<String>,
    /// Creation time.
    pub create_date: GsonTime,
    /// Last change.
    pub last_op_date: GsonTime,
    /// Its listeners, in creation order.
    pub listeners: Vec<LbListener>,
}

impl Default for LoadBalancer {
    fn default() -> Self {
        LoadBalancer {
            uuid: String::new(),
            name: String::new(),
            description: None,
            server_group_uuid: None,
            state: "Enabled".into(),
            type_: "Shared".into(),
            vip_uuid: None,
            ipv6_vip_uuid: None,
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
            listeners: Vec::new(),
        }
    }
}
