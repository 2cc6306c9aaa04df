//! The plan: desired resources (from the spec) minus observed resources (from the cloud, found by
//! tag) gives `Create` / `Delete` changes, and the running instances whose spec changed
//! ([`NeedsUpdate`]: `update` never destroys those; `rolling-update` replaces them). Computing a
//! plan changes nothing anywhere.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use kprov_providers::{
    instance_id, replacement_instance_id, EndpointRequest, GpuRequest, Instance, InstanceRequest,
    MachineSize, NetworkRequest, TAG_CLUSTER, TAG_GENERATION, TAG_INDEX, TAG_INSTANCE_GROUP,
    TAG_INSTANCE_ID, TAG_ROLE, TAG_SPEC_HASH,
};

use crate::report::{Paint, Tone};
use crate::spec::quantity::parse_mib;
use crate::spec::{ClusterConfig, InstanceGroup};

/// What the spec asks the cloud to hold.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The cluster network.
    pub network: NetworkRequest,
    /// One request per instance, user-data not yet rendered.
    pub instances: Vec<InstanceRequest>,
    /// The spec's control-plane endpoint (`host:port`), if set.
    pub endpoint: Option<String>,
    /// API server port.
    pub api_port: u16,
    /// The load balancer the provider makes in front of the control planes
    /// ([`crate::spec::ClusterConfig::api_load_balancer`]), if any.
    pub api_load_balancer: Option<EndpointRequest>,
}

/// The machine size of an instance group.
pub fn machine_size(g: &InstanceGroup) -> MachineSize {
    match (&g.spec.flavor, &g.spec.size) {
        (Some(f), _) => MachineSize::Flavor(f.clone()),
        (None, Some(s)) => MachineSize::Shape {
            cpus: s.cpu,
            memory_mib: parse_mib(&s.memory).unwrap_or(0),
        },
        (None, None) => {
            let s = crate::spec::validate::default_size(g.spec.role);
            MachineSize::Shape {
                cpus: s.cpu,
                memory_mib: parse_mib(&s.memory).unwrap_or(0),
            }
        }
    }
}

/// Instance name for index `i` of a group.
pub fn instance_name(cluster: &str, group: &str, i: u32) -> String {
    format!("{cluster}-{group}-{i}")
}

/// A short hash of the machine: what, when changed, needs a new VM.
fn machine_hash(req: &InstanceRequest) -> String {
    let shape = serde_json::json!({
        "arch": req.arch, "size": req.size, "image": req.image, "rootDisk": req.root_disk_gib,
        "gpu": req.gpu, "role": req.role,
    });
    hex::encode(&Sha256::digest(shape.to_string().as_bytes())[..6])
}

/// A short hash of the node configuration rendered into a group's user-data: the Kubernetes
/// version, networking and CNI, control-plane endpoint, mirrors and file/package repositories,
/// add-ons, SSH key, and the group's labels and taints. Not the provider's location, and not
/// what rotates (the bootstrap token and its TTL): a running node never re-reads those.
fn node_config_hash(cfg: &ClusterConfig, g: &InstanceGroup) -> String {
    let s = &cfg.cluster.spec;
    let inputs = serde_json::json!({
        "kubernetesVersion": s.kubernetes_version, "networking": s.networking,
        "controlPlane": s.control_plane, "assets": s.assets, "addons": s.addons,
        "sshPublicKey": s.ssh_public_key, "labels": g.spec.labels, "taints": g.spec.taints,
    });
    hex::encode(&Sha256::digest(inputs.to_string().as_bytes())[..6])
}

/// The `TAG_SPEC_HASH` value: `MACHINE-NODECONFIG` (12 hex digits each).
fn spec_hash(req: &InstanceRequest, node_config: &str) -> String {
    format!("{}-{node_config}", machine_hash(req))
}

/// What differs between an instance's recorded spec hash and the desired one, for humans.
pub fn what_changed(recorded: Option<&str>, desired: &str) -> &'static str {
    let split = |h: &str| {
        h.split_once('-')
            .map(|(m, c)| (m.to_string(), c.to_string()))
    };
    match (recorded.and_then(split), split(desired)) {
        (Some((m1, c1)), Some((m2, c2))) if m1 != m2 && c1 != c2 => {
            "machine and node configuration changed"
        }
        (Some((m1, _)), Some((m2, _))) if m1 != m2 => {
            "machine changed: size, image, arch, GPU, root disk or role"
        }
        (Some(_), Some(_)) => {
            "node configuration changed: Kubernetes version, networking, mirrors, add-ons, labels or taints"
        }
        // recorded by an older kprov (machine hash only) or missing
        _ => "spec recorded by an older kprov",
    }
}

