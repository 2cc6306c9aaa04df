//! Simulator behaviour beyond the §12 checks: persistence, every fault knob, PCI exclusivity,
//! placement, paging, the state machine, headers, AccessKey auth and the binary.

use kprov_testkit::zstack_sim::*;
use kprov_zstack_sim::{FaultAction, FaultRule, SimConfig, Simulator, DEFAULT_FOREIGN_HOST};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn fast() -> SimConfig {
    SimConfig {
        job_delay: Duration::from_millis(20),
        ..SimConfig::default()
    }
}

async fn setup(cfg: SimConfig) -> (Target, String) {
    let t = Target::start_sim(cfg).await;
    let s = t.login().await;
    (t, s)
}

fn fixtures(t: &Target, arch: &str) -> Fixtures {
    let sim = t.sim();
    let image = if arch == "aarch64" {
        "ubuntu-22.04-arm64"
    } else {
        "ubuntu-22.04-amd64"
    };
    Fixtures {
        image: sim.uuid_of(image).unwrap(),
        image_arch: arch.into(),
        offering: sim.uuid_of("small").unwrap(),
        l3: sim.uuid_of("k8s-net").unwrap(),
    }
}

async fn create(t: &Target, s: &str, body: &Value) -> JobReply {
    t.job(Method::POST, "/vm-instances", s, &[], Some(body))
        .await
}

#[tokio::test]
async fn state_persists_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("zstack.json");
    let cfg = || SimConfig {
        state_file: Some(file.clone()),
        ..fast()
    };
    let t = Target::start_sim(cfg()).await;
    let s = t.login().await;
    let fx = fixtures(&t, "aarch64");
    let a = create(&t, &s, &create_body(&fx, "persist-a", "InstantStart", None)).await;
    assert_eq!(a.done.status, 200, "{}", a.done.text);
    let vm = a.done.json["inventory"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let ip = a.done.json["inventory"]["vmNics"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let job = a.job_id.clone();
    let Target { sim, .. } = t;
    sim.unwrap().shutdown().await;
    assert!(file.exists());

    let t = Target::start_sim(cfg()).await;
    assert_eq!(t.sim().vm_count(), 1);
    let inv = t
        .vm(&s, &vm)
        .await
        .expect("the VM survived the restart (and so did the session)");
    assert_eq!(inv["state"], "Running");
    let (old, _) = t.poll_id(&job, Duration::from_secs(5)).await;
    assert_eq!(
        old.status, 200,
        "completed job results survive: {}",
        old.text
    );
    let b = create(&t, &s, &create_body(&fx, "persist-b", "InstantStart", None)).await;
    assert_eq!(b.done.status, 200, "{}", b.done.text);
    assert_ne!(
        b.done.json["inventory"]["vmNics"][0]["ip"]
            .as_str()
            .unwrap(),
        ip,
        "allocated IPs survive"
    );
    // The file is complete JSON after every mutation (atomic rename).
    let text = std::fs::read_to_string(&file).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["vms"].as_array().unwrap().len(), 2);
    assert!(
        !std::fs::read_dir(dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp")),
        "no temp file left behind"
    );
}

#[tokio::test]
async fn fault_fail_nth_call() {
    let (t, s) = setup(fast()).await;
    t.sim()
        .add_fault(
            FaultRule::fail(418, "SIM.0001")
                .method("GET")
                .path("^/zstack/v1/zones$")
                .nth(2),
        )
        .unwrap();
    assert_eq!(t.get("/zones", &s, &[]).await.status, 200);
    let r = t.get("/zones", &s, &[]).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.json["error"]["code"], "SIM.0001");
    assert_eq!(
        t.get("/zones", &s, &[]).await.status,
        200,
        "fires once by default"
    );
    assert_eq!(
        t.get("/hosts", &s, &[]).await.status,
        200,
        "other paths unaffected"
    );
    let log = t.sim().fault_log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].kind, "fail");
    assert_eq!(log[0].path, "/zstack/v1/zones");
}

#[tokio::test]
async fn fault_fail_does_not_execute_the_call() {
    let (t, s) = setup(fast()).await;
    t.sim()
        .add_fault(
            FaultRule::fail(503, "SYS.1006")
                .method("POST")
                .path("vm-instances$"),
        )
        .unwrap();
    let fx = fixtures(&t, "x86_64");
    let r = t
        .req(
            Method::POST,
            "/vm-instances",
            Some(&s),
            &[],
            Some(&create_body(&fx, "x", "InstantStart", None)),
        )
        .await;
    assert_eq!(r.status, 503);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(t.sim().vm_count(), 0);
}

#[tokio::test]
async fn fault_unavailable_burst_by_count() {
    let (t, s) = setup(fast()).await;
    t.sim().add_fault(FaultRule::unavailable_calls(3)).unwrap();
    for _ in 0..3 {
        let r = t.get("/zones", &s, &[]).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.json["error"]["code"], "SYS.1012");
    }
    assert_eq!(t.get("/zones", &s, &[]).await.status, 200);
    assert_eq!(t.sim().fault_log().len(), 3);
}

#[tokio::test]
async fn fault_unavailable_for_a_duration() {
    let (t, s) = setup(fast()).await;
    t.sim()
        .add_fault(FaultRule::unavailable_for(Duration::from_millis(400)))
        .unwrap();
    let mut n = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(250) {
        assert_eq!(t.get("/zones", &s, &[]).await.status, 503);
        n += 1;
    }
    assert!(n >= 2, "unlimited within the window");
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(t.get("/zones", &s, &[]).await.status, 200);
}

