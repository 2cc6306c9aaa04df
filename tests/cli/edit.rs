//! `kprov edit` with scripted editors (`EDITOR` is a shell script the test writes): a valid
//! edit is stored as the next generation; an invalid one re-opens the editor with the problems
//! (file:line) as comments on top, and the corrected text is stored; saving unchanged cancels;
//! saving the error text unchanged gives up with exit 2 and stores nothing; a two-minor
//! Kubernetes upgrade is refused naming the version to go through.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use kprov_testkit::kprov_cmd::Kprov;

use crate::KPROV;

/// A cluster `demo` with 3 nodes (ZStack provider, nothing contacted).
fn demo() -> Kprov {
    let k = Kprov::new(KPROV);
    k.ok(&[
        "create",
        "cluster",
        "demo",
        "--provider",
        "zstack",
        "--zstack-endpoint",
        "http://127.0.0.1:9",
        "--node-count",
        "3",
        "--kubernetes-version",
        "1.31.14",
    ]);
    k
}

/// An editor script: call N (1-based, counted in `dir/calls`) runs `steps[N-1]` (shell, the file
/// is `$1`); each call also copies what it was shown to `dir/shown-N`.
fn editor(dir: &Path, steps: &[&str]) -> String {
    let mut script = String::from(
        "#!/bin/sh\nset -e\nd=$(dirname \"$0\")\nn=$(cat \"$d/calls\" 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > \"$d/calls\"\ncp \"$1\" \"$d/shown-$n\"\ncase $n in\n",
    );
    for (i, s) in steps.iter().enumerate() {
        script.push_str(&format!("  {}) {s} ;;\n", i + 1));
    }
    script.push_str("esac\n");
    let path = dir.join("editor.sh");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn with_editor(k: &Kprov, editor: &str, args: &[&str]) -> std::process::Output {
    let mut c = k.cmd(args);
    c.env("EDITOR", editor).env_remove("VISUAL");
    c.output().unwrap()
}

fn groups(k: &Kprov) -> String {
    k.ok(&["get", "instancegroups", "demo"])
}

#[test]
fn an_invalid_edit_reopens_with_its_errors_and_the_fix_is_stored() {
    let k = demo();
    let dir = tempfile::tempdir().unwrap();
    let ed = editor(
        dir.path(),
        &[
            r#"sed -i 's/^  count: 3$/  count: -1/' "$1""#,
            r#"sed -i 's/^  count: -1$/  count: 5/' "$1""#,
        ],
    );
    let out = with_editor(&k, &ed, &["edit", "ig", "nodes", "demo"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("re-opening the editor") && err.contains("generation 2"),
        "{err}"
    );
    let reopened = std::fs::read_to_string(dir.path().join("shown-2")).unwrap();
    let top: Vec<&str> = reopened
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect();
    let top = top.join("\n");
    assert!(
        top.contains("count is -1") && top.contains("kprov-edit-demo-") && top.contains("fix"),
        "the problems, with file:line and fix, on top of the re-opened file:\n{reopened}"
    );
    assert!(
        reopened.contains("  count: -1"),
        "the user's text is kept:\n{reopened}"
    );
    let listed = groups(&k);
    let nodes = listed.lines().find(|l| l.starts_with("nodes")).unwrap();
    assert_eq!(nodes.split_whitespace().nth(2), Some("5"), "{listed}");
}

#[test]
fn saving_unchanged_cancels_and_giving_up_stores_nothing() {
    let k = demo();
    let before = groups(&k);
    let dir = tempfile::tempdir().unwrap();
    let out = with_editor(
        &k,
        &editor(dir.path(), &["true"]),
        &["edit", "cluster", "demo"],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Edit cancelled, no changes made"));
    // an invalid edit, then the error text saved unchanged: exit 2, nothing stored
    let dir = tempfile::tempdir().unwrap();
    let ed = editor(
        dir.path(),
        &[r#"sed -i 's/^  count: 3$/  count: many/' "$1""#, "true"],
    );
    let out = with_editor(&k, &ed, &["edit", "instancegroup", "nodes", "demo"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("nothing was stored") && err.contains("fix:"),
        "{err}"
    );
    assert_eq!(groups(&k), before);
    let gen = k.ok(&["get", "cluster", "demo", "-o", "yaml"]);
    assert!(gen.contains("generation: 1"), "{gen}");
}

#[test]
fn a_two_minor_upgrade_is_refused_then_one_minor_is_stored() {
    let k = demo();
    let dir = tempfile::tempdir().unwrap();
    let ed = editor(
        dir.path(),
        &[
            r#"sed -i 's/^  kubernetesVersion: 1.31.14$/  kubernetesVersion: 1.33.13/' "$1""#,
            r#"sed -i 's/^  kubernetesVersion: 1.33.13$/  kubernetesVersion: 1.32.13/' "$1""#,
        ],
    );
    let out = with_editor(&k, &ed, &["edit", "cluster", "demo"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let reopened = std::fs::read_to_string(dir.path().join("shown-2")).unwrap();
    assert!(
        reopened.contains("skips a minor version")
            && reopened.contains("set kubernetesVersion: 1.32.13"),
        "{reopened}"
    );
    let spec = k.ok(&["get", "cluster", "demo", "-o", "yaml"]);
    assert!(spec.contains("kubernetesVersion: 1.32.13"), "{spec}");
}
