//! `kprov mirror` against real registries, token auth, TLS, S3 and HTTP targets on 127.0.0.1
//! (`mirror_registry`, `mirror_transport`; upstreams with a port: `mirror_port`; bundles that travel: `mirror_bundle`), with `skopeo` as the cross-check. Peers:
//! `bash tests/peers/install.sh` (`KPROV_SKIP_PEERS=1` skips).

use std::path::Path;
use std::process::Command;

use kprov_testkit::kprov_cmd::run;
use kprov_testkit::KprovBin;

mod mirror_bundle;
mod mirror_port;
mod mirror_registry;
mod mirror_transport;

/// The kprov binary under test.
const KPROV: KprovBin = KprovBin::new(env!("CARGO_BIN_EXE_kprov"));

/// A `Command` running kprov (audited when `KPROV_AUDIT_DIR` is set).
fn kprov() -> Command {
    KPROV.command()
}

/// A cluster in a new `file://` store under `dir` (libvirt test driver: nothing is created in a
/// cloud): 1 amd64 control plane + 1 arm64 worker, flannel, `assets` given as a YAML flow map
/// (e.g. `{containerRegistry: "127.0.0.1:5000", insecure: true}`). Returns the store URL, the
/// `get assets -o json` catalogue and its upstream image references.
pub fn cluster_with_catalogue(
    dir: &Path,
    name: &str,
    assets: &str,
) -> (String, serde_json::Value, Vec<String>) {
    cluster_with_groups(dir, name, assets, &["amd64", "arm64"])
}

/// [`cluster_with_catalogue`] with one instance group per entry of `arches` (the first is the
/// control plane), several clusters sharing the store under `dir`.
pub fn cluster_with_groups(
    dir: &Path,
    name: &str,
    assets: &str,
    arches: &[&str],
) -> (String, serde_json::Value, Vec<String>) {
    let state = format!("file://{}", dir.join("state").display());
    let spec = dir.join(format!("cluster-{name}.yaml"));
    let mut text = format!(
        "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n  provider: {{libvirt: {{uri: \"test:///default\"}}}}\n  kubernetesVersion: {}\n  networking: {{cni: flannel}}\n  assets: {assets}\n  addons: {{nvidiaDevicePlugin: {{enabled: false}}}}\n",
        kprov::spec::versions::default_version(),
    );
    for (i, arch) in arches.iter().enumerate() {
        let (group, role) = match i {
            0 => ("control-plane".to_string(), "control-plane"),
            1 => ("nodes".to_string(), "node"),
            _ => (format!("nodes-{i}"), "node"),
        };
        text.push_str(&format!(
            "---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: {group}}}\nspec: {{role: {role}, count: 1, arch: {arch}}}\n"
        ));
    }
    std::fs::write(&spec, text).unwrap();
    let mut c = kprov();
    c.args(["--state", &state, "create", "-f"]).arg(&spec);
    let (ok, _, err) = run(c);
    assert!(ok, "create: {err}");
    let mut c = kprov();
    c.args(["--state", &state, "get", "assets", name, "-o", "json"]);
    let (ok, out, err) = run(c);
    assert!(ok, "get assets: {err}");
    let cat: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ups = cat["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["upstream"].as_str().unwrap().to_string())
        .collect();
    (state, cat, ups)
}
