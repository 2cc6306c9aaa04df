//! containerd configuration against real containerd: the rendered `config.toml` passes
//! `containerd config dump` (and means what kprov wants), and the rendered `hosts.toml` really
//! sends a pull of `registry.k8s.io/pause:TAG` to the mirror (a real `docker-registry`).

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
    let r = kprov::bootstrap::Renderer::new(
        cfg.clone(),
        fixtures::placeholder_secrets(),
        fixtures::PLACEHOLDER_HASH.into(),
        Default::default(),
    )
    .expect("renderer");

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

    // Lay the node's certs.d and containerd config out in a temp dir, exactly as rendered.
    let dir = tempfile::tempdir().expect("tempdir");
    let certs_d = dir.path().join("certs.d");
    let (req, ctx) = node(&v, NodeKind::Worker);
    let files = r.files(&req, &ctx).expect("files");
    let mut hosts = 0;
    for f in &files {
        if let Some(rel) = f.path.strip_prefix(&format!("{}/", assets::CERTS_D)) {
            let p = certs_d.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, &f.content).expect("write hosts.toml");
            hosts += 1;
        }
    }
    assert_eq!(
        hosts,
        assets::UPSTREAM_REGISTRIES.len() + 1,
        "one hosts.toml per upstream registry plus the plain-HTTP mirror itself"
    );
    let rendered = files
        .iter()
        .find(|f| f.path == "/etc/containerd/config.toml")
        .expect("containerd config")
        .content
        .clone();
    let config = containerd::private_config(
        &rendered.replace(assets::CERTS_D, certs_d.to_str().expect("utf-8")),
        dir.path(),
    );
    let Some(c) = containerd::start(test, &config, dir.path()) else {
        return;
    };

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
