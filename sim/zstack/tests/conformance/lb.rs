//! Conformance checks 16-25 of docs/providers/zstack-api.md §12: VIPs, load balancers,
//! listeners and their VM NICs (§8). Same rules as the parent file: simulator-only
//! expectations are asserted only in-process.

use super::{create_stopped, target};
use kprov_testkit::zstack_sim::*;
use reqwest::Method;
use serde_json::{json, Value};

/// A `CreateVip` body on the discovered L3.
fn vip_body(fx: &Fixtures, name: &str, required_ip: Option<&str>, tags: &[&str]) -> Value {
    let mut params = json!({"name": name, "l3NetworkUuid": fx.l3});
    if let Some(ip) = required_ip {
        params["requiredIp"] = json!(ip);
    }
    json!({"params": params, "userTags": tags})
}

/// Creates a VIP; returns its inventory (the job must succeed).
async fn create_vip(t: &Target, s: &str, fx: &Fixtures, tags: &[&str]) -> Value {
    let name = format!("kprov-conf-vip-{}", &random_hex32()[..8]);
    let j = t
        .job(
            Method::POST,
            "/vips",
            s,
            &[],
            Some(&vip_body(fx, &name, None, tags)),
        )
        .await;
    assert_eq!(j.done.status, 200, "{}", j.done.text);
    j.done.json["inventory"].clone()
}

/// Creates a load balancer on `vip`; returns its inventory.
async fn create_lb(t: &Target, s: &str, vip: &str, tags: &[&str]) -> Value {
    let body = json!({"params": {"name": format!("kprov-conf-lb-{}", &random_hex32()[..8]), "vipUuid": vip}, "userTags": tags});
    let j = t
        .job(Method::POST, "/load-balancers", s, &[], Some(&body))
        .await;
    assert_eq!(j.done.status, 200, "{}", j.done.text);
    j.done.json["inventory"].clone()
}

/// `CreateLoadBalancerListener` on `lb`; returns the job reply.
async fn create_listener(t: &Target, s: &str, lb: &str, port: u32, protocol: &str) -> JobReply {
    let body = json!({"params": {"name": format!("kprov-conf-{protocol}-{port}"), "loadBalancerPort": port, "protocol": protocol}});
    t.job(
        Method::POST,
        &format!("/load-balancers/{lb}/listeners"),
        s,
        &[],
        Some(&body),
    )
    .await
}

