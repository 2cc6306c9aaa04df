//! Tests of the typed documents and their readers.

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
        parse_pci_device("<device><name>net_lo</name><capability type='net'/></device>").is_none()
    );
}

#[test]
fn hostdevs_in_use_are_found() {
    let xml = r#"<domain><devices><hostdev mode='subsystem' type='pci' managed='yes'><source>
        <address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></source>
        <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></hostdev></devices></domain>"#;
    assert_eq!(hostdev_addresses(xml), vec![PciAddress::new(0, 0x3b, 0, 0)]);
}
