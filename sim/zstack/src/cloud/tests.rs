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

fn vip_params(c: &CloudState, name: &str, ip: Option<&str>) -> CreateVipParams {
    CreateVipParams {
        name: Some(name.into()),
        l3_network_uuid: Some(c.l3_networks[0].uuid.clone()),
        required_ip: ip.map(str::to_string),
        ..Default::default()
    }
}

#[test]
fn vips_and_nics_share_one_address_pool() {
    let mut c = cloud();
    let v = c.create_vip(&vip_params(&c, "vip", None)).unwrap();
    assert_eq!(c.vips[0].ip, "172.20.0.10", "first free address");
    assert_eq!(c.vips[0].prefix_len, 22);
    let p = params(&c, "ubuntu-22.04-amd64", "small");
    let vm = c.create_vm_begin(&p).unwrap();
    assert_eq!(
        c.vm(&vm).unwrap().vm_nics[0].ip.as_deref(),
        Some("172.20.0.11"),
        "a NIC never gets a VIP's address"
    );
    let code = |c: &mut CloudState, ip: &str| {
        let p = vip_params(c, "x", Some(ip));
        c.create_vip(&p).unwrap_err().code
    };
    assert_eq!(code(&mut c, "172.20.0.10"), "SYS.1006", "already a VIP");
    assert_eq!(code(&mut c, "172.20.0.11"), "SYS.1006", "a NIC's");
    assert_eq!(code(&mut c, "172.20.0.1"), "SYS.1006", "the gateway");
    assert_eq!(code(&mut c, "10.9.9.9"), "L3.1000");
    assert_eq!(code(&mut c, "not-an-ip"), "SYS.1000");
    assert_eq!(code(&mut c, "fd00::1"), "SYS.1007");
    assert_eq!(c.vips.len(), 1, "failed creates leave nothing behind");
    c.delete_vip(&v).unwrap();
    let again = c
        .create_vip(&vip_params(&c, "vip2", Some("172.20.0.10")))
        .unwrap();
    assert_eq!(
        c.vips[0].uuid, again,
        "the freed address can be required again"
    );
}

#[test]
fn lb_listener_and_nic_lifecycle() {
    let mut c = cloud();
    let vip = c.create_vip(&vip_params(&c, "vip", None)).unwrap();
    let lb = c
        .create_load_balancer(&CreateLoadBalancerParams {
            name: Some("lb".into()),
            vip_uuid: Some(vip.clone()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(c.vips[0].use_for.as_deref(), Some("LoadBalancer"));
    let lp = |port: i64, proto: &str| CreateListenerParams {
        name: Some(format!("l{port}")),
        load_balancer_port: Some(port),
        protocol: Some(proto.into()),
        ..Default::default()
    };
    let l = c.create_listener(&lb, &lp(6443, "tcp")).unwrap();
    assert_eq!(
        c.create_listener(&lb, &lp(6443, "http")).unwrap_err().code,
        "SYS.1007"
    );
    c.create_listener(&lb, &lp(6443, "udp")).unwrap();
    let p = params(&c, "ubuntu-22.04-amd64", "small");
    let vm = c.create_vm_begin(&p).unwrap();
    c.create_vm_finish(&vm, "InstantStart").unwrap();
    let nic = vec![c.vm(&vm).unwrap().vm_nics[0].uuid.clone()];
    let r = c.add_vm_nics(&l, Some(&nic)).unwrap();
    assert_eq!(r["inventory"]["vmNicRefs"][0]["status"], "Active");
    assert_eq!(c.add_vm_nics(&l, Some(&nic)).unwrap_err().code, "SYS.1006");
    let status = |c: &CloudState| {
        c.load_balancers[0].listeners[0].vm_nic_refs[0]
            .status
            .clone()
    };
    c.stop_begin(&vm, &serde_json::json!({})).unwrap();
    c.stop_finish(&vm).unwrap();
    assert_eq!(status(&c), "Inactive");
    c.start_begin(&vm, &serde_json::json!({})).unwrap();
    c.start_finish(&vm).unwrap();
    assert_eq!(status(&c), "Active");
    c.destroy_begin(&vm).unwrap();
    c.destroy_finish(&vm);
    assert!(c.load_balancers[0].listeners[0].vm_nic_refs.is_empty());
    // Deleting the VIP takes the load balancer and its listeners with it.
    c.delete_vip(&vip).unwrap();
    assert!(c.load_balancers.is_empty() && c.vips.is_empty());
}

#[test]
fn a_state_file_without_load_balancers_still_loads() {
    let mut v = serde_json::to_value(cloud()).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("vips");
    o.remove("loadBalancers");
    o.remove("lbRefCounter");
    let c: CloudState = serde_json::from_value(v).unwrap();
    assert!(c.vips.is_empty() && c.load_balancers.is_empty());
}
