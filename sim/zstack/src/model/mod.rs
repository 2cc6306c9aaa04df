//! Resource records, shaped exactly like the ZStack `*Inventory` classes (`sdk/*Inventory.java`).
//!
//! The same structs serve three purposes: the JSON the API returns, the persisted state file and
//! the fixture YAML (every field defaults, so fixtures only list what matters). Keeping one shape
//! means a query can filter on any field the wire shows, with no mapping layer to drift.
//!
//! One file per family of records; everything is re-exported here, so the public paths stay
//! `kprov_zstack_sim::model::Zone`, `...::model::VmInstance` and so on.

mod catalog;
mod device;
mod infra;
mod lb;
mod network;
mod session;
mod tag;
mod vm;

pub use catalog::{Image, ImageBackupStorageRef, InstanceOffering};
pub use device::{MdevDevice, MdevDeviceSpec, PciDevice, PciDeviceSpec};
pub use infra::{BackupStorage, Cluster, Host, PrimaryStorage, Zone};
pub use lb::{LbListener, LbServerGroupRef, LbVmNicRef, LoadBalancer, Vip, VipServicesRef};
pub use network::{IpRange, L3Network, NetworkServiceRef};
pub use session::SessionView;
pub use tag::Tag;
pub use vm::{VmInstance, VmNic, Volume};
