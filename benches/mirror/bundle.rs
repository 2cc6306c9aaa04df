//! Offline bundles and the asset check, in the mirror benchmark's run on its image set:
//! * export: `kprov mirror --from-file LIST --to-bundle FILE` (every platform) vs
//!   `skopeo copy --all --preserve-digests docker://… oci:DIR:REF` for every reference into one
//!   shared OCI layout (`dir:` for Docker manifest lists, which skopeo cannot put in an OCI
//!   layout unchanged) (goal: kprov ≥ 1.5× faster);
//! * import: `kprov mirror --from-bundle FILE --to REG` vs `skopeo copy --all
//!   --preserve-digests oci:DIR:REF|dir:… docker://…` for every reference, each into an empty registry
//!   (goal ≥ 1.5×), both checked blob for blob against the source;
//! * bundle bytes vs the bytes of the distinct blobs the source registry stores (goal ≤ 1.01×:
//!   nothing stored twice);
//! * `kprov check assets` on a cluster's full catalogue (both arches, images and files, at a
//!   mirror that has them) vs as many `skopeo inspect --raw` calls, one process each.

use std::path::Path;
use std::process::Command;

use kprov_testkit::http_server::serve_suffix;
use kprov_testkit::images::ImageSet;
use kprov_testkit::registry::Registry;
use kprov_testkit::skopeo;
use kprov_testkit::tiny_image::tiny_image_for;

use super::{assert_same_blobs, line, measured, Run, KPROV, MB};

/// `skopeo copy --all --preserve-digests SRC DST` (plain HTTP to the loopback registries).
pub fn skopeo_copy_to(src: String, dst: String) -> Command {
    let mut c = Command::new("skopeo");
    c.args([
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "-q",
    ])
    .arg(src)
    .arg(dst);
    c
}

/// Where skopeo keeps reference `i` of `set` offline: in one shared OCI layout
/// (`oci:DIR/oci:imgI`, blobs stored once), except Docker manifest lists, which skopeo cannot
/// write to an OCI layout without converting them (refused with `--preserve-digests`): those go
/// to a `dir:` of their own (`dir:DIR/imgI`, which keeps every instance as is).
fn offline_ref(set: &ImageSet, i: usize, dir: &Path) -> String {
    let docker_list =
        set.images[i].top.media_type == "application/vnd.docker.distribution.manifest.list.v2+json";
    if docker_list {
        format!("dir:{}", dir.join(format!("img{i}")).display())
    } else {
        format!("oci:{}:img{i}", dir.join("oci").display())
    }
}

/// Bundle export and import against skopeo's OCI layout, and the bundle's size against the
/// source's distinct blobs. `fresh` starts an empty registry.
pub fn bundle_vs_skopeo(
    up: &Registry,
    set: &ImageSet,
    refs: &[&str],
    list: &Path,
    dir: &Path,
    total: f64,
    fresh: impl Fn() -> Registry,
) {
    let bundle = dir.join("bundle.tar");
    let mut export = KPROV.command();
    export
        .args([
            "mirror",
            "--no-progress",
            "--from",
            &up.addr,
            "--src-insecure",
        ])
        .arg("--from-file")
        .arg(list)
        .args(["--platform", "linux/amd64,linux/arm64", "--to-bundle"])
        .arg(&bundle);
    let ke = measured(export, "kprov mirror --to-bundle");
    let layout = dir.join("skopeo-offline");
    std::fs::create_dir_all(&layout).unwrap();
    let se = refs.iter().enumerate().fold(Run::default(), |acc, (i, r)| {
        acc.then(measured(
            skopeo_copy_to(
                format!("docker://{}/{r}", up.addr),
                offline_ref(set, i, &layout),
            ),
            &format!("skopeo copy {r} to oci:/dir:"),
        ))
    });

    let (kt, st) = (fresh(), fresh());
    let mut import = KPROV.command();
    import
        .args(["mirror", "--no-progress", "--from-bundle"])
        .arg(&bundle)
        .args(["--to", &kt.addr, "--dest-insecure"]);
    let ki = measured(import, "kprov mirror --from-bundle");
    let si = refs.iter().enumerate().fold(Run::default(), |acc, (i, r)| {
        acc.then(measured(
            skopeo_copy_to(
                offline_ref(set, i, &layout),
                format!("docker://{}/{r}", st.addr),
            ),
            &format!("skopeo copy oci:/dir: to {r}"),
        ))
    });
    let n = assert_same_blobs(up, &kt, "bundle import");
    assert_same_blobs(up, &st, "skopeo oci:/dir: import");
    skopeo::assert_identical_with_skopeo(set, &up.addr, |r| format!("{}/{r}", kt.addr));

    let bundle_bytes = std::fs::metadata(&bundle).unwrap().len() as f64;
    let blob_bytes = up.committed_bytes() as f64;
    let layout_bytes = dir_bytes(&layout) as f64;
    println!(
        "offline bundle ({} references, every platform; imports hold the source's {n} blobs):",
        refs.len()
    );
    println!("{}", line("kprov mirror --to-bundle", ke, total, None));
    println!(
        "{} (goal >= 1.5x)",
        line(
            "skopeo copy --all --preserve-digests docker:// -> oci: (dir: for Docker lists; one process per reference)",
            se,
            total,
            Some(ke)
        )
    );
    println!("{}", line("kprov mirror --from-bundle", ki, total, None));
    println!(
        "{} (goal >= 1.5x)",
        line(
            "skopeo copy --all --preserve-digests oci:/dir: -> docker:// (one process per reference)",
            si,
            total,
            Some(ki)
        )
    );
    println!(
        "  bundle {:.1} MB vs {:.1} MB of distinct blobs in the source: {:.4}x (goal <= 1.01x); skopeo's OCI layout + dirs {:.1} MB ({:.4}x)",
        bundle_bytes / MB,
        blob_bytes / MB,
        bundle_bytes / blob_bytes,
        layout_bytes / MB,
        layout_bytes / blob_bytes
    );
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut sum = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        sum += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    sum
}

