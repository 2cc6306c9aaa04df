//! CLI tests driving the real `kprov` binary: help texts, store layout, current-cluster
//! resolution and output formats. The bad-input corpus (`tests/data/invalid/`) runs in
//! `tests/cli/bad_input.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

use crate::KPROV;

fn kprov(state: &Path) -> Command {
    let mut c = KPROV.assert_cmd();
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
        // The snapshots keep the names they had when this was the `cli` test binary's root
        // module: tests/snapshots/cli__NAME.snap.
        insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(format!("cli__{name}"), String::from_utf8_lossy(&out.stdout));
        });
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
    for sh in ["zsh", "fish"] {
        let out = kprov(dir.path()).args(["completion", sh]).output().unwrap();
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("kprov"),
            "{sh}"
        );
    }
    let out = kprov(dir.path())
        .args(["completion", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = dir.path().join("kprov.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let offered = bash_completions(
        &script,
        &[
            "kprov ",
            "kprov cr",
            "kprov update cluster --",
            "kprov create cluster x --",
            "kprov create cluster x --provider ",
        ],
    );
    let has = |i: usize, want: &[&str]| {
        for w in want {
            assert!(
                offered[i].iter().any(|o| o == w),
                "bash offers no {w:?} after {:?}: {:?}",
                offered[i].first(),
                offered[i]
            );
        }
    };
    has(
        0,
        &[
            "create",
            "update",
            "delete",
            "get",
            "export",
            "mirror",
            "version",
            "completion",
        ],
    );
    assert_eq!(offered[1][1..], ["create"], "only the verb that fits `cr`");
    has(2, &["--yes"]);
    has(3, &["--provider", "--node-count"]);
    assert!(
        !offered[3].iter().any(|o| o == "--yes"),
        "create cluster has no --yes: {:?}",
        offered[3]
    );
    has(4, &["zstack", "aws", "libvirt"]);
    assert_eq!(offered[4].len(), 4, "only the providers: {:?}", offered[4]);
}

/// What bash completes for each command line (the cursor at its end) with kprov's completion
/// `script` loaded into a real bash: `complete -p kprov` must name a function, which is called
/// as bash calls it (COMP_WORDS, COMP_CWORD, COMP_LINE, COMP_POINT; arguments command, current
/// word, previous word). Each result starts with the line itself, then COMPREPLY. One bash
/// process for all lines.
fn bash_completions(script: &Path, lines: &[&str]) -> Vec<Vec<String>> {
    let mut prog = format!(
        "source '{}'\nspec=$(complete -p kprov) || exit 3\n\
         fn=$(sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p' <<<\"$spec\")\n\
         [ -n \"$fn\" ] || {{ echo \"no completion function in: $spec\" >&2; exit 4; }}\n",
        script.display()
    );
    for line in lines {
        // A trailing space starts a new, empty word.
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if line.ends_with(' ') {
            words.push("");
        }
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let cword = words.len() - 1;
        let prev = if cword > 0 { words[cword - 1] } else { "" };
        prog.push_str(&format!(
            "COMP_WORDS=({}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT={}; COMPREPLY=()\n\
             \"$fn\" kprov '{}' '{prev}'\n\
             printf '%s\\n' '{line}' \"${{COMPREPLY[@]}}\"; echo '@@'\n",
            quoted.join(" "),
            line.len(),
            words[cword],
        ));
    }
    let out = std::process::Command::new("bash")
        .arg("--noprofile")
        .arg("--norc")
        .arg("-c")
        .arg(&prog)
        .output()
        .expect("bash runs (it is part of every supported host)");
    assert!(
        out.status.success(),
        "bash could not load kprov's completion: {}\n{prog}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let blocks: Vec<Vec<String>> = text
        .split("@@\n")
        .filter(|b| !b.is_empty())
        .map(|b| b.lines().map(str::to_string).collect())
        .collect();
    assert_eq!(blocks.len(), lines.len(), "{text}");
    for (b, l) in blocks.iter().zip(lines) {
        assert_eq!(&b[0], l, "{text}");
    }
    blocks
}
