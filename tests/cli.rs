//! CLI tests driving the real `kprov` binary: help texts, store layout, current-cluster
//! resolution and output formats. The bad-input corpus (`tests/data/invalid/`) runs in
//! `tests/bad_input.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

#[path = "support/audit.rs"]
mod audit;

fn kprov(state: &Path) -> Command {
    let mut c = audit::kprov_assert_cmd();
    c.env("KPROV_STATE_STORE", format!("file://{}", state.display()))
        .env_remove("KPROV_CLUSTER_NAME")
        .env_remove("ZSTACK_ENDPOINT")
        .env_remove("AWS_REGION")
        .env("NO_COLOR", "1");
    c
}

/// Every file under `dir` with its bytes and mode.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if !p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".kprov-lock")
            {
                out.insert(
                    p.clone(),
                    (std::fs::read(&p).unwrap(), meta.permissions().mode()),
                );
            }
        }
    }
    out
}

#[test]
fn help_texts_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["create", "cluster", "--help"],
        vec!["update", "--help"],
        vec!["delete", "--help"],
        vec!["get", "--help"],
    ] {
        let out = kprov(dir.path())
            .env("COLUMNS", "100")
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success());
        let name = args.join("_").replace("--", "");
        insta::assert_snapshot!(name, String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn create_stores_the_documented_layout_and_get_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    kprov(dir.path())
        .args([
            "create",
            "cluster",
            "demo",
            "--provider",
            "zstack",
            "--zstack-endpoint",
            "http://127.0.0.1:9",
            "--arch",
            "arm64",
            "--node-count",
            "3",
            "--gpu",
            "A100:1",
        ])
        .assert()
        .success();
    for key in [
        "demo/config.yaml",
        "demo/instancegroup/control-plane.yaml",
        "demo/instancegroup/nodes.yaml",
        "demo/history/1.yaml",
    ] {
        assert!(dir.path().join(key).is_file(), "{key} missing");
    }
    let out = kprov(dir.path())
        .args(["get", "instancegroups", "demo", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = v.as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let nodes = groups
        .iter()
        .find(|g| g["metadata"]["name"] == "nodes")
        .unwrap();
    assert_eq!(nodes["spec"]["count"], 3);
    assert_eq!(nodes["spec"]["arch"], "arm64");
    assert_eq!(nodes["spec"]["gpu"]["model"], "A100");
    // the stored spec round-trips through `create -f --replace`
    let yaml = kprov(dir.path())
        .args(["get", "cluster", "demo", "-o", "yaml"])
        .output()
        .unwrap()
        .stdout;
    let f = dir.path().join("demo-export.yaml");
    std::fs::write(&f, &yaml).unwrap();
    kprov(dir.path())
        .args(["create", "-f", f.to_str().unwrap(), "--replace"])
        .assert()
        .success();
    assert!(
        dir.path().join("demo/history/2.yaml").is_file(),
        "a replaced spec is a new generation"
    );
    let table = kprov(dir.path())
        .args(["get", "clusters"])
        .output()
        .unwrap()
        .stdout;
    let table = String::from_utf8(table).unwrap();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("demo") && table.contains("zstack"),
        "{table}"
    );
}

#[test]
fn dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = kprov(dir.path())
        .args([
            "create",
            "cluster",
            "demo",
            "--provider",
            "aws",
            "--aws-region",
            "cn-north-1",
            "--dry-run",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["spec"]["provider"]["aws"]["region"], "cn-north-1");
    assert!(
        snapshot(dir.path()).is_empty(),
        "--dry-run stored something"
    );
}

#[test]
fn current_cluster_is_resolved_or_explained() {
    let dir = tempfile::tempdir().unwrap();
    let none = kprov(dir.path())
        .args(["update", "--yes"])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no cluster in"));
    for n in ["alpha", "beta"] {
        kprov(dir.path())
            .args([
                "create",
                "cluster",
                n,
                "--provider",
                "zstack",
                "--zstack-endpoint",
                "http://127.0.0.1:9",
            ])
            .assert()
            .success();
    }
    let many = kprov(dir.path()).args(["get", "cluster"]).output().unwrap();
    assert_eq!(many.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&many.stderr);
    assert!(
        msg.contains("alpha, beta") && msg.contains("--name"),
        "{msg}"
    );
    let named = kprov(dir.path())
        .env("KPROV_CLUSTER_NAME", "beta")
        .args(["get", "cluster"])
        .output()
        .unwrap();
    assert!(named.status.success());
    assert!(String::from_utf8_lossy(&named.stdout).contains("beta"));
}

#[test]
fn version_and_completion() {
    let dir = tempfile::tempdir().unwrap();
    let v = kprov(dir.path()).arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")));
    for sh in ["bash", "zsh", "fish"] {
        let out = kprov(dir.path()).args(["completion", sh]).output().unwrap();
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("kprov"),
            "{sh}"
        );
    }
}
