//! `kprov mirror` transports against real peers on 127.0.0.1 :
//!
//! * the docker bearer-token flow: Debian `docker-registry` with `auth.token` and the token
//!   server `tests/peers/tokenserver.py` (ES256 JWTs, `x5c` chain, per-repository `access`
//!   claims), credentials from `config.json`; per-repository scopes; no token in the output;
//! * HTTPS with a custom CA (rcgen): `--ca-bundle`, the certificate error without it, plain
//!   HTTP refused unless the registry is named insecure;
//! * files to S3 (moto) and to an HTTP PUT target (Debian nginx with `dav_methods PUT`):
//!   bytes and SHA-256, a re-run skips, a download that does not match is never uploaded;
//! * `kill -9` in the middle of a registry copy, a bundle export and a bundle import, then a
//!   re-run that finishes without re-copying what was complete (the fault proxy
//!   `tests/peers/faultproxy.py` slows the copy down so the kill lands mid-copy).
//!
//! Peers: `bash tests/peers/install.sh` (`KPROV_SKIP_PEERS=1` skips).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kprov_testkit::fault_proxy::FaultProxy;
use kprov_testkit::images::{self, generate, ImageSet, SetSizes, K8S_LIKE};
use kprov_testkit::kprov_cmd::run;
use kprov_testkit::moto::Moto;
use kprov_testkit::nginx::Nginx;
use kprov_testkit::peers::require;
use kprov_testkit::prng::Prng;
use kprov_testkit::registry::{push_set, Registry, RegistryOptions};
use kprov_testkit::test_ca::TestCa;
use kprov_testkit::token_server::TokenServer;
use kprov_testkit::{raw_http, registry_storage, skopeo};

use crate::kprov;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn list_file(dir: &Path, refs: &[&str]) -> PathBuf {
    let p = dir.join(format!(
        "images-{}.txt",
        &images::digest(refs.join(",").as_bytes())[7..19]
    ));
    std::fs::write(&p, refs.join("\n") + "\n").unwrap();
    p
}

fn report(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}"))
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A plain-HTTP registry holding `set`, its storage kept in `data` (so it can be restarted with
/// other options over the same images).
fn seeded_registry(t: &str, set: &ImageSet, data: &Path) -> Option<()> {
    let r = Registry::start(
        t,
        RegistryOptions {
            data_dir: Some(data.to_path_buf()),
            ..Default::default()
        },
    )?;
    rt().block_on(push_set(&r.addr, set, None));
    Some(())
}

fn docker_config(dir: &Path, entries: &[(&str, &str, &str)]) -> PathBuf {
    use base64::Engine;
    std::fs::create_dir_all(dir).unwrap();
    let auths: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(host, u, p)| {
            let a = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            (host.to_string(), serde_json::json!({ "auth": a }))
        })
        .collect();
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({ "auths": auths }).to_string(),
    )
    .unwrap();
    dir.to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// 1. Bearer tokens
// ---------------------------------------------------------------------------------------------

const USER: &str = "kprov-robot";
const PASSWORD: &str = "t0ken-flow-s3cret";

