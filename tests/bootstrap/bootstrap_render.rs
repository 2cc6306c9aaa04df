//! User-data rendering: every node kind × arch × CNI × add-ons × mirror passes the real
//! `cloud-init schema`; the YAML embeds exactly the files the renderer meant; the kubeadm
//! configs carry what the secrets and spec say; workers carry no private key; sizes per role
//! against provider limits; redaction; golden snapshots.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kprov_testkit::peers;

use crate::fixtures::{self, node, NodeKind, Variant};
use kprov::bootstrap::{self, BootstrapError, NodeAction};
use kprov_providers::Arch;

fn matrix() -> Vec<(Variant, NodeKind)> {
    let mut out = Vec::new();
    for arch in [Arch::Amd64, Arch::Arm64] {
        for cni in ["flannel", "calico", "none"] {
            for addons in [false, true] {
                for mirror in [false, true] {
                    for kind in NodeKind::ALL {
                        out.push((
                            Variant {
                                arch,
                                cni,
                                addons,
                                mirror,
                                ..Variant::default()
                            },
                            kind,
                        ));
                    }
                }
            }
        }
    }
    out
}

fn parse(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text)
        .unwrap_or_else(|e| panic!("rendered user-data is not YAML: {e}\n{text}"))
}

#[test]
fn every_user_data_passes_cloud_init_schema() {
    let Some(cloud_init) = peers::require("every_user_data_passes_cloud_init_schema", "cloud-init")
    else {
        return;
    };
    let cases = matrix();
    println!("cloud-init schema matrix: {} user-data files (4 node kinds x 2 arches x 3 CNIs x 2 add-on sets x 2 mirror settings)", cases.len());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (i, (v, kind)) in cases.iter().enumerate() {
        let r = fixtures::renderer(v);
        let (req, ctx) = node(v, *kind);
        let text = r
            .render_cloud_config(&req, &ctx)
            .unwrap_or_else(|e| panic!("{v:?} {kind:?}: {e}"));
        assert!(text.starts_with("#cloud-config\n"), "{kind:?} {v:?}");
        let path = dir.path().join(format!(
            "{i:03}-{}-{}-{}-{}-{}.yaml",
            kind.slug(),
            v.arch,
            v.cni,
            if v.addons { "addons" } else { "bare" },
            if v.mirror { "mirror" } else { "upstream" }
        ));
        std::fs::write(&path, &text).expect("write");
        files.push(path);
    }
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(f) = files.get(i) else { break };
                let out = Command::new(&cloud_init)
                    .args(["schema", "--config-file"])
                    .arg(f)
                    .output()
                    .expect("run cloud-init");
                if !out.status.success() {
                    failures.lock().unwrap().push(format!(
                        "{}: exit {:?}\n{}{}",
                        f.display(),
                        out.status.code(),
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} user-data files fail `cloud-init schema`:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    println!(
        "cloud-init schema: {} of {} valid",
        files.len(),
        files.len()
    );
}

#[test]
fn embedded_files_round_trip_through_yaml() {
    use base64::Engine;
    use std::io::Read;
    let mut checked = 0;
    for (v, kind) in matrix().into_iter().filter(|(v, _)| v.arch == Arch::Amd64) {
        let r = fixtures::renderer(&v);
        let (req, ctx) = node(&v, kind);
        let files = r.files(&req, &ctx).expect("files");
        let doc = parse(&r.render_cloud_config(&req, &ctx).expect("render"));
        let written = doc["write_files"].as_sequence().expect("write_files");
        assert_eq!(written.len(), files.len(), "{kind:?}");
        for (f, w) in files.iter().zip(written) {
            assert_eq!(w["path"].as_str(), Some(f.path.as_str()));
            assert_eq!(w["permissions"].as_str(), Some(f.permissions), "{}", f.path);
            let content = w["content"].as_str().expect("content");
            let got = if f.compress {
                assert_eq!(w["encoding"].as_str(), Some("gz+b64"), "{}", f.path);
                let gz = base64::engine::general_purpose::STANDARD
                    .decode(content)
                    .expect("base64");
                let mut s = String::new();
                flate2::read::GzDecoder::new(&gz[..])
                    .read_to_string(&mut s)
                    .expect("gzip");
                s
            } else {
                content.to_string()
            };
            assert_eq!(
                got.trim_end_matches('\n'),
                f.content.trim_end_matches('\n'),
                "{} of {kind:?} changed through YAML",
                f.path
            );
            checked += 1;
        }
        assert_eq!(doc["hostname"].as_str(), Some(req.name.as_str()));
        assert_eq!(doc["runcmd"][0][1].as_str(), Some(bootstrap::SCRIPT_PATH));
    }
    println!("{checked} embedded files round-trip");
}

#[test]
fn control_planes_carry_the_cluster_keys_and_workers_none() {
    let v = Variant::default();
    let (secrets, _) = fixtures::real_secrets();
    let r = fixtures::real_renderer(&v);
    for kind in NodeKind::ALL {
        let (req, ctx) = node(&v, kind);
        let text = r.render_cloud_config(&req, &ctx).expect("render");
        let keys = [
            &secrets.ca.key_pem,
            &secrets.front_proxy_ca.key_pem,
            &secrets.etcd_ca.key_pem,
            &secrets.service_account.key_pem,
        ];
        // every control plane gets the CAs and the service-account key from kprov (`kubeadm
        // join --control-plane` reads them from disk): nothing is uploaded into the cluster
        if matches!(
            kind,
            NodeKind::FirstControlPlane | NodeKind::ExtraControlPlane
        ) {
            assert!(
                text.contains("PRIVATE KEY"),
                "{kind:?}: a control plane needs the CA keys"
            );
            for k in keys {
                let first_line = k.lines().nth(1).expect("key body");
                assert!(text.contains(first_line), "{kind:?}: a CA key is missing");
            }
        } else {
            assert!(
                !text.contains("PRIVATE KEY"),
                "{kind:?} user-data contains a private key"
            );
            for k in keys {
                let body_line = k.lines().nth(1).expect("key body");
                assert!(
                    !text.contains(body_line),
                    "{kind:?} user-data contains key material"
                );
            }
            assert!(
                text.contains(&secrets.token.token),
                "{kind:?} needs the bootstrap token"
            );
        }
        assert!(
            !text.contains(&secrets.certificate_key) && !text.contains("upload-certs"),
            "{kind:?}: no certificates go through the cluster's kubeadm-certs Secret"
        );
    }
}

fn docs(text: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("YAML document"))
        .filter(|d| !d.is_null())
        .collect()
}

#[test]
fn kubeadm_configs_carry_spec_and_secrets() {
    let v = Variant {
        mirror: true,
        ..Variant::default()
    };
    let cfg = fixtures::config(&v);
    let (secrets, hash) = fixtures::real_secrets();
    let r = fixtures::real_renderer(&v);
    let spec = &cfg.cluster.spec;
    let release = kprov::spec::versions::release(&spec.kubernetes_version).expect("release");

    let (req, ctx) = node(&v, NodeKind::FirstControlPlane);
    let action = r.action(&req, &ctx).expect("action");
    assert_eq!(action, NodeAction::Init);
    let init = docs(&r.kubeadm_init_config(&req, &action).expect("init config"));
    let kinds: Vec<&str> = init
        .iter()
        .map(|d| d["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "InitConfiguration",
            "ClusterConfiguration",
            "KubeletConfiguration"
        ]
    );
    for d in &init[..2] {
        assert_eq!(d["apiVersion"].as_str(), Some("kubeadm.k8s.io/v1beta4"));
    }
    let ic = &init[0];
    assert_eq!(
        ic["bootstrapTokens"][0]["token"].as_str(),
        Some(secrets.token.token.as_str())
    );
    let expires: chrono::DateTime<chrono::Utc> = ic["bootstrapTokens"][0]["expires"]
        .as_str()
        .expect("expires")
        .parse()
        .expect("RFC 3339");
    assert_eq!(expires.timestamp(), secrets.token.expires.timestamp());
    assert_eq!(
        ic["certificateKey"].as_str(),
        None,
        "3 control planes, but no certs are uploaded: each carries the keys"
    );
    assert_eq!(
        ic["nodeRegistration"]["name"].as_str(),
        Some(req.name.as_str())
    );
    assert_eq!(
        ic["nodeRegistration"]["criSocket"].as_str(),
        Some(bootstrap::CRI_SOCKET)
    );
    let args = ic["nodeRegistration"]["kubeletExtraArgs"]
        .as_sequence()
        .expect("v1beta4 list form");
    assert!(args
        .iter()
        .all(|a| a["name"].is_string() && a["value"].is_string()));
    let cc = &init[1];
    assert_eq!(
        cc["kubernetesVersion"].as_str(),
        Some(format!("v{}", release.version).as_str())
    );
    assert_eq!(
        cc["imageRepository"].as_str(),
        Some(kprov::assets::kubeadm_image_repository(&spec.assets).as_str())
    );
    assert!(cc["imageRepository"]
        .as_str()
        .unwrap()
        .starts_with(fixtures::MIRROR_REGISTRY));
    assert_eq!(
        cc["etcd"]["local"]["imageRepository"],
        cc["imageRepository"]
    );
    assert_eq!(cc["etcd"]["local"]["imageTag"].as_str(), Some(release.etcd));
    assert_eq!(cc["dns"]["imageTag"].as_str(), Some(release.coredns));
    assert_eq!(
        cc["networking"]["podSubnet"].as_str(),
        Some(spec.networking.pod_cidr.to_string().as_str())
    );
    assert_eq!(
        cc["networking"]["serviceSubnet"].as_str(),
        Some(spec.networking.service_cidr.to_string().as_str())
    );
    assert_eq!(
        cc["controlPlaneEndpoint"].as_str(),
        Some(format!("@KPROV_NODE_IP@:{}", spec.control_plane.port).as_str())
    );
    assert_eq!(init[2]["cgroupDriver"].as_str(), Some("systemd"));

    for kind in [
        NodeKind::ExtraControlPlane,
        NodeKind::Worker,
        NodeKind::GpuWorker,
    ] {
        let (req, ctx) = node(&v, kind);
        let endpoint = match r.action(&req, &ctx).expect("action") {
            NodeAction::JoinControlPlane { endpoint } | NodeAction::JoinWorker { endpoint } => {
                endpoint
            }
            other => panic!("{kind:?} must join, not {other:?}"),
        };
        assert_eq!(endpoint, ctx.control_plane_endpoint);
        let join = docs(&r.kubeadm_join_config(&req, &endpoint).expect("join config"));
        assert_eq!(join.len(), 1);
        let jc = &join[0];
        assert_eq!(jc["kind"].as_str(), Some("JoinConfiguration"));
        assert_eq!(
            jc["discovery"]["bootstrapToken"]["token"].as_str(),
            Some(secrets.token.token.as_str())
        );
        assert_eq!(
            jc["discovery"]["bootstrapToken"]["apiServerEndpoint"].as_str(),
            Some(endpoint.as_str())
        );
        assert_eq!(
            jc["discovery"]["bootstrapToken"]["caCertHashes"][0].as_str(),
            Some(hash.as_str())
        );
        let is_cp = kind == NodeKind::ExtraControlPlane;
        assert_eq!(jc["controlPlane"].is_mapping(), is_cp, "{kind:?}");
        assert_eq!(
            jc["controlPlane"]["certificateKey"].as_str(),
            None,
            "{kind:?}: the keys are on disk, not downloaded"
        );
        let labels = jc["nodeRegistration"]["kubeletExtraArgs"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "node-labels")
            .and_then(|a| a["value"].as_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            labels.contains(&format!(
                "{}={}",
                bootstrap::INSTANCE_GROUP_LABEL,
                req.instance_group
            )),
            "{labels}"
        );
        assert_eq!(
            labels.contains(bootstrap::GPU_NODE_LABEL),
            kind == NodeKind::GpuWorker,
            "{labels}"
        );
        assert!(
            !labels.contains("node-role.kubernetes.io"),
            "the kubelet may not set node-role labels: {labels}"
        );
        let taints = jc["nodeRegistration"]["taints"]
            .as_sequence()
            .cloned()
            .unwrap_or_default();
        if kind == NodeKind::GpuWorker {
            assert_eq!(taints.len(), 1);
            assert_eq!(taints[0]["key"].as_str(), Some("nvidia.com/gpu"));
            assert_eq!(taints[0]["effect"].as_str(), Some("NoSchedule"));
        } else {
            assert!(taints.is_empty(), "{kind:?}: {taints:?}");
        }
    }

    // node-role labels the kubelet may not set are applied by the first control plane.
    let (req, ctx) = node(&v, NodeKind::FirstControlPlane);
    let files = r.files(&req, &ctx).expect("files");
    let labels = files
        .iter()
        .find(|f| f.path == "/etc/kprov/node-labels")
        .expect("restricted labels file");
    let nodes_group = cfg
        .groups
        .iter()
        .find(|g| g.name() == "nodes")
        .expect("group");
    assert_eq!(
        labels.content.lines().count() as i64,
        nodes_group.spec.count
    );
}

#[test]
fn spec_endpoint_makes_the_first_control_plane_init_or_join() {
    let v = Variant::default();
    let mut cfg = fixtures::config(&v);
    cfg.cluster.spec.control_plane.endpoint = Some("api.demo.internal".into());
    let r = fixtures::renderer_with(cfg, Default::default());
    let (req, _) = node(&v, NodeKind::FirstControlPlane);
    let ctx = kprov::apply::RenderContext {
        control_plane_endpoint: "api.demo.internal:6443".into(),
    };
    let action = r.action(&req, &ctx).expect("action");
    assert_eq!(
        action,
        NodeAction::InitOrJoin {
            endpoint: "api.demo.internal:6443".into()
        }
    );
    let init = docs(&r.kubeadm_init_config(&req, &action).expect("init"));
    assert_eq!(
        init[1]["controlPlaneEndpoint"].as_str(),
        Some("api.demo.internal:6443")
    );
    assert_eq!(
        init[1]["apiServer"]["certSANs"][0].as_str(),
        Some("api.demo.internal")
    );
    let paths: Vec<String> = r
        .files(&req, &ctx)
        .expect("files")
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert!(
        paths.contains(&"/etc/kprov/kubeadm-join.yaml".to_string()),
        "a replacement joins: {paths:?}"
    );
    let (req, ctx) = node(&v, NodeKind::ExtraControlPlane);
    let empty = kprov::apply::RenderContext {
        control_plane_endpoint: String::new(),
    };
    // With an endpoint in the spec only the designated first control plane may initialise.
    assert_eq!(
        r.action(&req, &empty).expect("action"),
        NodeAction::JoinControlPlane {
            endpoint: "api.demo.internal:6443".into()
        }
    );
    assert!(matches!(
        r.action(&req, &ctx).expect("action"),
        NodeAction::JoinControlPlane { .. }
    ));
}

#[test]
fn a_provider_load_balancer_makes_the_first_control_plane_init_or_join_through_it() {
    let v = Variant::default();
    let mut cfg = fixtures::config(&v);
    cfg.cluster.spec.control_plane.load_balancer = Some(kprov::spec::LoadBalancerKind::Zstack);
    let r = fixtures::renderer_with(cfg, Default::default());
    // the executor hands every node the VIP it made before the first instance
    let vip = kprov::apply::RenderContext {
        control_plane_endpoint: "172.20.0.200:6443".into(),
    };
    let (first, _) = node(&v, NodeKind::FirstControlPlane);
    assert_eq!(
        r.action(&first, &vip).expect("action"),
        NodeAction::InitOrJoin {
            endpoint: "172.20.0.200:6443".into()
        },
        "the designated first initialises through the load balancer (or joins a running cluster)"
    );
    let (other, _) = node(&v, NodeKind::ExtraControlPlane);
    assert_eq!(
        r.action(&other, &vip).expect("action"),
        NodeAction::JoinControlPlane {
            endpoint: "172.20.0.200:6443".into()
        }
    );
    let init = docs(
        &r.kubeadm_init_config(&first, &r.action(&first, &vip).unwrap())
            .unwrap(),
    );
    assert_eq!(
        init[1]["controlPlaneEndpoint"].as_str(),
        Some("172.20.0.200:6443")
    );
    assert_eq!(
        init[1]["apiServer"]["certSANs"][0].as_str(),
        Some("172.20.0.200"),
        "the API server's certificate names the VIP"
    );
}

#[test]
fn a_worker_without_endpoint_is_an_error() {
    let v = Variant::default();
    let r = fixtures::renderer(&v);
    let (req, _) = node(&v, NodeKind::Worker);
    let err = r
        .render_cloud_config(
            &req,
            &kprov::apply::RenderContext {
                control_plane_endpoint: String::new(),
            },
        )
        .unwrap_err();
    assert!(matches!(err, BootstrapError::NoEndpoint { .. }), "{err}");
    assert!(err.to_string().contains(&req.name));
}

#[test]
fn expired_token_is_refused() {
    let v = Variant::default();
    let mut secrets = fixtures::placeholder_secrets();
    secrets.token.expires = chrono::Utc::now() - chrono::Duration::minutes(1);
    let r = kprov::bootstrap::Renderer::new(
        fixtures::config(&v),
        secrets,
        fixtures::PLACEHOLDER_HASH.into(),
        Default::default(),
    )
    .expect("renderer");
    let (req, ctx) = node(&v, NodeKind::Worker);
    let err = r.render_cloud_config(&req, &ctx).unwrap_err();
    assert!(matches!(err, BootstrapError::TokenExpired { .. }), "{err}");
}

#[test]
fn sizes_per_role_against_provider_limits() {
    // Real RSA 2048 secrets: key material does not compress, so this is what nodes really get.
    println!("user-data sizes (bytes, real RSA 2048 secrets, mirrors configured):");
    println!(
        "{:<22} {:<8} {:<6} {:>8} {:>8} {:>8}",
        "node", "cni", "addons", "raw", "gzip", "was"
    );
    let mut aws_failures = Vec::new();
    for cni in ["flannel", "calico", "none"] {
        for addons in [false, true] {
            let v = Variant {
                cni,
                addons,
                ..Variant::default()
            };
            let r = fixtures::real_renderer(&v);
            for kind in NodeKind::ALL {
                if cni != "flannel" && kind != NodeKind::FirstControlPlane {
                    continue; // only the first control plane carries manifests
                }
                let (req, ctx) = node(&v, kind);
                let embedded = r.render_cloud_config(&req, &ctx).expect("render");
                // Over a limit kprov gzips the cloud-config with its files as text, which packs
                // better than gzip of their embedded gzip + base64 ("was").
                let text = r.render_cloud_config_for_gzip(&req, &ctx).expect("render");
                let gzip_len = |t: &str| {
                    let mut enc =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                    std::io::Write::write_all(&mut enc, t.as_bytes()).unwrap();
                    enc.finish().unwrap().len()
                };
                let (gz, was) = (gzip_len(&text), gzip_len(&embedded));
                assert!(gz <= was, "{kind:?} {cni} {addons}: {gz} > {was}");
                println!(
                    "{:<22} {:<8} {:<6} {:>8} {:>8} {:>8}",
                    kind.slug(),
                    cni,
                    addons,
                    text.len(),
                    gz,
                    was
                );

                for (provider, limit) in [
                    ("aws", Some(kprov_providers::aws::USER_DATA_LIMIT)),
                    ("zstack", Some(kprov_providers::zstack::USER_DATA_LIMIT)),
                    ("libvirt", None),
                ] {
                    let fitted = bootstrap::fit_user_data(&text, limit, provider, &req);
                    match (limit, fitted) {
                        (None, Ok(b)) => assert_eq!(b.len(), text.len(), "no limit: sent as is"),
                        (Some(l), Ok(b)) => {
                            assert!(b.len() <= l);
                            assert_eq!(
                                bootstrap::decompress_user_data(&b).expect("decompress"),
                                text
                            );
                            if text.len() > l {
                                assert_eq!(&b[..2], &[0x1f, 0x8b], "over the limit raw: gzip");
                            }
                        }
                        (Some(l), Err(e)) => {
                            assert!(gz > l, "{e}");
                            let msg = e.to_string();
                            assert!(
                                msg.contains(&req.instance_group)
                                    && msg.contains(&l.to_string())
                                    && msg.contains(&gz.to_string()),
                                "{msg}"
                            );
                            if provider == "aws" {
                                aws_failures.push(format!(
                                    "{} cni={cni} addons={addons}: {gz} > {l}",
                                    kind.slug()
                                ));
                            } else {
                                panic!("{provider} cannot hold {kind:?}: {msg}");
                            }
                        }
                        (None, Err(e)) => panic!("{e}"),
                    }
                }
                if kind != NodeKind::FirstControlPlane {
                    assert!(
                        bootstrap::fit_user_data(
                            &text,
                            Some(kprov_providers::aws::USER_DATA_LIMIT),
                            "aws",
                            &req
                        )
                        .is_ok(),
                        "{kind:?} must fit EC2"
                    );
                }
            }
        }
    }
    // A connected cluster's first control plane (flannel, no add-ons, no mirrors) fits EC2.
    let v = Variant {
        addons: false,
        mirror: false,
        ..Variant::default()
    };
    let (req, ctx) = node(&v, NodeKind::FirstControlPlane);
    let text = fixtures::real_renderer(&v)
        .render_cloud_config_for_gzip(&req, &ctx)
        .expect("render");
    let fitted = bootstrap::fit_user_data(
        &text,
        Some(kprov_providers::aws::USER_DATA_LIMIT),
        "aws",
        &req,
    );
    println!(
        "first control plane, flannel, no add-ons, no mirrors: {} bytes raw, {:?} sent",
        text.len(),
        fitted.as_ref().map(Vec::len)
    );
    assert!(fitted.is_ok(), "must fit EC2: {fitted:?}");
    println!(
        "over the EC2 limit even gzip-compressed (rendering fails with a clear error): {}",
        if aws_failures.is_empty() {
            "none".to_string()
        } else {
            aws_failures.join("; ")
        }
    );
}

#[test]
fn redaction_hides_every_secret() {
    let v = Variant::default();
    let (secrets, _) = fixtures::real_secrets();
    let r = fixtures::real_renderer(&v);
    for kind in NodeKind::ALL {
        let (req, ctx) = node(&v, kind);
        let text = r.render_cloud_config(&req, &ctx).expect("render");
        let red = bootstrap::redact(&text, secrets);
        assert!(!red.contains("PRIVATE KEY"), "{kind:?}");
        assert!(!red.contains(&secrets.token.token), "{kind:?}");
        assert!(!red.contains(&secrets.certificate_key), "{kind:?}");
        for k in [&secrets.ca.key_pem, &secrets.service_account.key_pem] {
            for line in k.lines().skip(1).take(3) {
                assert!(!red.contains(line), "{kind:?}: key material left");
            }
        }
        assert!(red.contains("<redacted>"));
        assert!(
            red.contains(secrets.ca.cert_pem.lines().nth(1).unwrap())
                || kind != NodeKind::FirstControlPlane,
            "certificates are public and stay"
        );
        parse(&red);
    }
}

fn snapshot_settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("../snapshots");
    s.set_prepend_module_to_snapshot(false);
    s
}