/// VIP + load balancer + a tcp:6443 listener; returns (vip, lb, listener) uuids.
async fn lb_stack(t: &Target, s: &str, fx: &Fixtures) -> (String, String, String) {
    let vip = create_vip(t, s, fx, &[]).await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let lb = create_lb(t, s, &vip, &[]).await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let l = create_listener(t, s, &lb, 6443, "tcp").await;
    assert_eq!(l.done.status, 200, "{}", l.done.text);
    let listener = l.done.json["inventory"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    (vip, lb, listener)
}

/// Deletes a VIP (and so whatever load balancer is on it).
async fn delete_vip(t: &Target, s: &str, vip: &str) -> JobReply {
    t.job(
        Method::DELETE,
        &format!("/vips/{vip}"),
        s,
        &[("deleteMode", "Permissive")],
        None,
    )
    .await
}

/// A running VM on the discovered L3 and its first NIC's uuid (`inventory.vmNics[0].uuid`).
async fn running_vm(t: &Target, s: &str, fx: &Fixtures) -> (String, String) {
    let r = random_hex32();
    let body = create_body(
        fx,
        &format!("kprov-conf-{}", &r[..8]),
        "InstantStart",
        Some(&r),
    );
    let j = t
        .job(Method::POST, "/vm-instances", s, &[], Some(&body))
        .await;
    assert_eq!(j.done.status, 200, "{}", j.done.text);
    let nic = j.done.json["inventory"]["vmNics"][0]["uuid"]
        .as_str()
        .expect("a NIC")
        .to_string();
    (r, nic)
}

/// Whether the discovered L3 offers the LoadBalancer service (NICs on it can be backends).
async fn l3_has_lb_service(t: &Target, s: &str, fx: &Fixtures) -> bool {
    let l3 = t
        .list(
            "/l3-networks",
            s,
            &[
                &format!("uuid={}", fx.l3),
                "networkServices.networkServiceType=LoadBalancer",
            ],
        )
        .await;
    if l3.is_empty() {
        assert!(!t.in_process(), "the seed's k8s-net offers LoadBalancer");
        println!("not applicable: L3 {} has no LoadBalancer service", fx.l3);
    }
    !l3.is_empty()
}

fn nics_path(listener: &str) -> String {
    format!("/load-balancers/listeners/{listener}/vm-instances/nics")
}

async fn add_nic(t: &Target, s: &str, listener: &str, nic: &str) -> JobReply {
    let body = json!({"params": {"vmNicUuids": [nic]}});
    t.job(Method::POST, &nics_path(listener), s, &[], Some(&body))
        .await
}

fn error_code(j: &JobReply) -> String {
    j.done.json["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn error_details(j: &JobReply) -> String {
    j.done.json["error"]["details"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn check_16_vip_create_required_ip_and_reuse() {
    let t = target().await;
    let s = t.login().await;
    let fx = discover(&t, &s, None).await;
    let vip = create_vip(&t, &s, &fx, &[]).await;
    let uuid = vip["uuid"].as_str().unwrap().to_string();
    let ip = vip["ip"].as_str().expect("ip").to_string();
    assert_eq!(uuid.len(), 32, "{vip}");
    assert_eq!(vip["l3NetworkUuid"], fx.l3.as_str());
    assert_eq!(vip["state"], "Enabled");
    assert_eq!(vip["servicesRefs"], json!([]));
    assert!(vip["useFor"].is_null(), "{vip}");
    assert_eq!(vip["system"], false);
    assert!(vip["prefixLen"].is_u64() && vip["netmask"].is_string() && vip["gateway"].is_string());
    assert!(vip["createDate"].is_string() && vip["lastOpDate"].is_string());
    if t.in_process() {
        assert_eq!(ip, "172.20.0.10", "the first free address of k8s-net");
        let mut keys: Vec<&str> = vip
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "createDate",
                "description",
                "gateway",
                "ip",
                "l3NetworkUuid",
                "lastOpDate",
                "name",
                "netmask",
                "peerL3NetworkUuids",
                "prefixLen",
                "serviceProvider",
                "servicesRefs",
                "state",
                "system",
                "useFor",
                "uuid"
            ]
        );
    }
    // requiredIp: a VM NIC's address, the VIP's own address, an address in no range.
    let (vm, j) = create_stopped(&t, &s, &fx, &[]).await;
    assert_eq!(j.done.status, 200, "{}", j.done.text);
    let nic_ip = j.done.json["inventory"]["vmNics"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let try_ip = |ip: String| {
        let t = &t;
        let s = &s;
        let fx = &fx;
        async move {
            let body = vip_body(fx, "kprov-conf-vip-req", Some(&ip), &[]);
            t.job(Method::POST, "/vips", s, &[], Some(&body)).await
        }
    };
    let taken = try_ip(nic_ip.clone()).await;
    assert_eq!(taken.done.status, 503, "{}", taken.done.text);
    assert_eq!(error_code(&taken), "SYS.1006");
    assert_eq!(
        error_details(&taken),
        format!("required ip address [{nic_ip}] is already used")
    );
    let dup = try_ip(ip.clone()).await;
    assert_eq!(error_code(&dup), "SYS.1006", "{}", dup.done.text);
    assert_eq!(
        error_details(&dup),
        format!("there is already a vip[{ip}] on l3Network[uuid:{}]", fx.l3)
    );
    let outside = try_ip("203.0.113.7".into()).await;
    assert_eq!(outside.done.status, 503, "{}", outside.done.text);
    assert_eq!(error_code(&outside), "L3.1000");
    assert_eq!(
        error_details(&outside),
        format!(
            "cannot find ip range that has ip[203.0.113.7] in l3Network[uuid:{}]",
            fx.l3
        )
    );
    // Deleting the VIP returns its address to the pool: it can be required again.
    let d = delete_vip(&t, &s, &uuid).await;
    assert_eq!(d.done.status, 200, "{}", d.done.text);
    assert_eq!(d.done.json, json!({}));
    let again = try_ip(ip.clone()).await;
    assert_eq!(again.done.status, 200, "{}", again.done.text);
    assert_eq!(again.done.json["inventory"]["ip"], ip.as_str());
    let again_uuid = again.done.json["inventory"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    delete_vip(&t, &s, &again_uuid).await;
    t.cleanup_vm(&s, &vm).await;
}

#[tokio::test]
async fn check_17_load_balancer_on_vip() {
    let t = target().await;
    let s = t.login().await;
    let fx = discover(&t, &s, None).await;
    let vip = create_vip(&t, &s, &fx, &[]).await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let lb = create_lb(&t, &s, &vip, &[]).await;
    let lb_uuid = lb["uuid"].as_str().unwrap().to_string();
    assert_eq!(lb["vipUuid"], vip.as_str());
    assert_eq!(lb["state"], "Enabled");
    assert_eq!(lb["type"], "Shared");
    assert_eq!(lb["listeners"], json!([]));
    assert!(lb["ipv6VipUuid"].is_null(), "{lb}");
    if t.in_process() {
        assert!(
            lb["serverGroupUuid"].is_string(),
            "the default server group: {lb}"
        );
    }
    let v = &t.list("/vips", &s, &[&format!("uuid={vip}")]).await[0];
    assert_eq!(v["useFor"], "LoadBalancer");
    let refs = v["servicesRefs"].as_array().unwrap();
    assert_eq!(refs.len(), 1, "{v}");
    assert_eq!(refs[0]["uuid"], lb_uuid.as_str());
    assert_eq!(refs[0]["serviceType"], "LoadBalancer");
    assert_eq!(refs[0]["vipUuid"], vip.as_str());
    let unknown = json!({"params": {"name": "kprov-conf-lb-x", "vipUuid": random_hex32()}});
    let j = t
        .job(Method::POST, "/load-balancers", &s, &[], Some(&unknown))
        .await;
    assert_eq!(j.done.status, 503, "{}", j.done.text);
    assert_eq!(error_code(&j), "SYS.1003");
    delete_vip(&t, &s, &vip).await;
}

#[tokio::test]
async fn check_18_listener_and_duplicate_port() {
    let t = target().await;
    let s = t.login().await;
    let fx = discover(&t, &s, None).await;
    let (vip, lb, listener) = lb_stack(&t, &s, &fx).await;
    let l = &t
        .list(
            "/load-balancers/listeners",
            &s,
            &[&format!("uuid={listener}")],
        )
        .await[0];
    assert_eq!(l["loadBalancerUuid"], lb.as_str());
    assert_eq!(l["loadBalancerPort"], 6443);
    assert_eq!(l["instancePort"], 6443, "defaults to loadBalancerPort");
    assert_eq!(l["protocol"], "tcp");
    assert_eq!(l["vmNicRefs"], json!([]));
    assert!(l["serverGroupUuid"].is_null(), "{l}");
    let dup = create_listener(&t, &s, &lb, 6443, "http").await;
    assert_eq!(dup.done.status, 503, "{}", dup.done.text);
    assert_eq!(error_code(&dup), "SYS.1007");
    assert_eq!(
        error_details(&dup),
        format!("conflict loadBalancerPort[6443], a listener[uuid:{listener}] has used that port")
    );
    let udp = create_listener(&t, &s, &lb, 6443, "udp").await;
    assert_eq!(
        udp.done.status, 200,
        "udp is another port space: {}",
        udp.done.text
    );
    // Deleting a listener answers its load balancer, without it.
    let udp_uuid = udp.done.json["inventory"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/load-balancers/listeners/{udp_uuid}");
    let d = t.job(Method::DELETE, &path, &s, &[], None).await;
    assert_eq!(d.done.status, 200, "{}", d.done.text);
    assert_eq!(d.done.json["inventory"]["uuid"], lb.as_str());
    let left: Vec<&Value> = d.done.json["inventory"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(left.len(), 1, "{}", d.done.text);
    assert_eq!(left[0]["uuid"], listener.as_str());
    let udp = create_listener(&t, &s, &lb, 6443, "udp").await;
    assert_eq!(
        udp.done.status, 200,
        "the port is free again: {}",
        udp.done.text
    );
    let bad = create_listener(&t, &s, &lb, 70000, "tcp").await;
    assert_eq!(error_code(&bad), "SYS.1007", "{}", bad.done.text);
    assert_eq!(
        error_details(&bad),
        "field[loadBalancerPort] must be in range of [1, 65535]"
    );
    let proto = create_listener(&t, &s, &lb, 8080, "sctp").await;
    assert_eq!(error_code(&proto), "SYS.1007", "{}", proto.done.text);
    let all = t.get(&format!("/load-balancers/{lb}"), &s, &[]).await;
    assert_eq!(
        all.json["inventories"][0]["listeners"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{}",
        all.text
    );
    delete_vip(&t, &s, &vip).await;
}

#[tokio::test]
async fn check_19_add_nic_of_running_vm() {
    let t = target().await;
    let s = t.login().await;
    let fx = discover(&t, &s, None).await;
    if !l3_has_lb_service(&t, &s, &fx).await {
        return;
    }
    let (vm, nic) = running_vm(&t, &s, &fx).await;
    let (vip, _lb, listener) = lb_stack(&t, &s, &fx).await;
    let j = add_nic(&t, &s, &listener, &nic).await;
    assert_eq!(j.done.status, 200, "{}", j.done.text);
    let inv = &j.done.json["inventory"];
    assert_eq!(inv["uuid"], listener.as_str(), "answers the listener");
    let refs = inv["vmNicRefs"].as_array().unwrap();
    assert_eq!(refs.len(), 1, "{inv}");
    assert_eq!(refs[0]["vmNicUuid"], nic.as_str());
    assert_eq!(refs[0]["listenerUuid"], listener.as_str());
    assert_eq!(refs[0]["status"], "Active");
    assert!(refs[0]["id"].is_u64(), "{inv}");
    assert!(
        inv["serverGroupUuid"].is_string(),
        "the default server group: {inv}"
    );
    let again = add_nic(&t, &s, &listener, &nic).await;
    assert_eq!(again.done.status, 503, "{}", again.done.text);
    assert_eq!(error_code(&again), "SYS.1006");
    assert!(
        error_details(&again).contains(&format!(
            "the vm nic[uuid:{nic}] are already on the default server group"
        )),
        "{}",
        again.done.text
    );
    delete_vip(&t, &s, &vip).await;
    t.cleanup_vm(&s, &vm).await;
}

#[tokio::test]
async fn check_20_remove_nic_returns_the_load_balancer() {
    let t = target().await;
    let s = t.login().await;
    let fx = discover(&t, &s, None).await;
    if !l3_has_lb_service(&t, &s, &fx).await {
        return;
    }
    let (vm, nic) = running_vm(&t, &s, &fx).await;
    let (vip, lb, listener) = lb_stack(&t, &s, &fx).await;
    assert_eq!(add_nic(&t, &s, &listener, &nic).await.done.status, 200);
    let q = [("vmNicUuids", nic.as_str())];
    let r = t
        .job(Method::DELETE, &nics_path(&listener), &s, &q, None)
        .await;
    assert_eq!(r.done.status, 200, "{}", r.done.text);
    let inv = &r.done.json["inventory"];
    assert_eq!(inv["uuid"], lb.as_str(), "answers the load balancer");
    assert_eq!(inv["listeners"][0]["vmNicRefs"], json!([]), "{inv}");
    let noop = t
        .job(Method::DELETE, &nics_path(&listener), &s, &q, None)
        .await;
    assert_eq!(
        noop.done.status, 200,
        "a NIC not attached: {}",
        noop.done.text
    );
    let fresh = create_listener(&t, &s, &lb, 443, "tcp").await;
    let fresh = fresh.done.json["inventory"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let never = t
        .job(Method::DELETE, &nics_path(&fresh), &s, &q, None)
        .await;
    assert_eq!(never.done.status, 503, "{}", never.done.text);
    assert_eq!(error_code(&never), "SYS.1006");
    delete_vip(&t, &s, &vip).await;
    t.cleanup_vm(&s, &vm).await;
}

#[tokio::test]
async fn check_21_vm_stop_start_and_destroy_update_the_refs() {
    let t = target().await;
    let s = t.login().await;
    let fx = discover(&t, &s, None).await;
    if !l3_has_lb_service(&t, &s, &fx).await {
        return;
    }
    let (vm, nic) = running_vm(&t, &s, &fx).await;
    let (vip, _lb, listener) = lb_stack(&t, &s, &fx).await;
    assert_eq!(add_nic(&t, &s, &listener, &nic).await.done.status, 200);
    let path = format!("/load-balancers/listeners/{listener}");
    let stop = t.action(&s, &vm, json!({"stopVmInstance": {}})).await;
    assert_eq!(stop.done.status, 200, "{}", stop.done.text);
    let r = t.get(&path, &s, &[]).await;
    assert_eq!(
        r.json["inventories"][0]["vmNicRefs"][0]["status"], "Inactive",
        "{}",
        r.text
    );
    let start = t.action(&s, &vm, json!({"startVmInstance": {}})).await;
    assert_eq!(start.done.status, 200, "{}", start.done.text);
    let r = t.get(&path, &s, &[]).await;
    assert_eq!(
        r.json["inventories"][0]["vmNicRefs"][0]["status"], "Active",
        "{}",
        r.text
    );
    let d = t
        .job(
            Method::DELETE,
            &format!("/vm-instances/{vm}"),
            &s,
            &[],
            None,
        )
        .await;
    assert_eq!(d.done.status, 200, "{}", d.done.text);
    let r = t.get(&path, &s, &[]).await;
    assert_eq!(
        r.json["inventories"][0]["vmNicRefs"],
        json!([]),
        "{}",
        r.text
    );
    delete_vip(&t, &s, &vip).await;
    t.cleanup_vm(&s, &vm).await;
}

#[tokio::test]
async fn check_22_delete_lb_cascades_listeners_and_keeps_the_vip() {
    let t = target().await;
    let s = t.login().await;
    let fx = discover(&t, &s, None).await;
    let (vip, lb, listener) = lb_stack(&t, &s, &fx).await;
    let d = t
        .job(
            Method::DELETE,
            &format!("/load-balancers/{lb}"),
            &s,
            &[("deleteMode", "Permissive")],
            None,
        )
        .await;
    assert_eq!(d.done.status, 200, "{}", d.done.text);
    assert_eq!(d.done.json, json!({}));
    let l = t
        .get(&format!("/load-balancers/listeners/{listener}"), &s, &[])
        .await;
    assert_eq!(l.json["inventories"], json!([]), "{}", l.text);
    let v = t.list("/vips", &s, &[&format!("uuid={vip}")]).await;
    assert_eq!(v.len(), 1, "the VIP stays");
    assert!(v[0]["useFor"].is_null(), "{}", v[0]);
    assert_eq!(v[0]["servicesRefs"], json!([]));
    assert_eq!(delete_vip(&t, &s, &vip).await.done.status, 200);
}

#[tokio::test]
async fn check_23_delete_vip_cascades_to_its_load_balancer() {
    let t = target().await;
    let s = t.login().await;
    let fx = discover(&t, &s, None).await;
    let (vip, lb, listener) = lb_stack(&t, &s, &fx).await;
    let d = delete_vip(&t, &s, &vip).await;
    assert_eq!(d.done.status, 200, "{}", d.done.text);
    assert_eq!(d.done.json, json!({}));
    for path in [
        format!("/vips/{vip}"),
        format!("/load-balancers/{lb}"),
        format!("/load-balancers/listeners/{listener}"),
    ] {
        let r = t.get(&path, &s, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["inventories"], json!([]), "{path}: {}", r.text);
    }
}

#[tokio::test]
async fn check_24_query_vip_and_lb_by_user_tag() {
    let t = target().await;
    let s = t.login().await;
    let fx = discover(&t, &s, None).await;
    let tag = format!("kprov::conf-{}", &random_hex32()[..8]);
    let vip = create_vip(&t, &s, &fx, &[&tag]).await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let lb = create_lb(&t, &s, &vip, &[&tag]).await["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let cond = format!("__userTag__={tag}");
    let vips = t.list("/vips", &s, &[&cond]).await;
    assert_eq!(vips.len(), 1, "{vips:?}");
    assert_eq!(vips[0]["uuid"], vip.as_str());
    let lbs = t.list("/load-balancers", &s, &[&cond]).await;
    assert_eq!(lbs.len(), 1, "{lbs:?}");
    assert_eq!(lbs[0]["uuid"], lb.as_str());
    let tags = t.list("/user-tags", &s, &[&format!("tag={tag}")]).await;
    let mut types: Vec<&str> = tags
        .iter()
        .filter_map(|x| x["resourceType"].as_str())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["LoadBalancerVO", "VipVO"]);
    delete_vip(&t, &s, &vip).await;
}

#[tokio::test]
async fn check_25_deletes_of_missing_uuids_succeed() {
    let t = target().await;
    let s = t.login().await;
    for path in [
        format!("/vips/{}", random_hex32()),
        format!("/load-balancers/{}", random_hex32()),
        format!("/load-balancers/listeners/{}", random_hex32()),
    ] {
        let d = t.job(Method::DELETE, &path, &s, &[], None).await;
        assert_eq!(d.done.status, 200, "{path}: {}", d.done.text);
        assert_eq!(d.done.json, json!({}), "{path}");
    }
}