#[test]
fn bearer_token_flow_with_config_json_credentials_scoped_per_repository() {
    let t = "bearer_token_flow_with_config_json_credentials_scoped_per_repository";
    if require(t, "docker-registry").is_none() || require(t, "skopeo").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("ca"), "token");
    // The robot may only pull from the source and pull/push on the target.
    let acl = serde_json::json!([
        {"service": "kprov-source", "account": USER, "actions": ["pull"]},
        {"service": "kprov-target", "account": USER, "actions": ["pull", "push"]},
    ])
    .to_string();
    let ts_dir = dir.path().join("ts");
    std::fs::create_dir_all(&ts_dir).unwrap();
    let Some(ts) = TokenServer::start(t, &ca, &[(USER, PASSWORD)], &acl, &ts_dir, 300) else {
        return;
    };
    let refs = &K8S_LIKE[..4];
    let set = generate(refs, &SetSizes::small());
    let src_data = dir.path().join("src-data");
    seeded_registry(t, &set, &src_data).unwrap();
    let Some(src) = Registry::start(
        t,
        RegistryOptions {
            data_dir: Some(src_data),
            token: Some(ts.auth("kprov-source", &ca)),
            ..Default::default()
        },
    ) else {
        return;
    };
    let Some(dst) = Registry::start(
        t,
        RegistryOptions {
            token: Some(ts.auth("kprov-target", &ca)),
            ..Default::default()
        },
    ) else {
        return;
    };
    let list = list_file(dir.path(), refs);
    let mirror = |docker: &Path| {
        let mut c = kprov();
        c.args([
            "-v",
            "mirror",
            "--no-progress",
            "--json",
            "--retries",
            "1",
            "--from",
            &src.addr,
            "--to",
            &dst.addr,
            "--insecure-registry",
            &src.addr,
            "--insecure-registry",
            &dst.addr,
        ])
        .arg("--from-file")
        .arg(&list)
        .arg("--ca-bundle")
        .arg(&ca.ca_pem)
        .env("DOCKER_CONFIG", docker)
        .env_remove("KPROV_LOG");
        run(c)
    };

    // No credentials at all: anonymous tokens carry no access; refused, naming the registry.
    let (ok, _, err) = mirror(&docker_config(&dir.path().join("d-empty"), &[]));
    assert!(!ok, "anonymous mirror must fail");
    assert!(
        err.contains("refused access") && err.contains("docker login"),
        "{err}"
    );

    // A wrong password for the target: the token service refuses; the error names the target
    // and the fix, and never the password.
    let wrong = docker_config(
        &dir.path().join("d-wrong"),
        &[
            (&src.addr, USER, PASSWORD),
            (&dst.addr, USER, "not-the-password"),
        ],
    );
    let (ok, out, err) = mirror(&wrong);
    assert!(!ok, "wrong credentials must fail");
    assert!(
        err.contains(&format!("registry {} refused access", dst.addr))
            && err.contains(&format!("docker login {}", dst.addr))
            && err.contains("token service")
            && err.contains("config.json"),
        "{err}"
    );
    assert!(!err.contains("not-the-password") && !out.contains("not-the-password"));

    // The right credentials: copied, byte-identical (skopeo does its own token flow).
    let good = docker_config(
        &dir.path().join("d-good"),
        &[(&src.addr, USER, PASSWORD), (&dst.addr, USER, PASSWORD)],
    );
    let before = ts.requests().len();
    let (ok, out, err) = mirror(&good);
    assert!(ok, "mirror with config.json credentials failed: {err}");
    let r = report(&out);
    assert_eq!(r["images"], 4, "{r}");
    assert!(r["blobs_mounted"].as_u64().unwrap() > 0, "mounts used: {r}");
    let creds = format!("{USER}:{PASSWORD}");
    let flags = s(&["--tls-verify=false", "--creds", &creds]);
    let n = skopeo::assert_identical_with_skopeo_opts(
        &set,
        &src.addr,
        &flags,
        |r| format!("{}/{r}", dst.addr),
        &flags,
    );
    assert_eq!(n, 4 + 4 * 2);

    // What kprov asked the token service for in that run (skopeo's requests come after).
    let reqs: Vec<serde_json::Value> = ts.requests()[before..]
        .iter()
        .filter(|r| r["account"] == USER)
        .cloned()
        .collect();
    assert!(
        !reqs.is_empty(),
        "kprov fetched tokens with the robot account"
    );
    let repos: BTreeSet<String> = set.images.iter().map(|i| i.repo.clone()).collect();
    let mut target_push = BTreeSet::new();
    for q in &reqs {
        let service = q["service"].as_str().unwrap();
        for sc in q["requested"].as_array().unwrap() {
            let sc = sc.as_str().unwrap();
            let parts: Vec<&str> = sc.split(':').collect();
            assert_eq!(parts.len(), 3, "scope {sc:?}");
            assert_eq!(parts[0], "repository", "only repository scopes: {sc}");
            assert!(
                repos.contains(parts[1]),
                "scope {sc} names one mirrored repository (no wildcards, nothing else)"
            );
            let actions: BTreeSet<&str> = parts[2].split(',').collect();
            match service {
                "kprov-source" => assert_eq!(
                    actions,
                    BTreeSet::from(["pull"]),
                    "only pull is asked of the source: {sc}"
                ),
                "kprov-target" => {
                    if actions.contains("push") {
                        target_push.insert(parts[1].to_string());
                    }
                }
                other => panic!("token for unexpected service {other}"),
            }
        }
        // Every token grants at most what was asked, repository by repository.
        for g in q["granted"].as_array().unwrap() {
            let sc = format!("repository:{}:", g["name"].as_str().unwrap_or_default());
            assert!(
                q["requested"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r.as_str().unwrap().starts_with(&sc)),
                "{q}"
            );
        }
    }
    assert_eq!(
        target_push, repos,
        "push+pull asked for every target repository"
    );
    assert!(
        reqs.iter().any(|q| q["service"] == "kprov-source"),
        "source tokens were requested"
    );

    // Secrets never reach the output, even with -v (which does log the token flow).
    assert!(
        err.contains("requesting a bearer token"),
        "-v logs the token flow: {err}"
    );
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(&creds);
    for secret in [PASSWORD, basic.as_str()] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} leaked"
        );
    }
    let tokens: Vec<String> = ts
        .requests()
        .iter()
        .filter_map(|q| q["token"].as_str().map(str::to_string))
        .collect();
    assert!(tokens.len() > reqs.len() / 2);
    for tok in &tokens {
        // The signature part alone is unique per token.
        let sig = tok.rsplit('.').next().unwrap();
        assert!(
            !out.contains(sig) && !err.contains(sig),
            "a token leaked into kprov's output"
        );
    }

    // A re-run: everything up to date.
    let (ok, out, err) = mirror(&good);
    assert!(ok, "re-run: {err}");
    assert_eq!(report(&out)["images_up_to_date"], 4);
}