/// `kprov check assets` on the full catalogue of a two-arch cluster whose mirror (`mirror`) and
/// file repository (a loopback server) hold every entry, vs as many `skopeo inspect --raw`
/// calls (one process each, cycling through the catalogue's mirror references).
pub fn check_vs_skopeo_inspect(mirror: &Registry, dir: &Path) {
    let state = format!("file://{}", dir.join("state").display());
    let files = serve_suffix(Default::default());
    let kprov = |args: &[&str]| {
        let out = KPROV
            .command()
            .args(args)
            .env("KPROV_STATE_STORE", &state)
            .env("NO_COLOR", "1")
            .output()
            .expect("kprov runs");
        assert!(out.status.success(), "kprov {args:?}: {out:?}");
        out.stdout
    };
    kprov(&[
        "create",
        "cluster",
        "bench",
        "--provider",
        "zstack",
        "--zstack-endpoint",
        "http://127.0.0.1:9",
        "--arch",
        "arm64",
        "--node-arch",
        "amd64",
        "--registry-mirror",
        &mirror.addr,
        "--file-repository",
        &files.url,
    ]);
    let cat: serde_json::Value =
        serde_json::from_slice(&kprov(&["get", "assets", "bench", "-o", "json"])).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut refs = Vec::new();
    for img in cat["images"].as_array().expect("catalogue images") {
        let m = img["mirror"].as_str().unwrap();
        let Some(path) = m.strip_prefix(&format!("{}/", mirror.addr)) else {
            continue; // not mirrored (a spec may keep an image upstream)
        };
        let (repo, tag) = path.rsplit_once(':').unwrap();
        let per_arch: Vec<_> = ["amd64", "arm64"]
            .into_iter()
            .map(|a| (a, tiny_image_for(a, "kprov-bench", m.as_bytes())))
            .collect();
        rt.block_on(mirror.push_multi_arch(repo, tag, &per_arch));
        refs.push(m.to_string());
    }
    let mut served = std::collections::BTreeMap::new();
    for f in cat["files"].as_array().expect("catalogue files") {
        let url = f["mirror_url"]
            .as_str()
            .expect("mirror_url of a catalogue file");
        let path = &url[files.url.len()..];
        served.insert(path.to_string(), b"kprov bench file\n".to_vec());
    }
    let entries = refs.len() + served.len();
    files.set_files(served);

    let mut check = KPROV.command();
    check
        .args([
            "check",
            "assets",
            "bench",
            "--insecure-registry",
            &mirror.addr,
        ])
        .env("KPROV_STATE_STORE", &state)
        .env("NO_COLOR", "1");
    let kc = measured(check, "kprov check assets");
    let sk = (0..entries).fold(Run::default(), |acc, i| {
        let mut c = Command::new("skopeo");
        c.args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}", refs[i % refs.len()]));
        acc.then(measured(c, "skopeo inspect --raw"))
    });
    println!(
        "check assets, full catalogue ({} images + {} files, both arches): kprov {:.3} s; {entries} x skopeo inspect --raw {:.3} s: kprov is {:.1}x faster",
        refs.len(),
        entries - refs.len(),
        kc.secs,
        sk.secs,
        sk.secs / kc.secs
    );
}
