//! `kprov get userdata` against a real `file://` state store: the cluster is created with
//! `kprov create -f` (which generates its PKI and token), then each node's user-data is printed,
//! redacted by default and complete with `--show-secrets`.

use std::path::Path;

use crate::fixtures::{self, Variant};
use crate::KPROV;
use assert_cmd::Command;

fn kprov(state: &Path) -> Command {
    let mut c = KPROV.assert_cmd();
    c.env("KPROV_STATE_STORE", format!("file://{}", state.display()));
    c.env_remove("KPROV_CLUSTER_NAME");
    c.env_remove("KPROV_CALLBACK_URL");
    c
}

fn out(c: &mut Command) -> (bool, String, String) {
    let o = c.output().expect("run kprov");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn get_userdata_prints_redacted_cloud_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let spec = dir.path().join("cluster.yaml");
    std::fs::write(&spec, fixtures::cluster_yaml(&Variant::default())).expect("spec");
    let (ok, _, err) = out(kprov(&state).args(["create", "-f"]).arg(&spec));
    assert!(ok, "create: {err}");

    // The first control plane: CA keys present but redacted.
    let (ok, text, err) = out(kprov(&state).args([
        "get",
        "userdata",
        "demo",
        "--instance-group",
        "control-plane",
    ]));
    assert!(ok, "get userdata: {err}");
    assert!(text.starts_with("#cloud-config\n"), "{text}");
    assert!(text.contains("hostname: \"demo-control-plane-0\""));
    assert!(text.contains("/etc/kubernetes/pki/ca.key"));
    assert!(!text.contains("PRIVATE KEY"), "keys must be redacted");
    assert!(text.contains("<redacted>"));
    assert!(
        err.contains("bytes of cloud-config"),
        "size note on stderr: {err}"
    );
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).expect("redacted output is still YAML");
    let init = doc["write_files"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/kprov/kubeadm-init.yaml")
        .expect("init config");
    assert!(init["content"]
        .as_str()
        .unwrap()
        .contains("token: \"<redacted>\""));

    // With --show-secrets the keys and the token are there.
    let (ok, full, _) = out(kprov(&state).args([
        "get",
        "userdata",
        "demo",
        "-g",
        "control-plane",
        "--show-secrets",
    ]));
    assert!(ok);
    assert!(full.contains("-----BEGIN PRIVATE KEY-----"));
    assert!(!full.contains("<redacted>"));
    assert!(full.len() > text.len());

    // A worker: joins the given endpoint, no private key even with --show-secrets.
    let (ok, worker, err) = out(kprov(&state).args([
        "get",
        "userdata",
        "demo",
        "-g",
        "nodes",
        "--index",
        "1",
        "--endpoint",
        "10.1.2.3:6443",
        "--show-secrets",
    ]));
    assert!(ok, "{err}");
    assert!(worker.contains("hostname: \"demo-nodes-1\""));
    assert!(worker.contains("apiServerEndpoint: \"10.1.2.3:6443\""));
    assert!(!worker.contains("PRIVATE KEY"));

    // Without an endpoint a worker is shown with a placeholder and a note.
    let (ok, worker, err) = out(kprov(&state).args(["get", "userdata", "demo", "-g", "gpu"]));
    assert!(ok, "{err}");
    assert!(err.contains("FIRST-CONTROL-PLANE-ADDRESS"), "{err}");
    assert!(worker.contains("nvidia-container-runtime"));

    // An unknown node is a usage error naming the groups.
    let (ok, _, err) =
        out(kprov(&state).args(["get", "userdata", "demo", "-g", "nodes", "--index", "7"]));
    assert!(!ok);
    assert!(
        err.contains("nodes") && err.contains("control-plane"),
        "{err}"
    );
}
