//! Defaulting and validation of a cluster spec — the one place that decides what is valid.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::error::{SpecError, SpecErrors};
use super::load::{LoadedSpec, Source};
use super::quantity::{parse_duration, parse_mib};
use super::{
    versions, Addons, Arch, Assets, BootstrapSpec, Cluster, ControlPlaneSpec, GpuMode,
    InstanceGroup, InstanceGroupSpec, LoadBalancerKind, Networking, ProviderSpec, Role, Size,
    LABEL_CLUSTER,
};

/// Default size of an instance group that names neither `size` nor `flavor`.
pub fn default_size(role: Role) -> Size {
    match role {
        Role::ControlPlane => Size {
            cpu: 2,
            memory: "4Gi".into(),
        },
        Role::Node => Size {
            cpu: 2,
            memory: "4Gi".into(),
        },
    }
}

struct Collector<'a> {
    errors: Vec<SpecError>,
    src: &'a Source,
    prefix: String,
}

impl Collector<'_> {
    fn err(&mut self, path: &str, problem: impl Into<String>, fix: impl Into<String>) {
        self.errors.push(SpecError {
            at: self.src.locate(path),
            field: format!("{}{path}", self.prefix),
            problem: problem.into(),
            fix: fix.into(),
        });
    }
}

/// Is `s` a DNS-1123 label (what Kubernetes, cloud names and hostnames all accept)?
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn name_fix(s: &str) -> String {
    let mut fixed: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    fixed = fixed.trim_matches('-').to_string();
    fixed.truncate(63);
    if fixed.is_empty() {
        "use lowercase letters, digits and '-', at most 63 characters, starting and ending with a letter or digit".into()
    } else {
        format!("use lowercase letters, digits and '-', at most 63 characters, starting and ending with a letter or digit, e.g. {fixed:?}")
    }
}

/// Apply defaults to `spec` and check it. Returns every problem found, in a fixed order (the CLI
/// prints them in it and tests compare the lists): the Cluster document part by part, then each
/// instance group as written, then the control-plane count.
pub fn validate(spec: &mut LoadedSpec) -> Result<(), SpecErrors> {
    let mut errors = Vec::new();
    let cluster_name = spec.config.cluster.metadata.name.clone();
    apply_defaults(spec, &cluster_name);

    // ----- cluster document
    let mut col = Collector {
        errors: Vec::new(),
        src: &spec.cluster_src,
        prefix: String::new(),
    };
    let cl = &spec.config.cluster;
    check_kind_name_version(&mut col, cl);
    let s = &cl.spec;
    check_networking(&mut col, &s.networking);
    check_provider(&mut col, &s.provider);
    check_control_plane_endpoint(&mut col, &s.control_plane, &s.provider);
    check_bootstrap(&mut col, &s.bootstrap);
    if s.etcd.backups.keep == 0 {
        col.err(
            "spec.etcd.backups.keep",
            "0 would remove every etcd backup as soon as it is taken",
            "keep at least 1 (default 10)",
        );
    }
    check_ssh_public_key(&mut col, s.ssh_public_key.as_deref());
    check_assets(&mut col, &s.assets);
    check_addons(&mut col, &s.addons, &s.networking);
    errors.append(&mut col.errors);

    // ----- instance groups
    let mut seen = BTreeSet::new();
    let mut control_planes: i64 = 0;
    for (g, src) in spec.config.groups.iter().zip(&spec.group_srcs) {
        let mut col = Collector {
            errors: Vec::new(),
            src,
            prefix: format!("InstanceGroup {}: ", g.metadata.name),
        };
        check_group_kind_name(&mut col, g, &cluster_name, &mut seen);
        let gs = &g.spec;
        if gs.role == Role::ControlPlane {
            control_planes += gs.count.max(0);
        }
        check_group_count_size(&mut col, gs);
        check_group_rolling_update(&mut col, gs);
        check_group_image_gpu(&mut col, gs, &s.provider);
        check_group_taints_labels(&mut col, gs);
        errors.append(&mut col.errors);
    }
    let mut col = Collector {
        errors: Vec::new(),
        src: &spec.cluster_src,
        prefix: String::new(),
    };
    check_control_plane_count(&mut col, control_planes);
    errors.append(&mut col.errors);

    spec.config
        .groups
        .sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SpecErrors(errors))
    }
}

