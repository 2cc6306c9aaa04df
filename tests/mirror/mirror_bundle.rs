//! Bundles that travel (issue 18): `--split` into parts with a `SHA256SUMS` list (checked by the
//! real `sha256sum -c`), imported from the parts; a corrupt, missing or unlisted part, a cut
//! `SHA256SUMS` and a bad `kprov-bundle.json` each refused naming the part or entry and the fix
//! with nothing loaded; `--verify-bundle`; a bundle's platforms following its clusters'
//! architectures; several clusters and a list in one bundle with each blob once. Peers:
//! `docker-registry`, `skopeo` (`bash tests/peers/install.sh`; `KPROV_SKIP_PEERS=1` skips).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kprov_testkit::http_server::{self, Server};
use kprov_testkit::images::{generate, SetSizes, K8S_LIKE};
use kprov_testkit::kprov_cmd::run;
use kprov_testkit::prng::Prng;
use kprov_testkit::registry::{push_set, Registry, RegistryOptions};
use kprov_testkit::{images, peers, raw_http, skopeo};

use crate::kprov;
use crate::mirror_registry::{list_file, rt};

/// `kprov mirror --from-bundle B --to R` (exit status, stdout, stderr).
fn import(bundle: &Path, to: &Registry) -> (bool, String, String) {
    let mut c = kprov();
    c.args(["mirror", "--no-progress", "--json", "--to", &to.addr])
        .args(["--insecure-registry", &to.addr, "--from-bundle"])
        .arg(bundle);
    run(c)
}

/// `kprov mirror --verify-bundle B --json`.
fn verify(bundle: &Path) -> (bool, String, String) {
    let mut c = kprov();
    c.args(["mirror", "--json", "--verify-bundle"]).arg(bundle);
    run(c)
}

/// Nothing reached the registry: no repository in its catalogue, no blob in its storage.
fn assert_nothing_loaded(r: &Registry, case: &str) {
    let port: u16 = r.addr.rsplit(':').next().unwrap().parse().unwrap();
    let (st, body) = raw_http::request(port, "GET", "/v2/_catalog", "").expect("catalog");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st, 200, "{case}: {body}");
    assert_eq!(v["repositories"], serde_json::json!([]), "{case}: {body}");
    let blobs = r.data.join("docker/registry/v2/blobs");
    let n = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(n, 0, "{case}: blobs stored under {}", blobs.display());
}

/// Tar entry names and the bundle's index (`kprov-bundle.json`) of a whole bundle.
fn entries_and_index(bundle: &Path) -> (Vec<String>, serde_json::Value) {
    let mut ar = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    let mut names = Vec::new();
    let mut index = serde_json::Value::Null;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name == "kprov-bundle.json" {
            index = serde_json::from_reader(&mut e).unwrap();
        }
        names.push(name);
    }
    (names, index)
}

fn part(base: &Path, n: usize) -> PathBuf {
    PathBuf::from(format!("{}.part-{n:04}", base.display()))
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0xff;
    std::fs::write(path, b).unwrap();
}

/// Each bad copy of split bundle `bundle` (`nparts` parts) is refused naming the part or the
/// list's line and the fix, before anything reaches `bad`; the bundle is restored after each.
fn bad_parts_and_lists_load_nothing(bundle: &Path, bad: &Registry, nparts: usize) {
    let dir = bundle.parent().unwrap();
    let sums = dir.join("set.tar.SHA256SUMS");
    // A corrupt part: named, with the fix, before anything is loaded.
    let p2 = part(bundle, 2);
    let good = std::fs::read(&p2).unwrap();
    flip_byte(&p2, 150_000);
    let (ok, _, err) = import(bundle, bad);
    assert!(!ok);
    assert!(
        err.contains("set.tar.part-0002 is corrupt (sha256 ") && err.contains("fix: copy it again"),
        "{err}"
    );
    assert_nothing_loaded(bad, "corrupt part");
    let (ok, _, err) = verify(bundle);
    assert!(!ok && err.contains("set.tar.part-0002 is corrupt"), "{err}");
    std::fs::write(&p2, &good).unwrap();

    // A missing part.
    let p3 = part(bundle, 3);
    let away = dir.join("away");
    std::fs::rename(&p3, &away).unwrap();
    let (ok, _, err) = import(bundle, bad);
    assert!(!ok);
    assert!(
        err.contains("set.tar.part-0003 is missing; fix: copy it next to the others"),
        "{err}"
    );
    assert_nothing_loaded(bad, "missing part");
    std::fs::rename(&away, &p3).unwrap();

    // A list cut in its last line, then one that lost its last line.
    let text = std::fs::read_to_string(&sums).unwrap();
    std::fs::write(&sums, &text[..text.len() - 30]).unwrap();
    let (ok, _, err) = import(bundle, bad);
    assert!(!ok);
    assert!(
        err.contains("set.tar.SHA256SUMS line")
            && err.contains(&format!("line {nparts}:"))
            && err.contains("fix: copy set.tar.SHA256SUMS again"),
        "{err}"
    );
    assert_nothing_loaded(bad, "list cut mid-line");
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(&sums, lines[..nparts - 1].join("\n") + "\n").unwrap();
    let (ok, _, err) = import(bundle, bad);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "set.tar.part-{nparts:04} is not listed in set.tar.SHA256SUMS"
        )),
        "{err}"
    );
    assert_nothing_loaded(bad, "list without its last line");
    std::fs::write(&sums, &text).unwrap();
}

