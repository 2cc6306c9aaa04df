//! The catalogue is exactly what rendered nodes fetch: render the cloud-config of every node
//! kind of several cluster variants, read it with `kprov_testkit::fetch_trace` (every download
//! command of the scripts it runs, URLs resolved from the scripts' own assignments; every
//! `image:` of the manifests the scripts apply; containerd's sandbox image; the images kubeadm
//! pulls for the ClusterConfiguration it is given), and compare with `Catalogue::for_cluster`
//! both ways: nothing fetched that the catalogue lacks, nothing in the catalogue never fetched.

use std::collections::{BTreeMap, BTreeSet};

use kprov::mirror::Catalogue;
use kprov_providers::Arch;
use kprov_testkit::fetch_trace::{self, Action};

use crate::fixtures::{self, NodeKind, Variant};

/// `kubeadm config images list --kubernetes-version vX` for each version kprov supports, as
/// printed by kubeadm itself — taken from kubernetes/minikube
/// pkg/minikube/constants/constants_kubeadm_images.go at eb25dbc703701fa38c3f65c89a1896baa375e5ed,
/// which hack/update/kubeadm_constants/kubeadm_constants.go fills by downloading each kubeadm
/// release and running exactly that command. Deliberately not computed from kprov's versions
/// table: a wrong tag there must fail here. A new Kubernetes version needs its row.
const KUBEADM_IMAGES: &[(&str, &[&str])] = &[
    (
        "1.31.14",
        &[
            "registry.k8s.io/kube-apiserver:v1.31.14",
            "registry.k8s.io/kube-controller-manager:v1.31.14",
            "registry.k8s.io/kube-scheduler:v1.31.14",
            "registry.k8s.io/kube-proxy:v1.31.14",
            "registry.k8s.io/coredns/coredns:v1.11.3",
            "registry.k8s.io/pause:3.10",
            "registry.k8s.io/etcd:3.5.24-0",
        ],
    ),
    (
        "1.32.13",
        &[
            "registry.k8s.io/kube-apiserver:v1.32.13",
            "registry.k8s.io/kube-controller-manager:v1.32.13",
            "registry.k8s.io/kube-scheduler:v1.32.13",
            "registry.k8s.io/kube-proxy:v1.32.13",
            "registry.k8s.io/coredns/coredns:v1.11.3",
            "registry.k8s.io/pause:3.10",
            "registry.k8s.io/etcd:3.5.24-0",
        ],
    ),
    (
        "1.33.13",
        &[
            "registry.k8s.io/kube-apiserver:v1.33.13",
            "registry.k8s.io/kube-controller-manager:v1.33.13",
            "registry.k8s.io/kube-scheduler:v1.33.13",
            "registry.k8s.io/kube-proxy:v1.33.13",
            "registry.k8s.io/coredns/coredns:v1.12.0",
            "registry.k8s.io/pause:3.10",
            "registry.k8s.io/etcd:3.5.24-0",
        ],
    ),
];