/// The defaults that depend on more than one field (serde fills in the rest): the NVIDIA device
/// plugin when any group has GPUs, each group's cluster label and, without size or flavor, its
/// default size.
fn apply_defaults(spec: &mut LoadedSpec, cluster_name: &str) {
    let any_gpu = spec.config.groups.iter().any(|g| g.spec.gpu.is_some());
    let c = &mut spec.config.cluster.spec;
    if any_gpu && c.addons.nvidia_device_plugin.is_none() {
        c.addons.nvidia_device_plugin = Some(super::NvidiaDevicePlugin { enabled: true });
    }
    for g in &mut spec.config.groups {
        g.metadata
            .labels
            .entry(LABEL_CLUSTER.into())
            .or_insert_with(|| cluster_name.to_string());
        if g.spec.size.is_none() && g.spec.flavor.is_none() {
            g.spec.size = Some(default_size(g.spec.role));
        }
    }
}

/// The Cluster document's kind, name and Kubernetes version.
fn check_kind_name_version(col: &mut Collector, cl: &Cluster) {
    if cl.kind != "Cluster" {
        col.err(
            "kind",
            format!("kind is {:?}", cl.kind),
            "use `kind: Cluster`",
        );
    }
    if !is_dns1123_label(&cl.metadata.name) {
        col.err(
            "metadata.name",
            format!(
                "cluster name {:?} is not a DNS-1123 label",
                cl.metadata.name
            ),
            name_fix(&cl.metadata.name),
        );
    }
    let s = &cl.spec;
    if versions::release(&s.kubernetes_version).is_none() {
        col.err(
            "spec.kubernetesVersion",
            format!("Kubernetes {} is not supported", s.kubernetes_version),
            format!("use one of: {}", versions::supported().join(", ")),
        );
    }
}

/// Networks: no host bits, pods, services and nodes apart, and room for a /24 per node.
fn check_networking(col: &mut Collector, net: &Networking) {
    for (name, cidr) in [
        ("podCIDR", Some(net.pod_cidr)),
        ("serviceCIDR", Some(net.service_cidr)),
        ("nodeCIDR", net.node_cidr),
    ] {
        if let Some(c) = cidr.filter(|c| c.addr() != c.network()) {
            col.err(
                &format!("spec.networking.{name}"),
                format!(
                    "{name} {c} has host bits set: it is not the start of a /{} network",
                    c.prefix_len()
                ),
                format!("write the network address, {}", c.trunc()),
            );
        }
    }
    if net.pod_cidr.contains(&net.service_cidr.network())
        || net.service_cidr.contains(&net.pod_cidr.network())
    {
        col.err(
            "spec.networking.podCIDR",
            format!("podCIDR {} overlaps serviceCIDR {}", net.pod_cidr, net.service_cidr),
            "choose non-overlapping ranges, e.g. podCIDR 10.244.0.0/16 and serviceCIDR 10.96.0.0/12",
        );
    }
    if let Some(node) = net.node_cidr {
        for (name, other) in [("podCIDR", net.pod_cidr), ("serviceCIDR", net.service_cidr)] {
            if overlaps(node, other) {
                col.err(
                    &format!("spec.networking.{name}"),
                    format!("{name} {other} overlaps the node network {node}"),
                    format!("move {name} to a range the nodes do not use"),
                );
            }
        }
    }
    if net.pod_cidr.prefix_len() > 24 && net.pod_cidr.addr().is_ipv4() {
        col.err(
            "spec.networking.podCIDR",
            format!(
                "podCIDR {} is too small: every node takes a /24 from it",
                net.pod_cidr
            ),
            "use a /16 (the default 10.244.0.0/16) or at least a /22",
        );
    }
}

