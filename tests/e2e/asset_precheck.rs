//! `update --yes` checks the mirror before it creates a VM: against the ZStack simulator and a
//! real `docker-registry` mirror that lacks one image of the catalogue, the run stops with exit
//! 2 naming that image and the `kprov mirror` command, and the simulator holds no VM; with
//! `--skip-asset-check` (another cluster) the VMs are created anyway; once the image is pushed
//! the checked run creates the cluster.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kprov_testkit::images::{generate, SetSizes};
use kprov_testkit::registry::{push_set, Registry, RegistryOptions};
use kprov_zstack_sim::{SimConfig, Simulator};

use crate::KPROV;

/// The simulator's admin password: distinctive, so the suite's leak scan can search every
/// kprov output for it.
const ZSTACK_PASSWORD: &str = "Zs-Precheck-Pw-7f3a2c";

fn kprov(state: &std::path::Path, args: &[&str]) -> Output {
    let mut c: Command = KPROV.command();
    c.args(args)
        .env("KPROV_STATE_STORE", format!("file://{}", state.display()))
        .env("ZSTACK_ACCOUNT", "admin")
        .env("ZSTACK_PASSWORD", ZSTACK_PASSWORD)
        .env("NO_COLOR", "1")
        .env_remove("KPROV_CLUSTER_NAME")
        .env_remove("KPROV_SKIP_ASSET_CHECK")
        .stdin(Stdio::null());
    c.output().expect("kprov runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn spec(name: &str, endpoint: &str, mirror: &str) -> String {
    format!(
        "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n  provider: {{zstack: {{endpoint: \"{endpoint}\"}}}}\n  kubernetesVersion: {}\n  networking: {{cni: flannel}}\n  assets: {{containerRegistry: \"{mirror}\", insecure: true}}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: control-plane}}\nspec: {{role: control-plane, count: 1, arch: arm64}}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: nodes}}\nspec: {{role: node, count: 2, arch: arm64}}\n",
        kprov::spec::versions::default_version()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_stops_before_any_vm_when_the_mirror_lacks_an_image() {
    let t = "update_stops_before_any_vm_when_the_mirror_lacks_an_image";
    let Some(mirror) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let sim = Simulator::start(SimConfig {
        admin_account: ("admin".into(), ZSTACK_PASSWORD.into()),
        job_delay: Duration::from_millis(20),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for name in ["demo", "skip"] {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, spec(name, &sim.endpoint(), &mirror.addr)).unwrap();
        let o = kprov(&state, &["create", "-f", file.to_str().unwrap()]);
        assert!(o.status.success(), "create {name}: {}", text(&o));
    }
    let o = kprov(&state, &["get", "assets", "demo", "-o", "json"]);
    assert!(o.status.success(), "get assets: {}", text(&o));
    let cat: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let upstreams: Vec<String> = cat["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["upstream"].as_str().unwrap().to_string())
        .collect();
    // Everything but CoreDNS goes to the mirror (upstream references are its repository paths).
    let missing = upstreams
        .iter()
        .find(|u| u.contains("coredns"))
        .expect("CoreDNS is in the catalogue")
        .clone();
    let present: Vec<&str> = upstreams
        .iter()
        .filter(|u| **u != missing)
        .map(String::as_str)
        .collect();
    push_set(&mirror.addr, &generate(&present, &SetSizes::small()), None).await;

    let o = tokio::task::spawn_blocking({
        let state = state.clone();
        move || kprov(&state, &["update", "cluster", "demo", "--yes"])
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let missing_at = format!("{}/{missing}", mirror.addr);
    assert!(err.contains(&missing_at), "names the missing image:\n{err}");
    assert!(
        err.contains("kprov mirror demo") && err.contains("--skip-asset-check"),
        "says how to fix:\n{err}"
    );
    assert!(
        !err.contains(&format!("{}/{}", mirror.addr, present[0])),
        "lists only what is missing:\n{err}"
    );
    assert_eq!(sim.vm_count(), 0, "no VM may be created");
    let o = kprov(&state, &["get", "instances", "demo", "-o", "json"]);
    assert!(o.status.success(), "{}", text(&o));

    // --skip-asset-check: the same gap does not stop another cluster.
    let o = tokio::task::spawn_blocking({
        let state = state.clone();
        move || {
            kprov(
                &state,
                &["update", "cluster", "skip", "--yes", "--skip-asset-check"],
            )
        }
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(sim.vm_count(), 3, "skip: 1 control plane + 2 nodes");

    // The image arrives: the checked run goes ahead.
    push_set(
        &mirror.addr,
        &generate(&[&missing], &SetSizes::small()),
        None,
    )
    .await;
    let o = tokio::task::spawn_blocking({
        let state = state.clone();
        move || kprov(&state, &["update", "cluster", "demo", "--yes"])
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(sim.vm_count(), 6, "demo's 3 VMs too");
}
