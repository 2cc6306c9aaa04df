//! What the query engine sees: every queryable kind as wire-shaped JSON.

use super::CloudState;
use crate::query::{Kind, Source};
use serde::Serialize;
use serde_json::{json, Value};

impl Source for CloudState {
    fn list(&self, kind: Kind) -> Vec<Value> {
        fn all<T: Serialize>(v: &[T]) -> Vec<Value> {
            v.iter()
                .map(|x| serde_json::to_value(x).unwrap_or(Value::Null))
                .collect()
        }
        match kind {
            Kind::Vm => all(&self.vms),
            Kind::Nic => self
                .vms
                .iter()
                .flat_map(|v| v.vm_nics.iter())
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
                .collect(),
            Kind::Volume => self
                .vms
                .iter()
                .flat_map(|v| v.all_volumes.iter())
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
                .collect(),
            Kind::Image => all(&self.images),
            Kind::ImageBsRef => self
                .images
                .iter()
                .flat_map(|i| i.backup_storage_refs.iter())
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
                .collect(),
            Kind::Offering => all(&self.instance_offerings),
            Kind::L3 => all(&self.l3_networks),
            Kind::IpRange => self
                .l3_networks
                .iter()
                .flat_map(|l| l.ip_ranges.iter())
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
                .collect(),
            Kind::NetworkService => self
                .l3_networks
                .iter()
                .flat_map(|l| l.network_services.iter())
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
                .collect(),
            Kind::Zone => all(&self.zones),
            Kind::Cluster => all(&self.clusters),
            Kind::Host => self
                .hosts
                .iter()
                .map(|h| serde_json::to_value(self.host_view(h)).unwrap_or(Value::Null))
                .collect(),
            Kind::PrimaryStorage => all(&self.primary_storages),
            Kind::BackupStorage => all(&self.backup_storages),
            Kind::PciDevice => all(&self.pci_devices),
            Kind::Gpu => self
                .pci_devices
                .iter()
                .filter(|d| d.type_.starts_with("GPU_"))
                .map(|d| {
                    let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
                    let mem = self
                        .pci_device_specs
                        .iter()
                        .find(|s| Some(&s.uuid) == d.pci_spec_uuid.as_ref())
                        .and_then(|s| s.ram_size);
                    if let Value::Object(m) = &mut v {
                        m.insert(
                            "serialNumber".into(),
                            json!(format!("SIM{}", &d.uuid[..12])),
                        );
                        m.insert("memory".into(), json!(mem));
                        let watts = if mem.unwrap_or(0) >= 32 << 30 {
                            250
                        } else {
                            70
                        };
                        m.insert("power".into(), json!(watts));
                        m.insert("isDriverLoaded".into(), json!(true));
                    }
                    v
                })
                .collect(),
            Kind::PciSpec => all(&self.pci_device_specs),
            Kind::MdevDevice => all(&self.mdev_devices),
            Kind::MdevSpec => all(&self.mdev_device_specs),
            Kind::SystemTag => self
                .tags
                .iter()
                .filter(|t| t.type_ == "System")
                .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                .collect(),
            Kind::UserTag => self
                .tags
                .iter()
                .filter(|t| t.type_ == "User")
                .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                .collect(),
            Kind::Vip => all(&self.vips),
            Kind::VipServiceRef => self
                .vips
                .iter()
                .flat_map(|v| v.services_refs.iter())
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
                .collect(),
            Kind::LoadBalancer => all(&self.load_balancers),
            Kind::LbListener => self
                .load_balancers
                .iter()
                .flat_map(|l| l.listeners.iter())
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
                .collect(),
            Kind::LbNicRef => self
                .load_balancers
                .iter()
                .flat_map(|l| l.listeners.iter())
                .flat_map(|l| l.vm_nic_refs.iter())
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
                .collect(),
        }
    }

    fn tags_of(&self, resource_uuid: &str, type_: &str) -> Vec<String> {
        self.tags
            .iter()
            .filter(|t| t.resource_uuid == resource_uuid && t.type_ == type_)
            .map(|t| t.tag.clone())
            .collect()
    }
}