/// `spec.controlPlane`: a load balancer of the cluster's own provider, and at most one way of
/// choosing the endpoint.
fn check_control_plane_endpoint(
    col: &mut Collector,
    cp: &ControlPlaneSpec,
    provider: &ProviderSpec,
) {
    if let Some(lb) = cp.load_balancer {
        if let Some(p) = lb.provider().filter(|p| *p != provider.name()) {
            col.err(
                "spec.controlPlane.loadBalancer",
                if lb.is_static_pod() {
                    format!(
                        "{} needs a libvirt network, but the cluster's provider is {} (kube-vip moves its VIP by ARP, and cloud networks drop traffic to addresses they did not assign)",
                        lb.as_str(),
                        provider.name()
                    )
                } else {
                    format!(
                        "{} is a {p} load balancer, but the cluster's provider is {}",
                        lb.as_str(),
                        provider.name()
                    )
                },
                match provider {
                    ProviderSpec::Zstack(_) => {
                        "use loadBalancer: zstack (or none), or leave it out"
                    }
                    ProviderSpec::Aws(_) => "use loadBalancer: aws (or none), or leave it out",
                    ProviderSpec::Libvirt(_) => {
                        "use loadBalancer: kube-vip (or none), or leave it out"
                    }
                },
            );
        }
        if cp.endpoint.is_some() && lb != LoadBalancerKind::None {
            col.err(
                "spec.controlPlane.loadBalancer",
                "both endpoint and loadBalancer are set: the endpoint would be either yours or the load balancer's",
                "keep endpoint (a load balancer you run) or loadBalancer (kprov makes one), not both",
            );
        }
    }
    if cp.vip.is_some() && matches!(provider, ProviderSpec::Aws(_)) {
        col.err(
            "spec.controlPlane.vip",
            format!(
                "a VIP address is only chosen on ZStack and libvirt, not on {}",
                provider.name()
            ),
            "remove spec.controlPlane.vip",
        );
    } else if cp.vip.is_some()
        && (cp.endpoint.is_some() || cp.load_balancer == Some(LoadBalancerKind::None))
    {
        col.err(
            "spec.controlPlane.vip",
            "vip is the address of the load balancer kprov makes, but this cluster gets none (endpoint set or loadBalancer: none)",
            "remove spec.controlPlane.vip, or the endpoint",
        );
    }
}

/// The provider's own settings that kprov can check before talking to it.
fn check_provider(col: &mut Collector, provider: &ProviderSpec) {
    match provider {
        ProviderSpec::Zstack(z) => {
            if !(z.endpoint.starts_with("http://") || z.endpoint.starts_with("https://")) {
                col.err(
                    "spec.provider.zstack.endpoint",
                    format!("{:?} is not an http(s) URL", z.endpoint),
                    "write it like http://zstack-mn.example:8080",
                );
            }
        }
        ProviderSpec::Aws(a) => {
            if !is_aws_region(&a.region) {
                col.err(
                    "spec.provider.aws.region",
                    format!("{:?} is not an AWS region name", a.region),
                    "use a region like us-east-1, eu-west-1, cn-north-1 or cn-northwest-1",
                );
            }
            if !a.subnet_ids.is_empty() && a.vpc_id.is_none() {
                col.err(
                    "spec.provider.aws.subnetIds",
                    "subnetIds given without vpcId",
                    "set vpcId to the VPC those subnets belong to",
                );
            }
        }
        ProviderSpec::Libvirt(l) => {
            if !l.uri.contains(":///") && !l.uri.contains("://") {
                col.err(
                    "spec.provider.libvirt.uri",
                    format!("{:?} is not a libvirt URI", l.uri),
                    "use qemu:///system or qemu+ssh://host/system",
                );
            }
        }
    }
}

/// The bootstrap token must outlive a create.
fn check_bootstrap(col: &mut Collector, bootstrap: &BootstrapSpec) {
    if let Some(ttl) = Some(&bootstrap.token_ttl) {
        match parse_duration(ttl) {
            Ok(d) if d.as_secs() < 3600 => col.err(
                "spec.bootstrap.tokenTTL",
                format!("token TTL {ttl} is shorter than a create can take"),
                "use at least 1h (default 24h)",
            ),
            Ok(_) => {}
            Err(e) => col.err("spec.bootstrap.tokenTTL", e, "e.g. 24h"),
        }
    }
}

/// The SSH key installed on the nodes must be an OpenSSH public key line.
fn check_ssh_public_key(col: &mut Collector, ssh_public_key: Option<&str>) {
    if let Some(key) = ssh_public_key {
        let ok = key.split_whitespace().count() >= 2
            && [
                "ssh-ed25519",
                "ssh-rsa",
                "ecdsa-sha2-nistp256",
                "ecdsa-sha2-nistp384",
                "ecdsa-sha2-nistp521",
                "sk-ssh-ed25519@openssh.com",
            ]
            .contains(&key.split_whitespace().next().unwrap_or(""));
        if !ok {
            col.err("spec.sshPublicKey", "not an OpenSSH public key", "paste the contents of ~/.ssh/id_ed25519.pub (a line starting with ssh-ed25519 or ssh-rsa)");
        }
    }
}

