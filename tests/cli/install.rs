//! Installing and first use, as a new user meets them:
//! * the README's first command (`bash tests/quickstart.sh`) prints a transcript that shows the
//!   main job — create → plan → apply → no-op → delete — on the bundled ZStack simulator. CI runs
//!   the quickstart from the clone before the suite (`tests/run.sh`) and hands its transcript over
//!   in `KPROV_QUICKSTART_TRANSCRIPT`; without it this test runs the quickstart itself.
//! * a kprov built without a provider (`--no-default-features --features zstack,aws`) says which
//!   providers it has and refuses the missing one with exit 2 and how to get it, changing nothing.
//!   `tests/run.sh` builds that binary and passes it in `KPROV_NO_LIBVIRT_BIN`; without it this
//!   test builds it into `<target>/no-libvirt`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::KPROV;

/// The cargo target directory this test binary was built in (`<target>/debug/deps/install-…`).
fn target_dir() -> PathBuf {
    KPROV
        .path()
        .parent()
        .and_then(Path::parent)
        .expect("kprov binary under <target>/<profile>/")
        .to_path_buf()
}

/// The quickstart's transcript: CI's (`KPROV_QUICKSTART_TRANSCRIPT`) or a fresh run's.
fn quickstart_transcript() -> String {
    if let Some(p) = std::env::var_os("KPROV_QUICKSTART_TRANSCRIPT").filter(|p| !p.is_empty()) {
        return std::fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!("KPROV_QUICKSTART_TRANSCRIPT {}: {e}", p.to_string_lossy())
        });
    }
    // One stream, as a user sees it (and as tests/run.sh records it): each command's stderr
    // lines stay under its `$ kprov …` line.
    let out = Command::new("bash")
        .arg("-c")
        .arg(concat!(
            "exec bash ",
            env!("CARGO_MANIFEST_DIR"),
            "/tests/quickstart.sh 2>&1"
        ))
        .env("CARGO_TARGET_DIR", target_dir())
        .env("NO_COLOR", "1")
        .output()
        .expect("running bash tests/quickstart.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the quickstart failed:\n{text}");
    text
}

