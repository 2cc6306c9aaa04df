//! Seed fixtures: what exists in the simulated cloud before any API call.
//!
//! An [`Inventory`] lists records in the wire shape of [`crate::model`]; every field defaults, uuids
//! may be omitted (they are derived from names, so a fixture gives stable uuids run after run)
//! and references (`zoneUuid`, `clusterUuid`, `hostUuid`, `pciSpecUuid`, ...) may name the target
//! instead of giving its uuid. [`Inventory::normalize`] resolves all that and checks consistency.
//!
//! The built-in fixture is in `seed`, the resolution and checks in `normalize`.

mod normalize;
mod seed;

#[cfg(test)]
mod tests;

use crate::error::SimError;
use crate::model::*;
use serde::{Deserialize, Serialize};

const GIB: u64 = 1 << 30;

/// An extra login account (the admin account comes from [`crate::SimConfig::admin_account`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct AccountFixture {
    /// 32-hex uuid (derived from the name when empty).
    pub uuid: String,
    /// Login name.
    pub name: String,
    /// Plain-text password; clients send its SHA-512 hex.
    pub password: String,
}

/// An AccessKey pair for `Authorization: ZStack <id>:<signature>` requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct AccessKeyFixture {
    /// `AccessKeyId`.
    pub access_key_id: String,
    /// `AccessKeySecret` (the HMAC-SHA1 key).
    pub access_key_secret: String,
    /// Owning account, by name or uuid (`admin` when empty).
    pub account: String,
}

/// The seeded resources of a simulated ZStack. Loadable from YAML with the same shape
/// [`Inventory::default_seed`] serializes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Inventory {
    /// Zones; references to a zone may be left empty when there is only one.
    pub zones: Vec<Zone>,
    /// Clusters (carry the architecture of their hosts).
    pub clusters: Vec<Cluster>,
    /// KVM hosts with their CPU/memory capacity.
    pub hosts: Vec<Host>,
    /// Primary storages (root volumes go to one attached to the host's cluster).
    pub primary_storages: Vec<PrimaryStorage>,
    /// Backup storages (serving every zone unless listed).
    pub backup_storages: Vec<BackupStorage>,
    /// Images (stored on every backup storage unless their refs say otherwise).
    pub images: Vec<Image>,
    /// Instance offerings: the CPU / memory sizes a create can name.
    pub instance_offerings: Vec<InstanceOffering>,
    /// L3 networks with their IP ranges and network services.
    pub l3_networks: Vec<L3Network>,
    /// PCI device specs.
    pub pci_device_specs: Vec<PciDeviceSpec>,
    /// PCI devices, on a host and (optionally) of a spec whose data they inherit.
    pub pci_devices: Vec<PciDevice>,
    /// vGPU profiles (mdev specs).
    pub mdev_device_specs: Vec<MdevDeviceSpec>,
    /// vGPU slices (mdev devices), each carved from a PCI device.
    pub mdev_devices: Vec<MdevDevice>,
    /// Extra accounts besides the admin.
    pub accounts: Vec<AccountFixture>,
    /// AccessKey pairs for signed (`Authorization: ZStack`) requests.
    pub access_keys: Vec<AccessKeyFixture>,
}

/// Derives a stable ZStack-format uuid (version 5, so it also passes the `resourceUuid` check)
/// from a kind and a name: the same fixture gives the same uuids on every start.
pub fn derived_uuid(kind: &str, name: &str) -> String {
    const NS: uuid::Uuid = uuid::Uuid::from_u128(0x6b70_726f_765f_7a73_7461_636b_5f73_696d);
    uuid::Uuid::new_v5(&NS, format!("{kind}/{name}").as_bytes())
        .simple()
        .to_string()
}

/// True for a 32-char lowercase hex string (the only uuid shape ZStack emits).
pub fn is_hex32(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Inventory {
    /// Parses a YAML fixture (the shape of `serde_yaml::to_string(&Inventory::default_seed())`)
    /// and normalizes it.
    pub fn from_yaml(s: &str) -> Result<Self, SimError> {
        let mut inv: Inventory = serde_yaml::from_str(s)?;
        inv.normalize()?;
        Ok(inv)
    }
}