/// Where binaries and images come from: URLs, a registry location, a known preset.
fn check_assets(col: &mut Collector, assets: &Assets) {
    let repo = assets.package_repository.as_ref();
    let apt = repo.and_then(|r| r.apt.as_ref());
    let yum = repo.and_then(|r| r.yum.as_ref());
    if let Some(a) = apt {
        if a.suite.trim().is_empty() || a.suite.contains(char::is_whitespace) {
            col.err(
                "spec.assets.packageRepository.apt.suite",
                format!("{:?} is not an APT suite", a.suite),
                "write the distribution's codename, e.g. bookworm or jammy",
            );
        }
        if a.components.is_empty()
            || a.components
                .iter()
                .any(|c| c.is_empty() || c.contains(char::is_whitespace))
        {
            col.err(
                "spec.assets.packageRepository.apt.components",
                format!("{:?} is not a list of components", a.components),
                "list components one a line, e.g. [main, contrib]",
            );
        }
    }
    let urls = [
        (
            "spec.assets.fileRepository",
            assets.file_repository.as_ref(),
            "https://files.example.com/k8s",
        ),
        (
            "spec.assets.packageRepository.apt.url",
            apt.map(|a| &a.url),
            "http://mirror.example/debian",
        ),
        (
            "spec.assets.packageRepository.yum.baseurl",
            yum.map(|y| &y.baseurl),
            "http://mirror.example/openeuler/$releasever/OS/$basearch",
        ),
        (
            "spec.assets.packageRepository.yum.gpgkey",
            yum.and_then(|y| y.gpgkey.as_ref()),
            "http://mirror.example/openeuler/RPM-GPG-KEY-openEuler",
        ),
    ];
    for (field, url, example) in urls {
        if let Some(u) = url {
            if reqwest::Url::parse(u)
                .map(|u| !matches!(u.scheme(), "http" | "https"))
                .unwrap_or(true)
            {
                col.err(
                    field,
                    format!("{u:?} is not an http(s) URL"),
                    format!("write it like {example}"),
                );
            }
        }
    }
    let mut registry_ok = true;
    if let Some(reg) = &assets.container_registry {
        if reg.contains("://") || reg.is_empty() || reg.ends_with('/') {
            registry_ok = false;
            col.err(
                "spec.assets.containerRegistry",
                format!("{reg:?} is not a registry location"),
                "write host[:port][/prefix] without a scheme, e.g. mirror.example:5000/k8s",
            );
        }
    }
    if let Some(p) = &assets.preset {
        if !crate::spec::PRESETS.contains(&p.as_str()) {
            col.err(
                "spec.assets.preset",
                format!("unknown preset {p:?}"),
                format!("use one of: {}", crate::spec::PRESETS.join(", ")),
            );
        }
    }
    // Every name nodes will pull must be one registries accept (an upper-case prefix, an IPv6
    // mapping key…): refused here rather than by the registry on the node.
    if registry_ok {
        for (field, p) in crate::assets::check_locations(assets) {
            col.err(field, p.problem, p.fix);
        }
    }
}

/// Add-on settings: the dashboard's NodePort, MetalLB's pools (outside the pod and service
/// networks), the NFS export.
fn check_addons(col: &mut Collector, addons: &Addons, net: &Networking) {
    if let Some(d) = &addons.dashboard {
        if !(30000..=32767).contains(&d.node_port) {
            col.err(
                "spec.addons.dashboard.nodePort",
                format!("{} is outside the NodePort range", d.node_port),
                "use a port between 30000 and 32767 (default 30090)",
            );
        }
    }
    if let Some(m) = &addons.metallb {
        if m.address_pools.is_empty() {
            col.err(
                "spec.addons.metallb.addressPools",
                "MetalLB needs at least one address pool",
                "add e.g. `addressPools: [{name: default, addresses: [192.0.2.240-192.0.2.250]}]`",
            );
        }
        for (i, pool) in m.address_pools.iter().enumerate() {
            if !is_dns1123_label(&pool.name) {
                col.err(
                    &format!("spec.addons.metallb.addressPools[{i}].name"),
                    format!("{:?} is not a DNS-1123 label", pool.name),
                    name_fix(&pool.name),
                );
            }
            for (j, a) in pool.addresses.iter().enumerate() {
                if let Err(e) = parse_address_range(a) {
                    col.err(
                        &format!("spec.addons.metallb.addressPools[{i}].addresses[{j}]"),
                        e,
                        "use a CIDR (192.0.2.0/28) or a range (192.0.2.10-192.0.2.20)",
                    );
                } else if let Ok((lo, _)) = parse_address_range(a) {
                    if net.pod_cidr.contains(&lo) || net.service_cidr.contains(&lo) {
                        col.err(
                            &format!("spec.addons.metallb.addressPools[{i}].addresses[{j}]"),
                            format!("{a} lies in the pod or service network"),
                            "use addresses of the node network that nothing else uses",
                        );
                    }
                }
            }
        }
    }
    if let Some(n) = &addons.nfs_provisioner {
        if n.server.trim().is_empty() {
            col.err(
                "spec.addons.nfsProvisioner.server",
                "empty NFS server",
                "set the NFS server's host name or address",
            );
        }
        if !n.path.starts_with('/') {
            col.err(
                "spec.addons.nfsProvisioner.path",
                format!("{:?} is not an absolute export path", n.path),
                "e.g. /srv/nfs/k8s",
            );
        }
    }
}