#[test]
fn golden_user_data() {
    let v = Variant {
        arch: Arch::Arm64,
        cni: "flannel",
        addons: true,
        mirror: true,
        ..Variant::default()
    };
    let r = fixtures::renderer(&v);
    snapshot_settings().bind(|| {
        for kind in [NodeKind::FirstControlPlane, NodeKind::GpuWorker] {
            let (req, ctx) = node(&v, kind);
            let text = r.render_cloud_config(&req, &ctx).expect("render");
            // Compressed manifests are snapshotted on their own (golden_manifests); keep this readable.
            let text: String = text
                .lines()
                .map(|l| match l.strip_prefix("    content: H4sI") {
                    Some(rest) => format!("    content: <gz+b64, {} characters>\n", rest.len() + 4),
                    None => format!("{l}\n"),
                })
                .collect();
            insta::assert_snapshot!(format!("bootstrap_user_data_{}", kind.slug()), text);
        }
    });
}

#[test]
fn golden_manifests() {
    let v = Variant {
        arch: Arch::Arm64,
        other_arch: Some(Arch::Amd64),
        addons: true,
        mirror: true,
        ..Variant::default()
    };
    let cfg = fixtures::config(&v);
    snapshot_settings().bind(|| {
        for c in kprov::bootstrap::manifests::COMPONENTS {
            let m = kprov::bootstrap::manifests::render_component(c, &cfg).expect("render");
            insta::assert_snapshot!(format!("bootstrap_manifest_{c}"), m.content);
        }
    });
}

