//! Host PCI devices for GPU passthrough: the devices of the libvirt host, those already given
//! to domains, and the choice of free ones matching a request.

use std::collections::{BTreeMap, BTreeSet};

use virt::connect::Connect;
use virt::sys;

use super::cloud::LibvirtCloud;
use super::xml::{hostdev_addresses, parse_pci_device, PciAddress, PciDevice};
use super::PROVIDER;
use crate::{CloudError, CloudResult, GpuInfo, GpuMode, GpuRequest, InstanceRequest};

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

/// A PCI device as an inventory GPU (`attached_to`: the domain using it).
pub(super) fn gpu_info(d: &PciDevice, attached_to: Option<String>) -> GpuInfo {
    GpuInfo {
        id: d.name.clone(),
        vendor: d.vendor.clone(),
        model: d.product.clone(),
        host: String::new(),
        arch: None,
        attached_to,
    }
}

impl LibvirtCloud {
    /// The PCI devices of the libvirt host (node devices that parse as PCI).
    pub(super) fn pci_devices(conn: &Connect) -> Vec<PciDevice> {
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
    pub(super) fn hostdevs_in_use(
        conn: &Connect,
        except_uuid: Option<&str>,
    ) -> BTreeMap<PciAddress, String> {
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

    /// The host devices to pass through to a new node: free devices matching its GPU request.
    pub(super) fn hostdevs_for(
        conn: &Connect,
        req: &InstanceRequest,
    ) -> CloudResult<Vec<PciAddress>> {
        match &req.gpu {
            None => Ok(vec![]),
            Some(g) if g.mode == GpuMode::Mdev => Err(CloudError::fatal(
                PROVIDER,
                "NoMdev",
                format!(
                    "{}: mediated GPUs are not supported by the libvirt adapter",
                    req.name
                ),
                "use gpu mode passthrough",
            )),
            Some(g) => {
                let used: BTreeSet<PciAddress> =
                    Self::hostdevs_in_use(conn, None).into_keys().collect();
                pick_gpus(&Self::pci_devices(conn), &used, g).ok_or_else(|| {
                    CloudError::fatal(
                        PROVIDER,
                        "NoFreeGpu",
                        format!("{}: not enough free PCI devices match {:?}/{:?} (need {})", req.name, g.vendor, g.model, g.count),
                        "free devices or lower the GPU count (`kprov update` checks this before creating anything)",
                    )
                })
            }
        }
    }
}
