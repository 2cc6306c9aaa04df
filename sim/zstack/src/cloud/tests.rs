use super::*;
use crate::inventory::Inventory;

fn cloud() -> CloudState {
    CloudState::from_inventory(
        &Inventory::default_seed(),
        &("admin".into(), "password".into()),
    )
}

fn params(c: &CloudState, image: &str, offering: &str) -> CreateVmParams {
    CreateVmParams {
        name: Some("vm".into()),
        image_uuid: Some(
            c.images
                .iter()
                .find(|i| i.name == image)
                .unwrap()
                .uuid
                .clone(),
        ),
        instance_offering_uuid: Some(
            c.instance_offerings
                .iter()
                .find(|o| o.name == offering)
                .unwrap()
                .uuid
                .clone(),
        ),
        l3_network_uuids: vec![c.l3_networks[0].uuid.clone()],
        ..Default::default()
    }
}

#[test]
fn uuid_format_check() {
    assert!(is_zstack_uuid(&new_uuid()));
    assert!(!is_zstack_uuid("not-a-uuid"));
    assert!(!is_zstack_uuid("0123456789abcdef0123456789abcdef")); // version nibble 0
}

#[test]
fn create_allocates_first_free_ip_and_capacity() {
    let mut c = cloud();
    let p = params(&c, "ubuntu-22.04-amd64", "xlarge");
    let a = c.create_vm_begin(&p).unwrap();
    let b = c.create_vm_begin(&p).unwrap();
    let ip = |c: &CloudState, u: &str| c.vm(u).unwrap().vm_nics[0].ip.clone().unwrap();
    assert_eq!(ip(&c, &a), "172.20.0.10");
    assert_eq!(ip(&c, &b), "172.20.0.11");
    let host = c.vm(&a).unwrap().host_uuid.clone().unwrap();
    assert!(c
        .hosts
        .iter()
        .any(|h| h.uuid == host && h.architecture == "x86_64"));
    // 2 hosts x 128 GiB / 64 GiB = 4 xlarge VMs; the 5th does not fit.
    c.create_vm_begin(&p).unwrap();
    c.create_vm_begin(&p).unwrap();
    let e = c.create_vm_begin(&p).unwrap_err();
    assert_eq!(e.code, "SYS.1006");
    assert!(e.chain_contains("HOST_ALLOCATION.1001"));
    assert_eq!(c.vms.len(), 4, "a failed create leaves nothing behind");
}

#[test]
fn userdata_rules() {
    let mut c = cloud();
    let mut p = params(&c, "ubuntu-22.04-arm64", "small");
    p.system_tags = vec!["userdata::***".into()];
    assert_eq!(c.create_vm_begin(&p).unwrap_err().code, "SYS.1007");
    p.system_tags = vec![
        "userdata::I2Nsb3VkLWNvbmZpZw".into(),
        "userdata::eA==".into(),
    ];
    assert_eq!(c.create_vm_begin(&p).unwrap_err().code, "SYS.1007");
    p.system_tags = vec!["userdata::I2Nsb3VkLWNvbmZpZw".into()]; // unpadded is fine
    c.create_vm_begin(&p).unwrap();
}