#[test]
fn split_bundle_round_trip_and_a_bad_part_or_list_loads_nothing() {
    let t = "split_bundle_round_trip_and_a_bad_part_or_list_loads_nothing";
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let (Some(mi), Some(bad)) = (
        Registry::start(t, RegistryOptions::default()),
        Registry::start(t, RegistryOptions::default()),
    ) else {
        return;
    };
    if peers::require(t, "skopeo").is_none() || peers::require(t, "sha256sum").is_none() {
        return;
    }
    let set = generate(K8S_LIKE, &SetSizes::small());
    rt().block_on(push_set(&up.addr, &set, None));
    let dir = tempfile::tempdir().unwrap();
    let list = list_file(dir.path(), K8S_LIKE);
    let bundle = dir.path().join("set.tar");
    let mut c = kprov();
    c.args(["mirror", "--no-progress", "--json", "--from", &up.addr])
        .args(["--insecure-registry", &up.addr, "--split", "300K"])
        .arg("--from-file")
        .arg(&list)
        .arg("--to-bundle")
        .arg(&bundle);
    let (ok, out, err) = run(c);
    assert!(ok, "split export: {err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let nparts = report["parts"].as_array().unwrap().len();
    assert!(nparts >= 4, "~1.5 MB in 300 kB parts: {out}");
    assert!(!bundle.exists(), "no whole bundle next to the parts");
    for n in 1..=nparts {
        let len = std::fs::metadata(part(&bundle, n)).unwrap().len();
        assert!(
            len <= 300_000 && (n == nparts || len == 300_000),
            "part {n}: {len}"
        );
    }
    assert!(!part(&bundle, nparts + 1).exists());
    // The other side checks the parts with coreutils alone.
    let sums = dir.path().join("set.tar.SHA256SUMS");
    let st = Command::new("sha256sum")
        .args(["--strict", "-c", "set.tar.SHA256SUMS"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    assert_eq!(
        String::from_utf8_lossy(&st.stdout).matches(": OK").count(),
        nparts
    );

    let (ok, out, err) = verify(&sums);
    assert!(ok, "verify: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["images"].as_u64(), v["parts"].as_u64()),
        (Some(11), Some(nparts as u64))
    );
    assert_eq!(v["platforms"], "all", "{out}");
    assert!(err.contains("ok"), "{err}");

    bad_parts_and_lists_load_nothing(&bundle, &bad, nparts);

    // From the parts (by base name) into a fresh registry: identical to the source.
    let (ok, _, err) = import(&bundle, &mi);
    assert!(ok, "import from parts: {err}");
    skopeo::assert_identical_with_skopeo(&set, &up.addr, |r| format!("{}/{r}", mi.addr));
}

#[test]
fn a_bad_index_in_a_whole_bundle_loads_nothing_and_verify_names_a_bad_blob() {
    let t = "a_bad_index_in_a_whole_bundle_loads_nothing_and_verify_names_a_bad_blob";
    let (Some(up), Some(bad)) = (
        Registry::start(t, RegistryOptions::default()),
        Registry::start(t, RegistryOptions::default()),
    ) else {
        return;
    };
    let set = generate(K8S_LIKE, &SetSizes::small());
    rt().block_on(push_set(&up.addr, &set, None));
    let dir = tempfile::tempdir().unwrap();
    let list = list_file(dir.path(), K8S_LIKE);
    let bundle = dir.path().join("set.tar");
    let mut c = kprov();
    c.args(["mirror", "--no-progress", "--from", &up.addr])
        .args(["--insecure-registry", &up.addr, "--from-file"])
        .arg(&list)
        .arg("--to-bundle")
        .arg(&bundle);
    let (ok, _, err) = run(c);
    assert!(ok, "export: {err}");
    let (names, index) = entries_and_index(&bundle);
    assert_eq!(index["platforms"], "all", "an unfiltered list: {index}");
    let good = std::fs::read(&bundle).unwrap();
    let (ok, out, err) = verify(&bundle);
    assert!(ok, "verify: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let blobs = names.iter().filter(|n| n.starts_with("blobs/")).count();
    assert_eq!(v["blobs"].as_u64(), Some(blobs as u64), "{out}");
    assert_eq!(v["parts"].as_u64(), Some(1), "{out}");

    // Garbled and cut-short index (the first entry: its data starts after one 512-byte header).
    flip_byte(&bundle, 512);
    let (ok, _, err) = import(&bundle, &bad);
    assert!(!ok);
    assert!(
        err.contains("entry kprov-bundle.json: not valid") && err.contains("re-create the bundle"),
        "{err}"
    );
    assert_nothing_loaded(&bad, "garbled index");
    std::fs::write(&bundle, &good[..700]).unwrap();
    let (ok, _, err) = import(&bundle, &bad);
    assert!(!ok);
    assert!(err.contains("entry kprov-bundle.json: cut short"), "{err}");
    assert_nothing_loaded(&bad, "cut-short index");

    // A flipped byte inside a layer: --verify-bundle names the entry.
    std::fs::write(&bundle, &good).unwrap();
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
    flip_byte(&bundle, off as usize + 100);
    let (ok, _, err) = verify(&bundle);
    assert!(!ok);
    assert!(err.contains(&entry) && err.contains("hashes to"), "{err}");
}

/// Stand-ins for the clusters' files, served as a file repository under `/src`, and their sums
/// the way in-house builds give them (`KPROV_ASSET_SHA256SUMS`, by file name).
fn stand_in_files(dir: &Path, cats: &[&serde_json::Value]) -> (Server, PathBuf) {
    let mut served = BTreeMap::new();
    let mut sums = String::new();
    for f in cats.iter().flat_map(|c| c["files"].as_array().unwrap()) {
        let url = f["upstream_url"].as_str().unwrap();
        let name = url.rsplit('/').next().unwrap();
        let mut bytes = format!("#!/bin/sh\n# stand-in for {name}\n").into_bytes();
        let mut pad = vec![0u8; 4096];
        Prng::new(name).fill(&mut pad);
        bytes.extend_from_slice(&pad);
        served.insert(
            format!("/src/{}", url.split_once("://").unwrap().1),
            bytes.clone(),
        );
        if !sums.contains(&format!("  {name}\n")) {
            let sha = images::digest(&bytes);
            sums.push_str(&format!("{}  {name}\n", sha.trim_start_matches("sha256:")));
        }
    }
    let path = dir.join("SHA256SUMS");
    std::fs::write(&path, sums).unwrap();
    (http_server::serve(served), path)
}

/// `kprov mirror CLUSTERS… --to-bundle OUT` from `up`, files from `files` (extra args appended).
fn export_clusters(
    state: &str,
    up: &Registry,
    files: &(Server, PathBuf),
    args: &[&str],
) -> (bool, String, String) {
    let mut c = kprov();
    c.args(["--state", state, "mirror", "--no-progress", "--json"])
        .args(["--from", &up.addr, "--src-insecure"])
        .args(["--files-from", &format!("{}/src", files.0.url)])
        .args(args)
        .env("KPROV_ASSET_SHA256SUMS", &files.1);
    run(c)
}

#[test]
fn a_bundle_holds_its_clusters_platforms_unless_told_otherwise() {
    let t = "a_bundle_holds_its_clusters_platforms_unless_told_otherwise";
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let assets = "{containerRegistry: \"127.0.0.1:9\", insecure: true}";
    let (state, cat, ups) =
        crate::cluster_with_groups(dir.path(), "arm", assets, &["arm64", "arm64"]);
    let refs: Vec<&str> = ups.iter().map(String::as_str).collect();
    let set = generate(&refs, &SetSizes::small());
    rt().block_on(push_set(&up.addr, &set, None));
    let files = stand_in_files(dir.path(), &[&cat]);
    let out = dir.path().join("arm.tar");
    let out_s = out.display().to_string();
    let (ok, _, err) = export_clusters(&state, &up, &files, &["arm", "--to-bundle", &out_s]);
    assert!(ok, "export: {err}");
    let (names, index) = entries_and_index(&out);
    assert_eq!(
        index["platforms"],
        serde_json::json!(["linux/arm64"]),
        "{index}"
    );
    let has = |d: &str| names.contains(&format!("blobs/sha256/{}", &d[7..]));
    for i in index["images"].as_array().unwrap() {
        assert_eq!(
            i["children"].as_array().unwrap().len(),
            1,
            "arm64 only: {i}"
        );
    }
    // Generated platform manifests are amd64 then arm64: only the arm64 ones travel.
    for i in set.images.iter().filter(|i| i.children.len() == 2) {
        assert!(
            !has(&i.children[0].digest) && has(&i.children[1].digest),
            "{}",
            i.repo
        );
    }
    let (ok, vout, err) = verify(&out);
    assert!(ok, "verify: {err}");
    assert!(vout.contains("\"platforms\": \"linux/arm64\""), "{vout}");

    // --platform overrides the default.
    let (ok, _, err) = export_clusters(
        &state,
        &up,
        &files,
        &[
            "arm",
            "--platform",
            "linux/amd64,linux/arm64",
            "--to-bundle",
            &out_s,
        ],
    );
    assert!(ok, "export: {err}");
    let (_, index) = entries_and_index(&out);
    assert_eq!(
        index["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"]),
        "{index}"
    );
    for i in index["images"].as_array().unwrap() {
        assert_eq!(i["children"].as_array().unwrap().len(), 2, "both: {i}");
    }
}

#[test]
fn two_clusters_and_a_list_share_one_bundle_with_each_blob_once() {
    let t = "two_clusters_and_a_list_share_one_bundle_with_each_blob_once";
    let Some(up) = Registry::start(t, RegistryOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let assets = "{containerRegistry: \"127.0.0.1:9\", insecure: true}";
    let (state, cat1, ups) =
        crate::cluster_with_groups(dir.path(), "one", assets, &["amd64", "arm64"]);
    let (_, cat2, ups2) =
        crate::cluster_with_groups(dir.path(), "two", assets, &["arm64", "arm64"]);
    assert_eq!(ups, ups2, "same version: the same images");
    // The list repeats one of the clusters' images and adds one.
    let extra = "docker.io/library/extra-tool:1.0";
    let list = list_file(dir.path(), &[ups[0].as_str(), extra]);
    let mut all: Vec<&str> = ups.iter().map(String::as_str).collect();
    all.push(extra);
    let set = generate(&all, &SetSizes::small());
    rt().block_on(push_set(&up.addr, &set, None));
    let files = stand_in_files(dir.path(), &[&cat1, &cat2]);
    let out = dir.path().join("both.tar");
    let out_s = out.display().to_string();
    let list_s = list.display().to_string();
    let args = ["one", "two", "--from-file", &list_s, "--to-bundle", &out_s];
    let (ok, _, err) = export_clusters(&state, &up, &files, &args);
    assert!(ok, "export: {err}");
    let (names, index) = entries_and_index(&out);
    let images = index["images"].as_array().unwrap();
    assert_eq!(images.len(), all.len(), "each upstream once: {index}");
    assert_eq!(index["cluster"], "one,two");
    // The clusters' union (amd64 + arm64) is every platform the set has.
    assert_eq!(
        index["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    // ... so the indexes travel as upstream wrote them (same digests).
    for (i, g) in images.iter().zip(&set.images) {
        assert_eq!(
            i["manifest"]["digest"].as_str(),
            Some(g.top.digest.as_str()),
            "{i}"
        );
    }
    let blobs = names.iter().filter(|n| n.starts_with("blobs/")).count();
    let manifests: usize = set.images.iter().map(|i| 1 + i.children.len()).sum();
    assert_eq!(
        blobs,
        set.blobs.len() + manifests,
        "each distinct blob once"
    );
    let mut distinct: Vec<&String> = names.iter().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), names.len(), "no entry twice");
    let nfiles = index["files"].as_array().unwrap().len();
    assert_eq!(
        nfiles,
        cat1["files"].as_array().unwrap().len(),
        "cluster two's files are one's"
    );
}
