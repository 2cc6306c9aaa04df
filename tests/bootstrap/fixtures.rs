//! Clusters, secrets and node requests for the bootstrap tests (the modules next to this one).
//! Built on kprov's own library (spec loader, renderer, PKI), so it lives with these tests, not
//! in `kprov-testkit` (which never depends on kprov).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use kprov::apply::RenderContext;
use kprov::bootstrap::{BootstrapOptions, Renderer};
use kprov::secrets::{BootstrapToken, CaPair, ClusterSecrets};
use kprov::spec::load::Source;
use kprov::spec::{load_documents, validate, ClusterConfig, LoadedSpec};
use kprov_providers::{Arch, GpuMode, GpuRequest, InstanceRequest, MachineSize, Role};

/// The roles a node's user-data differs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Index 0 of the first control-plane group, no endpoint yet: `kubeadm init`.
    FirstControlPlane,
    /// Another control plane: `kubeadm join --control-plane`.
    ExtraControlPlane,
    /// A worker.
    Worker,
    /// A worker with an NVIDIA GPU.
    GpuWorker,
}

impl NodeKind {
    /// All four.
    pub const ALL: [NodeKind; 4] = [
        NodeKind::FirstControlPlane,
        NodeKind::ExtraControlPlane,
        NodeKind::Worker,
        NodeKind::GpuWorker,
    ];

    /// Short name for file names and messages.
    pub fn slug(self) -> &'static str {
        match self {
            NodeKind::FirstControlPlane => "first-control-plane",
            NodeKind::ExtraControlPlane => "extra-control-plane",
            NodeKind::Worker => "worker",
            NodeKind::GpuWorker => "gpu-worker",
        }
    }
}

/// Cluster variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Every instance group's arch.
    pub arch: Arch,
    /// `flannel`, `calico` or `none`.
    pub cni: &'static str,
    /// All add-ons on (dashboard, metallb, nfs, nvidia device plugin), else none.
    pub addons: bool,
    /// Mirrors (registry, file repository, CA bundle, insecure) configured.
    pub mirror: bool,
    /// `zstack`, `aws` or `libvirt`.
    pub provider: &'static str,
    /// The second worker group's arch, for mixed-arch clusters.
    pub other_arch: Option<Arch>,
    /// Dashboard access `admin` instead of `readonly`.
    pub dashboard_admin: bool,
    /// Kubernetes version (default: kprov's default version).
    pub kubernetes_version: Option<&'static str>,
}

impl Default for Variant {
    fn default() -> Self {
        Variant {
            arch: Arch::Amd64,
            cni: "flannel",
            addons: true,
            mirror: true,
            provider: "libvirt",
            other_arch: None,
            dashboard_admin: false,
            kubernetes_version: None,
        }
    }
}

/// A test CA bundle (a real self-signed certificate is not needed: nodes only store it).
pub const TEST_CA_BUNDLE: &str =
    "-----BEGIN CERTIFICATE-----\nTEST-MIRROR-CA\n-----END CERTIFICATE-----\n";
/// The APT package mirror of mirrored variants.
pub const APT_REPOSITORY: &str = "http://apt.example.internal/debian";
/// The yum package mirror of mirrored variants.
pub const YUM_REPOSITORY: &str = "http://yum.example.internal/openeuler/24.03/OS/aarch64";
/// The mirror registry of mirrored variants.
pub const MIRROR_REGISTRY: &str = "mirror.example.internal:5000";
/// The file repository of mirrored variants.
pub const FILE_REPOSITORY: &str = "http://files.example.internal:8080/kprov";