/// Compute the desired resources of a (validated) cluster.
pub fn desired(cfg: &ClusterConfig) -> Desired {
    let cluster = cfg.name().to_string();
    let mut instances = Vec::new();
    for g in &cfg.groups {
        let count = g.spec.count.max(0) as u32;
        let node_config = node_config_hash(cfg, g);
        for i in 0..count {
            let mut req = InstanceRequest {
                cluster: cluster.clone(),
                name: instance_name(&cluster, g.name(), i),
                id: instance_id(&cluster, g.name(), i),
                instance_group: g.name().to_string(),
                index: i,
                role: g.spec.role,
                arch: g.spec.arch,
                size: machine_size(g),
                image: g.spec.image.clone(),
                root_disk_gib: g
                    .spec
                    .root_disk
                    .as_deref()
                    .and_then(|d| parse_mib(d).ok())
                    .map(|m| (m / 1024) as u32),
                gpu: g.spec.gpu.as_ref().map(|gpu| GpuRequest {
                    count: gpu.count,
                    vendor: gpu.vendor.clone(),
                    model: gpu.model.clone(),
                    mode: gpu.mode,
                }),
                network_id: None,
                user_data: Vec::new(),
                tags: BTreeMap::new(),
            };
            let hash = spec_hash(&req, &node_config);
            req.tags = BTreeMap::from([
                (TAG_CLUSTER.to_string(), cluster.clone()),
                (TAG_INSTANCE_GROUP.to_string(), g.name().to_string()),
                (TAG_ROLE.to_string(), g.spec.role.as_str().to_string()),
                (TAG_INDEX.to_string(), i.to_string()),
                (TAG_SPEC_HASH.to_string(), hash),
                (TAG_INSTANCE_ID.to_string(), req.id.clone()),
            ]);
            instances.push(req);
        }
    }
    Desired {
        network: NetworkRequest {
            cluster: cluster.clone(),
            tags: BTreeMap::from([(TAG_CLUSTER.to_string(), cluster.clone())]),
        },
        instances,
        endpoint: cfg.cluster.spec.control_plane.endpoint.as_ref().map(|e| {
            if e.contains(':') {
                e.clone()
            } else {
                format!("{e}:{}", cfg.cluster.spec.control_plane.port)
            }
        }),
        api_port: cfg.cluster.spec.control_plane.port,
        api_load_balancer: cfg.api_load_balancer().map(|kind| EndpointRequest {
            cluster: cluster.clone(),
            tags: BTreeMap::from([(TAG_CLUSTER.to_string(), cluster.clone())]),
            port: cfg.cluster.spec.control_plane.port,
            address: cfg.cluster.spec.control_plane.vip.map(|ip| ip.to_string()),
            kind: kind.as_str().to_string(),
        }),
    }
}

/// One change.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create the cluster network (first apply).
    CreateNetwork(NetworkRequest),
    /// Create an instance.
    Create(InstanceRequest),
    /// Delete an instance the spec no longer has (or a duplicate).
    Delete {
        /// The instance.
        old: Instance,
        /// Why the instance goes (not in the spec, a stray, a duplicate).
        reason: String,
    },
}

/// A running instance whose desired spec differs from the one it was made with: `update` keeps
/// it, `rolling-update` replaces it.
#[derive(Debug, Clone)]
pub struct NeedsUpdate {
    /// The instance now.
    pub old: Instance,
    /// What its slot's instance is made as today (the slot's first-generation name and id).
    pub new: InstanceRequest,
    /// What changed ([`what_changed`]).
    pub what: &'static str,
    /// The up-to-date instance a rolling update already made for this slot, if any: the old
    /// one only waits to be drained and deleted.
    pub replaced_by: Option<Instance>,
}

impl NeedsUpdate {
    /// The request for the instance that replaces `old` ([`replacement_request`]), one
    /// generation after it.
    pub fn replacement(&self) -> InstanceRequest {
        replacement_request(&self.new, self.old.generation() + 1)
    }
}

