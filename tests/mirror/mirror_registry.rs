//! `kprov mirror` against real registries on 127.0.0.1 (Debian `docker-registry`), with `skopeo`
//! as the cross-check, plus the bad cases: upstream down, tag missing, auth refused, a blob that
//! does not match its digest (served by a tiny fake registry), a read-only target; and offline
//! bundles. Peers: `bash tests/peers/install.sh` (`KPROV_SKIP_PEERS=1` skips).

use std::path::Path;

use kprov_testkit::images::{generate, SetSizes, K8S_LIKE};
use kprov_testkit::kprov_cmd::{self, run};
use kprov_testkit::registry::{push_set, Registry, RegistryOptions};
use kprov_testkit::{images, peers, skopeo};

use crate::kprov;

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Upstream references of the set (`registry.k8s.io/pause:3.10`, …) as a list file.
pub(crate) fn list_file(dir: &Path, refs: &[&str]) -> std::path::PathBuf {
    let p = dir.join(format!(
        "images-{}.txt",
        &images::digest(refs.join(",").as_bytes())[7..19]
    ));
    let mut s = String::from("# test list\n");
    for r in refs {
        s.push_str(r);
        s.push('\n');
    }
    std::fs::write(&p, s).unwrap();
    p
}

fn mirror_cmd(up: &Registry, to: &str, list: &Path) -> std::process::Command {
    let mut c = kprov();
    c.args([
        "mirror",
        "--no-progress",
        "--json",
        "--retries",
        "2",
        "--from",
        &up.addr,
        "--to",
        to,
    ])
    .arg("--from-file")
    .arg(list)
    .args([
        "--insecure-registry",
        &up.addr,
        "--insecure-registry",
        to.split('/').next().unwrap(),
    ]);
    c
}

fn report(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}"))
}