/// The transcript cut into the output of each `$ kprov …` command it ran, in order.
fn commands(transcript: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in transcript.lines() {
        if let Some(cmd) = line.strip_prefix("$ kprov ") {
            out.push((cmd.trim().to_string(), String::new()));
        } else if line.starts_with("== ") {
            // a quickstart step header ends the command before it
            out.push((String::new(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out.retain(|(c, _)| !c.is_empty());
    out
}

#[test]
fn the_quickstart_transcript_shows_create_plan_apply_noop_delete() {
    let transcript = quickstart_transcript();
    let cmds = commands(&transcript);
    let verbs: Vec<&str> = cmds.iter().map(|(c, _)| c.as_str()).collect();
    let find = |from: usize, prefix: &str| -> usize {
        (from..cmds.len())
            .find(|&i| cmds[i].0.starts_with(prefix))
            .unwrap_or_else(|| {
                panic!("no `kprov {prefix}` after command {from} in {verbs:#?}\n{transcript}")
            })
    };
    let create = find(0, "create cluster demo");
    let plan = find(create + 1, "update cluster demo");
    assert!(
        !cmds[plan].0.contains("--yes"),
        "the first update must be the plan: {verbs:?}"
    );
    let apply = find(plan + 1, "update cluster demo --yes");
    let noop = find(apply + 1, "update cluster demo --yes");
    let delete = find(noop + 1, "delete cluster demo --yes");
    let list = find(delete + 1, "get clusters");

    let body = |i: usize| cmds[i].1.as_str();
    assert!(body(create).contains("demo"), "create:\n{}", body(create));
    // The plan names the four instances it would create and changes nothing.
    let plan_out = body(plan);
    for vm in [
        "demo-control-plane-0",
        "demo-nodes-0",
        "demo-nodes-1",
        "demo-nodes-2",
    ] {
        assert!(
            plan_out.contains(vm),
            "the plan does not name {vm}:\n{plan_out}"
        );
    }
    assert!(
        plan_out.contains("Must specify --yes to apply changes"),
        "the plan says how to apply it:\n{plan_out}"
    );
    assert!(
        body(apply).contains("4 instances ready") && body(apply).contains("4 created, 0 deleted"),
        "apply:\n{}",
        body(apply)
    );
    let noop_out = body(noop);
    assert!(
        noop_out.contains("No changes needed for cluster demo") && !noop_out.contains("created"),
        "the second apply must change nothing:\n{noop_out}"
    );
    assert!(
        body(delete).contains("Deleted cluster demo: 4 cloud resources"),
        "delete:\n{}",
        body(delete)
    );
    assert!(
        !body(list).contains("demo"),
        "the cluster is still listed:\n{}",
        body(list)
    );
    assert!(
        transcript.lines().any(|l| l.starts_with("== done")),
        "the quickstart did not reach its last step:\n{transcript}"
    );
}

/// A kprov built with the ZStack and AWS providers only.
fn no_libvirt_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KPROV_NO_LIBVIRT_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let target = target_dir().join("no-libvirt");
    let status = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "build", "--locked", "--quiet", "-p", "kprov", "--bin", "kprov",
        ])
        .args(["--no-default-features", "--features", "zstack,aws"])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building kprov without libvirt failed");
    target.join("debug/kprov")
}

fn run(bin: &Path, store: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env("KPROV_STATE_STORE", format!("file://{}", store.display()))
        .env("NO_COLOR", "1")
        .env_remove("KPROV_CLUSTER_NAME")
        .output()
        .unwrap()
}

/// Every file under `dir` (lock files included) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Exit 2, the message says the provider is not compiled in, what the build has and the
/// `cargo install … --features libvirt` that gets it; `place` is where the choice came from.
fn assert_refused(out: &Output, place: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        place,
        "provider libvirt is not compiled into this kprov",
        "it has: zstack, aws",
        "cargo install --locked --path . --features libvirt",
        "libvirt-dev",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn a_provider_compiled_out_is_refused_with_exit_2_and_how_to_get_it() {
    let slim = no_libvirt_bin();
    let full = KPROV.path();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state");

    let version =
        |bin: &Path| String::from_utf8_lossy(&run(bin, &store, &["version"]).stdout).into_owned();
    assert!(
        version(&full).contains("providers: zstack, aws, libvirt"),
        "{}",
        version(&full)
    );
    assert!(
        version(&slim).contains("providers: zstack, aws\n"),
        "{}",
        version(&slim)
    );

    // Choosing it on the command line or in a file: refused before anything is stored.
    let out = run(
        &slim,
        &store,
        &["create", "cluster", "lv", "--provider", "libvirt"],
    );
    assert_refused(&out, "--provider");
    let file = dir.path().join("lv.yaml");
    std::fs::write(
        &file,
        "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: lv\nspec:\n  provider:\n    \
         libvirt:\n      uri: test:///default\n  kubernetesVersion: 1.33.13\n",
    )
    .unwrap();
    let out = run(&slim, &store, &["create", "-f", file.to_str().unwrap()]);
    assert_refused(
        &out,
        &format!("{}: cluster \"lv\": spec.provider", file.display()),
    );
    assert!(
        snapshot(&store).is_empty(),
        "a refused create stored something"
    );

    // A libvirt cluster stored by a full build: every verb that reaches the cloud refuses it and
    // leaves the store byte-identical, no lock behind.
    let out = run(
        &full,
        &store,
        &[
            "create",
            "cluster",
            "lv",
            "--provider",
            "libvirt",
            "--libvirt-uri",
            "test:///default",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = snapshot(&store);
    for args in [
        &["update", "cluster", "lv"][..],
        &["update", "cluster", "lv", "--yes"],
        &["delete", "cluster", "lv", "--yes"],
        &["get", "instances", "lv"],
    ] {
        let out = run(&slim, &store, args);
        assert_refused(&out, "cluster lv: spec.provider");
        assert_eq!(
            snapshot(&store),
            before,
            "`kprov {}` changed the store",
            args.join(" ")
        );
    }
}