/// The request for the instance that replaces slot `req` during a rolling update, next to the
/// old one (surge), as the slot's `generation`th: the slot's name with a short suffix of the
/// new spec hash, and an id derived from slot and hash, so a re-run finds it instead of making
/// a second one. From the second generation on (a forced roll of an up-to-date instance) the
/// generation is part of suffix and id too, so it differs from the instance it replaces.
pub fn replacement_request(req: &InstanceRequest, generation: u32) -> InstanceRequest {
    let hash = req.tags.get(TAG_SPEC_HASH).cloned().unwrap_or_default();
    let key = if generation <= 1 {
        hash
    } else {
        format!("{hash}/{generation}")
    };
    let short = hex::encode(&Sha256::digest(key.as_bytes())[..3]);
    let mut r = req.clone();
    r.name = format!("{}-{short}", req.name);
    r.id = replacement_instance_id(&req.cluster, &req.instance_group, req.index, &key);
    r.tags.insert(TAG_INSTANCE_ID.to_string(), r.id.clone());
    r.tags
        .insert(TAG_GENERATION.to_string(), generation.max(1).to_string());
    r
}

/// The plan for one cluster.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Cluster name.
    pub cluster: String,
    /// Changes, in the order they are printed.
    pub changes: Vec<Change>,
    /// Instances already as desired.
    pub unchanged: usize,
    /// Instances kept although their spec changed (not changes: `update` leaves them running).
    pub needs_update: Vec<NeedsUpdate>,
    /// `host:port` nodes join, when known before creating anything (the spec's endpoint, or
    /// the address of an existing control-plane instance).
    pub control_plane_endpoint: Option<String>,
    /// API server port.
    pub api_port: u16,
    /// The spec's `controlPlane.endpoint`, which wins over every other source.
    pub spec_endpoint: Option<String>,
    /// Provider-level drift to repair (from `Cloud::pending_repairs`), one line each.
    pub repairs: Vec<String>,
    /// The load balancer the provider makes in front of the control planes, if the cluster
    /// has one: ensured before any instance is created.
    pub api_load_balancer: Option<EndpointRequest>,
    /// The provider's load balancer does not exist (completely) yet: making it is a change.
    pub api_load_balancer_missing: bool,
    /// Control planes that exist and are kept: the cluster is running, so nodes created now
    /// join it with a bootstrap token it must hold (not one `kubeadm init` is about to make).
    pub live_control_planes: usize,
    /// The up-to-date instances of slots no roll is under way in: what `rolling-update
    /// --force` replaces (each as a [`NeedsUpdate`] with `what` [`FORCED`]).
    pub forceable: Vec<NeedsUpdate>,
}

/// Why an up-to-date instance is replaced: `rolling-update --force`.
pub const FORCED: &str = "forced rolling update (--force)";

impl Plan {
    /// Nothing for `update` to do (instances needing a rolling update do not count).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.repairs.is_empty() && !self.api_load_balancer_missing
    }

    /// How many changes `update` makes: instances, repairs and a missing load balancer.
    pub fn change_count(&self) -> usize {
        self.changes.len() + self.repairs.len() + usize::from(self.api_load_balancer_missing)
    }
}

/// An instance's slot: its group and index (from its tags).
fn slot_of(i: &Instance) -> Option<(String, u32)> {
    Some((i.instance_group()?.to_string(), i.index()?))
}

