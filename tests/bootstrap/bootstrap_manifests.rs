//! CNI and add-on manifests: every one passes `kubernetes-validate --strict` for each Kubernetes
//! release kprov supports; MetalLB's custom resources validate against the CRD schemas they ship
//! with; every image comes from the versions table through the mirror; every workload is pinned
//! to the cluster's architectures; template headers match the versions table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use kprov_testkit::peers;

use crate::fixtures::{self, Variant};
use kprov::bootstrap::manifests::{self, COMPONENTS};
use kprov::bootstrap::static_pods;
use kprov::spec::versions;
use kprov_providers::Arch;
use serde::Deserialize;

fn docs(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("YAML document"))
        .filter(|d| !d.is_null())
        .collect()
}

fn variants() -> Vec<Variant> {
    vec![
        Variant {
            arch: Arch::Amd64,
            other_arch: Some(Arch::Arm64),
            addons: true,
            mirror: true,
            ..Variant::default()
        },
        Variant {
            arch: Arch::Arm64,
            addons: true,
            mirror: false,
            dashboard_admin: true,
            ..Variant::default()
        },
    ]
}

/// `-k` argument for a cluster version: that minor when the wheel has its schemas, else the
/// newest minor it has below (said in the output).
fn schema_version(python: &Path, cluster: &str) -> String {
    let out = Command::new(python)
        .args(["-c", "import kubernetes_validate, os; d = os.path.join(os.path.dirname(kubernetes_validate.__file__), 'kubernetes-json-schema'); print('\\n'.join(os.listdir(d)))"])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let minor = |s: &str| -> Option<(u32, u32)> {
        let v = s.trim_start_matches('v');
        let mut it = v.split(['.', '-']);
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    let want = minor(cluster).expect("cluster version");
    let have: BTreeSet<(u32, u32)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with("-strict"))
        .filter_map(minor)
        .collect();
    if have.contains(&want) {
        return cluster.to_string();
    }
    let best = have.range(..want).next_back().unwrap_or_else(|| {
        panic!("kubernetes-validate has no schemas at or below {cluster}: {have:?}")
    });
    println!("NOTE: kubernetes-validate has no schemas for {}.{}; validating Kubernetes {cluster} manifests against {}.{} (the newest it has below)", want.0, want.1, best.0, best.1);
    format!("{}.{}.0", best.0, best.1)
}

/// The kube-vip static pod with the placeholders filled in as `kprov_static_pods` does.
fn installed_kube_vip(cfg: &kprov::spec::ClusterConfig) -> String {
    let text = static_pods::kube_vip_manifest(cfg, "192.168.150.253:6443").expect("render");
    assert!(
        text.contains("@KPROV_NODE_INTERFACE@") && text.contains("@KPROV_KUBE_VIP_KUBECONFIG@")
    );
    text.replace("@KPROV_NODE_INTERFACE@", "enp1s0")
        .replace("@KPROV_KUBE_VIP_KUBECONFIG@", "/etc/kubernetes/admin.conf")
}