/// Cluster YAML for a variant.
pub fn cluster_yaml(v: &Variant) -> String {
    let provider = match v.provider {
        "aws" => "{aws: {region: us-east-1}}".to_string(),
        "zstack" => "{zstack: {endpoint: \"http://127.0.0.1:9\"}}".to_string(),
        _ => "{libvirt: {uri: \"test:///default\"}}".to_string(),
    };
    let mut s = format!(
        "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata: {{name: demo}}\nspec:\n  provider: {provider}\n  kubernetesVersion: {version}\n  networking: {{cni: {cni}, podCIDR: 10.244.0.0/16, serviceCIDR: 10.96.0.0/12}}\n  sshPublicKey: \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKprovTestKeyForBootstrapRenderingOnly0000 test@kprov\"\n",
        version = v
            .kubernetes_version
            .unwrap_or(kprov::spec::versions::default_version()),
        cni = v.cni,
    );
    if v.mirror {
        s.push_str(&format!(
            "  assets:\n    containerRegistry: {MIRROR_REGISTRY}\n    fileRepository: {FILE_REPOSITORY}\n    insecure: true\n    packageRepository:\n      apt: {{url: \"{APT_REPOSITORY}\", suite: bookworm, components: [main, contrib], key: \"-----BEGIN PGP PUBLIC KEY BLOCK-----\\nmDMEZkprovFakeKeyForRenderingTestsOnly\\n-----END PGP PUBLIC KEY BLOCK-----\\n\"}}\n      yum: {{baseurl: \"{YUM_REPOSITORY}\", gpgkey: \"{YUM_REPOSITORY}/RPM-GPG-KEY\"}}\n    caBundle: |\n{}",
            TEST_CA_BUNDLE.lines().map(|l| format!("      {l}\n")).collect::<String>()
        ));
    }
    if v.addons {
        s.push_str(&format!(
            "  addons:\n    dashboard: {{nodePort: 30090, access: {}}}\n    metallb:\n      addressPools:\n        - {{name: default, addresses: [\"192.168.50.240-192.168.50.250\", \"192.168.51.0/28\"]}}\n    nfsProvisioner: {{server: nfs.example.internal, path: /exports/k8s, storageClass: nfs-client, defaultClass: true}}\n    nvidiaDevicePlugin: {{enabled: true}}\n",
            if v.dashboard_admin { "admin" } else { "readonly" }
        ));
    } else {
        s.push_str("  addons:\n    nvidiaDevicePlugin: {enabled: false}\n");
    }
    let arch = v.arch.as_str();
    let other = v.other_arch.unwrap_or(v.arch).as_str();
    s.push_str(&format!(
        "---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: control-plane}}\nspec: {{role: control-plane, count: 3, arch: {arch}}}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: nodes}}\nspec:\n  role: node\n  count: 2\n  arch: {other}\n  labels: {{team: ml, node-role.kubernetes.io/worker: \"\"}}\n---\napiVersion: kprov.io/v1alpha1\nkind: InstanceGroup\nmetadata: {{name: gpu}}\nspec:\n  role: node\n  count: 1\n  arch: {arch}\n  gpu: {{count: 1, vendor: nvidia, model: A100}}\n  taints: [\"nvidia.com/gpu=present:NoSchedule\"]\n"
    ));
    if v.provider == "aws" {
        // AWS GPUs come with GPU instance types.
        s = s.replace(
            "  gpu: {count: 1, vendor: nvidia, model: A100}\n",
            &format!(
                "  flavor: {}\n  gpu: {{count: 1, vendor: nvidia, model: A100}}\n",
                if v.arch == Arch::Arm64 {
                    "g5g.xlarge"
                } else {
                    "g4dn.xlarge"
                }
            ),
        );
    }
    s
}

/// A validated cluster for a variant.
pub fn config(v: &Variant) -> ClusterConfig {
    let yaml = cluster_yaml(v);
    let docs = load_documents("test.yaml", &yaml)
        .unwrap_or_else(|e| panic!("fixture does not parse: {e}\n{yaml}"));
    let (cluster, src) = docs.clusters.into_iter().next().expect("a cluster");
    let (groups, group_srcs): (Vec<_>, Vec<Source>) = docs.groups.into_iter().unzip();
    let mut spec = LoadedSpec {
        config: ClusterConfig { cluster, groups },
        cluster_src: src,
        group_srcs,
    };
    validate(&mut spec).unwrap_or_else(|e| panic!("fixture is invalid: {e}\n{yaml}"));
    spec.config
}