// ---------------------------------------------------------------------------------------------
// 2. TLS with a custom CA
// ---------------------------------------------------------------------------------------------

#[test]
fn tls_registry_with_custom_ca_needs_ca_bundle_and_plain_http_is_refused() {
    let t = "tls_registry_with_custom_ca_needs_ca_bundle_and_plain_http_is_refused";
    if require(t, "skopeo").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("ca"), "mirror");
    let cert = ca.issue("registry", &["127.0.0.1"]);
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(tls) = Registry::start(
        t,
        RegistryOptions {
            tls: Some(cert),
            ..Default::default()
        },
    ) else {
        return;
    };
    let refs = &K8S_LIKE[4..7];
    let set = generate(refs, &SetSizes::small());
    rt().block_on(push_set(&up.addr, &set, None));
    let list = list_file(dir.path(), refs);
    let mirror = |extra: &[&str], ca_files: &[&Path]| {
        let mut c = kprov();
        c.args([
            "mirror",
            "--no-progress",
            "--json",
            "--retries",
            "1",
            "--from",
            &up.addr,
            "--to",
            &tls.addr,
        ])
        .args(extra)
        .arg("--from-file")
        .arg(&list);
        for f in ca_files {
            c.arg("--ca-bundle").arg(f);
        }
        run(c)
    };
    let src_insecure = ["--insecure-registry", up.addr.as_str()];

    // Without the CA: a certificate error naming the registry and both ways to trust it.
    let (ok, _, err) = mirror(&src_insecure, &[]);
    assert!(!ok, "an untrusted certificate must fail");
    assert!(
        err.contains(&format!("cannot reach registry {}", tls.addr))
            && err.contains("certificate")
            && err.contains("--ca-bundle")
            && err.contains("assets.caBundle"),
        "{err}"
    );
    assert!(
        !err.contains(&format!("http://{}", tls.addr)),
        "no plain-HTTP fallback: {err}"
    );
    // Another CA does not help.
    let other = TestCa::new(&dir.path().join("other"), "other");
    let (ok, _, err) = mirror(&src_insecure, &[&other.ca_pem]);
    assert!(!ok);
    assert!(
        err.contains("certificate") && err.contains(&tls.addr),
        "{err}"
    );

    // With --ca-bundle and no insecure flag for the target: copied, verified by skopeo over TLS.
    let (ok, out, err) = mirror(&src_insecure, &[&ca.ca_pem]);
    assert!(ok, "mirror over TLS with --ca-bundle failed: {err}");
    assert_eq!(report(&out)["images"], 3);
    let cert_dir = ca.cert_dir();
    let n = skopeo::assert_identical_with_skopeo_opts(
        &set,
        &up.addr,
        &s(&["--tls-verify=false"]),
        |r| format!("{}/{r}", tls.addr),
        &["--cert-dir".to_string(), cert_dir.display().to_string()],
    );
    assert_eq!(n, 3 + 3 * 2);
    // skopeo, too, refuses the registry without the CA (the certificate really is custom).
    let first = format!("{}/{}", tls.addr, set.references()[0]);
    assert!(skopeo::skopeo_raw_with(&first, &[]).is_err());

    // A plain-HTTP source not named insecure is refused, with the fix.
    let (ok, _, err) = mirror(&[], &[&ca.ca_pem]);
    assert!(!ok, "plain HTTP must not be used unless named insecure");
    assert!(
        err.contains(&up.addr)
            && err.contains(&format!("--insecure-registry {}", up.addr))
            && err.contains("does not speak HTTPS"),
        "{err}"
    );

    let (ok, out, err) = mirror(&src_insecure, &[&ca.ca_pem]);
    assert!(ok, "re-run: {err}");
    assert_eq!(report(&out)["images_up_to_date"], 3);
}