#[test]
fn manifests_pass_kubernetes_validate_strict() {
    let test = "manifests_pass_kubernetes_validate_strict";
    let Some(kv) = peers::kubernetes_validate(test) else {
        return;
    };
    let Some(python) = peers::venv_python(test) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for (i, v) in variants().iter().enumerate() {
        let cfg = fixtures::config(v);
        for c in COMPONENTS {
            let m = manifests::render_component(c, &cfg).expect("render");
            let path = dir.path().join(format!("{i}-{}", m.file_name));
            std::fs::write(&path, &m.content).expect("write");
            files.push(path);
        }
        // the kube-vip static pod, as the bootstrap script installs it on a control plane
        let path = dir.path().join(format!("{i}-kube-vip.yaml"));
        std::fs::write(&path, installed_kube_vip(&cfg)).expect("write");
        files.push(path);
    }
    let mut validated = 0;
    for release in versions::supported() {
        let k = schema_version(&python, release);
        let out = Command::new(&kv)
            .args(["--strict", "-k", &k])
            .args(&files)
            .output()
            .expect("run kubernetes-validate");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubernetes-validate --strict -k {k} failed:\n{stdout}{stderr}"
        );
        let passed = stdout
            .lines()
            .chain(stderr.lines())
            .filter(|l| l.contains(" passed for resource "))
            .count();
        let skipped: Vec<&str> = stdout
            .lines()
            .chain(stderr.lines())
            .filter(|l| l.contains("Couldn't find schema"))
            .collect();
        // Only custom resources (checked against their CRDs below) may lack a built-in schema.
        for s in &skipped {
            assert!(
                s.contains("metallb.io"),
                "unexpected schema-less resource: {s}"
            );
        }
        println!("kubernetes-validate --strict -k {k}: {passed} resources passed in {} files ({} custom resources checked separately)", files.len(), skipped.len());
        assert!(
            passed > 50,
            "suspiciously few resources validated: {passed}"
        );
        validated += passed;
    }
    println!(
        "kubernetes-validate: {validated} resource validations over {} releases",
        versions::supported().len()
    );
}