/// Fixed placeholder secrets, so rendered output is stable (snapshots).
pub fn placeholder_secrets() -> ClusterSecrets {
    let pair = |name: &str| CaPair {
        cert_pem: format!(
            "-----BEGIN CERTIFICATE-----\nTEST-{name}-CERT\n-----END CERTIFICATE-----\n"
        ),
        key_pem: format!(
            "-----BEGIN PRIVATE KEY-----\nTEST-{name}-KEY\n-----END PRIVATE KEY-----\n"
        ),
    };
    ClusterSecrets {
        ca: pair("CLUSTER-CA"),
        front_proxy_ca: pair("FRONT-PROXY-CA"),
        etcd_ca: pair("ETCD-CA"),
        service_account: CaPair {
            cert_pem: "-----BEGIN PUBLIC KEY-----\nTEST-SA-PUB\n-----END PUBLIC KEY-----\n".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nTEST-SA-KEY\n-----END PRIVATE KEY-----\n".into(),
        },
        token: BootstrapToken {
            token: "abcdef.0123456789abcdef".into(),
            expires: "2099-01-01T00:00:00Z".parse().expect("timestamp"),
        },
        certificate_key: "c0ffee".repeat(10) + "c0ff",
    }
}

/// The discovery hash that goes with [`placeholder_secrets`].
pub const PLACEHOLDER_HASH: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Real secrets from kprov's PKI (RSA 2048, as `kprov create` makes them), made once per test
/// binary, with their discovery hash.
pub fn real_secrets() -> &'static (ClusterSecrets, String) {
    static S: OnceLock<(ClusterSecrets, String)> = OnceLock::new();
    S.get_or_init(|| {
        let s = ClusterSecrets {
            ca: kprov::pki::new_ca(kprov::pki::CLUSTER_CA_CN).expect("CA"),
            front_proxy_ca: kprov::pki::new_ca(kprov::pki::FRONT_PROXY_CA_CN).expect("CA"),
            etcd_ca: kprov::pki::new_ca(kprov::pki::ETCD_CA_CN).expect("CA"),
            service_account: kprov::pki::new_service_account_key().expect("SA key"),
            token: kprov::pki::new_bootstrap_token(std::time::Duration::from_secs(86400))
                .expect("token"),
            certificate_key: kprov::pki::new_certificate_key().expect("certificate key"),
        };
        let hash = kprov::pki::discovery_hash(&s.ca.cert_pem).expect("hash");
        (s, hash)
    })
}

/// A renderer with placeholder secrets.
pub fn renderer(v: &Variant) -> Renderer {
    renderer_with(config(v), BootstrapOptions::default())
}

/// A renderer of `config` (placeholder secrets) with `options`.
pub fn renderer_with(config: kprov::spec::ClusterConfig, options: BootstrapOptions) -> Renderer {
    Renderer::new(
        config,
        placeholder_secrets(),
        PLACEHOLDER_HASH.into(),
        options,
    )
    .expect("renderer")
}

/// A renderer with real secrets.
pub fn real_renderer(v: &Variant) -> Renderer {
    let (s, h) = real_secrets();
    Renderer::new(config(v), s.clone(), h.clone(), BootstrapOptions::default()).expect("renderer")
}

/// The instance request and render context of a node kind in the fixture cluster.
pub fn node(v: &Variant, kind: NodeKind) -> (InstanceRequest, RenderContext) {
    let (group, index, role, gpu) = match kind {
        NodeKind::FirstControlPlane => ("control-plane", 0, Role::ControlPlane, None),
        NodeKind::ExtraControlPlane => ("control-plane", 1, Role::ControlPlane, None),
        NodeKind::Worker => ("nodes", 1, Role::Node, None),
        NodeKind::GpuWorker => (
            "gpu",
            0,
            Role::Node,
            Some(GpuRequest {
                count: 1,
                vendor: Some("nvidia".into()),
                model: Some("A100".into()),
                mode: GpuMode::Passthrough,
            }),
        ),
    };
    let arch = if kind == NodeKind::Worker {
        v.other_arch.unwrap_or(v.arch)
    } else {
        v.arch
    };
    let req = InstanceRequest {
        cluster: "demo".into(),
        name: format!("demo-{group}-{index}"),
        id: format!("id-{group}-{index}"),
        instance_group: group.into(),
        index,
        role,
        arch,
        size: MachineSize::Shape {
            cpus: 2,
            memory_mib: 4096,
        },
        image: None,
        root_disk_gib: None,
        gpu,
        network_id: None,
        user_data: Vec::new(),
        tags: BTreeMap::new(),
    };
    let endpoint = if kind == NodeKind::FirstControlPlane {
        String::new()
    } else {
        "10.0.0.10:6443".to_string()
    };
    (
        req,
        RenderContext {
            control_plane_endpoint: endpoint,
        },
    )
}