/// Diff desired against observed instances (found by the cluster tag). Instances are matched
/// to the spec by slot (group + index), so a rolling update's replacement (another name and id)
/// is the slot's instance once it exists: in a slot, the instances with the desired spec hash
/// are current (the first kept, others duplicates to delete) and the rest need an update
/// (kept running for `rolling-update`, which knows whether their replacement exists).
pub fn diff(desired: &Desired, observed: &[Instance]) -> Plan {
    let mut by_slot: HashMap<(String, u32), Vec<&Instance>> = HashMap::new();
    let mut strays = Vec::new();
    for inst in observed {
        match (inst.tags.get(TAG_INSTANCE_ID), slot_of(inst)) {
            (Some(_), Some(slot)) => by_slot.entry(slot).or_default().push(inst),
            _ => strays.push(inst),
        }
    }
    let mut changes = Vec::new();
    let mut unchanged = 0;
    if observed.is_empty() && !desired.instances.is_empty() {
        changes.push(Change::CreateNetwork(desired.network.clone()));
    }
    let mut needs_update = Vec::new();
    let mut forceable = Vec::new();
    let mut deletes = Vec::new();
    for req in &desired.instances {
        let slot = (req.instance_group.clone(), req.index);
        let Some(mut found) = by_slot.remove(&slot) else {
            changes.push(Change::Create(req.clone()));
            continue;
        };
        found.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let want = req
            .tags
            .get(TAG_SPEC_HASH)
            .map(String::as_str)
            .unwrap_or_default();
        let (current, outdated): (Vec<&Instance>, Vec<&Instance>) = found
            .into_iter()
            .partition(|i| i.tags.get(TAG_SPEC_HASH).map(String::as_str) == Some(want));
        // The slot's instance is the current one of the highest generation: a forced roll's
        // replacement wins over the instance it replaces, which then needs the update. A
        // second instance of that generation (a cloud without idempotent creates, or a
        // replacement made twice) is a duplicate.
        let mut current = current;
        current.sort_by_key(|i| std::cmp::Reverse(i.generation()));
        let kept_current = current.first().map(|c| (*c).clone());
        let mut forced_out = Vec::new();
        for other in current.iter().skip(1) {
            if other.generation() == current[0].generation() {
                deletes.push(Change::Delete {
                    old: (*other).clone(),
                    reason: format!("duplicate of {}", current[0].id),
                });
            } else {
                forced_out.push(NeedsUpdate {
                    old: (*other).clone(),
                    new: req.clone(),
                    what: FORCED,
                    replaced_by: kept_current.clone(),
                });
            }
        }
        let mut outdated_kept = Vec::new();
        for i in &outdated {
            let dup = outdated_kept
                .iter()
                .any(|k: &&Instance| k.tags.get(TAG_INSTANCE_ID) == i.tags.get(TAG_INSTANCE_ID));
            if dup {
                deletes.push(Change::Delete {
                    old: (*i).clone(),
                    reason: format!("duplicate of {}", outdated_kept[0].id),
                });
            } else {
                outdated_kept.push(*i);
            }
        }
        if let Some(kept) = &kept_current {
            unchanged += 1;
            if forced_out.is_empty() && outdated_kept.is_empty() {
                forceable.push(NeedsUpdate {
                    old: kept.clone(),
                    new: req.clone(),
                    what: FORCED,
                    replaced_by: None,
                });
            }
        }
        needs_update.extend(forced_out);
        for old in outdated_kept {
            needs_update.push(NeedsUpdate {
                old: old.clone(),
                new: req.clone(),
                what: what_changed(old.tags.get(TAG_SPEC_HASH).map(String::as_str), want),
                replaced_by: kept_current.clone(),
            });
        }
    }
    let mut rest: Vec<&Instance> = by_slot.into_values().flatten().chain(strays).collect();
    rest.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    for old in rest {
        deletes.push(Change::Delete {
            old: old.clone(),
            reason: "not in the spec".into(),
        });
    }
    changes.extend(deletes);
    // An existing, kept control plane tells every new node where to join.
    let mut cps: Vec<&Instance> = observed
        .iter()
        .filter(|i| i.is_control_plane() && i.address.is_some())
        .filter(|i| {
            !changes
                .iter()
                .any(|c| matches!(c, Change::Delete { old, .. } if old.id == i.id))
        })
        .collect();
    cps.sort_by(|a, b| a.name.cmp(&b.name));
    let control_plane_endpoint = match &desired.endpoint {
        Some(e) => Some(e.clone()),
        None => cps.first().map(|i| {
            format!(
                "{}:{}",
                i.address.as_deref().unwrap_or_default(),
                desired.api_port
            )
        }),
    };
    Plan {
        cluster: desired.network.cluster.clone(),
        changes,
        unchanged,
        needs_update,
        control_plane_endpoint,
        api_port: desired.api_port,
        spec_endpoint: desired.endpoint.clone(),
        repairs: Vec::new(),
        api_load_balancer: desired.api_load_balancer.clone(),
        api_load_balancer_missing: false,
        live_control_planes: cps.len(),
        forceable,
    }
}

