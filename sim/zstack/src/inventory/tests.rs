use super::*;

#[test]
fn seed_is_as_documented() {
    let inv = Inventory::default_seed();
    assert_eq!(inv.zones.len(), 1);
    assert_eq!(inv.hosts.len(), 6);
    let arm: Vec<_> = inv
        .hosts
        .iter()
        .filter(|h| h.architecture == "aarch64")
        .collect();
    assert_eq!(arm.len(), 4);
    assert!(arm
        .iter()
        .all(|h| h.cpu_num == 48 && h.total_memory_capacity == 256 * GIB));
    let a100 = inv
        .pci_devices
        .iter()
        .filter(|d| d.device == "GA100 [A100 PCIe 40GB]")
        .count();
    assert_eq!(a100, 8);
    assert!(inv
        .pci_devices
        .iter()
        .all(|d| d.vendor_id == "10de" && is_hex32(&d.uuid)));
    assert_eq!(inv.l3_networks.len(), 1, "kprov picks the only Userdata L3");
    let services: Vec<&str> = inv.l3_networks[0]
        .network_services
        .iter()
        .map(|s| s.network_service_type.as_str())
        .collect();
    assert_eq!(services, ["DHCP", "Userdata", "LoadBalancer"]);
    let r = &inv.l3_networks[0].ip_ranges[0];
    assert_eq!(r.network_cidr, "172.20.0.0/22");
    assert_eq!(r.prefix_len, 22);
    assert_eq!(inv.mdev_devices.len(), 8);
    assert!(inv
        .mdev_devices
        .iter()
        .all(|m| m.parent_uuid.as_deref().is_some_and(is_hex32)));
}

#[test]
fn yaml_round_trip_and_name_references() {
    let inv = Inventory::default_seed();
    let yaml = serde_yaml::to_string(&inv).unwrap();
    assert_eq!(Inventory::from_yaml(&yaml).unwrap(), inv);

    let small = "zones: [{name: z}]\nclusters: [{name: c, architecture: aarch64}]\nhosts: [{name: h, cluster: c}]\n";
    // `cluster` is not a field: serde ignores it, and the only cluster is used.
    let inv = Inventory::from_yaml(small).unwrap();
    assert_eq!(inv.hosts[0].cluster_uuid, inv.clusters[0].uuid);
    assert_eq!(inv.hosts[0].architecture, "aarch64");
    let dangling = "zones: [{name: z}]\nhosts: [{name: h, clusterUuid: nope}]\n";
    assert!(matches!(
        Inventory::from_yaml(dangling),
        Err(SimError::Inventory(_))
    ));
    let bad_range = "zones: [{name: z}]\nl3Networks: [{name: n, ipRanges: [{startIp: 10.0.0.9, endIp: 10.0.0.1, netmask: 255.255.255.0, gateway: 10.0.0.1}]}]\n";
    assert!(Inventory::from_yaml(bad_range).is_err());
}
