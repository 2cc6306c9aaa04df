//! `kprov create cluster|instancegroup|-f FILE`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};

use super::{open_store, Cli, ExitError, Output};
use crate::ops;
use crate::repo::Repo;
use crate::spec::load::{Documents, Source};
use crate::spec::{
    self, Arch, Cluster, ClusterConfig, ClusterSpec, Cni, Gpu, GpuMode, InstanceGroup,
    InstanceGroupSpec, LoadedSpec, Metadata, Networking, ProviderSpec, Role, Size, API_VERSION,
    LABEL_CLUSTER,
};

/// Arguments of `create`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CreateArgs {
    /// What to create.
    #[command(subcommand)]
    pub what: Option<CreateWhat>,
    /// Create from a YAML file holding a Cluster and its InstanceGroups (or InstanceGroups of an
    /// existing cluster).
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<String>,
    /// With -f: replace the stored spec of an existing cluster.
    #[arg(long, requires = "file")]
    pub replace: bool,
    /// With -f: print what would be stored, store nothing.
    #[arg(long, requires = "file")]
    pub dry_run: bool,
}

/// Objects `create` makes.
#[derive(Debug, Subcommand)]
pub enum CreateWhat {
    /// Create a cluster spec from flags.
    Cluster(Box<CreateClusterArgs>),
    /// Add an instance group to an existing cluster.
    #[command(alias = "ig")]
    Instancegroup(CreateGroupArgs),
}

/// Flags of `create cluster`.
#[derive(Debug, Args)]
pub struct CreateClusterArgs {
    /// Cluster name (DNS-1123 label).
    pub cluster: String,
    /// Cloud provider.
    #[arg(long, value_parser = ["zstack", "aws", "libvirt"])]
    pub provider: String,
    /// Zones (ZStack zone / AWS availability zones), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub zones: Vec<String>,
    /// Control-plane instances (1, or 3 for HA).
    #[arg(long, default_value_t = 1)]
    pub control_plane_count: i64,
    /// Worker instances.
    #[arg(long, default_value_t = 2)]
    pub node_count: i64,
    /// Control-plane size: CPU:MEMORY (e.g. 4:8Gi) or a provider flavor name.
    #[arg(long)]
    pub control_plane_size: Option<String>,
    /// Worker size: CPU:MEMORY (e.g. 8:32Gi) or a provider flavor name.
    #[arg(long)]
    pub node_size: Option<String>,
    /// Architecture of every instance group (amd64 or arm64).
    #[arg(long, default_value = "amd64")]
    pub arch: String,
    /// Architecture of the workers, when it differs from --arch.
    #[arg(long)]
    pub node_arch: Option<String>,
    /// Image for every group (name or id; default: the provider's image for the arch).
    #[arg(long)]
    pub image: Option<String>,
    /// Kubernetes version.
    #[arg(long, default_value = spec::versions::default_version())]
    pub kubernetes_version: String,
    /// CNI: flannel, calico or none.
    #[arg(long, default_value = "flannel")]
    pub networking: String,
    /// Pod network CIDR.
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Service network CIDR.
    #[arg(long)]
    pub service_cidr: Option<String>,
    /// GPUs per worker as [VENDOR/]MODEL:COUNT, e.g. A100:1 or nvidia/T4:2.
    #[arg(long)]
    pub gpu: Option<String>,
    /// File holding the SSH public key to install on the nodes.
    #[arg(long, value_name = "FILE")]
    pub ssh_public_key: Option<String>,
    /// ZStack management node URL (also ZSTACK_ENDPOINT).
    #[arg(long, env = "ZSTACK_ENDPOINT", hide_env_values = true)]
    pub zstack_endpoint: Option<String>,
    /// ZStack L3 network for the nodes.
    #[arg(long)]
    pub zstack_l3_network: Option<String>,
    /// AWS region (also AWS_REGION).
    #[arg(long, env = "AWS_REGION", hide_env_values = true)]
    pub aws_region: Option<String>,
    /// libvirt connection URI.
    #[arg(long, default_value = "qemu:///system")]
    pub libvirt_uri: String,
    /// Container registry mirror every image is pulled from (host[:port][/prefix]).
    #[arg(long)]
    pub registry_mirror: Option<String>,
    /// File repository base URL for Kubernetes binaries.
    #[arg(long)]
    pub file_repository: Option<String>,
    /// Print the spec instead of storing it.
    #[arg(long)]
    pub dry_run: bool,
    /// Format for --dry-run.
    #[arg(short, long, value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
}