fn yaml_str<'a>(v: &'a serde_yaml::Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// The images `kubeadm init` pulls for the ClusterConfiguration in `text`, by kubeadm's rules
/// (cmd/kubeadm/app/images/images.go: control-plane images and pause from `imageRepository`,
/// etcd and CoreDNS from their own repository when set, `registry.k8s.io` CoreDNS under
/// `coredns/`), with kubeadm's default tags from [`KUBEADM_IMAGES`]. Tags the config pins must
/// be kubeadm's own for that version.
fn kubeadm_images(text: &str) -> BTreeSet<String> {
    use serde::Deserialize;
    let mut out = BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_yaml::Value::deserialize(doc).expect("kubeadm config YAML");
        assert!(
            v.get("skipPhases").is_none(),
            "skipPhases changes what kubeadm pulls: {text}"
        );
        if yaml_str(&v, &["kind"]) != Some("ClusterConfiguration") {
            continue;
        }
        assert!(v["etcd"].get("external").is_none() && v["dns"].get("disabled").is_none());
        let version = yaml_str(&v, &["kubernetesVersion"]).expect("kubernetesVersion");
        let version = version.trim_start_matches('v');
        let defaults = KUBEADM_IMAGES
            .iter()
            .find(|(k, _)| *k == version)
            .unwrap_or_else(|| panic!("no `kubeadm config images list` row for {version}: add it to KUBEADM_IMAGES from kubeadm's own output"))
            .1;
        let repo = yaml_str(&v, &["imageRepository"]).unwrap_or("registry.k8s.io");
        for image in defaults {
            let (name, tag) = image
                .strip_prefix("registry.k8s.io/")
                .and_then(|i| i.rsplit_once(':'))
                .unwrap();
            let (own_repo, own_tag) = match name {
                "coredns/coredns" => ("dns", "dns"),
                "etcd" => ("etcd", "etcd"),
                _ => ("", ""),
            };
            let section = |k: &str| match own_repo {
                "dns" => yaml_str(&v, &["dns", k]),
                "etcd" => yaml_str(&v, &["etcd", "local", k]),
                _ => None,
            };
            if let Some(pinned) = section("imageTag") {
                assert_eq!(
                    pinned, tag,
                    "the kubeadm config pins {own_tag} {pinned}, kubeadm {version} uses {tag}"
                );
            }
            let image = match (name, section("imageRepository")) {
                ("coredns/coredns", Some(r)) => format!("{r}/coredns:{tag}"),
                ("coredns/coredns", None) if repo == "registry.k8s.io" => {
                    format!("{repo}/coredns/coredns:{tag}")
                }
                ("coredns/coredns", None) => format!("{repo}/coredns:{tag}"),
                (n, Some(r)) => format!("{r}/{n}:{tag}"),
                (n, None) => format!("{repo}/{n}:{tag}"),
            };
            out.insert(image);
        }
    }
    out
}

/// What a variant's nodes fetch: (images, asset downloads), over every node kind.
fn fetched(v: &Variant) -> (BTreeSet<String>, BTreeSet<String>) {
    let r = fixtures::renderer(v);
    let mut images = BTreeSet::new();
    let mut downloads = BTreeSet::new();
    for kind in NodeKind::ALL {
        let (req, ctx) = fixtures::node(v, kind);
        let cloud = r.render_cloud_config(&req, &ctx).expect("cloud-config");
        let t = fetch_trace::trace(&cloud);
        let at = format!("{v:?} {}", kind.slug());
        assert!(
            t.problems.is_empty(),
            "{at}: not understood: {:#?}",
            t.problems
        );
        let env = env_file(&t.files);
        // Requests that are not assets: the API server probe, kprov's progress callback.
        let api = format!(
            "https://{}/version",
            env.get("KPROV_API_ENDPOINT").map_or("", String::as_str)
        );
        let callback = format!(
            "{}/kprov/phase",
            env.get("KPROV_CALLBACK_URL")
                .map_or("", |s| s.trim_end_matches('/'))
        );
        let mut node_urls = BTreeSet::new();
        for a in &t.actions {
            match a {
                Action::Download(u) if *u == api || *u == callback => {}
                Action::Download(u) => {
                    node_urls.insert(u.clone());
                }
                Action::ImagePull(i) => {
                    images.insert(i.clone());
                }
                Action::Kubeadm { config, .. } | Action::KubeadmImagesPull(config) => {
                    let text = t.files.get(config).unwrap_or_else(|| panic!("{at}: kubeadm reads {config}, which is not written"));
                    images.extend(kubeadm_images(text));
                }
                Action::Apply(glob) => {
                    let hits = fetch_trace::glob_files(&t.files, glob);
                    for p in hits {
                        let (found, elsewhere) = fetch_trace::manifest_images(&t.files[p]);
                        assert!(elsewhere.is_empty(), "{at}: {p}: image-like strings outside `image:`: {elsewhere:?}");
                        images.extend(found);
                    }
                }
                Action::PackageRepository(u) => assert!(
                    u.starts_with(fixtures::APT_REPOSITORY) || u.starts_with(fixtures::YUM_REPOSITORY),
                    "{at}: cloud-init configures the package repository {u}, which is not spec.assets.packageRepository"
                ),
                Action::Packages { function, .. } => assert_eq!(
                    function, "phase_packages",
                    "{at}: OS packages are installed (from the image's own repositories) only for missing commands in phase_packages"
                ),
            }
        }
        for lit in &t.literal_urls {
            assert!(
                node_urls.iter().chain([&api, &callback]).any(|u| u.starts_with(lit.as_str())),
                "{at}: the scripts name {lit}, which no download command fetches (fetched in a way fetch_trace.rs does not know?)"
            );
        }
        downloads.extend(node_urls);
        images.extend(other_file_images(&t.files, &at));
    }
    (images, downloads)
}