#[test]
fn list_mirror_is_byte_identical_and_a_rerun_skips_everything() {
    let t = "list_mirror_is_byte_identical_and_a_rerun_skips_everything";
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(mi) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    if peers::require(t, "skopeo").is_none() {
        return;
    }
    let set = generate(K8S_LIKE, &SetSizes::small());
    rt().block_on(push_set(&up.addr, &set, None));
    let dir = tempfile::tempdir().unwrap();
    let list = list_file(dir.path(), K8S_LIKE);

    let (ok, out, err) = run(mirror_cmd(&up, &mi.addr, &list));
    assert!(ok, "mirror failed: {err}");
    let r = report(&out);
    assert_eq!(r["images"], 11);
    assert_eq!(r["images_up_to_date"], 0);
    assert!(r["blobs_copied"].as_u64().unwrap() > 0);
    // The shared base layer of each arch is copied once and mounted into the other repos.
    assert!(r["blobs_mounted"].as_u64().unwrap() >= 2 * 9, "{r}");
    assert!(err.contains("MB/s"), "summary with throughput: {err}");

    let n = skopeo::assert_identical_with_skopeo(&set, &up.addr, |r| format!("{}/{r}", mi.addr));
    assert_eq!(n, 11 + 10 * 2, "every tag and platform compared");

    let (ok, out, err) = run(mirror_cmd(&up, &mi.addr, &list));
    assert!(ok, "re-run failed: {err}");
    let r = report(&out);
    assert_eq!(r["images_up_to_date"], 11, "{r}");
    assert_eq!(r["blobs_copied"], 0);
    assert_eq!(r["manifests_pushed"], 0);

    // --platform: only arm64; the index is rewritten (new digest), the arm64 manifest is not.
    let to = format!("{}/arm-only", mi.addr);
    let mut c = mirror_cmd(&up, &to, &list);
    c.args(["--platform", "linux/arm64"]);
    let (ok, out, err) = run(c);
    assert!(ok, "platform mirror failed: {err}");
    let r = report(&out);
    let img = &set.images[0];
    let key = format!("{to}/{}:{}", img.repo, img.tag);
    let d = r["digests"][&key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {r}"));
    assert_ne!(d, img.top.digest, "a filtered index has a new digest");
    let raw = skopeo::skopeo_raw(
        &format!("{}/arm-only/{}:{}", mi.addr, img.repo, img.tag),
        None,
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["digest"], img.children[1].digest.as_str());
}

#[test]
fn bad_cases_fail_clearly_and_a_rerun_completes() {
    let t = "bad_cases_fail_clearly_and_a_rerun_completes";
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let refs = &K8S_LIKE[..3];
    let set = generate(refs, &SetSizes::small());
    rt().block_on(push_set(&up.addr, &set, None));
    let dir = tempfile::tempdir().unwrap();
    let list = list_file(dir.path(), refs);

    // Upstream down.
    let Some(mi) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let down = format!("127.0.0.1:{}", kprov_testkit::free_port());
    let mut c = kprov();
    c.args([
        "mirror",
        "--no-progress",
        "--retries",
        "1",
        "--from",
        &down,
        "--to",
        &mi.addr,
    ])
    .arg("--from-file")
    .arg(&list)
    .args([
        "--insecure-registry",
        &down,
        "--insecure-registry",
        &mi.addr,
    ]);
    let (ok, _, err) = run(c);
    assert!(!ok);
    assert!(
        err.contains("cannot reach registry") && err.contains(&down),
        "{err}"
    );

    // Tag missing.
    let missing = list_file(dir.path(), &["registry.k8s.io/pause:9.99"]);
    let (ok, _, err) = run(mirror_cmd(&up, &mi.addr, &missing));
    assert!(!ok);
    assert!(
        err.contains("registry.k8s.io/pause:9.99") && err.contains("not found"),
        "{err}"
    );

    // Read-only target: refused with a clear message; writable again, a re-run completes.
    let Some(ro) = Registry::start(
        t,
        RegistryOptions {
            readonly: true,
            ..Default::default()
        },
    ) else {
        return;
    };
    let (ok, _, err) = run(mirror_cmd(&up, &ro.addr, &list));
    assert!(!ok);
    assert!(
        err.contains("refused to store") && err.contains("re-run"),
        "{err}"
    );
    let data = ro.data.clone();
    drop(ro);
    let Some(rw) = Registry::start(
        t,
        RegistryOptions {
            data_dir: Some(data),
            ..Default::default()
        },
    ) else {
        return;
    };
    let (ok, out, err) = run(mirror_cmd(&up, &rw.addr, &list));
    assert!(ok, "re-run after read-only failed: {err}");
    assert_eq!(report(&out)["images"], 3);
    skopeo::assert_identical_with_skopeo(&set, &up.addr, |r| format!("{}/{r}", rw.addr));
}

/// The secured registry's password: distinctive, so the suite's leak scan
/// (tests/peers/leakscan.py) can search every kprov output for it.
const REGISTRY_PASSWORD: &str = "Mirror-Reg-Pw-51e0c7";

#[test]
fn auth_refused_names_docker_login_and_config_json_credentials_work() {
    let t = "auth_refused_names_docker_login_and_config_json_credentials_work";
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(sec) = Registry::start(
        t,
        RegistryOptions {
            htpasswd: Some(("kprov".into(), REGISTRY_PASSWORD.into())),
            ..Default::default()
        },
    ) else {
        return;
    };
    let refs = &K8S_LIKE[4..5];
    let set = generate(refs, &SetSizes::small());
    rt().block_on(push_set(&up.addr, &set, None));
    let dir = tempfile::tempdir().unwrap();
    let list = list_file(dir.path(), refs);
    let empty = dir.path().join("empty-docker");
    std::fs::create_dir_all(&empty).unwrap();
    let mut c = mirror_cmd(&up, &sec.addr, &list);
    c.env("DOCKER_CONFIG", &empty);
    let (ok, _, err) = run(c);
    assert!(!ok);
    assert!(
        err.contains("refused access") && err.contains("docker login"),
        "{err}"
    );

    let cfg = dir.path().join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    use base64::Engine;
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("kprov:{REGISTRY_PASSWORD}"));
    std::fs::write(
        cfg.join("config.json"),
        format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{auth}\"}}}}}}",
            sec.addr
        ),
    )
    .unwrap();
    let mut c = mirror_cmd(&up, &sec.addr, &list);
    c.env("DOCKER_CONFIG", &cfg);
    let (ok, _, err) = run(c);
    assert!(ok, "with credentials: {err}");
    let raw = skopeo::skopeo_raw(
        &format!("{}/{}:{}", sec.addr, set.images[0].repo, set.images[0].tag),
        Some(&format!("kprov:{REGISTRY_PASSWORD}")),
    );
    assert_eq!(raw.as_deref(), Some(set.images[0].top.bytes.as_slice()));
}