fn describe(req: &InstanceRequest) -> String {
    let size = match &req.size {
        MachineSize::Shape { cpus, memory_mib } => {
            format!("{cpus} vCPU / {}", fmt_mib(*memory_mib))
        }
        MachineSize::Flavor(f) => f.clone(),
    };
    let mut s = format!(
        "{:<14} {:<6} {}",
        req.role.as_str(),
        req.arch.as_str(),
        size
    );
    if let Some(g) = &req.gpu {
        let what = [g.vendor.as_deref(), g.model.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            s,
            "  gpu {}x{}{}",
            g.count,
            if what.is_empty() {
                String::new()
            } else {
                format!(" {what}")
            },
            if g.mode == kprov_providers::GpuMode::Mdev {
                " (mdev)"
            } else {
                ""
            }
        );
    }
    s
}

fn fmt_mib(m: u64) -> String {
    if m.is_multiple_of(1024) {
        format!("{}Gi", m / 1024)
    } else {
        format!("{m}Mi")
    }
}

/// Render a plan for humans, kops-style; `paint` styles the section headings (colours on a
/// terminal, [`crate::report::Plain`] otherwise).
pub fn render(plan: &Plan, paint: &dyn Paint) -> String {
    let mut out = String::new();
    if plan.is_empty() {
        let _ = writeln!(
            out,
            "No changes needed for cluster {} ({} instances up to date).",
            plan.cluster, plan.unchanged
        );
        rolling_update_hint(plan, paint, &mut out);
        return out;
    }
    let (mut creates, mut deletes) = (Vec::new(), Vec::new());
    if let Some(lb) = plan
        .api_load_balancer
        .as_ref()
        .filter(|_| plan.api_load_balancer_missing)
    {
        let how = if lb.kind == "kube-vip" {
            "kube-vip static pods on the control planes holding a VIP,"
        } else {
            "in front of the control planes,"
        };
        creates.push(format!(
            "  {:<9} {:<32} {how} TCP :{}{}",
            "LoadBalancer",
            format!("kprov-{}-api", lb.cluster),
            lb.port,
            lb.address
                .as_deref()
                .map(|a| format!(" on {a}"))
                .unwrap_or_default()
        ));
    }
    for c in &plan.changes {
        match c {
            Change::CreateNetwork(n) => creates.push(format!("  {:<9} {}", "Network", n.cluster)),
            Change::Create(r) => creates.push(format!(
                "  {:<9} {:<32} {}",
                "Instance",
                r.name,
                describe(r)
            )),
            Change::Delete { old, reason } => deletes.push(format!(
                "  {:<9} {:<32} {}  ({reason})",
                "Instance", old.name, old.id
            )),
        }
    }
    if !deletes.is_empty() && plan.live_control_planes > 0 {
        // the cluster runs: converge drains them through its API server first
        deletes.push(
            "  (each is cordoned and drained through the cluster's API server first; --cloudonly skips that)"
                .into(),
        );
    }
    for (title, lines, c) in [
        ("Will create resources:", creates, Tone::Add),
        ("Will delete resources:", deletes, Tone::Remove),
    ] {
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{}", paint.paint(title, c));
        for l in lines {
            let _ = writeln!(out, "{}", l.trim_end());
        }
        out.push('\n');
    }
    if !plan.repairs.is_empty() {
        let _ = writeln!(out, "{}", paint.paint("Will repair:", Tone::Change));
        for r in &plan.repairs {
            let _ = writeln!(out, "  {r}");
        }
        out.push('\n');
    }
    let n = plan.change_count();
    let _ = writeln!(
        out,
        "{n} change{} for cluster {}; {} instance{} unchanged.",
        if n == 1 { "" } else { "s" },
        plan.cluster,
        plan.unchanged,
        if plan.unchanged == 1 { "" } else { "s" }
    );
    rolling_update_hint(plan, paint, &mut out);
    out
}

/// The instances `update` keeps although their spec changed, and the command that replaces
/// them.
fn rolling_update_hint(plan: &Plan, paint: &dyn Paint, out: &mut String) {
    let n = plan.needs_update.len();
    if n == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "\n{}",
        paint.paint("Need a rolling update (kept running):", Tone::Change)
    );
    for u in &plan.needs_update {
        let _ = writeln!(
            out,
            "  {:<9} {:<32} {}  ({})",
            "Instance",
            u.old.name,
            describe(&u.new),
            u.what
        );
    }
    let _ = writeln!(
        out,
        "{n} instance{} need{} a rolling update: run `kprov rolling-update cluster {}`",
        if n == 1 { "" } else { "s" },
        if n == 1 { "s" } else { "" },
        plan.cluster
    );
}

#[cfg(test)]
pub(crate) mod tests;