/// Flags of `create instancegroup`.
#[derive(Debug, Args)]
pub struct CreateGroupArgs {
    /// Instance group name.
    pub group: String,
    /// Role: control-plane or node.
    #[arg(long, default_value = "node", value_parser = ["control-plane", "node"])]
    pub role: String,
    /// Number of instances in the group.
    #[arg(long, default_value_t = 1)]
    pub count: i64,
    /// Architecture of the group's instances (amd64 or arm64).
    #[arg(long, default_value = "amd64")]
    pub arch: String,
    /// Size: CPU:MEMORY or a flavor.
    #[arg(long)]
    pub size: Option<String>,
    /// Image of the group's instances (name or id; default: the provider's image for the arch).
    #[arg(long)]
    pub image: Option<String>,
    /// GPUs per instance as [VENDOR/]MODEL:COUNT.
    #[arg(long)]
    pub gpu: Option<String>,
    /// Print the group instead of storing it.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_arch(flag: &str, s: &str) -> anyhow::Result<Arch> {
    Arch::parse(s).ok_or_else(|| {
        ExitError::usage(format!(
            "{flag} {s:?}: unknown architecture; use amd64 or arm64"
        ))
    })
}

/// `4:8Gi` → Size, anything else → flavor.
fn parse_size(s: &str) -> (Option<Size>, Option<String>) {
    match s.split_once(':') {
        Some((c, m)) if c.parse::<u32>().is_ok() => (
            Some(Size {
                cpu: c.parse().unwrap_or(0),
                memory: m.to_string(),
            }),
            None,
        ),
        _ => (None, Some(s.to_string())),
    }
}

/// `[vendor/]model:count`.
fn parse_gpu(s: &str) -> anyhow::Result<Gpu> {
    let bad = || {
        ExitError::usage(format!(
            "--gpu {s:?}: write it as [VENDOR/]MODEL:COUNT, e.g. A100:1 or nvidia/T4:2"
        ))
    };
    let (what, count) = s.rsplit_once(':').ok_or_else(bad)?;
    let count: u32 = count.parse().map_err(|_| bad())?;
    let (vendor, model) = match what.split_once('/') {
        Some((v, m)) => (Some(v.to_string()), m.to_string()),
        None => (Some("nvidia".to_string()), what.to_string()),
    };
    Ok(Gpu {
        count,
        vendor,
        model: if model.is_empty() { None } else { Some(model) },
        mode: GpuMode::Passthrough,
    })
}

/// What the flags say about one instance group.
struct GroupFlags<'a> {
    role: Role,
    count: i64,
    arch: Arch,
    size: Option<&'a str>,
    image: Option<String>,
    gpu: Option<Gpu>,
}

fn group(cluster: &str, name: &str, f: GroupFlags<'_>) -> InstanceGroup {
    let GroupFlags {
        role,
        count,
        arch,
        size,
        image,
        gpu,
    } = f;
    let (size, flavor) = size.map(parse_size).unwrap_or((None, None));
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_CLUSTER.to_string(), cluster.to_string());
    let mut node_labels = BTreeMap::new();
    let mut taints = Vec::new();
    if gpu.is_some() {
        node_labels.insert("nvidia.com/gpu.present".to_string(), "true".to_string());
        taints.push("nvidia.com/gpu=present:NoSchedule".to_string());
    }
    InstanceGroup {
        api_version: API_VERSION.into(),
        kind: "InstanceGroup".into(),
        metadata: Metadata {
            name: name.into(),
            labels,
            generation: None,
        },
        spec: InstanceGroupSpec {
            role,
            count,
            arch,
            size,
            flavor,
            image,
            root_disk: None,
            gpu,
            labels: node_labels,
            taints,
            rolling_update: None,
        },
    }
}

