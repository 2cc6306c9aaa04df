//! containerd configuration against real containerd: the rendered `config.toml` passes
//! `containerd config dump` (and means what kprov wants), and the rendered `hosts.toml` really
//! sends a pull of `registry.k8s.io/pause:TAG` to the mirror (a real `docker-registry`).

use std::path::{Path, PathBuf};

use kprov_testkit::registry::{Registry, RegistryOptions};
use kprov_testkit::tiny_image::tiny_image;
use kprov_testkit::{containerd, peers};

use crate::fixtures::{self, node, NodeKind, Variant};
use kprov::assets;
use kprov::bootstrap::NVIDIA_RUNTIME;

#[test]
fn rendered_config_passes_containerd_config_dump() {
    let Some(bin) = peers::require(
        "rendered_config_passes_containerd_config_dump",
        "containerd",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for mirror in [false, true] {
        let v = Variant {
            mirror,
            ..Variant::default()
        };
        let cfg = fixtures::config(&v);
        let r = fixtures::renderer(&v);
        let release =
            kprov::spec::versions::release(&cfg.cluster.spec.kubernetes_version).expect("release");
        let sandbox = assets::image_ref(
            &format!("registry.k8s.io/pause:{}", release.pause),
            &cfg.cluster.spec.assets,
        );
        for kind in [NodeKind::Worker, NodeKind::GpuWorker] {
            let (req, _) = node(&v, kind);
            let text = r.containerd_config(&req).expect("render");
            let file = dir.path().join(format!("{}-{mirror}.toml", kind.slug()));
            std::fs::write(&file, &text).expect("write");
            let out = containerd::config_dump(&bin, &file);
            let dump = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "containerd rejects the rendered config:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The dump is containerd's merged view: check it took our settings.
            assert!(
                dump.contains(&format!("sandbox_image = \"{sandbox}\"")),
                "sandbox image not taken:\n{dump}"
            );
            assert!(
                dump.contains(&format!("config_path = \"{}\"", assets::CERTS_D)),
                "{dump}"
            );
            assert!(dump.contains("SystemdCgroup = true"), "{dump}");
            let gpu = kind == NodeKind::GpuWorker;
            assert_eq!(
                dump.contains(&format!("BinaryName = \"{NVIDIA_RUNTIME}\"")),
                gpu,
                "{dump}"
            );
            assert!(
                dump.contains(&format!(
                    "default_runtime_name = \"{}\"",
                    if gpu { "nvidia" } else { "runc" }
                )),
                "{dump}"
            );
            checked += 1;
        }
    }
    println!("containerd config dump accepted {checked} rendered configs");
}

#[test]
fn hosts_toml_redirects_a_real_pull_to_the_mirror() {
    let test = "hosts_toml_redirects_a_real_pull_to_the_mirror";
    if peers::require(test, "containerd").is_none() || peers::require(test, "ctr").is_none() {
        return;
    }
    let Some(reg) = Registry::start(test, RegistryOptions::verbose()) else {
        return;
    };

    // The cluster's mirror is this registry.
    let v = Variant {
        mirror: false,
        ..Variant::default()
    };
    let mut cfg = fixtures::config(&v);
    cfg.cluster.spec.assets.container_registry = Some(reg.addr.clone());
    cfg.cluster.spec.assets.insecure = true;
    let release =
        kprov::spec::versions::release(&cfg.cluster.spec.kubernetes_version).expect("release");
    let tag = release.pause;
    let r = fixtures::renderer_with(cfg.clone(), Default::default());

    // Push a real image where the mirror keeps registry.k8s.io/pause:TAG.
    let image = tiny_image("pause", b"#!/bin/sh\nexec sleep 3600\n");
    let mirrored = assets::image_ref(
        &format!("registry.k8s.io/pause:{tag}"),
        &cfg.cluster.spec.assets,
    );
    let repo = mirrored
        .strip_prefix(&format!("{}/", reg.addr))
        .and_then(|s| s.rsplit_once(':'))
        .map(|(r, _)| r.to_string())
        .expect("mirror reference");
    assert_eq!(repo, "registry.k8s.io/pause");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let digest = rt.block_on(reg.push(&repo, tag, &image));

    let dir = tempfile::tempdir().expect("tempdir");
    let Some((c, certs_d, hosts)) = node_containerd(test, &r, &v, dir.path()) else {
        return;
    };
    assert_eq!(
        hosts.len(),
        assets::UPSTREAM_REGISTRIES.len() + 1,
        "one hosts.toml per upstream registry plus the plain-HTTP mirror itself: {hosts:?}"
    );

    let upstream = format!("registry.k8s.io/pause:{tag}");
    let out = c.ctr(&[
        "images",
        "pull",
        "--hosts-dir",
        certs_d.to_str().expect("utf-8"),
        &upstream,
    ]);
    assert!(
        out.status.success(),
        "ctr pull {upstream} through the rendered hosts.toml failed:\n{}{}\nregistry log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        reg.log_text()
    );
    let list = c.ctr(&["images", "ls", "-q"]);
    assert!(
        String::from_utf8_lossy(&list.stdout)
            .lines()
            .any(|l| l == upstream),
        "pulled image not listed"
    );
    let check = c.ctr(&["images", "check"]);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains(&digest),
        "containerd holds another image than the one pushed"
    );
    let log = reg.log_text();
    let wanted = format!("/v2/registry.k8s.io/pause/manifests/{tag}");
    assert!(
        log.contains(&wanted),
        "the pull did not reach the mirror ({wanted} not in its log):\n{log}"
    );
    println!(
        "pulled {upstream} from the mirror {} via hosts.toml (manifest {digest})",
        reg.addr
    );
    // The mirror reference itself (what kubeadm and the manifests use) pulls too.
    let out = c.ctr(&[
        "images",
        "pull",
        "--hosts-dir",
        certs_d.to_str().expect("utf-8"),
        &mirrored,
    ]);
    assert!(
        out.status.success(),
        "ctr pull {mirrored}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An internal upstream registry with a port (`127.0.0.1:P1`, like `harbor.corp:8443`): the
/// real `kprov mirror --to P2` puts its image at `P2/127.0.0.1_P1/…`; the cluster maps P1 there
/// (`assets.mappings`); with P1 stopped, containerd still pulls `P1/app/web:1.0` — only through
/// the rendered `certs.d/127.0.0.1:P1/hosts.toml` (the real `host:port` directory) can it.
#[test]
fn hosts_toml_redirects_a_pull_from_an_upstream_with_a_port() {
    let test = "hosts_toml_redirects_a_pull_from_an_upstream_with_a_port";
    if peers::require(test, "containerd").is_none() || peers::require(test, "ctr").is_none() {
        return;
    }
    let Some(up) = Registry::start(test, RegistryOptions::default()) else {
        return;
    };
    let Some(mi) = Registry::start(test, RegistryOptions::verbose()) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let image = tiny_image("web", b"#!/bin/sh\nexec sleep 3600\n");
    let digest = rt.block_on(up.push("app/web", "1.0", &image));
    let upstream = format!("{}/app/web:1.0", up.addr);

    // The real mirror command fills the mirror.
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("images.txt");
    std::fs::write(&list, format!("{upstream}\n")).expect("list");
    let out = crate::KPROV
        .command()
        .args(["mirror", "--no-progress", "--from-file"])
        .arg(&list)
        .args(["--to", &mi.addr, "--insecure-registry", &up.addr])
        .args(["--insecure-registry", &mi.addr])
        .output()
        .expect("run kprov mirror");
    assert!(
        out.status.success(),
        "kprov mirror {upstream}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let upstream_host = up.addr.clone();
    drop(up);
    assert!(
        std::net::TcpStream::connect(&upstream_host).is_err(),
        "the upstream is down: only the mirror can serve the pull"
    );

    // The cluster maps the internal registry to where `kprov mirror --to` put it.
    let v = Variant {
        mirror: false,
        ..Variant::default()
    };
    let mut cfg = fixtures::config(&v);
    let a = &mut cfg.cluster.spec.assets;
    a.container_registry = Some(mi.addr.clone());
    a.insecure = true;
    let location = format!("{}/{}", mi.addr, assets::mirror_segment(&upstream_host));
    a.mappings.insert(upstream_host.clone(), location.clone());
    assert!(
        assets::check_locations(a).is_empty(),
        "{:?}",
        assets::check_locations(a)
    );
    assert_eq!(
        assets::image_ref(&upstream, a),
        format!(
            "{}/127.0.0.1_{}/app/web:1.0",
            mi.addr,
            port_of(&upstream_host)
        )
    );
    let r = fixtures::renderer_with(cfg.clone(), Default::default());
    let Some((c, certs_d, hosts)) = node_containerd(test, &r, &v, dir.path()) else {
        return;
    };
    assert!(hosts.contains(&upstream_host), "{hosts:?}");
    let toml = std::fs::read_to_string(certs_d.join(&upstream_host).join("hosts.toml")).unwrap();
    let segment_url = format!("http://{}", location.replacen('/', "/v2/", 1));
    assert!(toml.contains(&segment_url), "{segment_url} in:\n{toml}");

    let out = c.ctr(&[
        "images",
        "pull",
        "--hosts-dir",
        certs_d.to_str().expect("utf-8"),
        &upstream,
    ]);
    assert!(
        out.status.success(),
        "ctr pull {upstream} through the rendered hosts.toml failed:\n{}{}\nmirror log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        mi.log_text()
    );
    let check = c.ctr(&["images", "check"]);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains(&digest),
        "containerd holds another image than the one mirrored"
    );
    let wanted = format!(
        "/v2/127.0.0.1_{}/app/web/manifests/1.0",
        port_of(&upstream_host)
    );
    assert!(
        mi.log_text().contains(&wanted),
        "the pull did not reach the mirror ({wanted} not in its log)"
    );
    println!(
        "pulled {upstream} from the mirror {} via hosts.toml",
        mi.addr
    );
}

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').expect("host:port").1
}

/// A worker's `certs.d` laid out under `dir/certs.d` exactly as rendered, and containerd started
/// on the worker's rendered `config.toml` (pointed at that `certs.d`). Returns containerd, the
/// `certs.d` path and the directories written (`None` when peers are skipped).
fn node_containerd(
    test: &str,
    r: &kprov::bootstrap::Renderer,
    v: &Variant,
    dir: &Path,
) -> Option<(containerd::Containerd, PathBuf, Vec<String>)> {
    let certs_d = dir.join("certs.d");
    let (req, ctx) = node(v, NodeKind::Worker);
    let files = r.files(&req, &ctx).expect("files");
    let mut hosts = Vec::new();
    for f in &files {
        if let Some(rel) = f.path.strip_prefix(&format!("{}/", assets::CERTS_D)) {
            let p = certs_d.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, &f.content).expect("write hosts.toml");
            hosts.push(rel.trim_end_matches("/hosts.toml").to_string());
        }
    }
    let rendered = files
        .iter()
        .find(|f| f.path == "/etc/containerd/config.toml")
        .expect("containerd config")
        .content
        .clone();
    let config = containerd::private_config(
        &rendered.replace(assets::CERTS_D, certs_d.to_str().expect("utf-8")),
        dir,
    );
    let c = containerd::start(test, &config, dir)?;
    Some((c, certs_d, hosts))
}
