//! The catalogue is exactly what rendered nodes pull: render every node kind of several cluster
//! variants, scan the user-data files and manifests for image references and download URLs, and
//! compare with `Catalogue::for_cluster` both ways.

#[path = "support/bootstrap_fixtures.rs"]
mod fixtures;

use std::collections::BTreeSet;

use fixtures::{NodeKind, Variant};
use kprov::mirror::Catalogue;
use kprov::spec::versions;
use kprov_providers::Arch;

fn urls_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for scheme in ["https://", "http://"] {
        let mut rest = text;
        while let Some(i) = rest.find(scheme) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| c.is_whitespace() || "\"'<>`)".contains(c))
                .unwrap_or(tail.len());
            out.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    out
}

fn value_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let t = line.trim_start().trim_start_matches("- ");
    t.strip_prefix(key)
        .map(|v| v.trim().trim_matches('"').trim_matches('\''))
        .filter(|v| !v.is_empty())
}

/// Images and URLs nodes of `v` pull, found in rendered text. kubeadm pulls its images by
/// `imageRepository`, so those are expanded as kubeadm does for the release.
fn rendered_assets(v: &Variant) -> (BTreeSet<String>, BTreeSet<String>) {
    let r = fixtures::renderer(v);
    let release = versions::release(&r.config().cluster.spec.kubernetes_version).expect("release");
    let mut images = BTreeSet::new();
    let mut urls = BTreeSet::new();
    for kind in NodeKind::ALL {
        let (req, ctx) = fixtures::node(v, kind);
        for f in r.files(&req, &ctx).expect("files") {
            if f.path.ends_with("hosts.toml") {
                // Registry endpoints (upstream fallback and mirror), not assets.
                continue;
            }
            let mut repo = None;
            let mut dns_repo = None;
            let mut etcd_repo = None;
            let mut in_etcd = false;
            for line in f.content.lines() {
                if line.trim_start().starts_with('#') {
                    continue;
                }
                if let Some(i) = value_after(line, "image:") {
                    images.insert(i.to_string());
                }
                if let Some(i) = value_after(line, "sandbox_image =") {
                    images.insert(i.to_string());
                }
                if line.trim() == "local:" {
                    in_etcd = true;
                }
                if let Some(i) = value_after(line, "imageRepository:") {
                    if line.starts_with("imageRepository:") {
                        repo = Some(i.to_string());
                    } else if in_etcd {
                        etcd_repo = Some(i.to_string());
                    } else {
                        dns_repo = Some(i.to_string());
                    }
                }
                for u in urls_in(line) {
                    urls.insert(u);
                }
            }
            if let Some(repo) = repo {
                let v = release.version;
                for n in [
                    "kube-apiserver",
                    "kube-controller-manager",
                    "kube-scheduler",
                    "kube-proxy",
                ] {
                    images.insert(format!("{repo}/{n}:v{v}"));
                }
                images.insert(format!("{repo}/pause:{}", release.pause));
                let etcd = etcd_repo.unwrap_or(repo.clone());
                images.insert(format!("{etcd}/etcd:{}", release.etcd));
                let dns = dns_repo.unwrap_or(format!("{repo}/coredns"));
                images.insert(format!("{dns}/coredns:{}", release.coredns));
            }
        }
    }
    (images, urls)
}

fn check(v: &Variant) {
    let cfg = fixtures::config(v);
    let cat = Catalogue::for_cluster(&cfg).expect("catalogue");
    let (images, urls) = rendered_assets(v);
    let cat_images: BTreeSet<String> = cat.images.iter().map(|i| i.mirror.clone()).collect();
    let cat_urls: BTreeSet<String> = cat.files.iter().map(|f| f.mirror_url.clone()).collect();
    let extra: Vec<_> = images.difference(&cat_images).collect();
    let missing: Vec<_> = cat_images.difference(&images).collect();
    assert!(
        extra.is_empty(),
        "{v:?}: rendered but not in the catalogue: {extra:#?}"
    );
    assert!(
        missing.is_empty(),
        "{v:?}: in the catalogue but never pulled: {missing:#?}"
    );
    // Every download URL in user-data is a catalogue file, and every catalogue file is
    // downloaded by some node.
    let downloads: BTreeSet<String> = urls
        .iter()
        .filter(|u| {
            cat_urls.contains(*u) || u.contains("/release/") || u.contains("/releases/download/")
        })
        .cloned()
        .collect();
    let extra: Vec<_> = downloads.difference(&cat_urls).collect();
    let missing: Vec<_> = cat_urls.difference(&downloads).collect();
    assert!(
        extra.is_empty(),
        "{v:?}: downloaded but not in the catalogue: {extra:#?}"
    );
    assert!(
        missing.is_empty(),
        "{v:?}: in the catalogue but never downloaded: {missing:#?}"
    );
    // Files carry the checksum nodes verify.
    for f in &cat.files {
        assert_eq!(f.sha256.len(), 64);
        assert!(f.upstream_url.contains(f.arch.as_str()));
    }
}