/// An instance group's kind and name (a DNS label, short enough for host names, unique) and the
/// cluster it is labelled with. `seen` collects the names of the groups checked so far.
fn check_group_kind_name(
    col: &mut Collector,
    g: &InstanceGroup,
    cluster_name: &str,
    seen: &mut BTreeSet<String>,
) {
    if g.kind != "InstanceGroup" {
        col.err(
            "kind",
            format!("kind is {:?}", g.kind),
            "use `kind: InstanceGroup`",
        );
    }
    if !is_dns1123_label(&g.metadata.name) {
        col.err(
            "metadata.name",
            format!(
                "instance group name {:?} is not a DNS-1123 label",
                g.metadata.name
            ),
            name_fix(&g.metadata.name),
        );
    } else if cluster_name.len() + g.metadata.name.len() + 5 > 63 {
        col.err(
            "metadata.name",
            "cluster and instance group names together are too long for host names",
            "keep cluster name + group name under 58 characters",
        );
    }
    if !seen.insert(g.metadata.name.clone()) {
        col.err(
            "metadata.name",
            format!("instance group {:?} is defined twice", g.metadata.name),
            "give each instance group a unique name",
        );
    }
    if let Some(c) = g.metadata.labels.get(LABEL_CLUSTER) {
        if c != cluster_name {
            col.err(
                &format!("metadata.labels.{LABEL_CLUSTER}"),
                format!("belongs to cluster {c:?}, not {cluster_name:?}"),
                "put it in its own cluster's file or fix the label",
            );
        }
    }
}

