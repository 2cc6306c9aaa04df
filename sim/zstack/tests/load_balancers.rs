//! Simulator behaviour of the VIP and load-balancer APIs beyond the §12 checks: the exact
//! validation errors, an L3 without the LoadBalancer service (a fixture L3), two load
//! balancers on one VIP, listener tags, persistence, free IPs, joins, stats, faults and
//! `X-Job-UUID`.

use kprov_testkit::zstack_sim::*;
use kprov_zstack_sim::model::{IpRange, L3Network, NetworkServiceRef};
use kprov_zstack_sim::{FaultRule, Inventory, SimConfig};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

fn fast() -> SimConfig {
    SimConfig {
        job_delay: Duration::from_millis(20),
        ..SimConfig::default()
    }
}

/// The seed plus `flat-net` (172.21.0.0/24, DHCP + Userdata, no LoadBalancer): what a plain
/// flat network looks like. Not in the default seed, where kprov would pick it as "the first
/// Userdata L3 by name".
fn with_flat_net() -> SimConfig {
    let mut inv = Inventory::default_seed();
    inv.l3_networks.push(L3Network {
        name: "flat-net".into(),
        ip_ranges: vec![IpRange {
            start_ip: "172.21.0.10".into(),
            end_ip: "172.21.0.250".into(),
            netmask: "255.255.255.0".into(),
            gateway: "172.21.0.1".into(),
            ..Default::default()
        }],
        network_services: ["DHCP", "Userdata"]
            .iter()
            .map(|t| NetworkServiceRef {
                network_service_type: (*t).into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    inv.normalize().unwrap();
    SimConfig {
        inventory: inv,
        ..fast()
    }
}

fn fixtures(t: &Target, l3: &str) -> Fixtures {
    let sim = t.sim();
    Fixtures {
        image: sim.uuid_of("ubuntu-22.04-amd64").unwrap(),
        image_arch: "x86_64".into(),
        offering: sim.uuid_of("small").unwrap(),
        l3: sim.uuid_of(l3).unwrap(),
    }
}

/// Runs an async call to completion.
async fn call(
    t: &Target,
    s: &str,
    m: Method,
    path: &str,
    q: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    t.job(m, path, s, q, body.as_ref()).await.done
}

/// `(code, details)` of a failed job.
fn err(r: &Reply) -> (String, String) {
    assert_eq!(r.status, 503, "{}", r.text);
    (
        r.json["error"]["code"].as_str().unwrap_or_default().into(),
        r.json["error"]["details"]
            .as_str()
            .unwrap_or_default()
            .into(),
    )
}

fn uuid(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["inventory"]["uuid"].as_str().unwrap().to_string()
}

async fn vip(t: &Target, s: &str, l3: &str, extra: Value) -> Reply {
    let mut params = json!({"name": "vip", "l3NetworkUuid": l3});
    if let (Value::Object(p), Value::Object(e)) = (&mut params, extra) {
        p.extend(e);
    }
    call(
        t,
        s,
        Method::POST,
        "/vips",
        &[],
        Some(json!({ "params": params })),
    )
    .await
}

async fn lb(t: &Target, s: &str, vip: &str) -> Reply {
    let body = json!({"params": {"name": "lb", "vipUuid": vip}});
    call(t, s, Method::POST, "/load-balancers", &[], Some(body)).await
}

async fn listener(t: &Target, s: &str, lb: &str, params: Value) -> Reply {
    let path = format!("/load-balancers/{lb}/listeners");
    call(
        t,
        s,
        Method::POST,
        &path,
        &[],
        Some(json!({ "params": params })),
    )
    .await
}

/// A running VM on `l3`; returns (vm, nic) uuids.
async fn vm_on(t: &Target, s: &str, l3: &str, name: &str) -> (String, String) {
    let body = create_body(&fixtures(t, l3), name, "InstantStart", None);
    let r = call(t, s, Method::POST, "/vm-instances", &[], Some(body)).await;
    let inv = &r.json["inventory"];
    (
        inv["uuid"].as_str().unwrap().into(),
        inv["vmNics"][0]["uuid"].as_str().unwrap().into(),
    )
}

fn nics(listener: &str) -> String {
    format!("/load-balancers/listeners/{listener}/vm-instances/nics")
}

#[tokio::test]
async fn nic_on_an_l3_without_the_load_balancer_service_is_refused() {
    let t = Target::start_sim(with_flat_net()).await;
    let s = t.login().await;
    let flat = t.sim().uuid_of("flat-net").unwrap();
    let k8s = t.sim().uuid_of("k8s-net").unwrap();
    // A VIP can be made on any L3 with ranges.
    let fv = vip(&t, &s, &flat, json!({})).await;
    assert_eq!(fv.json["inventory"]["ip"], "172.21.0.10", "{}", fv.text);
    let v = uuid(&vip(&t, &s, &k8s, json!({})).await);
    let l = uuid(&lb(&t, &s, &v).await);
    let li = uuid(&listener(&t, &s, &l, json!({"name": "api", "loadBalancerPort": 6443})).await);
    let (_, flat_nic) = vm_on(&t, &s, "flat-net", "flat-vm").await;
    let (_, k8s_nic) = vm_on(&t, &s, "k8s-net", "k8s-vm").await;
    let body = json!({"params": {"vmNicUuids": [k8s_nic, flat_nic]}});
    let r = call(&t, &s, Method::POST, &nics(&li), &[], Some(body)).await;
    assert_eq!(
        err(&r),
        (
            "SYS.1006".into(),
            format!("L3 networks[uuids:[{flat}]] of the vm nics has no network service[LoadBalancer] enabled")
        )
    );
    assert!(
        t.sim().load_balancers()[0].listeners[0]
            .vm_nic_refs
            .is_empty(),
        "all or nothing"
    );
}

#[tokio::test]
async fn validation_errors_are_worded_like_the_mn() {
    let t = Target::start_sim(fast()).await;
    let s = t.login().await;
    let k8s = t.sim().uuid_of("k8s-net").unwrap();
    let vip_msg = "org.zstack.network.service.vip.APICreateVipMsg";
    let r = call(
        &t,
        &s,
        Method::POST,
        "/vips",
        &[],
        Some(json!({"params": {"l3NetworkUuid": k8s}})),
    )
    .await;
    assert_eq!(
        err(&r),
        (
            "SYS.1007".into(),
            format!("field[name] of message[{vip_msg}] is mandatory, can not be null")
        )
    );
    let r = call(
        &t,
        &s,
        Method::POST,
        "/vips",
        &[],
        Some(json!({"params": {"name": "v"}})),
    )
    .await;
    assert_eq!(
        err(&r).1,
        format!("field[l3NetworkUuid] of message[{vip_msg}] is mandatory, can not be null")
    );
    let nowhere = random_hex32();
    let r = vip(&t, &s, &nowhere, json!({})).await;
    assert_eq!(
        err(&r),
        ("SYS.1003".into(), format!("invalid field[l3NetworkUuid], resource[uuid:{nowhere}, type:L3NetworkVO] not found"))
    );
    assert_eq!(
        err(&vip(&t, &s, &k8s, json!({"resourceUuid": "nope"})).await).0,
        "SYS.1007"
    );
    let r = vip(&t, &s, &k8s, json!({"requiredIp": "abc"})).await;
    assert_eq!(
        err(&r),
        ("SYS.1000".into(), "abc is not a valid ipv4 address".into())
    );
    let r = vip(&t, &s, &k8s, json!({"name": "x".repeat(256)})).await;
    assert_eq!(err(&r).0, "SYS.1007");
    // resourceUuid: honoured; a uuid already in use fails SYS.1000 as for VMs.
    let want = random_hex32();
    let v = uuid(&vip(&t, &s, &k8s, json!({"resourceUuid": want})).await);
    assert_eq!(v, want);
    assert_eq!(
        err(&vip(&t, &s, &k8s, json!({"resourceUuid": want})).await).0,
        "SYS.1000"
    );
    assert_eq!(t.sim().vips().len(), 1, "failed creates leave nothing");

    let r = call(
        &t,
        &s,
        Method::POST,
        "/load-balancers",
        &[],
        Some(json!({"params": {"name": "lb"}})),
    )
    .await;
    assert_eq!(
        err(&r),
        (
            "SYS.1007".into(),
            "could not create loadbalancer, because param of vip and ipv6 vip is empty".into()
        )
    );
    let l = uuid(&lb(&t, &s, &v).await);
    let r = listener(&t, &s, &l, json!({"loadBalancerPort": 80})).await;
    assert_eq!(err(&r).0, "SYS.1007");
    let r = listener(&t, &s, &l, json!({"name": "n"})).await;
    assert_eq!(
        err(&r).1,
        "field[loadBalancerPort] must be in range of [1, 65535]",
        "a missing int port is 0"
    );
    let r = listener(
        &t,
        &s,
        &l,
        json!({"name": "n", "loadBalancerPort": 80, "protocol": "sctp"}),
    )
    .await;
    assert_eq!(
        err(&r).1,
        "valid value for field[protocol] of message[org.zstack.network.service.lb.APICreateLoadBalancerListenerMsg] are [udp, tcp, http, https], but sctp found"
    );
    let r = listener(
        &t,
        &s,
        &l,
        json!({"name": "n", "loadBalancerPort": 80, "instancePort": 0}),
    )
    .await;
    assert_eq!(
        err(&r).1,
        "field[instancePort] must be in range of [1, 65535]"
    );
    let r = listener(
        &t,
        &s,
        &nowhere,
        json!({"name": "n", "loadBalancerPort": 80}),
    )
    .await;
    assert_eq!(err(&r).0, "SYS.1003");
    let li = uuid(
        &listener(
            &t,
            &s,
            &l,
            json!({"name": "n", "loadBalancerPort": 80, "instancePort": 8080}),
        )
        .await,
    );

    let r = call(
        &t,
        &s,
        Method::POST,
        &nics(&li),
        &[],
        Some(json!({"params": {"vmNicUuids": []}})),
    )
    .await;
    assert_eq!(
        err(&r),
        (
            "SYS.1007".into(),
            "field[vmNicUuids] must be a nonempty list".into()
        )
    );
    let r = call(
        &t,
        &s,
        Method::POST,
        &nics(&li),
        &[],
        Some(json!({"params": {"vmNicUuids": [nowhere]}})),
    )
    .await;
    assert_eq!(
        err(&r),
        (
            "SYS.1003".into(),
            format!(
                "invalid field[vmNicUuids], resource[uuids:[{nowhere}], type:VmNicVO] not found"
            )
        )
    );
    let r = call(&t, &s, Method::DELETE, &nics(&li), &[], None).await;
    assert_eq!(err(&r).0, "SYS.1007", "vmNicUuids is mandatory");
    let (_, nic) = vm_on(&t, &s, "k8s-net", "vm").await;
    let r = call(
        &t,
        &s,
        Method::POST,
        &nics(&nowhere),
        &[],
        Some(json!({"params": {"vmNicUuids": [nic]}})),
    )
    .await;
    assert_eq!(err(&r).0, "SYS.1003", "unknown listener");
    let r = call(
        &t,
        &s,
        Method::DELETE,
        &format!("/vips/{v}"),
        &[("deleteMode", "Soon")],
        None,
    )
    .await;
    assert_eq!(err(&r).0, "SYS.1007");
    let r = call(
        &t,
        &s,
        Method::DELETE,
        "/load-balancers/not-a-uuid",
        &[],
        None,
    )
    .await;
    assert_eq!(
        err(&r),
        (
            "SYS.1003".into(),
            "invalid value[not-a-uuid] of field [uuid]".into()
        )
    );
    let inv = &t.sim().load_balancers()[0];
    assert_eq!(inv.listeners.len(), 1);
    assert_eq!(
        (
            inv.listeners[0].load_balancer_port,
            inv.listeners[0].instance_port
        ),
        (80, 8080)
    );
}

#[tokio::test]
async fn two_load_balancers_share_a_vip_and_listener_tags() {
    let t = Target::start_sim(fast()).await;
    let s = t.login().await;
    let k8s = t.sim().uuid_of("k8s-net").unwrap();
    let v = uuid(&vip(&t, &s, &k8s, json!({})).await);
    // VipUseForList only refuses a load balancer next to an Eip.
    let a = uuid(&lb(&t, &s, &v).await);
    let b = uuid(&lb(&t, &s, &v).await);
    let refs = |t: &Target| {
        t.sim().vips()[0]
            .services_refs
            .iter()
            .map(|r| r.uuid.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(refs(&t), [a.clone(), b.clone()]);
    assert_eq!(t.sim().vips()[0].use_for.as_deref(), Some("LoadBalancer"));
    call(
        &t,
        &s,
        Method::DELETE,
        &format!("/load-balancers/{a}"),
        &[],
        None,
    )
    .await;
    assert_eq!(refs(&t), std::slice::from_ref(&b));
    assert_eq!(t.sim().vips()[0].use_for.as_deref(), Some("LoadBalancer"));
    // Listener tags: system tags are stored, user tags are not (the MN's create path).
    let body = json!({"params": {"name": "l", "loadBalancerPort": 6443}, "userTags": ["kprov::l"], "systemTags": ["x::y"]});
    let li = uuid(
        &call(
            &t,
            &s,
            Method::POST,
            &format!("/load-balancers/{b}/listeners"),
            &[],
            Some(body),
        )
        .await,
    );
    assert!(t
        .list("/user-tags", &s, &[&format!("resourceUuid={li}")])
        .await
        .is_empty());
    let sys = t
        .list("/system-tags", &s, &[&format!("resourceUuid={li}")])
        .await;
    assert_eq!(sys.len(), 1);
    assert_eq!(sys[0]["resourceType"], "LoadBalancerListenerVO");
    assert_eq!(sys[0]["tag"], "x::y");
    // User tags can still be added to a listener through the tag API.
    let tag = json!({"params": {"resourceType": "LoadBalancerListenerVO", "resourceUuid": li, "tag": "kprov::l"}});
    assert_eq!(
        call(&t, &s, Method::POST, "/user-tags", &[], Some(tag))
            .await
            .status,
        200
    );
    call(
        &t,
        &s,
        Method::DELETE,
        &format!("/load-balancers/{b}"),
        &[],
        None,
    )
    .await;
    assert!(t.sim().vips()[0].use_for.is_none());
    assert!(
        t.list("/system-tags", &s, &[&format!("resourceUuid={li}")])
            .await
            .is_empty(),
        "tags go with the listener"
    );
}

#[tokio::test]
async fn state_persists_and_vip_addresses_are_not_free() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || SimConfig {
        state_file: Some(dir.path().join("zs.json")),
        ..fast()
    };
    let t = Target::start_sim(cfg()).await;
    let s = t.login().await;
    let k8s = t.sim().uuid_of("k8s-net").unwrap();
    let v = uuid(&vip(&t, &s, &k8s, json!({})).await);
    let l = uuid(&lb(&t, &s, &v).await);
    let li = uuid(&listener(&t, &s, &l, json!({"name": "a", "loadBalancerPort": 6443})).await);
    let (_, n1) = vm_on(&t, &s, "k8s-net", "a").await;
    let r = call(
        &t,
        &s,
        Method::POST,
        &nics(&li),
        &[],
        Some(json!({"params": {"vmNicUuids": [n1]}})),
    )
    .await;
    let id1 = r.json["inventory"]["vmNicRefs"][0]["id"].as_u64().unwrap();
    let free = t
        .get(
            &format!("/l3-networks/{k8s}/ip/free"),
            &s,
            &[("limit", "1")],
        )
        .await;
    assert_eq!(
        free.json["inventories"][0]["ip"], "172.20.0.12",
        "neither the VIP's nor the NIC's: {}",
        free.text
    );
    let Target { sim, .. } = t;
    sim.unwrap().shutdown().await;

    let t = Target::start_sim(cfg()).await;
    let (_, n2) = vm_on(&t, &s, "k8s-net", "b").await;
    let r = call(
        &t,
        &s,
        Method::POST,
        &nics(&li),
        &[],
        Some(json!({"params": {"vmNicUuids": [n2]}})),
    )
    .await;
    let refs = r.json["inventory"]["vmNicRefs"].as_array().unwrap().clone();
    assert_eq!(refs.len(), 2, "{}", r.text);
    assert!(
        refs[1]["id"].as_u64().unwrap() > id1,
        "ref ids keep counting after a restart"
    );
    assert_eq!(t.sim().vips()[0].services_refs[0].uuid, l);
}

#[tokio::test]
async fn joins_stats_faults_and_job_uuid() {
    let t = Target::start_sim(fast()).await;
    let s = t.login().await;
    let k8s = t.sim().uuid_of("k8s-net").unwrap();
    let v = uuid(&vip(&t, &s, &k8s, json!({})).await);
    let l = uuid(&lb(&t, &s, &v).await);
    let li = uuid(&listener(&t, &s, &l, json!({"name": "a", "loadBalancerPort": 6443})).await);
    let (_, nic) = vm_on(&t, &s, "k8s-net", "a").await;
    call(
        &t,
        &s,
        Method::POST,
        &nics(&li),
        &[],
        Some(json!({"params": {"vmNicUuids": [nic]}})),
    )
    .await;
    // Dotted joins into the embedded lists, and the reference joins.
    let by_port = t
        .list("/load-balancers", &s, &["listeners.loadBalancerPort=6443"])
        .await;
    assert_eq!(by_port.len(), 1);
    let by_nic = t
        .list(
            "/load-balancers/listeners",
            &s,
            &[&format!("vmNicRefs.vmNicUuid={nic}")],
        )
        .await;
    assert_eq!(by_nic[0]["uuid"], li.as_str());
    let by_ip = t.list("/load-balancers", &s, &["vip.ip=172.20.0.10"]).await;
    assert_eq!(by_ip.len(), 1);
    assert_eq!(
        t.list("/vips", &s, &[&format!("servicesRefs.uuid={l}")])
            .await
            .len(),
        1
    );
    assert_eq!(
        t.list(
            "/vips",
            &s,
            &["useFor=LoadBalancer", "l3Network.name=k8s-net"]
        )
        .await
        .len(),
        1
    );
    let bad = t.get("/load-balancers", &s, &[("q", "nope=1")]).await;
    assert_eq!(
        bad.status, 503,
        "unknown fields fail as on the MN: {}",
        bad.text
    );

    let st = t.sim().stats();
    for (m, p) in [
        ("POST", "/zstack/v1/vips"),
        ("POST", "/zstack/v1/load-balancers"),
        ("POST", "/zstack/v1/load-balancers/{uuid}/listeners"),
        (
            "POST",
            "/zstack/v1/load-balancers/listeners/{uuid}/vm-instances/nics",
        ),
        ("GET", "/zstack/v1/load-balancers/listeners"),
    ] {
        assert_eq!(st.count(m, p), 1, "{m} {p}: {:?}", st.calls);
    }

    // A job fault on the listener path fails the call without creating anything.
    t.sim()
        .add_fault(
            FaultRule::job_fails("SYS.1006")
                .method("POST")
                .path("/listeners$"),
        )
        .unwrap();
    let r = listener(&t, &s, &l, json!({"name": "b", "loadBalancerPort": 443})).await;
    assert_eq!(err(&r).0, "SYS.1006");
    assert_eq!(t.sim().load_balancers()[0].listeners.len(), 1);

    // X-Job-UUID: the job is polled under the client's id; reusing it is a 400.
    let id = random_hex32();
    let body = json!({"params": {"name": "v2", "l3NetworkUuid": k8s}});
    let sent = t
        .send(
            Method::POST,
            "/vips",
            Some(&s),
            &[],
            Some(&body),
            &[("X-Job-UUID", &id)],
        )
        .await
        .unwrap();
    assert_eq!(sent.status, 202);
    let (done, _) = t.poll_id(&id, Duration::from_secs(5)).await;
    assert_eq!(done.json["inventory"]["ip"], "172.20.0.12", "{}", done.text);
    let again = t
        .send(
            Method::DELETE,
            &format!("/vips/{v}"),
            Some(&s),
            &[],
            None,
            &[("X-Job-UUID", &id)],
        )
        .await
        .unwrap();
    assert_eq!(again.status, 400);
    assert_eq!(t.sim().vips().len(), 2, "the refused delete did not run");
}