/// `bootstrap.env` as a map.
fn env_file(files: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let text = files
        .get(kprov::bootstrap::ENV_PATH)
        .expect("bootstrap.env written");
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// containerd's sandbox image; and no image reference in any other written file that nothing
/// above accounts for (a kubelet flag, a new config file).
fn other_file_images(files: &BTreeMap<String, String>, at: &str) -> BTreeSet<String> {
    let mut images = BTreeSet::new();
    for (path, text) in files {
        if path.starts_with(kprov::bootstrap::static_pods::STATIC_PODS_DIR) {
            // static pods: the kubelet pulls their images
            let (found, elsewhere) = fetch_trace::manifest_images(text);
            assert!(
                elsewhere.is_empty(),
                "{at}: {path}: image-like strings outside `image:`: {elsewhere:?}"
            );
            images.extend(found);
            continue;
        }
        let handled = path.starts_with("/etc/kprov/manifests")
            || path.starts_with("/etc/kprov/kubeadm-")
            || path.ends_with("hosts.toml")
            || path == kprov::bootstrap::SCRIPT_PATH
            || text.starts_with("-----BEGIN");
        if handled {
            continue;
        }
        let mut found = fetch_trace::image_like_tokens(text);
        if path == "/etc/containerd/config.toml" {
            let sandbox = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("sandbox_image = "))
                .expect("containerd sets sandbox_image")
                .trim_matches('"')
                .to_string();
            found.remove(&sandbox);
            images.insert(sandbox);
        }
        assert!(
            found.is_empty(),
            "{at}: {path} names images nothing here accounts for: {found:?}"
        );
    }
    images
}

fn check(v: &Variant) {
    let cfg = fixtures::config(v);
    let cat = Catalogue::for_cluster(&cfg).expect("catalogue");
    let (images, urls) = fetched(v);
    let cat_images: BTreeSet<String> = cat.images.iter().map(|i| i.mirror.clone()).collect();
    let cat_urls: BTreeSet<String> = cat.files.iter().map(|f| f.mirror_url.clone()).collect();
    let extra: Vec<_> = images.difference(&cat_images).collect();
    let missing: Vec<_> = cat_images.difference(&images).collect();
    assert!(
        extra.is_empty(),
        "{v:?}: pulled but not in the catalogue: {extra:#?}"
    );
    assert!(
        missing.is_empty(),
        "{v:?}: in the catalogue but never pulled: {missing:#?}"
    );
    let extra: Vec<_> = urls.difference(&cat_urls).collect();
    let missing: Vec<_> = cat_urls.difference(&urls).collect();
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
fn catalogue_matches_rendered_user_data_for_every_supported_kubernetes_version() {
    for version in kprov::spec::versions::supported() {
        check(&Variant {
            kubernetes_version: Some(version),
            ..Variant::default()
        });
    }
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
    // Nodes get a hosts.toml for every registry the catalogue pulls from.
    let dirs: Vec<String> = kprov::assets::certs_d(a)
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    for i in &cat.images {
        let host = kprov::assets::ImageName::parse(&i.upstream).host;
        assert!(dirs.contains(&host), "no certs.d/{host}: {dirs:?}");
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