/// Build a cluster spec from flags, remembering which flag set which field.
pub fn spec_from_flags(a: &CreateClusterArgs) -> anyhow::Result<LoadedSpec> {
    let arch = parse_arch("--arch", &a.arch)?;
    let node_arch = match &a.node_arch {
        Some(s) => parse_arch("--node-arch", s)?,
        None => arch,
    };
    let provider = provider_from_flags(a)?;
    let networking = networking_from_flags(a)?;
    let ssh_public_key = ssh_public_key_from_flag(a)?;
    let gpu = a.gpu.as_deref().map(parse_gpu).transpose()?;
    let assets = spec::Assets {
        container_registry: a.registry_mirror.clone(),
        file_repository: a.file_repository.clone(),
        ..Default::default()
    };
    let cluster = Cluster {
        api_version: API_VERSION.into(),
        kind: "Cluster".into(),
        metadata: Metadata {
            name: a.cluster.clone(),
            labels: BTreeMap::new(),
            generation: None,
        },
        spec: ClusterSpec {
            provider,
            kubernetes_version: a.kubernetes_version.clone(),
            networking,
            control_plane: Default::default(),
            assets,
            addons: Default::default(),
            ssh_public_key,
            bootstrap: Default::default(),
            etcd: Default::default(),
        },
    };
    let groups = groups_from_flags(a, arch, node_arch, gpu);
    let group_srcs = groups
        .iter()
        .map(|g| group_flag_source(g.spec.role == Role::ControlPlane))
        .collect();
    Ok(LoadedSpec {
        config: ClusterConfig { cluster, groups },
        cluster_src: cluster_flag_source(),
        group_srcs,
    })
}

/// `spec.provider` from --provider and that provider's flags (or their environment variables).
fn provider_from_flags(a: &CreateClusterArgs) -> anyhow::Result<ProviderSpec> {
    Ok(match a.provider.as_str() {
        "zstack" => ProviderSpec::Zstack(spec::ZStackProvider {
            endpoint: a.zstack_endpoint.clone().ok_or_else(|| {
                ExitError::usage("--provider zstack needs the management node URL: --zstack-endpoint http://HOST:8080 (or ZSTACK_ENDPOINT)")
            })?,
            zone: a.zones.first().cloned(),
            l3_network: a.zstack_l3_network.clone(),
            credentials_file: None,
        }),
        "aws" => ProviderSpec::Aws(spec::AwsProvider {
            region: a.aws_region.clone().ok_or_else(|| ExitError::usage("--provider aws needs --aws-region (or AWS_REGION), e.g. cn-north-1"))?,
            ..Default::default()
        }),
        _ => ProviderSpec::Libvirt(spec::LibvirtProvider {
            uri: a.libvirt_uri.clone(),
            pool: None,
            network: Default::default(),
            domain_type: Default::default(),
            images: Default::default(),
        }),
    })
}

/// `spec.networking` from --networking, --pod-cidr and --service-cidr.
fn networking_from_flags(a: &CreateClusterArgs) -> anyhow::Result<Networking> {
    let cni = match a.networking.as_str() {
        "flannel" => Cni::Flannel,
        "calico" => Cni::Calico,
        "none" => Cni::None,
        other => {
            return Err(ExitError::usage(format!(
                "--networking {other:?}: use flannel, calico or none"
            )))
        }
    };
    let mut networking = Networking {
        cni,
        ..Default::default()
    };
    if let Some(p) = &a.pod_cidr {
        networking.pod_cidr = p.parse().map_err(|_| {
            ExitError::usage(format!(
                "--pod-cidr {p:?} is not a CIDR; e.g. 10.244.0.0/16"
            ))
        })?;
    }
    if let Some(p) = &a.service_cidr {
        networking.service_cidr = p.parse().map_err(|_| {
            ExitError::usage(format!(
                "--service-cidr {p:?} is not a CIDR; e.g. 10.96.0.0/12"
            ))
        })?;
    }
    Ok(networking)
}