/// An instance group's count and machine size: size or flavor, kubeadm's minimums for a
/// control plane, a root disk big enough for a node.
/// `spec.rollingUpdate`: counts or percentages up to 100%, and not both zero (nothing could
/// ever be replaced).
fn check_group_rolling_update(col: &mut Collector, gs: &InstanceGroupSpec) {
    let Some(ru) = &gs.rolling_update else {
        return;
    };
    let count = gs.count.clamp(0, 1000) as u32;
    let mut zero = [false, false];
    for (i, (field, v, up)) in [
        ("spec.rollingUpdate.maxSurge", &ru.max_surge, true),
        (
            "spec.rollingUpdate.maxUnavailable",
            &ru.max_unavailable,
            false,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let Some(v) = v else {
            // defaults: maxSurge 1, maxUnavailable 0
            zero[i] = i == 1;
            continue;
        };
        match v.resolve(count.max(1), up) {
            Ok(n) => zero[i] = n == 0,
            Err(e) => col.err(
                field,
                e,
                "give an instance count (e.g. 1) or a percentage of the group from 0% to 100% (e.g. \"25%\")",
            ),
        }
    }
    if zero == [true, true] {
        col.err(
            "spec.rollingUpdate",
            "maxSurge and maxUnavailable are both 0: no instance could ever be replaced",
            "set maxSurge to 1 (an extra instance first) or maxUnavailable to 1 (one down at a time)",
        );
    }
}

fn check_group_count_size(col: &mut Collector, gs: &InstanceGroupSpec) {
    if gs.count < 0 {
        col.err(
            "spec.count",
            format!("count is {}", gs.count),
            "use 0 or more",
        );
    } else if gs.count > 1000 {
        col.err(
            "spec.count",
            format!("count {} is more than kprov manages in one group", gs.count),
            "split it into groups of at most 1000",
        );
    }
    if gs.size.is_some() && gs.flavor.is_some() {
        col.err(
            "spec.flavor",
            "both size and flavor are set",
            "keep one: size (cpu + memory) or a provider flavor",
        );
    }
    if let Some(sz) = &gs.size {
        if sz.cpu == 0 {
            col.err(
                "spec.size.cpu",
                "cpu is 0",
                "give at least 1 vCPU (2 for control planes)",
            );
        }
        match parse_mib(&sz.memory) {
            Ok(m) if gs.role == Role::ControlPlane && m < 1700 => col.err(
                "spec.size.memory",
                format!(
                    "{} is below kubeadm's minimum of 1700Mi for a control plane",
                    sz.memory
                ),
                "use at least 2Gi (4Gi recommended)",
            ),
            Ok(0) => col.err("spec.size.memory", "memory is 0", "e.g. 4Gi"),
            Ok(_) => {}
            Err(e) => col.err("spec.size.memory", e, "e.g. 4Gi"),
        }
        if gs.role == Role::ControlPlane && sz.cpu == 1 {
            col.err(
                "spec.size.cpu",
                "kubeadm needs at least 2 vCPUs on a control plane",
                "set cpu: 2 or more",
            );
        }
    }
    if let Some(d) = &gs.root_disk {
        match parse_mib(d) {
            Ok(m) if m < 10 * 1024 => col.err(
                "spec.rootDisk",
                format!("{d} is too small for a Kubernetes node"),
                "use at least 20Gi",
            ),
            Ok(_) => {}
            Err(e) => col.err("spec.rootDisk", e, "e.g. 40Gi"),
        }
    }
}

/// An instance group's image (built for the group's arch, where its name tells) and GPUs (what
/// the provider can attach).
fn check_group_image_gpu(col: &mut Collector, gs: &InstanceGroupSpec, provider: &ProviderSpec) {
    if let Some(img) = &gs.image {
        if let Some(img_arch) = arch_hint(img) {
            if img_arch != gs.arch {
                col.err(
                    "spec.image",
                    format!(
                        "image {img:?} is built for {img_arch} but the group's arch is {}",
                        gs.arch
                    ),
                    format!("use an {} image, or set arch: {img_arch}", gs.arch),
                );
            }
        }
    }
    if let Some(gpu) = &gs.gpu {
        if gpu.count == 0 {
            col.err(
                "spec.gpu.count",
                "gpu.count is 0",
                "remove the gpu block or ask for 1 or more",
            );
        }
        match provider {
            ProviderSpec::Aws(_) => {
                if gpu.mode == GpuMode::Mdev {
                    col.err(
                        "spec.gpu.mode",
                        "AWS cannot slice GPUs (mdev)",
                        "use mode: passthrough with a GPU instance type",
                    );
                }
                if gs.flavor.is_none() {
                    col.err(
                        "spec.gpu",
                        "on AWS GPUs come only with GPU instance types",
                        format!(
                            "set flavor to a GPU instance type, e.g. {}",
                            if gs.arch == Arch::Arm64 {
                                "g5g.xlarge"
                            } else {
                                "g4dn.xlarge"
                            }
                        ),
                    );
                }
            }
            ProviderSpec::Libvirt(_) if gpu.mode == GpuMode::Mdev => {
                col.err(
                    "spec.gpu.mode",
                    "the libvirt provider passes whole PCI devices only",
                    "use mode: passthrough",
                );
            }
            _ => {}
        }
    }
}

/// An instance group's node taints and labels must be what Kubernetes accepts.
fn check_group_taints_labels(col: &mut Collector, gs: &InstanceGroupSpec) {
    for (i, t) in gs.taints.iter().enumerate() {
        if let Err(e) = check_taint(t) {
            col.err(&format!("spec.taints[{i}]"), e, "write taints as key[=value]:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute");
        }
    }
    for k in gs.labels.keys() {
        if !is_label_key(k) {
            col.err(
                &format!("spec.labels.{k}"),
                format!("{k:?} is not a valid Kubernetes label key"),
                "use [prefix/]name with letters, digits, '-', '_' and '.'",
            );
        }
    }
}

/// etcd wants an odd number of control planes, and there must be one.
fn check_control_plane_count(col: &mut Collector, control_planes: i64) {
    if control_planes == 0 {
        col.err(
            "spec",
            "the cluster has no control-plane instance group (or its count is 0)",
            "add an InstanceGroup with role: control-plane and count: 1 (or 3 for HA)",
        );
    } else if control_planes % 2 == 0 {
        col.err(
            "spec",
            format!("{control_planes} control-plane instances: etcd needs a majority, so an even count tolerates no more failures than one fewer and risks split votes"),
            format!("use {} or {} control-plane instances", control_planes - 1, control_planes + 1),
        );
    }
}

fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Check a CIDR against the node network the cloud reports, at plan time.
pub fn check_node_network(spec: &super::ClusterSpec, node: IpNet) -> Vec<String> {
    let mut out = Vec::new();
    for (name, other) in [
        ("podCIDR", spec.networking.pod_cidr),
        ("serviceCIDR", spec.networking.service_cidr),
    ] {
        if overlaps(node, other) {
            out.push(format!("spec.networking.{name} {other} overlaps the node network {node}; move {name} to a range the nodes do not use"));
        }
    }
    out
}

/// Architecture named in an image name, if any (`…-arm64…`, `…aarch64…`, `…amd64…`, `…x86_64…`).
pub fn arch_hint(image: &str) -> Option<Arch> {
    let l = image.to_ascii_lowercase();
    let arm = l.contains("arm64") || l.contains("aarch64");
    let x86 = l.contains("amd64") || l.contains("x86_64") || l.contains("x86-64");
    match (arm, x86) {
        (true, false) => Some(Arch::Arm64),
        (false, true) => Some(Arch::Amd64),
        _ => None,
    }
}

fn is_aws_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty())
        && ["us", "eu", "ap", "cn", "sa", "ca", "me", "af", "il", "mx"].contains(&parts[0])
        && parts[1..parts.len() - 1].iter().all(|p| {
            [
                "east",
                "west",
                "north",
                "south",
                "central",
                "northeast",
                "northwest",
                "southeast",
                "southwest",
                "gov",
            ]
            .contains(p)
        })
}