#[tokio::test]
async fn fault_internal_error_is_plain_text() {
    let (t, s) = setup(fast()).await;
    t.sim()
        .add_fault(FaultRule::internal_error().path("/hosts"))
        .unwrap();
    let r = t.get("/hosts", &s, &[]).await;
    assert_eq!(r.status, 500);
    assert!(r.json.is_string(), "plain text: {}", r.text);
    assert!(r
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
}

#[tokio::test]
async fn fault_job_delay_per_api() {
    let (t, s) = setup(fast()).await;
    t.sim()
        .add_fault(FaultRule::job_delay(600, 0).method("PUT").path("/actions$"))
        .unwrap();
    let fx = fixtures(&t, "x86_64");
    let c = create(&t, &s, &create_body(&fx, "d", "CreateStopped", None)).await;
    assert_eq!(c.done.status, 200);
    let vm = c.done.json["inventory"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let start = Instant::now();
    let j = t.action(&s, &vm, json!({"startVmInstance": {}})).await;
    assert_eq!(j.done.status, 200);
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
    assert!(j.saw_running);
    let log = t.sim().fault_log();
    assert!(log.iter().any(|e| e.kind == "job_delay"), "{log:?}");
}

#[tokio::test]
async fn fault_job_never_finishes() {
    let (t, s) = setup(fast()).await;
    let fx = fixtures(&t, "x86_64");
    // Stuck without executing: 202 forever, nothing created.
    t.sim()
        .add_fault(FaultRule::job_never_finishes(false, None).method("POST"))
        .unwrap();
    let r = t
        .req(
            Method::POST,
            "/vm-instances",
            Some(&s),
            &[],
            Some(&create_body(&fx, "n1", "InstantStart", None)),
        )
        .await;
    assert_eq!(r.status, 202);
    let loc = r.json["location"].as_str().unwrap().to_string();
    let id = loc.rsplit('/').next().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = t
        .req(Method::GET, &format!("/api-jobs/{id}"), None, &[], None)
        .await;
    assert_eq!(p.status, 202);
    assert_eq!(t.sim().vm_count(), 0);

    // Executes but never reports, then times out with SYS.1001.
    t.sim()
        .add_fault(FaultRule::job_never_finishes(true, Some(400)).method("POST"))
        .unwrap();
    let rid = random_hex32();
    let start = Instant::now();
    let j = create(&t, &s, &create_body(&fx, "n2", "InstantStart", Some(&rid))).await;
    assert_eq!(j.done.status, 503, "{}", j.done.text);
    assert_eq!(j.done.json["error"]["code"], "SYS.1001");
    assert!(start.elapsed() >= Duration::from_millis(400));
    let vm = t
        .vm(&s, &rid)
        .await
        .expect("the VM was created although the job never said so");
    assert_eq!(vm["state"], "Running");
}

#[tokio::test]
async fn fault_job_fails_with_chosen_code() {
    let (t, s) = setup(fast()).await;
    t.sim()
        .add_fault(FaultRule::job_fails("SYS.1006").path("vm-instances$"))
        .unwrap();
    let fx = fixtures(&t, "x86_64");
    let j = create(&t, &s, &create_body(&fx, "f", "InstantStart", None)).await;
    assert_eq!(j.done.status, 503);
    assert_eq!(j.done.json["error"]["code"], "SYS.1006");
    assert_eq!(t.sim().vm_count(), 0, "the operation was not performed");
    let j = create(&t, &s, &create_body(&fx, "f", "InstantStart", None)).await;
    assert_eq!(j.done.status, 200, "fires once by default");
}

/// `expire_sessions` naming a call fires when that call arrives: the call itself already
/// fails `ID.1001` (503 on a GET, a failed job on an async call), and the stats show the
/// expiry, the refusal, and a new login used afterwards.
#[tokio::test]
async fn fault_expire_sessions_at_the_nth_call() {
    let (t, s) = setup(fast()).await;
    t.sim()
        .add_fault(
            FaultRule::new(FaultAction::ExpireSessions)
                .method("GET")
                .path("^/zstack/v1/zones$")
                .nth(2),
        )
        .unwrap();
    assert_eq!(
        t.sim().stats().expiries,
        0,
        "a rule naming a call waits for it"
    );
    assert_eq!(t.get("/zones", &s, &[]).await.status, 200);
    assert_eq!(t.get("/clusters", &s, &[]).await.status, 200, "not matched");
    let r = t.get("/zones", &s, &[]).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "ID.1001");
    let log = t.sim().fault_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].kind, "expire_sessions");
    assert_eq!(log[0].path, "/zstack/v1/zones");
    assert!(log[0].detail.starts_with("1 sessions expired"), "{log:?}");
    let st = t.sim().stats();
    assert_eq!(
        (st.expiries, st.sessions_expired, st.session_refusals),
        (1, 1, 1)
    );
    assert_eq!(
        (st.logins_since_expiry, st.session_calls_since_expiry),
        (0, 0)
    );
    let s2 = t.login().await;
    assert_eq!(t.get("/zones", &s2, &[]).await.status, 200, "fires once");
    let st = t.sim().stats();
    assert_eq!((st.logins, st.logins_since_expiry), (2, 1));
    assert_eq!((st.session_calls, st.session_calls_since_expiry), (3, 1));

    // On an async call: accepted, then the job fails ID.1001; nothing is created.
    t.sim()
        .add_fault(FaultRule::new(FaultAction::ExpireSessions).method("POST"))
        .unwrap();
    let fx = fixtures(&t, "x86_64");
    let j = create(&t, &s2, &create_body(&fx, "late", "InstantStart", None)).await;
    assert_eq!(j.done.status, 503, "{}", j.done.text);
    assert_eq!(j.done.json["error"]["code"], "ID.1001");
    assert_eq!(t.sim().vm_count(), 0);
    // Only immediate kinds are refused matchers.
    let bad = FaultRule::new(FaultAction::SessionTtl { ttl_secs: Some(1) }).nth(2);
    assert!(t.sim().add_fault(bad).is_err());
}