// ---------------------------------------------------------------------------------------------
// 3. Files to S3 (moto) and HTTP PUT (nginx)
// ---------------------------------------------------------------------------------------------

struct FileCase {
    url: String,
    rel: String,
    bytes: Vec<u8>,
    sha: String,
}

/// An object read back with the SDK (not through kprov): bytes and `sha256` metadata, or
/// `None` when absent.
fn s3_get(endpoint: &str, bucket: &str, key: &str) -> Option<(Vec<u8>, Option<String>)> {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    rt().block_on(async move {
        match client.get_object().bucket(bucket).key(key).send().await {
            Ok(o) => {
                let meta = o.metadata().and_then(|m| m.get("sha256")).cloned();
                let bytes = o.body.collect().await.unwrap().into_bytes().to_vec();
                Some((bytes, meta))
            }
            Err(e) => {
                let e = e.into_service_error();
                assert!(e.is_no_such_key(), "reading s3://{bucket}/{key}: {e}");
                None
            }
        }
    })
}

fn sha_hex(b: &[u8]) -> String {
    images::digest(b).trim_start_matches("sha256:").to_string()
}

#[test]
fn files_go_to_s3_and_http_put_verified_skipped_on_rerun_and_never_uploaded_when_corrupt() {
    let t = "files_go_to_s3_and_http_put_verified_skipped_on_rerun_and_never_uploaded_when_corrupt";
    let dir = tempfile::tempdir().unwrap();
    let Some(nginx) = Nginx::start(t, &dir.path().join("nginx")) else {
        return;
    };
    let Some(moto) = Moto::start(t) else {
        return;
    };
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(mi) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    // A cluster (nothing is created in a cloud) whose catalogue names the files.
    let (state, cat, ups) = crate::cluster_with_catalogue(
        dir.path(),
        "files",
        &format!("{{containerRegistry: \"{}\", insecure: true}}", mi.addr),
    );
    let refs: Vec<&str> = ups.iter().map(String::as_str).collect();
    rt().block_on(push_set(
        &up.addr,
        &generate(&refs, &SetSizes::small()),
        None,
    ));

    // Stand-ins for the binaries, served by nginx as a file repository (HOST/PATH under /src),
    // with their sums given the way in-house builds are (KPROV_ASSET_SHA256SUMS, by file name).
    let mut files = Vec::new();
    let mut sums = String::new();
    for f in cat["files"].as_array().unwrap() {
        let url = f["upstream_url"].as_str().unwrap().to_string();
        let name = url.rsplit('/').next().unwrap().to_string();
        let mut bytes = format!("#!/bin/sh\n# stand-in for {name}\n").into_bytes();
        let mut pad = vec![0u8; 96 * 1024];
        Prng::new(&name).fill(&mut pad);
        bytes.extend_from_slice(&pad);
        let rel = url.split_once("://").unwrap().1.to_string();
        let p = nginx.root.join("src").join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &bytes).unwrap();
        let sha = sha_hex(&bytes);
        if !sums.contains(&format!("  {name}\n")) {
            sums.push_str(&format!("{sha}  {name}\n"));
        }
        files.push(FileCase {
            url,
            rel,
            bytes,
            sha,
        });
    }
    assert!(files.len() >= 4, "the catalogue names files: {cat}");
    let sums_file = dir.path().join("SHA256SUMS");
    std::fs::write(&sums_file, &sums).unwrap();
    let (st, body) = raw_http::request(moto.port, "PUT", "/kprov-files", "").expect("moto");
    assert_eq!(st, 200, "create bucket: {body}");

    let mirror = |files_to: &str| {
        let mut c = kprov();
        c.args([
            "--state",
            &state,
            "mirror",
            "files",
            "--no-progress",
            "--json",
            "--retries",
            "1",
            "--from",
            &up.addr,
            "--src-insecure",
            "--files-from",
            &format!("http://{}/src", nginx.addr),
            "--files-to",
            files_to,
        ])
        .env("KPROV_ASSET_SHA256SUMS", &sums_file);
        for (k, v) in moto.kprov_s3_env() {
            c.env(k, v);
        }
        run(c)
    };
    let src_gets = || {
        nginx
            .requests("GET")
            .iter()
            .filter(|l| l.contains(" /src/"))
            .count()
    };
    let http = reqwest::Client::new();
    let get = |url: String| {
        let http = http.clone();
        rt().block_on(async move {
            let r = http.get(&url).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.bytes().await.unwrap().to_vec())
        })
    };

    // S3: every file with its bytes and its SHA-256 as metadata.
    let (ok, out, err) = mirror("s3://kprov-files/mirror");
    assert!(ok, "mirror to S3 failed: {err}");
    let r = report(&out);
    assert_eq!(r["files_copied"], files.len(), "{r}");
    assert_eq!(r["files_present"], 0);
    for f in &files {
        let (bytes, meta) = s3_get(
            &moto.endpoint(),
            "kprov-files",
            &format!("mirror/{}", f.rel),
        )
        .unwrap_or_else(|| panic!("{} not in S3", f.rel));
        assert!(bytes == f.bytes, "{} bytes in S3", f.rel);
        assert_eq!(sha_hex(&bytes), f.sha);
        assert_eq!(meta.as_deref(), Some(f.sha.as_str()), "sha256 metadata");
    }
    // Re-run: nothing downloaded again, everything reported present.
    let gets = src_gets();
    assert_eq!(gets, files.len(), "each file downloaded once");
    let (ok, out, err) = mirror("s3://kprov-files/mirror");
    assert!(ok, "S3 re-run failed: {err}");
    let r = report(&out);
    assert_eq!(
        (r["files_copied"].as_u64(), r["files_present"].as_u64()),
        (Some(0), Some(files.len() as u64)),
        "{r}"
    );
    assert_eq!(src_gets(), gets, "a re-run downloads nothing");

    // HTTP PUT (nginx WebDAV PUT).
    let put_base = format!("http://{}/put/repo", nginx.addr);
    let (ok, out, err) = mirror(&put_base);
    assert!(ok, "mirror to HTTP PUT failed: {err}");
    assert_eq!(report(&out)["files_copied"], files.len());
    for f in &files {
        let on_disk = std::fs::read(nginx.root.join("put/repo").join(&f.rel)).unwrap();
        assert!(on_disk == f.bytes, "{} written by PUT", f.rel);
        let (st, bytes) = get(format!("{put_base}/{}", f.rel));
        assert_eq!((st, sha_hex(&bytes)), (200, f.sha.clone()));
    }
    let puts = nginx.requests("PUT").len();
    assert_eq!(puts, files.len(), "one PUT per file");
    let gets = src_gets();
    let (ok, out, err) = mirror(&put_base);
    assert!(ok, "HTTP re-run failed: {err}");
    assert_eq!(report(&out)["files_present"], files.len());
    assert_eq!(nginx.requests("PUT").len(), puts, "a re-run PUTs nothing");
    assert_eq!(src_gets(), gets, "a re-run downloads nothing");

    // The source serves other bytes for one file: it is refused and never uploaded anywhere.
    let bad = files
        .iter()
        .find(|f| f.url.contains("amd64") && f.url.ends_with("/kubeadm"))
        .unwrap_or(&files[0]);
    let mut evil = bad.bytes.clone();
    evil[20] ^= 0x55;
    std::fs::write(nginx.root.join("src").join(&bad.rel), &evil).unwrap();
    for target in [
        "s3://kprov-files/corrupt".to_string(),
        format!("http://{}/put/corrupt", nginx.addr),
    ] {
        let (ok, _, err) = mirror(&target);
        assert!(!ok, "a corrupt download must fail ({target})");
        assert!(
            err.contains(&bad.url)
                && err.contains("hashes to")
                && err.contains(&bad.sha)
                && err.contains("downloaded from"),
            "{err}"
        );
    }
    assert!(
        s3_get(
            &moto.endpoint(),
            "kprov-files",
            &format!("corrupt/{}", bad.rel)
        )
        .is_none(),
        "the corrupt file is not in S3"
    );
    assert!(!nginx.root.join("put/corrupt").join(&bad.rel).exists());
    assert!(
        !nginx
            .requests("PUT")
            .iter()
            .any(|l| l.contains(&format!("/put/corrupt/{}", bad.rel))),
        "no PUT of the corrupt file"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. kill -9 and resume
// ---------------------------------------------------------------------------------------------

fn medium_set() -> ImageSet {
    generate(
        K8S_LIKE,
        &SetSizes {
            base: 1024 * 1024,
            unique: 384 * 1024,
            dir: None,
        },
    )
}

/// Spawn `kprov` with output in files; SIGKILL it as soon as `ready()` (polled every 50 ms)
/// holds. Panics if it exits first (the kill would then test nothing).
fn kill_when(mut c: Command, dir: &Path, what: &str, mut ready: impl FnMut() -> bool) {
    let out = std::fs::File::create(dir.join(format!("{what}.out"))).unwrap();
    let err_path = dir.join(format!("{what}.err"));
    let err = std::fs::File::create(&err_path).unwrap();
    let mut child = c
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn kprov");
    let hit = kprov_testkit::wait_until(Duration::from_secs(120), || {
        child.try_wait().unwrap().is_none() && ready()
    });
    let exited = child.try_wait().unwrap();
    assert!(
        exited.is_none(),
        "{what}: kprov finished ({exited:?}) before the kill point; stderr:\n{}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    assert!(hit, "{what}: the kill point was never reached");
    child.kill().expect("SIGKILL"); // Child::kill is SIGKILL on Unix
    let st = child.wait().unwrap();
    assert!(!st.success(), "{what}: killed");
    // Let the registry finish whatever request was in flight.
    std::thread::sleep(Duration::from_millis(700));
}

fn blobs_of_set(set: &ImageSet, have: &BTreeSet<String>) -> BTreeSet<String> {
    have.iter()
        .filter(|d| set.blobs.contains_key(*d))
        .cloned()
        .collect()
}

fn bytes_of(set: &ImageSet, digests: impl Iterator<Item = String>) -> u64 {
    digests.map(|d| set.blobs[&d].size).sum()
}

fn slow_proxy(t: &str, upstream: &str) -> Option<FaultProxy> {
    let p = FaultProxy::start_for(t, upstream)?;
    p.set_rules(r#"[{"delay_ms": 120}]"#);
    Some(p)
}

#[test]
fn kill_9_mid_copy_then_rerun_finishes_without_recopying() {
    let t = "kill_9_mid_copy_then_rerun_finishes_without_recopying";
    if require(t, "skopeo").is_none() {
        return;
    }
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(mi) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let set = medium_set();
    rt().block_on(push_set(&up.addr, &set, None));
    let Some(slow) = slow_proxy(t, &up.addr) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let list = list_file(dir.path(), K8S_LIKE);
    let mirror = |from: &str| {
        let mut c = kprov();
        c.args([
            "mirror",
            "--no-progress",
            "--json",
            "--concurrency",
            "2",
            "--from",
            from,
            "--to",
            &mi.addr,
            "--insecure-registry",
            from,
            "--insecure-registry",
            &mi.addr,
        ])
        .arg("--from-file")
        .arg(&list);
        c
    };
    let total = set.blobs.len();
    kill_when(mirror(&slow.addr), dir.path(), "copy", || {
        blobs_of_set(&set, &mi.committed_blobs()).len() >= 6
    });
    let done = blobs_of_set(&set, &mi.committed_blobs());
    assert!(
        done.len() < total,
        "killed mid-copy ({} of {total} blobs there)",
        done.len()
    );
    let rt = rt();
    let (bad, _) = rt.block_on(registry_storage::dangling_references(&mi.addr, &mi.data));
    assert!(bad.is_empty(), "after kill -9: {bad:#?}");

    let (ok, out, err) = run(mirror(&up.addr));
    assert!(ok, "re-run after kill -9 failed: {err}");
    let r = report(&out);
    eprintln!(
        "kill -9 mid-copy: {} of {total} blobs were complete; the re-run copied {}",
        done.len(),
        r["blobs_copied"]
    );
    assert_eq!(
        r["blobs_copied"].as_u64().unwrap() as usize,
        total - done.len(),
        "only the blobs not complete before the kill are copied: {r}"
    );
    let missing = set.blobs.keys().filter(|d| !done.contains(*d)).cloned();
    assert_eq!(r["bytes_copied"].as_u64().unwrap(), bytes_of(&set, missing));
    skopeo::assert_identical_with_skopeo(&set, &up.addr, |r| format!("{}/{r}", mi.addr));
    let (bad, checked) = rt.block_on(registry_storage::dangling_references(&mi.addr, &mi.data));
    assert!(bad.is_empty(), "after the re-run: {bad:#?}");
    assert_eq!(checked, 11 + 10 * 2, "every manifest in the target checked");
}

/// Complete blob files (digest and size right) in a bundle's staging directory.
fn staged_blobs(set: &ImageSet, staging: &Path) -> BTreeSet<String> {
    set.blobs
        .values()
        .filter(|b| {
            std::fs::metadata(
                staging
                    .join("blobs/sha256")
                    .join(b.digest.trim_start_matches("sha256:")),
            )
            .is_ok_and(|m| m.len() == b.size)
        })
        .map(|b| b.digest.clone())
        .collect()
}

fn import_cmd(bundle: &Path, to: &str) -> Command {
    let mut c = kprov();
    c.args([
        "mirror",
        "--no-progress",
        "--json",
        "--concurrency",
        "2",
        "--to",
        to,
        "--insecure-registry",
        to,
    ])
    .arg("--from-bundle")
    .arg(bundle);
    c
}

#[test]
fn kill_9_mid_bundle_export_then_rerun_makes_a_valid_bundle() {
    let t = "kill_9_mid_bundle_export_then_rerun_makes_a_valid_bundle";
    if require(t, "skopeo").is_none() {
        return;
    }
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(mi) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let set = medium_set();
    rt().block_on(push_set(&up.addr, &set, None));
    let Some(slow) = slow_proxy(t, &up.addr) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let list = list_file(dir.path(), K8S_LIKE);
    let bundle = dir.path().join("set.tar");
    let staging = PathBuf::from(format!("{}.partial", bundle.display()));
    let export = |from: &str| {
        let mut c = kprov();
        c.args([
            "mirror",
            "--no-progress",
            "--json",
            "--concurrency",
            "2",
            "--from",
            from,
            "--insecure-registry",
            from,
        ])
        .arg("--from-file")
        .arg(&list)
        .arg("--to-bundle")
        .arg(&bundle);
        c
    };
    let total = set.blobs.len();
    kill_when(export(&slow.addr), dir.path(), "export", || {
        staged_blobs(&set, &staging).len() >= 6
    });
    let done = staged_blobs(&set, &staging);
    assert!(done.len() < total, "killed mid-export");
    assert!(!bundle.exists(), "no bundle from a killed export");

    let (ok, out, err) = run(export(&up.addr));
    assert!(ok, "export re-run failed: {err}");
    let r = report(&out);
    eprintln!(
        "kill -9 mid-export: {} of {total} blobs were staged; the re-run fetched {}",
        done.len(),
        r["blobs_fetched"]
    );
    assert_eq!(
        r["blobs_fetched"].as_u64().unwrap() as usize,
        total - done.len(),
        "the re-run fetches only what the killed run had not finished: {r}"
    );
    assert_eq!(r["blobs"].as_u64().unwrap() as usize, total);
    assert!(!staging.exists(), "staging removed");

    let (ok, out, err) = run(import_cmd(&bundle, &mi.addr));
    assert!(ok, "import of the resumed bundle failed: {err}");
    assert_eq!(
        report(&out)["copy"]["blobs_copied"].as_u64().unwrap() as usize,
        total
    );
    skopeo::assert_identical_with_skopeo(&set, &up.addr, |r| format!("{}/{r}", mi.addr));
}

#[test]
fn kill_9_mid_bundle_import_then_rerun_finishes_without_recopying() {
    let t = "kill_9_mid_bundle_import_then_rerun_finishes_without_recopying";
    if require(t, "skopeo").is_none() {
        return;
    }
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let Some(mi) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let set = medium_set();
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
    assert!(ok, "export: {err}");

    // The import goes through the slow proxy in front of the target registry.
    let Some(slow) = slow_proxy(t, &mi.addr) else {
        return;
    };
    let total = set.blobs.len();
    kill_when(
        import_cmd(&bundle, &slow.addr),
        dir.path(),
        "import",
        || blobs_of_set(&set, &mi.committed_blobs()).len() >= 6,
    );
    let done = blobs_of_set(&set, &mi.committed_blobs());
    assert!(done.len() < total, "killed mid-import");
    let rt = rt();
    let (bad, _) = rt.block_on(registry_storage::dangling_references(&mi.addr, &mi.data));
    assert!(bad.is_empty(), "after kill -9: {bad:#?}");

    let (ok, out, err) = run(import_cmd(&bundle, &mi.addr));
    assert!(ok, "import re-run failed: {err}");
    let r = report(&out);
    eprintln!(
        "kill -9 mid-import: {} of {total} blobs were complete; the re-run sent {}",
        done.len(),
        r["copy"]["blobs_copied"]
    );
    assert_eq!(
        r["copy"]["blobs_copied"].as_u64().unwrap() as usize,
        total - done.len(),
        "only what the killed import had not finished is sent: {r}"
    );
    skopeo::assert_identical_with_skopeo(&set, &up.addr, |r| format!("{}/{r}", mi.addr));
    let (bad, checked) = rt.block_on(registry_storage::dangling_references(&mi.addr, &mi.data));
    assert!(bad.is_empty(), "after the re-run: {bad:#?}");
    assert_eq!(checked, 11 + 10 * 2);
}