fn check_taint(t: &str) -> Result<(), String> {
    let (kv, effect) = t
        .rsplit_once(':')
        .ok_or_else(|| format!("taint {t:?} has no effect"))?;
    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
        return Err(format!("taint {t:?} has unknown effect {effect:?}"));
    }
    let key = kv.split_once('=').map(|(k, _)| k).unwrap_or(kv);
    if !is_label_key(key) {
        return Err(format!("taint key {key:?} is not valid"));
    }
    Ok(())
}

fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    let prefix_ok = prefix
        .is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns1123_label));
    name_ok && prefix_ok
}

/// Parse a MetalLB address entry: a CIDR or `first-last`. Returns the first and last address.
pub fn parse_address_range(s: &str) -> Result<(IpAddr, IpAddr), String> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok((n.network(), n.broadcast()));
    }
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is neither a CIDR nor a range"))?;
    let a: IpAddr = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not an IP address"))?;
    let b: IpAddr = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not an IP address"))?;
    if a.is_ipv4() != b.is_ipv4() || a > b {
        return Err(format!("range {s:?} is empty or mixes IPv4 and IPv6"));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns1123_label("demo-1"));
        assert!(!is_dns1123_label("Demo"));
        assert!(!is_dns1123_label("-x"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }

    #[test]
    fn regions() {
        for ok in [
            "us-east-1",
            "cn-north-1",
            "cn-northwest-1",
            "ap-southeast-2",
            "eu-central-1",
        ] {
            assert!(is_aws_region(ok), "{ok}");
        }
        for bad in ["us-esat-1", "useast1", "cn-north", "mars-east-1"] {
            assert!(!is_aws_region(bad), "{bad}");
        }
    }

    #[test]
    fn taints_and_labels() {
        assert!(check_taint("nvidia.com/gpu=present:NoSchedule").is_ok());
        assert!(check_taint("gpu:Sometimes").is_err());
        assert!(is_label_key("node-role.kubernetes.io/gpu"));
        assert!(!is_label_key("bad key"));
    }

    #[test]
    fn arch_hints() {
        assert_eq!(arch_hint("ubuntu-22.04-arm64"), Some(Arch::Arm64));
        assert_eq!(arch_hint("debian-12-generic-amd64"), Some(Arch::Amd64));
        assert_eq!(arch_hint("my-image"), None);
    }
}