/// Write `docker-credential-NAME` into `bin`: it logs its argv and stdin under `bin`, then runs
/// `body` (a shell fragment; `$server` is what kprov wrote on stdin).
fn fake_helper(bin: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = bin.join(format!("docker-credential-{name}"));
    std::fs::write(
        &p,
        format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$(dirname \"$0\")/{name}.argv\"\nserver=$(cat)\nprintf '%s\\n' \"$server\" >> \"$(dirname \"$0\")/{name}.stdin\"\n{body}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn docker_credential_helpers_are_run_as_docker_runs_them() {
    let t = "docker_credential_helpers_are_run_as_docker_runs_them";
    // Distinctive, so the suite-wide leak scan can look for it in every kprov run.
    let secret = "kprov-helper-secret-5c1e9a7d3b";
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(sec) = Registry::start(
        t,
        RegistryOptions {
            htpasswd: Some(("kprov".into(), secret.into())),
            ..Default::default()
        },
    ) else {
        return;
    };
    if let Some(f) = kprov_cmd::issued_secrets_file("credential-helper") {
        std::fs::write(f, secret).unwrap();
    }
    let refs = &K8S_LIKE[4..5];
    let set = generate(refs, &SetSizes::small());
    rt().block_on(push_set(&up.addr, &set, None));
    let dir = tempfile::tempdir().unwrap();
    let list = list_file(dir.path(), refs);
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    fake_helper(
        &bin,
        "kprovtest",
        &format!("if [ \"$server\" = {} ]; then printf '{{\"ServerURL\":\"%s\",\"Username\":\"kprov\",\"Secret\":\"{secret}\"}}' \"$server\"; else echo 'credentials not found in native keychain'; exit 1; fi", sec.addr),
    );
    fake_helper(
        &bin,
        "kprovnone",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    fake_helper(
        &bin,
        "kprovbroken",
        "echo 'the keychain is locked' >&2; exit 3",
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let log = dir.path().join("kprov.log");
    let run_with = |config: String| {
        let d = tempfile::tempdir_in(dir.path()).unwrap();
        std::fs::write(d.path().join("config.json"), config).unwrap();
        let mut c = mirror_cmd(&up, &sec.addr, &list);
        c.env("DOCKER_CONFIG", d.path())
            .env("PATH", &path)
            .env("KPROV_LOG_FILE", &log);
        let out = c.output().expect("run kprov");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let all = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
        assert!(
            !all.contains(secret),
            "the secret leaked into output: {all}"
        );
        (out.status.code(), err)
    };

    // credsStore: the helper is asked (argv `get` only, the server on stdin) and its
    // credentials open the registry.
    let (code, err) = run_with(r#"{"credsStore": "kprovtest"}"#.into());
    assert_eq!(code, Some(0), "credsStore helper: {err}");
    let argv = std::fs::read_to_string(bin.join("kprovtest.argv")).unwrap();
    assert!(argv.lines().all(|l| l == "get"), "helper argv: {argv}");
    let stdin = std::fs::read_to_string(bin.join("kprovtest.stdin")).unwrap();
    assert_eq!(
        stdin.lines().collect::<Vec<_>>(),
        [sec.addr.as_str()],
        "run once, for {}",
        sec.addr
    );
    let raw = skopeo::skopeo_raw(
        &format!("{}/{}:{}", sec.addr, set.images[0].repo, set.images[0].tag),
        Some(&format!("kprov:{secret}")),
    );
    assert_eq!(raw.as_deref(), Some(set.images[0].top.bytes.as_slice()));

    // credHelpers for this registry overrides a broken credsStore, which is never run.
    let (code, err) = run_with(format!(
        r#"{{"credsStore": "kprovbroken", "credHelpers": {{"{}": "kprovtest"}}}}"#,
        sec.addr
    ));
    assert_eq!(code, Some(0), "credHelpers override: {err}");
    let stdin = std::fs::read_to_string(bin.join("kprovtest.stdin")).unwrap();
    assert_eq!(
        stdin.lines().count(),
        2,
        "the credHelpers helper was asked: {stdin}"
    );
    assert!(
        !bin.join("kprovbroken.argv").exists(),
        "credsStore ran despite credHelpers"
    );

    // "credentials not found" → anonymous, and the registry's 401 names the registry.
    let (code, err) = run_with(r#"{"credsStore": "kprovnone"}"#.into());
    assert_ne!(code, Some(0));
    assert!(
        err.contains(&format!("registry {} refused access", sec.addr))
            && err.contains("sent anonymously: no credentials for it from credential helper docker-credential-kprovnone"),
        "{err}"
    );

    // Any other helper failure stops kprov, naming the helper, the registry and the cause.
    let (code, err) = run_with(r#"{"credsStore": "kprovbroken"}"#.into());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "credential helper docker-credential-kprovbroken failed for registry {}",
            sec.addr
        )) && err.contains("the keychain is locked")
            && err.contains("credsStore"),
        "{err}"
    );
    let (code, err) = run_with(r#"{"credsStore": "kprovmissing"}"#.into());
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("docker-credential-kprovmissing is not on PATH"),
        "{err}"
    );

    // Nothing kprov logged (debug log of every run above) holds the secret.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("docker-credential-kprovtest gave credentials"),
        "{logged}"
    );
    assert!(!logged.contains(secret), "the secret is in the debug log");
}

/// A fake registry serving one single-platform image whose layer bytes do not match the digest
/// its manifest names.
async fn fake_registry() -> (String, String, tokio::task::JoinHandle<()>) {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    let good = b"the layer the manifest promises".to_vec();
    let layer_digest = images::digest(&good);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = images::digest(&config);
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{config_digest}\",\"size\":{}}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"{layer_digest}\",\"size\":{}}}]}}",
        config.len(),
        good.len()
    );
    let md = images::digest(manifest.as_bytes());
    let evil = b"THE LAYER AN ATTACKER SERVES!!!".to_vec();
    assert_eq!(evil.len(), good.len());
    let ld = layer_digest.clone();
    let app = axum::Router::new()
        .route("/v2/", get(|| async { "{}" }))
        .route(
            "/v2/registry.k8s.io/evil/manifests/{reference}",
            get(move || {
                let m = manifest.clone();
                let md = md.clone();
                async move {
                    let mut h = HeaderMap::new();
                    h.insert(
                        "content-type",
                        "application/vnd.oci.image.manifest.v1+json"
                            .parse()
                            .unwrap(),
                    );
                    h.insert("docker-content-digest", md.parse().unwrap());
                    (StatusCode::OK, h, m)
                }
            })
            .head(|| async { StatusCode::OK }),
        )
        .route(
            "/v2/registry.k8s.io/evil/blobs/{digest}",
            get(move |axum::extract::Path(d): axum::extract::Path<String>| {
                let evil = evil.clone();
                let config = config.clone();
                let ld = ld.clone();
                async move {
                    if d == ld {
                        (StatusCode::OK, evil)
                    } else {
                        (StatusCode::OK, config)
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let h = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, layer_digest, h)
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_rejected_and_not_stored() {
    let t = "a_blob_that_does_not_match_its_digest_is_rejected_and_not_stored";
    let Some(mi) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let rt = rt();
    let (fake, layer_digest, h) = rt.block_on(fake_registry());
    let dir = tempfile::tempdir().unwrap();
    let list = list_file(dir.path(), &["registry.k8s.io/evil:1"]);
    let mut c = kprov();
    c.args([
        "mirror",
        "--no-progress",
        "--retries",
        "1",
        "--from",
        &fake,
        "--to",
        &mi.addr,
    ])
    .arg("--from-file")
    .arg(&list)
    .args([
        "--insecure-registry",
        &fake,
        "--insecure-registry",
        &mi.addr,
    ]);
    let (ok, _, err) =
        rt.block_on(async { tokio::task::spawn_blocking(move || run(c)).await.unwrap() });
    assert!(!ok);
    assert!(
        err.contains(&layer_digest)
            && err.contains("hashes to")
            && err.contains("nothing was stored"),
        "{err}"
    );
    let status = rt.block_on(async {
        reqwest::Client::new()
            .head(format!(
                "http://{}/v2/registry.k8s.io/evil/blobs/{layer_digest}",
                mi.addr
            ))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status.as_u16(), 404, "nothing written under the bad digest");
    let tag = skopeo::skopeo_raw(&format!("{}/registry.k8s.io/evil:1", mi.addr), None);
    assert!(tag.is_none(), "no manifest pushed for a failed image");
    h.abort();
}

#[test]
fn bundle_round_trip_keeps_digests_and_a_corrupt_bundle_names_its_bad_entry() {
    let t = "bundle_round_trip_keeps_digests_and_a_corrupt_bundle_names_its_bad_entry";
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(mi) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(mi2) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let set = generate(K8S_LIKE, &SetSizes::small());
    rt().block_on(push_set(&up.addr, &set, None));
    let dir = tempfile::tempdir().unwrap();
    let list = list_file(dir.path(), K8S_LIKE);
    let bundle = dir.path().join("set.tar");
    let mut c = kprov();
    c.args([
        "mirror",
        "--no-progress",
        "--from",
        &up.addr,
        "--insecure-registry",
        &up.addr,
    ])
    .arg("--from-file")
    .arg(&list)
    .arg("--to-bundle")
    .arg(&bundle);
    let (ok, _, err) = run(c);
    assert!(ok, "export failed: {err}");
    assert!(
        !Path::new(&format!("{}.partial", bundle.display())).exists(),
        "staging removed"
    );
    // Shared blobs are stored once.
    let mut ar = tar::Archive::new(std::fs::File::open(&bundle).unwrap());
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names[0], "kprov-bundle.json");
    let blobs = names.iter().filter(|n| n.starts_with("blobs/")).count();
    let manifests: usize = set.images.iter().map(|i| 1 + i.children.len()).sum();
    assert_eq!(blobs, set.blobs.len() + manifests, "each blob once");

    let import = |to: &str| {
        let mut c = kprov();
        c.args([
            "mirror",
            "--no-progress",
            "--json",
            "--to",
            to,
            "--insecure-registry",
            to,
        ])
        .arg("--from-bundle")
        .arg(&bundle);
        run(c)
    };
    let (ok, _, err) = import(&mi.addr);
    assert!(ok, "import failed: {err}");
    skopeo::assert_identical_with_skopeo(&set, &up.addr, |r| format!("{}/{r}", mi.addr));
    let (ok, out, err) = import(&mi.addr);
    assert!(ok, "re-import failed: {err}");
    assert_eq!(report(&out)["copy"]["images_up_to_date"], 11, "{out}");

    // Flip one byte inside a layer.
    let big = set.blobs.values().max_by_key(|b| b.size).unwrap();
    let entry = format!("blobs/sha256/{}", big.digest.trim_start_matches("sha256:"));
    let mut ar = tar::Archive::new(std::fs::File::open(&bundle).unwrap());
    let off = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().display().to_string() == entry)
        .unwrap()
        .raw_file_position();
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[off as usize + 100] ^= 0xff;
    std::fs::write(&bundle, bytes).unwrap();
    let (ok, _, err) = import(&mi2.addr);
    assert!(!ok);
    assert!(err.contains(&entry) && err.contains("hashes to"), "{err}");
}

#[test]
fn files_are_verified_and_copied_to_a_directory() {
    use kprov::mirror::files::{mirror_files, FileOutcome, FileTarget};
    use kprov::mirror::FileAsset;
    let rt = rt();
    rt.block_on(async {
        let body = b"#!/bin/sh\necho kubeadm\n".to_vec();
        let sha = images::digest(&body)
            .trim_start_matches("sha256:")
            .to_string();
        let b2 = body.clone();
        let app = axum::Router::new().route(
            "/dl.k8s.io/release/v1/bin/linux/amd64/kubeadm",
            axum::routing::get(move || {
                let b = b2.clone();
                async move { b }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let h = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let dir = tempfile::tempdir().unwrap();
        let f = FileAsset {
            name: "kubeadm".into(),
            upstream_url: "https://dl.k8s.io/release/v1/bin/linux/amd64/kubeadm".into(),
            mirror_url: String::new(),
            sha256: sha.clone(),
            arch: kprov::spec::Arch::Amd64,
        };
        let target =
            FileTarget::parse(&format!("file://{}", dir.path().join("repo").display())).unwrap();
        let http = reqwest::Client::new();
        let from = format!("http://{addr}");
        let out = mirror_files(
            &http,
            std::slice::from_ref(&f),
            Some(&from),
            &target,
            &dir.path().join("stage"),
        )
        .await
        .unwrap();
        assert_eq!(out, vec![FileOutcome::Copied(body.len() as u64)]);
        let written = dir
            .path()
            .join("repo/dl.k8s.io/release/v1/bin/linux/amd64/kubeadm");
        assert_eq!(std::fs::read(&written).unwrap(), body);
        let out = mirror_files(
            &http,
            std::slice::from_ref(&f),
            Some(&from),
            &target,
            &dir.path().join("stage"),
        )
        .await
        .unwrap();
        assert_eq!(out, vec![FileOutcome::Present]);
        let mut bad = f.clone();
        bad.upstream_url = bad.upstream_url.replace("linux", "linux/../linux");
        bad.sha256 = "0".repeat(64);
        let e = mirror_files(
            &http,
            &[FileAsset {
                upstream_url: f.upstream_url.clone(),
                ..bad
            }],
            Some(&from),
            &FileTarget::Dir(dir.path().join("other")),
            &dir.path().join("stage"),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("hashes to") && e.contains("kubeadm"), "{e}");
        assert!(!dir
            .path()
            .join("other/dl.k8s.io/release/v1/bin/linux/amd64/kubeadm")
            .exists());
        h.abort();
    });
}

#[test]
fn cluster_catalogue_is_mirrored_and_checked() {
    let t = "cluster_catalogue_is_mirrored_and_checked";
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(mi) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    if peers::require(t, "skopeo").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // files are looked for on loopback only (the registry answers 404 for them)
    let (state, cat, ups) = crate::cluster_with_catalogue(
        dir.path(),
        "demo",
        &format!(
            "{{containerRegistry: \"{0}\", fileRepository: \"http://{0}/files\", insecure: true}}",
            mi.addr
        ),
    );
    assert_eq!(ups.len(), 9, "7 core + 2 flannel images: {ups:?}");
    assert_eq!(
        cat["files"].as_array().unwrap().len(),
        14,
        "7 files (kubeadm, kubelet, kubectl, crictl, CNI plugins, containerd, runc) x 2 arches"
    );
    for i in cat["images"].as_array().unwrap() {
        assert_eq!(
            i["mirror"].as_str().unwrap(),
            format!("{}/{}", mi.addr, i["upstream"].as_str().unwrap())
        );
    }
    let mut c = kprov();
    c.args(["--state", &state, "get", "assets", "demo"]);
    let (ok, table, _) = run(c);
    assert!(
        ok && table.starts_with("KIND") && table.contains("sha256:"),
        "{table}"
    );

    let refs: Vec<&str> = ups.iter().map(String::as_str).collect();
    let set = generate(&refs, &SetSizes::small());
    rt().block_on(push_set(&up.addr, &set, None));

    let check = || {
        let mut c = kprov();
        c.args(["--state", &state, "check", "assets", "demo", "-o", "json"]);
        run(c)
    };
    let (ok, out, err) = check();
    assert!(!ok, "nothing mirrored yet");
    assert!(
        err.contains("not reachable at their mirror locations")
            && err.contains("kprov mirror demo"),
        "{err}"
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(rows
        .iter()
        .filter(|r| r["kind"] == "image")
        .all(|r| r["status"] != "ok"));

    let mut c = kprov();
    c.args([
        "--state",
        &state,
        "mirror",
        "demo",
        "--no-progress",
        "--from",
        &up.addr,
        "--src-insecure",
    ]);
    let (ok, _, err) = run(c);
    assert!(ok, "mirror demo: {err}");
    assert!(err.contains("files not copied"), "{err}");
    skopeo::assert_identical_with_skopeo(&set, &up.addr, |r| format!("{}/{r}", mi.addr));

    // Images are all there now; the files (no file repository, no network) are not.
    let (ok, out, _) = check();
    assert!(!ok);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let images: Vec<_> = rows.iter().filter(|r| r["kind"] == "image").collect();
    assert_eq!(images.len(), 9);
    assert!(images.iter().all(|r| r["status"] == "ok"), "{rows:#?}");
}