/// The key in the file --ssh-public-key names, if given.
fn ssh_public_key_from_flag(a: &CreateClusterArgs) -> anyhow::Result<Option<String>> {
    Ok(match &a.ssh_public_key {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| {
                    ExitError::usage(format!(
                        "--ssh-public-key {f}: cannot read the file: {e}; fix: pass the path of an OpenSSH \
                         public key, e.g. --ssh-public-key ~/.ssh/id_ed25519.pub (create one with `ssh-keygen -t ed25519`)"
                    ))
                })?
                .trim()
                .to_string(),
        ),
        None => None,
    })
}

/// The `control-plane` group and, unless --node-count is 0 without --gpu, the `nodes` group.
fn groups_from_flags(
    a: &CreateClusterArgs,
    arch: Arch,
    node_arch: Arch,
    gpu: Option<Gpu>,
) -> Vec<InstanceGroup> {
    let mut groups = vec![group(
        &a.cluster,
        "control-plane",
        GroupFlags {
            role: Role::ControlPlane,
            count: a.control_plane_count,
            arch,
            size: a.control_plane_size.as_deref(),
            image: a.image.clone(),
            gpu: None,
        },
    )];
    if a.node_count != 0 || gpu.is_some() {
        groups.push(group(
            &a.cluster,
            "nodes",
            GroupFlags {
                role: Role::Node,
                count: a.node_count,
                arch: node_arch,
                size: a.node_size.as_deref(),
                image: a.image.clone(),
                gpu,
            },
        ));
    }
    groups
}