const CR_CHECK: &str = r#"
import json, sys, yaml, jsonschema
crds, crs = {}, []
for path in sys.argv[1:]:
    for d in yaml.safe_load_all(open(path)):
        if not d:
            continue
        if d["kind"] == "CustomResourceDefinition":
            for v in d["spec"]["versions"]:
                crds[(d["spec"]["group"], v["name"], d["spec"]["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
        elif "." in d["apiVersion"].split("/")[0] and not d["apiVersion"].startswith(("apiextensions", "rbac.", "admissionregistration.", "storage.", "policy/", "apps/", "batch/", "networking.k8s.io")):
            crs.append(d)
for d in crs:
    group, version = d["apiVersion"].split("/")
    schema = crds.get((group, version, d["kind"]))
    if schema is None:
        print("NO CRD for %s %s" % (d["apiVersion"], d["kind"]))
        sys.exit(1)
    jsonschema.validate(d, schema)
    print("ok %s %s" % (d["kind"], d["metadata"]["name"]))
"#;

#[test]
fn metallb_custom_resources_match_their_crds() {
    let Some(python) = peers::venv_python("metallb_custom_resources_match_their_crds") else {
        return;
    };
    let cfg = fixtures::config(&variants()[0]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut paths = Vec::new();
    for c in ["metallb", "metallb-config"] {
        let m = manifests::render_component(c, &cfg).expect("render");
        let p = dir.path().join(&m.file_name);
        std::fs::write(&p, &m.content).expect("write");
        paths.push(p);
    }
    let out = Command::new(&python)
        .arg("-c")
        .arg(CR_CHECK)
        .args(&paths)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "custom resources do not match the CRDs:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pools = cfg
        .cluster
        .spec
        .addons
        .metallb
        .as_ref()
        .expect("metallb")
        .address_pools
        .len();
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        pools + 1,
        "{stdout}"
    );
    print!("{stdout}");
}

fn pod_specs(doc: &serde_yaml::Value) -> Option<&serde_yaml::Value> {
    match doc["kind"].as_str()? {
        "DaemonSet" | "Deployment" | "StatefulSet" => Some(&doc["spec"]["template"]["spec"]),
        "Pod" => Some(&doc["spec"]),
        _ => None,
    }
}

#[test]
fn images_come_from_the_table_through_the_mirror_and_workloads_pin_arches() {
    for v in variants() {
        let cfg = fixtures::config(&v);
        let assets = &cfg.cluster.spec.assets;
        let allowed: BTreeMap<String, &str> = versions::ADDON_IMAGES
            .iter()
            .map(|a| (kprov::assets::image_ref(a.image, assets), a.component))
            .collect();
        let arches: Vec<String> = cfg
            .arches()
            .iter()
            .map(|a| a.as_str().to_string())
            .collect();
        let mut used = BTreeSet::new();
        let mut rendered: Vec<(&str, String)> = COMPONENTS
            .iter()
            .map(|c| {
                (
                    *c,
                    manifests::render_component(c, &cfg)
                        .expect("render")
                        .content,
                )
            })
            .collect();
        rendered.push((static_pods::KUBE_VIP, installed_kube_vip(&cfg)));
        for (c, content) in &rendered {
            for d in docs(content) {
                let Some(spec) = pod_specs(&d) else { continue };
                let name = d["metadata"]["name"].as_str().unwrap_or("?");
                for list in ["initContainers", "containers"] {
                    for ctr in spec[list].as_sequence().into_iter().flatten() {
                        let image = ctr["image"].as_str().expect("image");
                        let component = allowed.get(image).unwrap_or_else(|| panic!("{c}/{name}: image {image} is not a versions-table image through the mirror"));
                        assert_eq!(*component, *c, "{name} uses another component's image");
                        if v.mirror {
                            assert!(image.starts_with(fixtures::MIRROR_REGISTRY), "{image}");
                        }
                        used.insert(image.to_string());
                    }
                }
                if d["kind"] == "Pod" {
                    // a static pod runs on the node whose kubelet reads it: no affinity
                    continue;
                }
                let terms = spec["affinity"]["nodeAffinity"]
                    ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                    .as_sequence()
                    .unwrap_or_else(|| panic!("{c}/{name}: no required node affinity"));
                for t in terms {
                    let arch = t["matchExpressions"]
                        .as_sequence()
                        .expect("matchExpressions")
                        .iter()
                        .find(|e| e["key"] == "kubernetes.io/arch")
                        .unwrap_or_else(|| panic!("{c}/{name}: no arch expression"));
                    assert_eq!(arch["operator"].as_str(), Some("In"));
                    let vals: Vec<String> = arch["values"]
                        .as_sequence()
                        .expect("values")
                        .iter()
                        .map(|x| x.as_str().unwrap().to_string())
                        .collect();
                    assert_eq!(vals, arches, "{c}/{name}");
                }
                if *c == "nvidia-device-plugin" {
                    assert_eq!(
                        spec["nodeSelector"][kprov::bootstrap::GPU_NODE_LABEL].as_str(),
                        Some("true"),
                        "the device plugin runs on GPU nodes only"
                    );
                }
            }
        }
        let unused: Vec<_> = allowed.keys().filter(|i| !used.contains(*i)).collect();
        assert!(
            unused.is_empty(),
            "versions-table images no manifest uses: {unused:?}"
        );
    }
}

#[test]
fn manifests_follow_the_spec() {
    let v = variants()[0].clone();
    let cfg = fixtures::config(&v);
    let spec = &cfg.cluster.spec;
    let pod_cidr = spec.networking.pod_cidr.to_string();
    let flannel = manifests::render_component("flannel", &cfg)
        .expect("flannel")
        .content;
    let net_conf = docs(&flannel)
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("configmap")["data"]["net-conf.json"]
        .as_str()
        .expect("net-conf")
        .to_string();
    let net: serde_json::Value = serde_json::from_str(&net_conf).expect("net-conf.json is JSON");
    assert_eq!(net["Network"].as_str(), Some(pod_cidr.as_str()));
    let calico = docs(
        &manifests::render_component("calico", &cfg)
            .expect("calico")
            .content,
    );
    let node = calico
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("calico-node");
    let env = node["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .expect("env");
    let get = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .and_then(|e| e["value"].as_str())
            .map(str::to_string)
    };
    assert_eq!(
        get("CALICO_IPV4POOL_CIDR").as_deref(),
        Some(pod_cidr.as_str())
    );
    assert_eq!(get("CALICO_IPV4POOL_VXLAN").as_deref(), Some("Always"));
    let dash = docs(
        &manifests::render_component("dashboard", &cfg)
            .expect("dashboard")
            .content,
    );
    let svc = dash
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == "kubernetes-dashboard")
        .expect("service");
    assert_eq!(svc["spec"]["type"].as_str(), Some("NodePort"));
    assert_eq!(
        svc["spec"]["ports"][0]["nodePort"].as_u64(),
        Some(spec.addons.dashboard.as_ref().unwrap().node_port as u64)
    );
    // readonly: no cluster-admin, and the read-only role cannot touch Secrets or write anything.
    assert!(!dash.iter().any(|d| d["roleRef"]["name"] == "cluster-admin"));
    let ro = dash
        .iter()
        .find(|d| d["metadata"]["name"] == "kprov-dashboard-readonly")
        .expect("read-only role");
    for rule in ro["rules"].as_sequence().expect("rules") {
        let verbs: Vec<&str> = rule["verbs"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(verbs, ["get", "list", "watch"]);
        assert!(!rule["resources"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|r| r == "secrets" || r == "*"));
    }
    let admin_cfg = fixtures::config(&Variant {
        dashboard_admin: true,
        ..v.clone()
    });
    let admin = docs(
        &manifests::render_component("dashboard", &admin_cfg)
            .expect("dashboard")
            .content,
    );
    assert!(admin.iter().any(|d| d["kind"] == "ClusterRoleBinding"
        && d["roleRef"]["name"] == "cluster-admin"
        && d["subjects"][0]["name"] == "kprov-dashboard-user"));
    let nfs = docs(
        &manifests::render_component("nfs-provisioner", &cfg)
            .expect("nfs")
            .content,
    );
    let n = spec.addons.nfs_provisioner.as_ref().unwrap();
    let sc = nfs
        .iter()
        .find(|d| d["kind"] == "StorageClass")
        .expect("storage class");
    assert_eq!(
        sc["metadata"]["name"].as_str(),
        Some(n.storage_class.as_str())
    );
    assert_eq!(
        sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"].as_str(),
        Some("true")
    );
    let dep = nfs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("deployment");
    assert_eq!(
        dep["spec"]["template"]["spec"]["volumes"][0]["nfs"]["server"].as_str(),
        Some(n.server.as_str())
    );
    assert_eq!(
        dep["spec"]["template"]["spec"]["volumes"][0]["nfs"]["path"].as_str(),
        Some(n.path.as_str())
    );
    let pools = docs(
        &manifests::render_component("metallb-config", &cfg)
            .expect("metallb-config")
            .content,
    );
    for p in &spec.addons.metallb.as_ref().unwrap().address_pools {
        let d = pools
            .iter()
            .find(|d| {
                d["kind"] == "IPAddressPool" && d["metadata"]["name"].as_str() == Some(&p.name)
            })
            .expect("pool");
        let got: Vec<&str> = d["spec"]["addresses"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            got,
            p.addresses.iter().map(String::as_str).collect::<Vec<_>>()
        );
    }
    // Which manifests a spec turns on.
    let all = manifests::render_all(&cfg).expect("render all");
    let names: Vec<&str> = all.iter().map(|m| m.component).collect();
    assert_eq!(
        names,
        [
            "flannel",
            "metallb",
            "nfs-provisioner",
            "dashboard",
            "nvidia-device-plugin",
            "metallb-config"
        ]
    );
    let bare = fixtures::config(&Variant {
        cni: "none",
        addons: false,
        ..v
    });
    assert!(manifests::render_all(&bare).expect("render").is_empty());
}

#[test]
fn template_headers_match_the_versions_table() {
    for (name, text) in kprov::bootstrap::templates::TEMPLATES
        .iter()
        .filter(|(n, _)| n.starts_with("manifests/") && !n.contains("metallb-config"))
    {
        let header = text.lines().next().expect("header");
        let mut words = header.trim_start_matches("{#-").split_whitespace();
        let component = words.next().expect("component");
        let version = words.next().expect("version").trim_end_matches(':');
        let images = versions::addon_images(component);
        assert!(
            !images.is_empty(),
            "{name}: header names unknown component {component}"
        );
        assert!(
            images.iter().any(|i| i.ends_with(&format!(":{version}"))),
            "{name} was derived from {component} {version}, but the versions table pins {images:?}; re-derive it (templates/manifests/README.md)"
        );
    }
}