#[test]
fn catalogue_matches_rendered_user_data_mirrored_flannel_all_addons() {
    check(&Variant::default());
}

#[test]
fn catalogue_matches_rendered_user_data_calico_no_addons_no_mirror() {
    check(&Variant {
        cni: "calico",
        addons: false,
        mirror: false,
        ..Variant::default()
    });
}

#[test]
fn catalogue_matches_rendered_user_data_mixed_arches() {
    let v = Variant {
        arch: Arch::Amd64,
        other_arch: Some(Arch::Arm64),
        ..Variant::default()
    };
    check(&v);
    let cat = Catalogue::for_cluster(&fixtures::config(&v)).unwrap();
    let files_arches: BTreeSet<Arch> = cat.files.iter().map(|f| f.arch).collect();
    assert_eq!(files_arches.len(), 2, "binaries for both arches");
    let proxy = cat
        .images
        .iter()
        .find(|i| i.upstream.contains("kube-proxy"))
        .unwrap();
    assert_eq!(proxy.arches, vec![Arch::Amd64, Arch::Arm64]);
    let api = cat
        .images
        .iter()
        .find(|i| i.upstream.contains("kube-apiserver"))
        .unwrap();
    assert_eq!(
        api.arches,
        vec![Arch::Amd64],
        "control planes are amd64 only"
    );
}

#[test]
fn aliyun_preset_matches_kubeadm_image_repository_and_stays_collision_free() {
    let v = Variant {
        mirror: false,
        ..Variant::default()
    };
    let mut cfg = fixtures::config(&v);
    cfg.cluster.spec.assets.preset = Some("aliyun".into());
    let cat = Catalogue::for_cluster(&cfg).expect("no collisions");
    let k8s: Vec<_> = cat
        .images
        .iter()
        .filter(|i| i.upstream.starts_with("registry.k8s.io/"))
        .collect();
    assert!(k8s.iter().all(|i| i
        .mirror
        .starts_with("registry.aliyuncs.com/google_containers/")));
    let coredns = k8s.iter().find(|i| i.upstream.contains("coredns")).unwrap();
    assert!(
        coredns
            .mirror
            .starts_with("registry.aliyuncs.com/google_containers/coredns:"),
        "{}",
        coredns.mirror
    );
    // Same as what kubeadm is told to use.
    assert_eq!(
        kprov::assets::kubeadm_image_repository(&cfg.cluster.spec.assets),
        "registry.aliyuncs.com/google_containers"
    );
    // Other registries are untouched by the preset.
    assert!(cat
        .images
        .iter()
        .filter(|i| !i.upstream.starts_with("registry.k8s.io/"))
        .all(|i| i.mirror == i.upstream));
}

#[test]
fn containerd_hosts_toml_points_where_the_catalogue_says() {
    let cfg = fixtures::config(&Variant::default());
    let cat = Catalogue::for_cluster(&cfg).unwrap();
    let a = &cfg.cluster.spec.assets;
    for i in &cat.images {
        let host = kprov::assets::ImageName::parse(&i.upstream).host;
        let toml = kprov::assets::hosts_toml(&host, a).expect("mirrored host");
        let loc = kprov::assets::registry_location(&host, a).unwrap();
        let (mhost, prefix) = loc.split_once('/').unwrap();
        assert!(toml.contains(&format!("{mhost}/v2/{prefix}\"")), "{toml}");
        assert!(
            i.mirror.starts_with(&format!("{loc}/")),
            "{} vs {loc}",
            i.mirror
        );
    }
}

#[test]
fn colliding_mappings_are_rejected() {
    let mut cfg = fixtures::config(&Variant::default());
    cfg.cluster
        .spec
        .assets
        .mappings
        .insert("quay.io".into(), "hub.example/x".into());
    cfg.cluster
        .spec
        .assets
        .mappings
        .insert("ghcr.io".into(), "hub.example/x".into());
    cfg.cluster.spec.addons.metallb = None;
    // flannel (ghcr.io) and calico/… (quay.io) do not collide by name; add a clash by mapping
    // docker.io and quay.io onto one place with the dashboard's repos: no clash expected.
    assert!(Catalogue::for_cluster(&cfg).is_ok());
    let mut c = Catalogue::for_cluster(&cfg).unwrap();
    let dup = c.images[0].clone();
    c.images.push(kprov::mirror::ImageAsset {
        upstream: "other.io/something:1".into(),
        ..dup
    });
    let e = c.check_collisions().unwrap_err().to_string();
    assert!(e.contains("both map to"), "{e}");
}