/// Which flag set each field of the Cluster document, so errors name the flag.
fn cluster_flag_source() -> Source {
    let flags: BTreeMap<String, String> = [
        ("metadata.name", "NAME"),
        ("spec.provider", "--provider"),
        (
            "spec.provider.zstack.endpoint",
            &*super::flag_or_env("--zstack-endpoint", "ZSTACK_ENDPOINT"),
        ),
        (
            "spec.provider.aws.region",
            &*super::flag_or_env("--aws-region", "AWS_REGION"),
        ),
        ("spec.provider.libvirt.uri", "--libvirt-uri"),
        ("spec.kubernetesVersion", "--kubernetes-version"),
        ("spec.networking.podCIDR", "--pod-cidr"),
        ("spec.networking.serviceCIDR", "--service-cidr"),
        ("spec.networking", "--networking"),
        ("spec.sshPublicKey", "--ssh-public-key"),
        ("spec.assets.containerRegistry", "--registry-mirror"),
        ("spec.assets.fileRepository", "--file-repository"),
        ("spec", "--control-plane-count"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Source::Flags(flags)
}

/// Which flag set each field of the control-plane (`cp`) or worker group.
fn group_flag_source(cp: bool) -> Source {
    let p = if cp { "--control-plane" } else { "--node" };
    Source::Flags(
        [
            ("spec.count", format!("{p}-count")),
            ("spec.size", format!("{p}-size")),
            ("spec.size.cpu", format!("{p}-size")),
            ("spec.size.memory", format!("{p}-size")),
            ("spec.flavor", format!("{p}-size")),
            ("spec.image", "--image".to_string()),
            ("spec.gpu", "--gpu".to_string()),
            ("spec.gpu.count", "--gpu".to_string()),
            ("spec.gpu.mode", "--gpu".to_string()),
            ("metadata.name", "NAME".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    )
}

fn print_config(cfg: &ClusterConfig, out: Output) -> anyhow::Result<()> {
    match out {
        Output::Json => {
            let mut docs = vec![serde_json::to_value(&cfg.cluster)?];
            for g in &cfg.groups {
                docs.push(serde_json::to_value(g)?);
            }
            println!("{}", serde_json::to_string_pretty(&docs)?);
        }
        _ => print!("{}", cfg.to_yaml()),
    }
    Ok(())
}

/// Run `create`.
pub async fn run(cli: &Cli, a: &CreateArgs) -> anyhow::Result<()> {
    match (&a.what, &a.file) {
        (Some(CreateWhat::Cluster(c)), _) => create_cluster(cli, c).await,
        (Some(CreateWhat::Instancegroup(g)), _) => create_group(cli, g).await,
        (None, Some(f)) => create_from_file(cli, f, a.replace, a.dry_run).await,
        (None, None) => Err(ExitError::usage("say what to create: `kprov create cluster NAME --provider P`, `kprov create instancegroup IG`, or `kprov create -f FILE`")),
    }
}

async fn create_cluster(cli: &Cli, a: &CreateClusterArgs) -> anyhow::Result<()> {
    crate::cloud::require_compiled(&a.provider, "--provider")?;
    let mut spec = spec_from_flags(a)?;
    spec::validate(&mut spec)?;
    if a.dry_run {
        return print_config(&spec.config, a.output);
    }
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let stored = ops::specs::store(&repo, &spec, None).await?;
    eprintln!(
        "Cluster {} created in {} ({} instance groups, {} instances). Nothing exists in the cloud yet:\n  kprov update cluster {} --yes",
        stored.config.name(),
        repo.store.url(),
        stored.config.groups.len(),
        stored.config.groups.iter().map(|g| g.spec.count.max(0)).sum::<i64>(),
        stored.config.name()
    );
    Ok(())
}

/// `create -f FILE`: a Cluster and its InstanceGroups (a new cluster, or with --replace a stored
/// one's new spec), or InstanceGroups alone for a stored cluster.
async fn create_from_file(
    cli: &Cli,
    file: &str,
    replace: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let text = read_spec_file(file)?;
    let Documents { clusters, groups } = spec::load_documents(file, &text)?;
    for (c, _) in &clusters {
        crate::cloud::require_compiled(
            c.spec.provider.name(),
            &format!("{file}: cluster {:?}: spec.provider", c.metadata.name),
        )?;
    }
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let (cluster, cluster_src, previous) = match clusters.len() {
        1 => {
            let (c, src) = clusters.into_iter().next().expect("one");
            // The name becomes a store key: refuse a bad one (`\0`, `../x`) with its
            // file:line before it is used to read the store.
            if !spec::validate::is_dns1123_label(&c.metadata.name) {
                let (groups, group_srcs) = groups.into_iter().unzip();
                let mut spec = LoadedSpec {
                    config: ClusterConfig { cluster: c, groups },
                    cluster_src: src,
                    group_srcs,
                };
                spec::validate(&mut spec)?;
                return Err(ExitError::usage(format!(
                    "{file}: cluster name {:?} is not a DNS-1123 label",
                    spec.config.name()
                )));
            }
            let prev = repo.load(&c.metadata.name).await?;
            if prev.is_some() && !replace {
                return Err(ExitError::usage(format!(
                    "cluster {:?} already exists in {}; add --replace to replace its spec",
                    c.metadata.name,
                    repo.store.url()
                )));
            }
            (c, src, prev)
        }
        0 => return add_groups_from_file(cli, &repo, file, groups, replace, dry_run).await,
        n => {
            let names: Vec<String> = clusters
                .iter()
                .map(|(c, src)| format!("{} at {}", c.metadata.name, src.locate("kind")))
                .collect();
            return Err(ExitError::usage(format!(
                "{file}: {n} Cluster documents ({}); fix: put one cluster per file",
                names.join(", ")
            )));
        }
    };
    let (groups, group_srcs): (Vec<_>, Vec<_>) = groups.into_iter().unzip();
    let mut spec = LoadedSpec {
        config: ClusterConfig { cluster, groups },
        cluster_src,
        group_srcs,
    };
    spec::validate(&mut spec)?;
    if dry_run {
        return print_config(&spec.config, Output::Yaml);
    }
    let stored = ops::specs::store(&repo, &spec, previous.as_ref()).await?;
    eprintln!(
        "Cluster {} {} (generation {}). Apply with: kprov update cluster {} --yes",
        stored.config.name(),
        if previous.is_some() {
            "replaced"
        } else {
            "created"
        },
        stored.generation,
        stored.config.name()
    );
    Ok(())
}

/// The text of the spec file `-f` names; refuses an empty one with a pointer to an example.
fn read_spec_file(file: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| {
            ExitError::usage(format!(
                "-f {file}: cannot read: {e}; fix: check the path (a relative one is taken from the current directory)"
            ))
        })?;
    if text.trim().is_empty() {
        return Err(ExitError::usage(format!(
            "-f {file}: the file is empty; fix: write a `kind: Cluster` document in it (see docs/spec.md; \
             `kprov create cluster NAME --provider zstack|aws|libvirt --dry-run -o yaml` prints a complete example)"
        )));
    }
    Ok(text)
}

/// `create -f` with InstanceGroups only: they join an existing cluster named by their
/// `kprov.io/cluster` label or --name, replacing same-named groups only with --replace.
async fn add_groups_from_file(
    cli: &Cli,
    repo: &Repo,
    file: &str,
    groups: Vec<(InstanceGroup, Source)>,
    replace: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    let name = groups
        .first()
        .and_then(|(g, _)| g.metadata.labels.get(LABEL_CLUSTER).cloned())
        .or_else(|| cli.name.clone())
        .ok_or_else(|| ExitError::usage(format!(
            "{file}: no Cluster document; fix: add a `kind: Cluster` document, or, to add the InstanceGroups \
             to an existing cluster, label them with `{LABEL_CLUSTER}: NAME` or pass --name NAME"
        )))?;
    if !spec::validate::is_dns1123_label(&name) {
        return Err(ExitError::usage(format!(
            "{file}: metadata.labels.{LABEL_CLUSTER}: cluster name {name:?} is not a DNS-1123 label; \
             fix: label the InstanceGroups with the name of an existing cluster"
        )));
    }
    let prev = repo.require(&name).await?;
    let spec = ops::specs::with_groups(&prev, groups, replace)?;
    if dry_run {
        return print_config(&spec.config, Output::Yaml);
    }
    let stored = ops::specs::store(repo, &spec, Some(&prev)).await?;
    eprintln!("Cluster {name}: instance groups stored (generation {}). Apply with: kprov update cluster {name} --yes", stored.generation);
    Ok(())
}

async fn create_group(cli: &Cli, a: &CreateGroupArgs) -> anyhow::Result<()> {
    let repo = Repo::new(open_store(cli.state.as_deref()).await?);
    let name = super::current_cluster(None, cli.name.as_deref(), &repo).await?;
    let prev = repo.require(&name).await?;
    if prev
        .config
        .groups
        .iter()
        .any(|g| g.metadata.name == a.group)
    {
        return Err(ExitError::usage(format!(
            "instance group {:?} already exists in cluster {name}",
            a.group
        )));
    }
    let role = if a.role == "control-plane" {
        Role::ControlPlane
    } else {
        Role::Node
    };
    let gpu = a.gpu.as_deref().map(parse_gpu).transpose()?;
    let g = group(
        &name,
        &a.group,
        GroupFlags {
            role,
            count: a.count,
            arch: parse_arch("--arch", &a.arch)?,
            size: a.size.as_deref(),
            image: a.image.clone(),
            gpu,
        },
    );
    let flags = Source::Flags(
        [
            ("spec.count", "--count"),
            ("spec.size", "--size"),
            ("spec.image", "--image"),
            ("spec.gpu", "--gpu"),
            ("metadata.name", "IG"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    let spec = ops::specs::with_groups(&prev, vec![(g, flags)], false)?;
    if a.dry_run {
        let g = spec
            .config
            .groups
            .iter()
            .find(|g| g.metadata.name == a.group)
            .expect("just added");
        print!("{}", serde_yaml::to_string(g)?);
        return Ok(());
    }
    let stored = ops::specs::store(&repo, &spec, Some(&prev)).await?;
    eprintln!("Instance group {} added to cluster {name} (generation {}). Apply with: kprov update cluster {name} --yes", a.group, stored.generation);
    Ok(())
}
