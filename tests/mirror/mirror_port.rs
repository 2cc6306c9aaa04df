//! Upstream registries with a port (issue 18, item 5): `kprov mirror` copies
//! `127.0.0.1:P1/app/web:1.0` from one real `docker-registry` to another as
//! `127.0.0.1:P2/127.0.0.1_P1/app/web:1.0` (the port's `:` is `_` in the mirror path, as
//! `kprov::assets::mirror_segment` says), byte-identical by skopeo, through a list, a bundle and
//! a dry run; and a reference whose mirror name registries would refuse stops every mode with
//! exit 2, naming it (with `FILE:LINE` for a list), before the target registry holds anything.
//! Every reference contacted is on 127.0.0.1 (the IPv6 case is only planned, `--dry-run`).

use std::path::Path;
use std::process::Command;

use kprov_testkit::kprov_cmd::run;
use kprov_testkit::registry::{Registry, RegistryOptions};
use kprov_testkit::tiny_image::tiny_image;
use kprov_testkit::{images, peers, skopeo};

use crate::kprov;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn write_list(dir: &Path, name: &str, lines: &[&str]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "# images from the internal registry\n{}\n",
            lines.join("\n")
        ),
    )
    .unwrap();
    p
}

/// Exit code, stdout and stderr of a kprov run.
fn exit(mut c: Command) -> (Option<i32>, String, String) {
    let out = c.output().expect("run kprov");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The registry's repositories, asked over its own API (not through kprov).
fn catalog(reg: &Registry) -> Vec<String> {
    rt().block_on(async {
        let v: serde_json::Value = reqwest::get(format!("{}/v2/_catalog", reg.url()))
            .await
            .expect("GET /v2/_catalog")
            .json()
            .await
            .expect("catalog JSON");
        v["repositories"]
            .as_array()
            .expect("repositories")
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    })
}

#[test]
fn an_upstream_with_a_port_is_mirrored_under_host_underscore_port() {
    let t = "an_upstream_with_a_port_is_mirrored_under_host_underscore_port";
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(mi) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    if peers::require(t, "skopeo").is_none() {
        return;
    }
    let image = tiny_image("web", b"#!/bin/sh\necho internal\n");
    let digest = rt().block_on(up.push("app/web", "1.0", &image));
    let upstream = format!("{}/app/web:1.0", up.addr);
    let port = up.addr.rsplit_once(':').unwrap().1;
    let mirrored_repo = format!("127.0.0.1_{port}/app/web");
    let mirrored = format!("{}/{mirrored_repo}:1.0", mi.addr);
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path(), "images.txt", &[&upstream]);
    let mirror = |extra: &[&str]| {
        let mut c = kprov();
        c.args(["mirror", "--no-progress", "--json", "--retries", "2"])
            .arg("--from-file")
            .arg(&list)
            .args(["--to", &mi.addr])
            .args(extra);
        c
    };

    // The plan, without contacting anything.
    let (ok, out, err) = run(mirror(&["--dry-run"]));
    assert!(ok, "dry run: {err}");
    assert_eq!(out.trim(), format!("{upstream} -> {mirrored}"));

    // Plain HTTP to both, named host:port.
    let (ok, out, err) = run(mirror(&[
        "--insecure-registry",
        &up.addr,
        "--insecure-registry",
        &mi.addr,
    ]));
    assert!(ok, "mirror from a registry with a port failed: {err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["images"], 1, "{r}");
    assert_eq!(r["digests"][&mirrored], digest.as_str(), "{r}");
    assert_eq!(catalog(&mi), vec![mirrored_repo.clone()]);
    let raw = skopeo::skopeo_raw(&mirrored, None)
        .unwrap_or_else(|| panic!("skopeo cannot read the mirrored {mirrored}"));
    assert_eq!(raw, image.manifest, "byte-identical manifest");
    assert_eq!(images::digest(&raw), digest);

    // --src-insecure / --dest-insecure reach the same registries: nothing left to copy.
    let (ok, out, err) = run(mirror(&["--src-insecure", "--dest-insecure"]));
    assert!(ok, "re-run with --src-insecure: {err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["images_up_to_date"], 1, "{r}");

    // Through a bundle: upstream names inside, the same mapping on import.
    let bundle = dir.path().join("internal.tar");
    let mut c = kprov();
    c.args(["mirror", "--no-progress", "--src-insecure"])
        .arg("--from-file")
        .arg(&list)
        .arg("--to-bundle")
        .arg(&bundle);
    let (ok, _, err) = run(c);
    assert!(ok, "export: {err}");
    let to = format!("{}/bundled", mi.addr);
    let mut c = kprov();
    c.args(["mirror", "--no-progress", "--dest-insecure", "--to", &to])
        .arg("--from-bundle")
        .arg(&bundle);
    let (ok, _, err) = run(c);
    assert!(ok, "import: {err}");
    let raw = skopeo::skopeo_raw(&format!("{to}/127.0.0.1_{port}/app/web:1.0"), None)
        .expect("imported image");
    assert_eq!(images::digest(&raw), digest);
}

#[test]
fn a_reference_whose_mirror_name_is_invalid_is_refused_before_copying() {
    let t = "a_reference_whose_mirror_name_is_invalid_is_refused_before_copying";
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(mi) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let image = tiny_image("web", b"#!/bin/sh\necho internal\n");
    rt().block_on(up.push("app/web", "1.0", &image));
    let port = up.addr.rsplit_once(':').unwrap().1;
    let good = format!("{}/app/web:1.0", up.addr);
    let upper = format!("{}/App/web:1.0", up.addr);
    let dir = tempfile::tempdir().unwrap();
    // Line 1 is the comment; the valid image on line 2 must not be copied either.
    let list = write_list(dir.path(), "upper.txt", &[&good, &upper]);
    let insecure = [
        "--insecure-registry",
        &up.addr,
        "--insecure-registry",
        &mi.addr,
    ];
    let from_list = |list: &Path, to: &str, extra: &[&str]| {
        let mut c = kprov();
        c.args(["mirror", "--no-progress"])
            .arg("--from-file")
            .arg(list)
            .args(["--to", to])
            .args(insecure)
            .args(extra);
        exit(c)
    };
    let at = format!("{}:3", list.display());
    for extra in [&[][..], &["--dry-run"][..]] {
        let (code, out, err) = from_list(&list, &mi.addr, extra);
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        assert!(
            err.contains(&at)
                && err.contains(&upper)
                && err.contains("upper-case")
                && err.contains("fix:"),
            "{extra:?}: names FILE:LINE, the reference and the fix: {err}"
        );
        assert!(out.is_empty(), "nothing planned: {out}");
    }
    let bundle = dir.path().join("upper.tar");
    let mut c = kprov();
    c.args(["mirror", "--no-progress", "--src-insecure"])
        .arg("--from-file")
        .arg(&list)
        .arg("--to-bundle")
        .arg(&bundle);
    let (code, _, err) = exit(c);
    assert_eq!(code, Some(2), "--to-bundle: {err}");
    assert!(err.contains(&at) && err.contains("upper-case"), "{err}");
    assert!(!bundle.exists(), "no bundle written");
    // An IPv6 upstream (only planned: even a regression must not send anything to it).
    let v6 = format!("[::1]:{port}/app/web:1.0");
    let list6 = write_list(dir.path(), "v6.txt", &[&v6]);
    let (code, _, err) = from_list(&list6, &mi.addr, &["--dry-run"]);
    assert_eq!(code, Some(2), "IPv6: {err}");
    assert!(
        err.contains(&format!("{}:2", list6.display()))
            && err.contains(&v6)
            && err.contains("IPv6")
            && err.contains("fix:"),
        "{err}"
    );

    // Valid upstream names, but a --to prefix that makes them invalid: upper case, too long.
    let list = write_list(dir.path(), "good.txt", &[&good]);
    let at = format!("{}:2", list.display());
    let upper_to = format!("{}/Mirror", mi.addr);
    let long = format!("{}/{}", mi.addr, "p".repeat(240));
    for (to, why) in [(&upper_to, "upper-case"), (&long, "characters long")] {
        let (code, _, err) = from_list(&list, to, &[]);
        assert_eq!(code, Some(2), "--to {to}: {err}");
        assert!(
            err.contains(&at) && err.contains(&good) && err.contains(why) && err.contains("fix:"),
            "--to {to}: {err}"
        );
    }

    // A valid bundle imported where its images' names would be too long.
    let bundle = dir.path().join("good.tar");
    let mut c = kprov();
    c.args(["mirror", "--no-progress", "--src-insecure"])
        .arg("--from-file")
        .arg(&list)
        .arg("--to-bundle")
        .arg(&bundle);
    let (ok, _, err) = run(c);
    assert!(ok, "export: {err}");
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut c = kprov();
        c.args(["mirror", "--no-progress", "--dest-insecure", "--to", &long])
            .arg("--from-bundle")
            .arg(&bundle)
            .args(extra);
        let (code, _, err) = exit(c);
        assert_eq!(code, Some(2), "--from-bundle {extra:?}: {err}");
        assert!(
            err.contains(&good) && err.contains("characters long"),
            "{extra:?}: {err}"
        );
    }

    // A cluster's catalogue mirrored to an upper-case --to.
    let (state, _, _) = crate::cluster_with_catalogue(
        dir.path(),
        "demo",
        &format!("{{containerRegistry: \"{}\", insecure: true}}", mi.addr),
    );
    let mut c = kprov();
    c.args([
        "--state",
        &state,
        "mirror",
        "demo",
        "--no-progress",
        "--to",
        &upper_to,
    ])
    .args(insecure);
    let (code, _, err) = exit(c);
    assert_eq!(code, Some(2), "cluster catalogue: {err}");
    assert!(
        err.contains("registry.k8s.io/") && err.contains("upper-case"),
        "{err}"
    );

    assert!(
        catalog(&mi).is_empty(),
        "nothing may reach the target: {:?}",
        catalog(&mi)
    );
}