/// `spec.assets.packageRepository` reaches cloud-init as an `apt` source (signed by the given
/// key, replacing the image's unreachable sources and cloud-init's default public mirrors) and a `yum_repos` entry (gpgcheck on with a
/// key); without it neither key is written.
#[test]
fn package_repository_becomes_apt_sources_and_yum_repos() {
    let v = Variant::default();
    let (req, ctx) = node(&v, NodeKind::Worker);
    let doc = parse(
        &fixtures::renderer(&v)
            .render_cloud_config(&req, &ctx)
            .expect("render"),
    );
    let src = &doc["apt"]["sources"]["kprov-packages.list"];
    assert_eq!(
        src["source"].as_str(),
        Some(
            format!(
                "deb [signed-by=$KEY_FILE] {} bookworm main contrib",
                fixtures::APT_REPOSITORY
            )
            .as_str()
        ),
        "{doc:?}"
    );
    assert!(src["key"]
        .as_str()
        .is_some_and(|k| k.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----")));
    assert_eq!(doc["apt"]["preserve_sources_list"].as_bool(), Some(false));
    // cloud-init's default sources.list would name the public mirrors: replaced by a comment
    let list = doc["apt"]["sources_list"].as_str().unwrap_or_default();
    assert!(
        list.lines().all(|l| l.starts_with('#')) && list.contains("packageRepository"),
        "sources_list: {list:?}"
    );
    let yum = &doc["yum_repos"]["kprov-packages"];
    assert_eq!(yum["baseurl"].as_str(), Some(fixtures::YUM_REPOSITORY));
    assert_eq!(yum["gpgcheck"].as_bool(), Some(true));
    assert_eq!(yum["enabled"].as_bool(), Some(true));

    let bare = Variant {
        mirror: false,
        ..Variant::default()
    };
    let (req, ctx) = node(&bare, NodeKind::Worker);
    let doc = parse(
        &fixtures::renderer(&bare)
            .render_cloud_config(&req, &ctx)
            .expect("render"),
    );
    assert!(doc.get("apt").is_none() && doc.get("yum_repos").is_none());
}

#[test]
fn kube_vip_goes_to_every_control_plane_and_no_worker() {
    let v = Variant::default();
    let mut cfg = fixtures::config(&v);
    assert_eq!(
        cfg.api_load_balancer(),
        Some(kprov::spec::LoadBalancerKind::KubeVip),
        "libvirt with several control planes: kube-vip by default"
    );
    let r = fixtures::renderer_with(cfg.clone(), Default::default());
    let vip = kprov::apply::RenderContext {
        control_plane_endpoint: "192.168.150.253:6443".into(),
    };
    let kube_vip = |r: &kprov::bootstrap::Renderer, kind| {
        let (req, _) = node(&v, kind);
        let files = r.files(&req, &vip).expect("files");
        let script = files
            .iter()
            .find(|f| f.path == kprov::bootstrap::SCRIPT_PATH)
            .expect("script")
            .content
            .clone();
        let pod = files
            .iter()
            .find(|f| f.path == "/etc/kprov/static-pods/kube-vip.yaml")
            .map(|f| f.content.clone());
        (pod, script.contains("kprov_static_pods"))
    };
    for kind in [NodeKind::FirstControlPlane, NodeKind::ExtraControlPlane] {
        let (pod, installs) = kube_vip(&r, kind);
        let pod = pod.unwrap_or_else(|| panic!("{kind:?} has no kube-vip"));
        assert!(installs, "{kind:?}: the script installs it");
        let doc: serde_yaml::Value = serde_yaml::from_str(&pod).expect("YAML");
        let env: std::collections::BTreeMap<&str, &str> = doc["spec"]["containers"][0]["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
            .collect();
        assert_eq!(env["address"], "192.168.150.253");
        assert_eq!(env["port"], "6443");
        assert_eq!((env["vip_arp"], env["cp_enable"]), ("true", "true"));
        assert_eq!(env["vip_leaderelection"], "true");
        let image = doc["spec"]["containers"][0]["image"].as_str().unwrap();
        assert!(
            image.starts_with(fixtures::MIRROR_REGISTRY) && image.contains("kube-vip:v"),
            "from the mirror: {image}"
        );
    }
    assert_eq!(
        kube_vip(&r, NodeKind::Worker),
        (None, false),
        "workers hold no VIP"
    );
    cfg.cluster.spec.control_plane.load_balancer = Some(kprov::spec::LoadBalancerKind::None);
    let none = fixtures::renderer_with(cfg, Default::default());
    assert_eq!(kube_vip(&none, NodeKind::ExtraControlPlane), (None, false));
}