#[tokio::test]
async fn fault_expire_sessions_and_ttl_override() {
    let (t, s) = setup(fast()).await;
    assert_eq!(t.get("/zones", &s, &[]).await.status, 200);
    t.sim().expire_sessions();
    let r = t.get("/zones", &s, &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json["error"]["code"], "ID.1001");
    let v = t
        .req(
            Method::GET,
            &format!("/accounts/sessions/{s}/valid"),
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(v.json, json!({"valid": false}));
    // Async calls with a dead session are accepted, then fail.
    let fx = fixtures(&t, "x86_64");
    let j = create(&t, &s, &create_body(&fx, "x", "InstantStart", None)).await;
    assert_eq!(j.done.status, 503);
    assert_eq!(j.done.json["error"]["code"], "ID.1001");

    let s2 = t.login().await;
    t.sim().set_session_ttl(Some(Duration::from_secs(1)));
    assert_eq!(t.get("/zones", &s2, &[]).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        t.get("/zones", &s2, &[]).await.status,
        503,
        "TTL override applies to existing sessions"
    );
    t.sim().set_session_ttl(None);
    assert_eq!(
        t.get("/zones", &s2, &[]).await.status,
        200,
        "restoring the TTL revives it"
    );
}

#[tokio::test]
async fn fault_drop_response_then_recover_with_job_uuid() {
    let (t, s) = setup(fast()).await;
    t.sim()
        .add_fault(
            FaultRule::drop_response()
                .method("POST")
                .path("vm-instances$"),
        )
        .unwrap();
    let fx = fixtures(&t, "x86_64");
    let rid = random_hex32();
    let job = random_hex32();
    let body = create_body(&fx, "lost", "InstantStart", Some(&rid));
    let err = t
        .send(
            Method::POST,
            "/vm-instances",
            Some(&s),
            &[],
            Some(&body),
            &[("X-Job-UUID", &job)],
        )
        .await;
    assert!(
        err.is_err(),
        "the connection is closed without a response: {err:?}"
    );
    // The call was executed: the job exists and completes.
    let (done, _) = t.poll_id(&job, Duration::from_secs(5)).await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(done.json["inventory"]["uuid"], rid.as_str());
    // A retry with the same job id is refused; with the same resourceUuid it fails SYS.1000.
    let again = t
        .send(
            Method::POST,
            "/vm-instances",
            Some(&s),
            &[],
            Some(&body),
            &[("X-Job-UUID", &job)],
        )
        .await
        .unwrap();
    assert_eq!(again.status, 400);
    assert!(again.text.contains("Duplicate job uuid"), "{}", again.text);
    assert_eq!(t.sim().vm_count(), 1);
    assert_eq!(t.sim().fault_log()[0].kind, "drop_response");
}

#[tokio::test]
async fn fault_latency() {
    let (t, s) = setup(fast()).await;
    t.sim()
        .add_fault(FaultRule::latency(300, 0).path("/zones"))
        .unwrap();
    let start = Instant::now();
    assert_eq!(t.get("/zones", &s, &[]).await.status, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
    let start = Instant::now();
    assert_eq!(t.get("/zones", &s, &[]).await.status, 200);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "latency applies to every call"
    );
    let start = Instant::now();
    assert_eq!(t.get("/hosts", &s, &[]).await.status, 200);
    assert!(start.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn fault_foreign_location() {
    let (t, s) = setup(fast()).await;
    t.sim()
        .add_fault(FaultRule::foreign_location(None))
        .unwrap();
    let fx = fixtures(&t, "x86_64");
    let r = t
        .req(
            Method::POST,
            "/vm-instances",
            Some(&s),
            &[],
            Some(&create_body(&fx, "l", "InstantStart", None)),
        )
        .await;
    assert_eq!(r.status, 202);
    let loc = r.json["location"].as_str().unwrap();
    assert!(
        loc.starts_with(&format!(
            "http://{DEFAULT_FOREIGN_HOST}/zstack/v1/api-jobs/"
        )),
        "{loc}"
    );
    // Rewriting onto our endpoint works (Target::poll splits on /zstack/v1/api-jobs).
    let (done, _) = t.poll(loc).await;
    assert_eq!(done.status, 200);
}

#[tokio::test]
async fn control_api_over_http() {
    let (t, s) = setup(fast()).await;
    let c = client();
    let base = t.endpoint.clone();
    let rules = json!([
        {"kind": "fail", "method": "GET", "path": "^/zstack/v1/zones$", "status": 409, "code": "SIM.409", "times": 2},
        {"kind": "unavailable", "path": "/hosts", "nth": 2}
    ]);
    let r = c
        .post(format!("{base}/_sim/faults"))
        .json(&rules)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ids: Value = r.json().await.unwrap();
    assert_eq!(ids["ids"].as_array().unwrap().len(), 2);
    let bad = c
        .post(format!("{base}/_sim/faults"))
        .json(&json!({"kind": "fail", "path": "(", "status": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad = c
        .post(format!("{base}/_sim/faults"))
        .json(&json!({"kind": "no_such_kind"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    assert_eq!(t.get("/zones", &s, &[]).await.status, 409);
    assert_eq!(t.get("/zones", &s, &[]).await.status, 409);
    assert_eq!(t.get("/zones", &s, &[]).await.status, 200);
    assert_eq!(t.get("/hosts", &s, &[]).await.status, 200);
    assert_eq!(t.get("/hosts", &s, &[]).await.status, 503);

    let listed: Value = c
        .get(format!("{base}/_sim/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["rules"][0]["fired"], 2);
    assert_eq!(listed["rules"][0]["seen"], 3);
    let log: Value = c
        .get(format!("{base}/_sim/faults/log"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log.as_array().unwrap().len(), 3);

    // Immediate actions through the same endpoint.
    c.post(format!("{base}/_sim/faults"))
        .json(&json!({"kind": "expire_sessions"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        t.get("/clusters", &s, &[]).await.json["error"]["code"],
        "ID.1001"
    );

    let stats: Value = c
        .get(format!("{base}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["calls"]["GET /zstack/v1/zones"], 3);
    assert_eq!(stats["calls"]["PUT /zstack/v1/accounts/login"], 1);
    assert_eq!(stats["total"], 7);

    let d = c
        .delete(format!("{base}/_sim/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(d.status(), 200);
    let s2 = t.login().await;
    assert_eq!(t.get("/hosts", &s2, &[]).await.status, 200);
    let listed: Value = c
        .get(format!("{base}/_sim/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["rules"], json!([]));
    c.delete(format!("{base}/_sim/stats")).send().await.unwrap();
    assert_eq!(t.sim().stats().total, 0);
}

#[tokio::test]
async fn pci_exclusivity() {
    let (t, s) = setup(fast()).await;
    let fx = fixtures(&t, "aarch64");
    let spec = t.sim().uuid_of("NVIDIA A100 PCIe 40GB").unwrap();
    let gpu_body = |name: &str| {
        let mut b = create_body(&fx, name, "InstantStart", None);
        b["systemTags"] = json!([format!("pciDeviceSpec::{spec}::4")]);
        b
    };
    // Three concurrent creates want 4 A100s each; only two hosts have 4.
    let (b1, b2, b3) = (gpu_body("g1"), gpu_body("g2"), gpu_body("g3"));
    let (a, b, c) = tokio::join!(
        create(&t, &s, &b1),
        create(&t, &s, &b2),
        create(&t, &s, &b3)
    );
    let mut ok = Vec::new();
    let mut failed = 0;
    for j in [a, b, c] {
        if j.done.status == 200 {
            ok.push(j.done.json["inventory"].clone());
        } else {
            failed += 1;
            assert_eq!(j.done.json["error"]["code"], "SYS.1006", "{}", j.done.text);
        }
    }
    assert_eq!((ok.len(), failed), (2, 1));
    assert_eq!(
        t.sim().vm_count(),
        2,
        "the failed create left nothing behind"
    );
    let devs = t.sim().pci_devices();
    for vm in &ok {
        let uuid = vm["uuid"].as_str().unwrap();
        let mine: Vec<_> = devs
            .iter()
            .filter(|d| d.vm_instance_uuid.as_deref() == Some(uuid))
            .collect();
        assert_eq!(mine.len(), 4);
        assert!(mine
            .iter()
            .all(|d| Some(&d.host_uuid) == vm["hostUuid"].as_str().map(str::to_string).as_ref()));
        assert!(mine.iter().all(|d| d.status == "Attached"));
    }
    // A named device that is already claimed cannot be claimed again.
    let taken = devs
        .iter()
        .find(|d| d.vm_instance_uuid.is_some())
        .unwrap()
        .uuid
        .clone();
    let mut b = create_body(&fx, "g4", "InstantStart", None);
    b["systemTags"] = json!([format!("pciDevice::{taken}")]);
    let j = create(&t, &s, &b).await;
    assert_eq!(j.done.status, 503);
    assert_eq!(j.done.json["error"]["code"], "SYS.1006");
    // Attach of a claimed device to another VM fails; query shows the owner.
    let plain = create(&t, &s, &create_body(&fx, "plain", "CreateStopped", None)).await;
    let pv = plain.done.json["inventory"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let at = t
        .job(
            Method::POST,
            &format!("/pci-device/pci-devices/{taken}/attach"),
            &s,
            &[],
            Some(&json!({"params": {"vmInstanceUuid": pv}})),
        )
        .await;
    assert_eq!(at.done.status, 503);
    // mdev-split T4s are not passthrough devices.
    let t4 = devs
        .iter()
        .find(|d| d.virt_status == "VFIO_MDEV_VIRTUALIZED")
        .unwrap()
        .uuid
        .clone();
    let mut b = create_body(&fx, "t4", "InstantStart", None);
    b["systemTags"] = json!([format!("pciDevice::{t4}")]);
    assert_eq!(create(&t, &s, &b).await.done.status, 503);
    // ...but their vGPU slices can be claimed by spec.
    let mdev_spec = t.sim().uuid_of("GRID T4-4Q").unwrap();
    let mut b = create_body(&fx, "vgpu", "InstantStart", None);
    b["systemTags"] = json!([format!("mdevDeviceSpec::{mdev_spec}::2")]);
    let vg = create(&t, &s, &b).await;
    assert_eq!(vg.done.status, 200, "{}", vg.done.text);
    let vgu = vg.done.json["inventory"]["uuid"].as_str().unwrap();
    let mdevs = t
        .list("/mdev-devices", &s, &[&format!("vmInstanceUuid={vgu}")])
        .await;
    assert_eq!(mdevs.len(), 2);
    // Expunge frees the devices.
    let owner = ok[0]["uuid"].as_str().unwrap();
    t.cleanup_vm(&s, owner).await;
    let freed = t
        .list(
            "/pci-device/pci-devices",
            &s,
            &[&format!("vmInstanceUuid={owner}")],
        )
        .await;
    assert!(freed.is_empty());
    let j = create(&t, &s, &gpu_body("g5")).await;
    assert_eq!(
        j.done.status, 200,
        "freed GPUs are claimable again: {}",
        j.done.text
    );
}

#[tokio::test]
async fn pci_attach_detach_and_spec_endpoint() {
    let (t, s) = setup(fast()).await;
    let fx = fixtures(&t, "aarch64");
    let c = create(&t, &s, &create_body(&fx, "p", "CreateStopped", None)).await;
    let vm = c.done.json["inventory"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let spec = t.sim().uuid_of("NVIDIA A100 PCIe 40GB").unwrap();
    let r = t
        .job(
            Method::POST,
            &format!("/pci-device-specs/{spec}/vm-instances/{vm}"),
            &s,
            &[],
            Some(&json!({"params": {"pciDeviceNumber": 2}})),
        )
        .await;
    assert_eq!(r.done.status, 200, "{}", r.done.text);
    let mine = t
        .list(
            "/pci-device/pci-devices",
            &s,
            &[&format!("vmInstanceUuid={vm}")],
        )
        .await;
    assert_eq!(mine.len(), 2);
    let dev = mine[0]["uuid"].as_str().unwrap().to_string();
    let d = t
        .job(
            Method::POST,
            &format!("/pci-device/pci-devices/{dev}/detach"),
            &s,
            &[],
            Some(&json!({"params": {"vmInstanceUuid": vm}})),
        )
        .await;
    assert_eq!(d.done.status, 200);
    assert!(d.done.json["inventory"]["vmInstanceUuid"].is_null());
    assert_eq!(d.done.json["inventory"]["status"], "Active");
    // The VM starts on the host holding its remaining device.
    let st = t.action(&s, &vm, json!({"startVmInstance": {}})).await;
    assert_eq!(st.done.status, 200, "{}", st.done.text);
    assert_eq!(st.done.json["inventory"]["hostUuid"], mine[1]["hostUuid"]);
    // A device on another host cannot join a running VM.
    let other_host = t
        .list(
            "/pci-device/pci-devices",
            &s,
            &[
                "vmInstanceUuid is null",
                "type=GPU_3D_Controller",
                "virtStatus=UNVIRTUALIZABLE",
            ],
        )
        .await
        .into_iter()
        .find(|x| x["hostUuid"] != mine[1]["hostUuid"])
        .unwrap();
    let a = t
        .job(
            Method::POST,
            &format!(
                "/pci-device/pci-devices/{}/attach",
                other_host["uuid"].as_str().unwrap()
            ),
            &s,
            &[],
            Some(&json!({"params": {"vmInstanceUuid": vm}})),
        )
        .await;
    assert_eq!(a.done.status, 503);
    let cand = t
        .get(
            &format!("/vm-instances/{vm}/candidate-pci-devices"),
            &s,
            &[],
        )
        .await;
    let cands = cand.json["inventories"].as_array().unwrap();
    assert!(!cands.is_empty());
    assert!(cands.iter().all(|x| x["hostUuid"] == mine[1]["hostUuid"]));
}

#[tokio::test]
async fn placement_by_architecture_and_capacity() {
    let (t, s) = setup(fast()).await;
    let sim = t.sim();
    let arm = fixtures(&t, "aarch64");
    let x86 = fixtures(&t, "x86_64");
    let host_arch = |h: &str| {
        let hosts = [
            "arm-host-1",
            "arm-host-2",
            "arm-host-3",
            "arm-host-4",
            "x86-host-1",
            "x86-host-2",
        ];
        hosts
            .iter()
            .find(|n| sim.uuid_of(n).as_deref() == Some(h))
            .map(|n| {
                if n.starts_with("arm") {
                    "aarch64"
                } else {
                    "x86_64"
                }
            })
            .unwrap()
    };
    let a = create(&t, &s, &create_body(&arm, "arm", "InstantStart", None)).await;
    assert_eq!(a.done.json["inventory"]["architecture"], "aarch64");
    assert_eq!(
        host_arch(a.done.json["inventory"]["hostUuid"].as_str().unwrap()),
        "aarch64"
    );
    let b = create(&t, &s, &create_body(&x86, "x86", "InstantStart", None)).await;
    assert_eq!(
        host_arch(b.done.json["inventory"]["hostUuid"].as_str().unwrap()),
        "x86_64"
    );
    t.cleanup_vm(&s, b.done.json["inventory"]["uuid"].as_str().unwrap())
        .await;

    // Fill the x86 cluster: 2 hosts x 128 GiB fit four 64 GiB VMs.
    let mut xl = x86.clone();
    xl.offering = sim.uuid_of("xlarge").unwrap();
    for i in 0..4 {
        let j = create(
            &t,
            &s,
            &create_body(&xl, &format!("xl{i}"), "InstantStart", None),
        )
        .await;
        assert_eq!(j.done.status, 200, "{}", j.done.text);
    }
    let hosts = t.list("/hosts", &s, &["architecture=x86_64"]).await;
    assert!(
        hosts.iter().all(|h| h["availableMemoryCapacity"] == 0),
        "{hosts:?}"
    );
    assert!(hosts.iter().all(|h| h["availableCpuCapacity"] == 0));
    let full = create(
        &t,
        &s,
        &create_body(&xl, "xl-too-many", "InstantStart", None),
    )
    .await;
    assert_eq!(full.done.status, 503);
    let err = &full.done.json["error"];
    assert_eq!(err["code"], "SYS.1006");
    assert_eq!(err["cause"]["code"], "HOST_ALLOCATION.1001");
    assert!(err["details"].as_str().unwrap().contains("x86_64"), "{err}");
    // The arm cluster still has room for the same offering with an arm image.
    let mut xla = arm.clone();
    xla.offering = xl.offering.clone();
    assert_eq!(
        create(&t, &s, &create_body(&xla, "xla", "InstantStart", None))
            .await
            .done
            .status,
        200
    );
    // Pinning to a host of the wrong architecture fails clearly.
    let mut body = create_body(&arm, "pinned", "InstantStart", None);
    body["params"]["hostUuid"] = json!(sim.uuid_of("x86-host-1").unwrap());
    let p = create(&t, &s, &body).await;
    assert_eq!(p.done.status, 503);
    assert!(p.done.json["error"]["details"]
        .as_str()
        .unwrap()
        .contains("architecture[aarch64]"));
    // A stopped VM releases capacity (hostUuid cleared, lastHostUuid kept).
    let x0 = t.list("/vm-instances", &s, &["name=xl0"]).await[0].clone();
    let stop = t
        .action(
            &s,
            x0["uuid"].as_str().unwrap(),
            json!({"stopVmInstance": {"type": "cold"}}),
        )
        .await;
    assert!(stop.done.json["inventory"]["hostUuid"].is_null());
    assert_eq!(stop.done.json["inventory"]["lastHostUuid"], x0["hostUuid"]);
    assert_eq!(
        create(
            &t,
            &s,
            &create_body(&xl, "xl-fits-now", "InstantStart", None)
        )
        .await
        .done
        .status,
        200
    );
    let start = t
        .action(
            &s,
            x0["uuid"].as_str().unwrap(),
            json!({"startVmInstance": {}}),
        )
        .await;
    assert_eq!(start.done.status, 503, "no room to restart it now");
}

#[tokio::test]
async fn query_paging_sorting_fields_and_joins() {
    let (t, s) = setup(fast()).await;
    // Paging over the 10 seeded PCI devices, 4 at a time.
    let mut seen = Vec::new();
    for start in [0, 4, 8] {
        let st = start.to_string();
        let r = t
            .get(
                "/pci-device/pci-devices",
                &s,
                &[
                    ("limit", "4"),
                    ("start", &st),
                    ("sort", "+name"),
                    ("replyWithCount", "true"),
                ],
            )
            .await;
        assert_eq!(r.json["total"], 10);
        let page = r.json["inventories"].as_array().unwrap();
        assert_eq!(page.len(), if start == 8 { 2 } else { 4 });
        seen.extend(page.iter().map(|d| d["name"].as_str().unwrap().to_string()));
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages follow the sort order");
    sorted.dedup();
    assert_eq!(sorted.len(), 10, "no duplicates across pages");
    let desc = t
        .get(
            "/instance-offerings",
            &s,
            &[("sort", "-memorySize"), ("limit", "1")],
        )
        .await;
    assert_eq!(desc.json["inventories"][0]["name"], "xlarge");
    let bad = t.get("/hosts", &s, &[("limit", "ten")]).await;
    assert_eq!(bad.status, 400);
    let unknown = t.get("/hosts", &s, &[("q", "noSuchField=1")]).await;
    assert_eq!(unknown.status, 503);
    assert_eq!(unknown.json["error"]["code"], "SYS.1007");
    // The 5.x GPU view carries memory/power/serialNumber; numeric filters work on it.
    let big = t
        .list("/gpu-device/gpu-devices", &s, &["memory>=34359738368"])
        .await;
    assert_eq!(big.len(), 8, "the A100s");
    assert!(big
        .iter()
        .all(|g| g["isDriverLoaded"] == true && g["power"] == 250));
    assert_eq!(t.list("/gpu-device/gpu-devices", &s, &[]).await.len(), 10);
    // fields projection
    let f = t.get("/zones", &s, &[("fields", "uuid,name")]).await;
    let z = f.json["inventories"][0].as_object().unwrap();
    assert_eq!(z.len(), 2);
    // numeric comparison, LIKE, not-in
    assert_eq!(
        t.list("/instance-offerings", &s, &["cpuNum>=8"])
            .await
            .len(),
        2
    );
    assert_eq!(t.list("/images", &s, &["name~=%arm%"]).await.len(), 1);
    assert_eq!(
        t.list("/instance-offerings", &s, &["name!?=small,medium"])
            .await
            .len(),
        2
    );
    // The precedence quirk: `!=` is found before `=`, so this is field "name=small" → unknown.
    assert_eq!(
        t.get("/instance-offerings", &s, &[("q", "name=small!=x")])
            .await
            .status,
        503
    );
    // dotted joins and tag pseudo-fields on VMs
    let fx = fixtures(&t, "aarch64");
    let mut body = create_body(&fx, "joined", "InstantStart", None);
    body["systemTags"] = json!(["hostname::node-1"]);
    body["userTags"] = json!(["kprov::cluster::demo"]);
    let j = create(&t, &s, &body).await;
    let inv = &j.done.json["inventory"];
    let ip = inv["vmNics"][0]["ip"].as_str().unwrap();
    assert_eq!(
        t.list("/vm-instances", &s, &[&format!("vmNics.ip={ip}")])
            .await
            .len(),
        1
    );
    assert_eq!(
        t.list("/vm-instances", &s, &["vmNics.ip=10.9.9.9"])
            .await
            .len(),
        0
    );
    assert_eq!(
        t.list("/vm-instances", &s, &["host.architecture=aarch64"])
            .await
            .len(),
        1
    );
    assert_eq!(
        t.list("/vm-instances", &s, &["__systemTag__=hostname::node-1"])
            .await
            .len(),
        1
    );
    assert_eq!(
        t.list("/vm-instances", &s, &["__userTag__~=kprov::cluster::%"])
            .await
            .len(),
        1
    );
    assert_eq!(
        t.list("/vm-instances", &s, &["__userTag__!=kprov::cluster::demo"])
            .await
            .len(),
        0
    );
    let nics = t
        .list(
            "/vm-instances/nics",
            &s,
            &[&format!("vmInstanceUuid={}", inv["uuid"].as_str().unwrap())],
        )
        .await;
    assert_eq!(nics.len(), 1);
    let tags = t
        .list(
            "/user-tags",
            &s,
            &[&format!("resourceUuid={}", inv["uuid"].as_str().unwrap())],
        )
        .await;
    assert_eq!(tags[0]["tag"], "kprov::cluster::demo");
    assert_eq!(tags[0]["resourceType"], "VmInstanceVO");
    let ranges = t.list("/l3-networks/ip-ranges", &s, &[]).await;
    assert_eq!(ranges[0]["startIp"], "172.20.0.10");
    assert_eq!(ranges[0]["networkCidr"], "172.20.0.0/22");
    // Gson timestamps.
    let created = inv["createDate"].as_str().unwrap();
    assert!(
        kprov_zstack_sim::GsonTime::parse(created).is_some(),
        "{created}"
    );
}

#[tokio::test]
async fn state_machine_and_ip_reuse() {
    let (t, s) = setup(SimConfig {
        job_delay: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let fx = fixtures(&t, "aarch64");
    let c = create(&t, &s, &create_body(&fx, "sm", "CreateStopped", None)).await;
    let vm = c.done.json["inventory"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let ip = c.done.json["inventory"]["vmNics"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();

    // Intermediate state is visible while the job runs.
    let r = t
        .req(
            Method::PUT,
            &format!("/vm-instances/{vm}/actions"),
            Some(&s),
            &[],
            Some(&json!({"startVmInstance": {}})),
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(t.vm(&s, &vm).await.unwrap()["state"], "Starting");
    // Operations on one VM are serialized: a stop queued behind the start succeeds.
    let stop = t.action(&s, &vm, json!({"stopVmInstance": {}})).await;
    assert_eq!(stop.done.status, 200, "{}", stop.done.text);
    assert_eq!(stop.done.json["inventory"]["state"], "Stopped");
    let (started, _) = t.poll(r.json["location"].as_str().unwrap()).await;
    assert_eq!(started.json["inventory"]["state"], "Running");

    // Start on Running is a no-op success.
    assert_eq!(
        t.action(&s, &vm, json!({"startVmInstance": {}}))
            .await
            .done
            .status,
        200
    );
    assert_eq!(
        t.action(&s, &vm, json!({"startVmInstance": {}}))
            .await
            .done
            .json["inventory"]["state"],
        "Running"
    );
    // Reboot shows Rebooting.
    let r = t
        .req(
            Method::PUT,
            &format!("/vm-instances/{vm}/actions"),
            Some(&s),
            &[],
            Some(&json!({"rebootVmInstance": {}})),
        )
        .await;
    assert_eq!(t.vm(&s, &vm).await.unwrap()["state"], "Rebooting");
    assert_eq!(
        t.poll(r.json["location"].as_str().unwrap()).await.0.status,
        200
    );
    // Expunge needs Destroyed; recover too.
    let x = t.action(&s, &vm, json!({"expungeVmInstance": {}})).await;
    assert_eq!(x.done.json["error"]["code"], "SYS.1006");
    assert_eq!(x.done.json["error"]["cause"]["code"], "VM.1010");
    let rc = t.action(&s, &vm, json!({"recoverVmInstance": {}})).await;
    assert_eq!(rc.done.status, 503);
    // Destroy shows Destroying, then Destroyed; IPs are kept until expunge.
    let d = t
        .req(
            Method::DELETE,
            &format!("/vm-instances/{vm}"),
            Some(&s),
            &[],
            None,
        )
        .await;
    assert_eq!(t.vm(&s, &vm).await.unwrap()["state"], "Destroying");
    assert_eq!(
        t.poll(d.json["location"].as_str().unwrap()).await.0.status,
        200
    );
    let rc = t.action(&s, &vm, json!({"recoverVmInstance": {}})).await;
    assert_eq!(rc.done.json["inventory"]["state"], "Stopped");
    let d = t
        .job(
            Method::DELETE,
            &format!("/vm-instances/{vm}"),
            &s,
            &[],
            None,
        )
        .await;
    assert_eq!(d.done.status, 200);
    let other = create(&t, &s, &create_body(&fx, "sm2", "CreateStopped", None)).await;
    assert_ne!(
        other.done.json["inventory"]["vmNics"][0]["ip"],
        ip.as_str(),
        "a destroyed VM keeps its IP"
    );
    let x = t.action(&s, &vm, json!({"expungeVmInstance": {}})).await;
    assert_eq!(x.done.status, 200);
    assert_eq!(x.done.json, json!({}));
    let third = create(&t, &s, &create_body(&fx, "sm3", "CreateStopped", None)).await;
    assert_eq!(
        third.done.json["inventory"]["vmNics"][0]["ip"],
        ip.as_str(),
        "expunge frees the IP"
    );
    // Unknown action keys are a 400 from the REST layer.
    let u = t
        .req(
            Method::PUT,
            &format!("/vm-instances/{vm}/actions"),
            Some(&s),
            &[],
            Some(&json!({"flyVmInstance": {}})),
        )
        .await;
    assert_eq!(u.status, 400);
    assert!(u.text.contains("action mapping"));
    let st = t.sim().stats();
    assert_eq!(st.action("startVmInstance"), 3);
    assert!(st.count("GET", "/zstack/v1/api-jobs/{uuid}") > 5);
}

#[tokio::test]
async fn job_headers() {
    let (t, s) = setup(fast()).await;
    let fx = fixtures(&t, "x86_64");
    let body = create_body(&fx, "h", "CreateStopped", None);
    let bad = t
        .send(
            Method::POST,
            "/vm-instances",
            Some(&s),
            &[],
            Some(&body),
            &[("X-Job-UUID", "abc")],
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    let id = random_hex32();
    let ok = t
        .send(
            Method::POST,
            "/vm-instances",
            Some(&s),
            &[],
            Some(&body),
            &[("X-Job-UUID", &id)],
        )
        .await
        .unwrap();
    assert_eq!(ok.status, 202);
    assert!(ok.json["location"].as_str().unwrap().ends_with(&id));
    assert_eq!(
        ok.json["apiTimeout"], 43_200_000,
        "CreateVmInstance has a 12 h timeout"
    );
    let dup = t
        .send(
            Method::DELETE,
            "/vm-instances/x",
            Some(&s),
            &[],
            None,
            &[("X-Job-UUID", &id)],
        )
        .await
        .unwrap();
    assert_eq!(dup.status, 400);
    let short = t
        .send(
            Method::POST,
            "/vm-instances",
            Some(&s),
            &[],
            Some(&body),
            &[("X-API-Timeout", "10")],
        )
        .await
        .unwrap();
    let (done, _) = t.poll(short.json["location"].as_str().unwrap()).await;
    assert_eq!(
        done.json["error"]["code"], "SYS.1007",
        "timeouts below 5 min are rejected"
    );
    assert_eq!(
        t.req(Method::POST, "/api-jobs/x", None, &[], None)
            .await
            .status,
        405
    );
    assert_eq!(
        t.req(Method::GET, "/no-such-thing", Some(&s), &[], None)
            .await
            .status,
        404
    );
    let bad_json = t
        .client
        .post(t.url("/vm-instances"))
        .header("Authorization", format!("OAuth {s}"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    let other = t
        .client
        .get(t.url("/zones"))
        .header("Authorization", "Bearer x")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 400);
    assert!(other.text().await.unwrap().contains("OAuth"));
}

#[tokio::test]
async fn access_key_auth() {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let (t, _) = setup(fast()).await;
    let sign = |secret: &str, method: &str, date: &str, uri: &str| {
        let mut m = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
        m.update(format!("{method}\n{date}\n{uri}").as_bytes());
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    };
    let (id, secret) = (
        "AKSIMKPROVZSTACK0001",
        "SimSecretKeyForKprovZstackSimulator00001",
    );
    let now = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let get = |auth: String, date: Option<String>| {
        let mut rb = t.client.get(t.url("/zones")).header("Authorization", auth);
        if let Some(d) = date {
            rb = rb.header("Date", d);
        }
        rb.send()
    };
    let ok = get(
        format!("ZStack {id}:{}", sign(secret, "GET", &now, "/v1/zones")),
        Some(now.clone()),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = get(
        format!("ZStack {id}:{}", sign("wrong", "GET", &now, "/v1/zones")),
        Some(now.clone()),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 503);
    assert!(bad
        .text()
        .await
        .unwrap()
        .contains("wrong accessKey signature"));
    let nodate = get(format!("ZStack {id}:x"), None).await.unwrap();
    assert_eq!(nodate.status(), 400);
    let old = (chrono::Utc::now() - chrono::Duration::minutes(20))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let skew = get(
        format!("ZStack {id}:{}", sign(secret, "GET", &old, "/v1/zones")),
        Some(old),
    )
    .await
    .unwrap();
    assert_eq!(skew.status(), 403);
    // The clock-skew knob makes a correct Date look skewed.
    t.sim()
        .add_fault(serde_json::from_value(json!({"kind": "clock_skew", "secs": 3600})).unwrap())
        .unwrap();
    let skewed = get(
        format!("ZStack {id}:{}", sign(secret, "GET", &now, "/v1/zones")),
        Some(now.clone()),
    )
    .await
    .unwrap();
    assert_eq!(skewed.status(), 403);
}

#[tokio::test]
async fn create_validation() {
    let (t, s) = setup(fast()).await;
    let fx = fixtures(&t, "x86_64");
    let code = |j: JobReply| {
        j.done.json["error"]["code"]
            .as_str()
            .unwrap_or("OK")
            .to_string()
    };
    let with_tags = |tags: Value| {
        let mut b = create_body(&fx, "v", "CreateStopped", None);
        b["params"]["systemTags"] = tags;
        b
    };
    assert_eq!(
        code(create(&t, &s, &with_tags(json!(["userdata::not base64!"]))).await),
        "SYS.1007"
    );
    assert_eq!(
        code(
            create(
                &t,
                &s,
                &with_tags(json!(["userdata::I2Nsb3VkLWNvbmZpZw==", "userdata::eA=="]))
            )
            .await
        ),
        "SYS.1007"
    );
    assert_eq!(
        code(create(&t, &s, &with_tags(json!(["hostname::bad_name"]))).await),
        "SYS.1007"
    );
    assert_eq!(
        code(create(&t, &s, &with_tags(json!(["notatag"]))).await),
        "SYS.1007"
    );
    // Top-level systemTags override the ones inside params.
    let mut b = with_tags(json!(["userdata::not base64!"]));
    b["systemTags"] = json!(["userdata::I2Nsb3VkLWNvbmZpZw==", "hostname::ok-1"]);
    let ok = create(&t, &s, &b).await;
    assert_eq!(ok.done.status, 200, "{}", ok.done.text);
    let vm = ok.done.json["inventory"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let sys = t
        .list("/system-tags", &s, &[&format!("resourceUuid={vm}")])
        .await;
    assert_eq!(sys.len(), 2);
    // The same hostname on the same L3 is refused.
    assert_eq!(
        code(create(&t, &s, &with_tags(json!(["hostname::ok-1"]))).await),
        "SYS.1007"
    );
    let mut b = create_body(&fx, "v", "CreateStopped", None);
    b["params"]["imageUuid"] = json!(random_hex32());
    assert_eq!(code(create(&t, &s, &b).await), "SYS.1007");
    let mut b = create_body(&fx, "v", "CreateStopped", None);
    b["params"]["l3NetworkUuids"] = json!([]);
    assert_eq!(code(create(&t, &s, &b).await), "SYS.1007");
    let mut b = create_body(&fx, "", "CreateStopped", None);
    b["params"]["name"] = json!("");
    assert_eq!(code(create(&t, &s, &b).await), "SYS.1007");
    // cpuNum + memorySize instead of an offering; a static IP.
    let mut b = create_body(&fx, "custom", "InstantStart", None);
    b["params"]
        .as_object_mut()
        .unwrap()
        .remove("instanceOfferingUuid");
    b["params"]["cpuNum"] = json!(3);
    b["params"]["memorySize"] = json!(3u64 << 30);
    b["systemTags"] = json!([format!("staticIp::{}::172.20.1.7", fx.l3)]);
    let j = create(&t, &s, &b).await;
    assert_eq!(j.done.status, 200, "{}", j.done.text);
    assert_eq!(j.done.json["inventory"]["cpuNum"], 3);
    assert_eq!(j.done.json["inventory"]["vmNics"][0]["ip"], "172.20.1.7");
    assert!(j.done.json["inventory"]["instanceOfferingUuid"].is_null());
    assert_eq!(
        code(create(&t, &s, &b).await),
        "SYS.1006",
        "static IP already used"
    );
    // JustCreate leaves the VM in Created without a host.
    let jc = create(&t, &s, &create_body(&fx, "jc", "JustCreate", None)).await;
    assert_eq!(jc.done.json["inventory"]["state"], "Created");
    assert!(jc.done.json["inventory"]["hostUuid"].is_null());
}

#[tokio::test]
async fn sessions_renew_logout_and_tags_api() {
    let (t, s) = setup(fast()).await;
    let r = t
        .job(
            Method::PUT,
            &format!("/accounts/sessions/{s}/renew"),
            &s,
            &[],
            Some(&json!({"renewSession": {}})),
        )
        .await;
    assert_eq!(r.done.status, 200, "{}", r.done.text);
    assert_eq!(r.done.json["inventory"]["uuid"], s.as_str());
    let out = t
        .req(
            Method::DELETE,
            &format!("/accounts/sessions/{s}"),
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(out.status, 200);
    assert_eq!(
        t.req(
            Method::GET,
            &format!("/accounts/sessions/{s}/valid"),
            None,
            &[],
            None
        )
        .await
        .json,
        json!({"valid": false})
    );
    let s = t.login().await;
    let image = t.sim().uuid_of("ubuntu-22.04-arm64").unwrap();
    let tag = t
        .job(
            Method::POST,
            "/user-tags",
            &s,
            &[],
            Some(&json!({"params": {"resourceType": "ImageVO", "resourceUuid": image, "tag": "kprov::golden"}})),
        )
        .await;
    assert_eq!(tag.done.status, 200);
    let tag_uuid = tag.done.json["inventory"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(tag.done.json["inventory"]["type"], "User");
    assert_eq!(
        t.list("/images", &s, &["__userTag__=kprov::golden"])
            .await
            .len(),
        1
    );
    let wrong = t
        .job(
            Method::POST,
            "/user-tags",
            &s,
            &[],
            Some(&json!({"params": {"resourceType": "VmInstanceVO", "resourceUuid": image, "tag": "x"}})),
        )
        .await;
    assert_eq!(wrong.done.json["error"]["code"], "SYS.1007");
    let del = t
        .job(Method::DELETE, &format!("/tags/{tag_uuid}"), &s, &[], None)
        .await;
    assert_eq!(del.done.status, 200);
    assert_eq!(
        t.list("/images", &s, &["__userTag__=kprov::golden"])
            .await
            .len(),
        0
    );
}

#[tokio::test]
async fn add_image_goes_downloading_then_ready() {
    let (t, s) = setup(SimConfig {
        job_delay: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let bs = t.sim().uuid_of("bs-1").unwrap();
    let body = json!({"params": {"name": "custom", "url": "http://images.invalid/custom.qcow2", "format": "qcow2",
        "mediaType": "RootVolumeTemplate", "platform": "Linux", "architecture": "aarch64", "backupStorageUuids": [bs]}});
    let r = t
        .req(Method::POST, "/images", Some(&s), &[], Some(&body))
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json["apiTimeout"], 259_200_000);
    let img = t.list("/images", &s, &["name=custom"]).await;
    assert_eq!(img[0]["status"], "Downloading");
    let (done, _) = t.poll(r.json["location"].as_str().unwrap()).await;
    assert_eq!(done.json["inventory"]["status"], "Ready");
    assert!(done.json["inventory"]["size"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn simulator_refuses_non_loopback() {
    let cfg = SimConfig {
        listen: "0.0.0.0".parse().unwrap(),
        ..SimConfig::default()
    };
    assert!(matches!(
        Simulator::start(cfg).await,
        Err(kprov_zstack_sim::SimError::Config(_))
    ));
}

#[tokio::test]
async fn binary_port_file_inventory_and_loopback_only() {
    let exe = env!("CARGO_BIN_EXE_kprov-zstack-sim");
    let refused = std::process::Command::new(exe)
        .args(["--listen", "0.0.0.0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("loopback"));

    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.yaml");
    std::fs::write(
        &inv,
        "zones: [{name: z}]\nclusters: [{name: c, architecture: x86_64}]\nhosts: [{name: h1, cpuNum: 8, totalMemoryCapacity: 17179869184}]\n",
    )
    .unwrap();
    let port_file = dir.path().join("port");
    let mut child = tokio::process::Command::new(exe)
        .arg("--inventory")
        .arg(&inv)
        .arg("--port-file")
        .arg(&port_file)
        .arg("--job-delay-ms")
        .arg("10")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            break p.trim().parse::<u16>().unwrap();
        }
        assert!(Instant::now() < deadline, "no port file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let t = Target {
        endpoint: format!("http://127.0.0.1:{port}"),
        account: "admin".into(),
        password: "password".into(),
        sim: None,
        client: client(),
    };
    let s = t.login().await;
    let hosts = t.list("/hosts", &s, &[]).await;
    assert_eq!(hosts.len(), 1);
    assert_eq!(hosts[0]["name"], "h1");
    assert_eq!(hosts[0]["architecture"], "x86_64");
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("listening on http://127.0.0.1:{port}")),
        "{stdout}"
    );
}
