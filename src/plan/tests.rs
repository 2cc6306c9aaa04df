use super::*;
use crate::spec::ClusterConfig;

/// A validated cluster from YAML.
pub(crate) fn cluster(yaml: &str) -> ClusterConfig {
    crate::spec::load::parse_cluster("test.yaml", yaml).expect("valid spec")
}

pub(crate) fn demo(nodes: u32, node_size: &str) -> ClusterConfig {
    cluster(&format!(
        r#"apiVersion: kprov.io/v1alpha1
kind: Cluster
metadata: {{name: demo}}
spec:
  provider: {{zstack: {{endpoint: "http://127.0.0.1:9"}}}}
  kubernetesVersion: {v}
---
apiVersion: kprov.io/v1alpha1
kind: InstanceGroup
metadata: {{name: control-plane}}
spec: {{role: control-plane, count: 1, arch: arm64, size: {{cpu: 4, memory: 8Gi}}}}
---
apiVersion: kprov.io/v1alpha1
kind: InstanceGroup
metadata: {{name: gpu}}
spec:
  role: node
  count: {nodes}
  arch: arm64
  size: {node_size}
  gpu: {{count: 1, vendor: nvidia, model: A100}}
"#,
        v = crate::spec::versions::default_version()
    ))
}

fn observe(reqs: &[InstanceRequest]) -> Vec<Instance> {
    reqs.iter()
        .enumerate()
        .map(|(i, r)| Instance {
            id: format!("vm-{i}"),
            name: r.name.clone(),
            state: "Running".into(),
            address: Some(format!("172.20.0.{}", 10 + i)),
            tags: r.tags.clone(),
        })
        .collect()
}

#[test]
fn first_plan_creates_network_and_every_instance() {
    let d = desired(&demo(3, "{cpu: 16, memory: 64Gi}"));
    let plan = diff(&d, &[]);
    assert_eq!(plan.changes.len(), 5);
    assert!(matches!(plan.changes[0], Change::CreateNetwork(_)));
    assert_eq!(plan.control_plane_endpoint, None);
    insta::assert_snapshot!("first_plan", render(&plan, &crate::report::Plain));
}

#[test]
fn converged_cluster_has_an_empty_plan_and_a_known_endpoint() {
    let d = desired(&demo(3, "{cpu: 16, memory: 64Gi}"));
    let plan = diff(&d, &observe(&d.instances));
    assert!(plan.is_empty());
    assert_eq!(plan.unchanged, 4);
    assert_eq!(
        plan.control_plane_endpoint.as_deref(),
        Some("172.20.0.10:6443")
    );
    insta::assert_snapshot!("noop_plan", render(&plan, &crate::report::Plain));
}

#[test]
fn scale_down_and_strays_become_deletes_and_a_resize_needs_a_rolling_update() {
    let before = desired(&demo(3, "{cpu: 16, memory: 64Gi}"));
    let mut seen = observe(&before.instances);
    // a stray instance with the cluster tag but no instance id (e.g. made by hand or a crashed tool)
    seen.push(Instance {
        id: "vm-stray".into(),
        name: "demo-manual".into(),
        state: "Running".into(),
        address: None,
        tags: [(kprov_providers::TAG_CLUSTER.to_string(), "demo".to_string())].into(),
    });
    // a duplicate of node 0 (what a cloud without idempotent creates can leave)
    let mut dup = seen[1].clone();
    dup.id = "vm-dup".into();
    seen.push(dup);
    let after = desired(&demo(2, "{cpu: 32, memory: 128Gi}"));
    let plan = diff(&after, &seen);
    let kinds: Vec<&str> = plan
        .changes
        .iter()
        .map(|c| match c {
            Change::CreateNetwork(_) => "network",
            Change::Create(_) => "create",
            Change::Delete { .. } => "delete",
        })
        .collect();
    // the resized nodes are kept running: nothing of theirs is deleted or re-created
    assert_eq!(kinds, vec!["delete", "delete", "delete"]);
    let kept: Vec<&str> = plan
        .needs_update
        .iter()
        .map(|u| u.old.id.as_str())
        .collect();
    assert_eq!(kept, ["vm-1", "vm-2"]);
    assert!(plan
        .needs_update
        .iter()
        .all(|u| u.what.starts_with("machine changed")));
    insta::assert_snapshot!("mixed_plan", render(&plan, &crate::report::Plain));
}

/// Everything rendered into a node counts: a new Kubernetes version or a new registry mirror
/// makes every instance NeedsUpdate (node configuration), a new token TTL does not; none of
/// it is a change `update` makes.
#[test]
fn node_configuration_changes_need_a_rolling_update_but_token_ttl_does_not() {
    let base = demo(2, "{cpu: 16, memory: 64Gi}");
    let seen = observe(&desired(&base).instances);
    let mut ttl = base.clone();
    ttl.cluster.spec.bootstrap.token_ttl = "48h".into();
    let plan = diff(&desired(&ttl), &seen);
    assert!(plan.is_empty() && plan.needs_update.is_empty());
    let mut mirror = base.clone();
    mirror.cluster.spec.assets.container_registry = Some("mirror.corp:5000".into());
    let plan = diff(&desired(&mirror), &seen);
    assert!(
        plan.is_empty(),
        "update changes nothing: {:?}",
        plan.changes
    );
    assert_eq!(plan.needs_update.len(), 3);
    assert!(plan
        .needs_update
        .iter()
        .all(|u| u.what.starts_with("node configuration changed")));
    let text = render(&plan, &crate::report::Plain);
    assert!(
        text.contains("3 instances need a rolling update: run `kprov rolling-update cluster demo`"),
        "{text}"
    );
    let mut labels = base.clone();
    labels.groups[1]
        .spec
        .labels
        .insert("tier".into(), "gpu".into());
    let plan = diff(&desired(&labels), &seen);
    let names: Vec<&str> = plan
        .needs_update
        .iter()
        .map(|u| u.old.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["demo-gpu-0", "demo-gpu-1"],
        "only the labelled group"
    );
}

#[test]
fn ids_are_deterministic_and_tags_complete() {
    let a = desired(&demo(2, "{cpu: 16, memory: 64Gi}"));
    let b = desired(&demo(2, "{cpu: 16, memory: 64Gi}"));
    let ids = |d: &Desired| d.instances.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    for r in &a.instances {
        for k in [
            TAG_CLUSTER,
            TAG_INSTANCE_GROUP,
            TAG_ROLE,
            TAG_INDEX,
            TAG_SPEC_HASH,
            TAG_INSTANCE_ID,
        ] {
            assert!(r.tags.contains_key(k), "{} lacks tag {k}", r.name);
        }
    }
}

/// A rolling update's replacement (another name and id, same slot) is the slot's instance: next
/// to the old one it makes the old one "replaced" (kept for the drain), alone it is simply the
/// slot's instance; a second replacement for the same spec is a duplicate. `update` never
/// creates the slot's first-generation instance again.
#[test]
fn a_replacement_is_its_slots_instance() {
    let before = demo(2, "{cpu: 16, memory: 64Gi}");
    let seen = observe(&desired(&before).instances);
    let after = demo(2, "{cpu: 32, memory: 128Gi}");
    let want = desired(&after);
    let node0 = want
        .instances
        .iter()
        .find(|r| r.name == "demo-gpu-0")
        .unwrap();
    let repl = replacement_request(node0, 1);
    assert_ne!(repl.id, node0.id);
    assert!(repl.name.starts_with("demo-gpu-0-") && repl.name.len() == "demo-gpu-0-".len() + 6);
    assert_eq!(replacement_request(node0, 1).id, repl.id, "deterministic");
    let made = |id: &str| Instance {
        id: id.into(),
        name: repl.name.clone(),
        state: "Running".into(),
        address: Some("172.20.0.99".into()),
        tags: repl.tags.clone(),
    };
    // surge: old and replacement side by side
    let mut with_repl = seen.clone();
    with_repl.push(made("vm-r"));
    let plan = diff(&want, &with_repl);
    assert!(plan.changes.is_empty(), "{:?}", plan.changes);
    let u = plan
        .needs_update
        .iter()
        .find(|u| u.old.name == "demo-gpu-0")
        .unwrap();
    assert_eq!(u.replaced_by.as_ref().map(|r| r.id.as_str()), Some("vm-r"));
    let u1 = plan
        .needs_update
        .iter()
        .find(|u| u.old.name == "demo-gpu-1")
        .unwrap();
    assert!(u1.replaced_by.is_none());
    // the old one gone: the replacement is the slot's instance, nothing to create
    let mut done = with_repl.clone();
    done.retain(|i| i.name != "demo-gpu-0");
    let plan = diff(&want, &done);
    assert!(plan.changes.is_empty(), "{:?}", plan.changes);
    let left: Vec<&str> = plan
        .needs_update
        .iter()
        .map(|u| u.old.name.as_str())
        .collect();
    assert_eq!(left, ["demo-gpu-1"]);
    // the replacement made twice: one is a duplicate
    let mut twice = done.clone();
    twice.push(made("vm-r2"));
    let plan = diff(&want, &twice);
    assert!(
        matches!(&plan.changes[..], [Change::Delete { old, reason }] if old.id == "vm-r2" && reason.contains("duplicate of vm-r")),
        "{:?}",
        plan.changes
    );
}

/// `rolling-update --force`: every up-to-date instance is forceable; its replacement (same
/// spec, one generation on) gets a name and id of its own, and once it exists it is the slot's
/// instance and the one it replaces needs the update (not a duplicate to delete); forcing the
/// replacement again makes a third name; two of the same generation are duplicates.
#[test]
fn a_forced_replacement_is_a_new_generation_of_its_slot() {
    let want = desired(&demo(2, "{cpu: 16, memory: 64Gi}"));
    let seen = observe(&want.instances);
    let plan = diff(&want, &seen);
    assert!(plan.changes.is_empty() && plan.needs_update.is_empty());
    assert_eq!(plan.forceable.len(), want.instances.len());
    let u = plan
        .forceable
        .iter()
        .find(|u| u.old.name == "demo-gpu-0")
        .unwrap();
    assert_eq!(u.what, FORCED);
    let r = u.replacement();
    assert_ne!((&r.name, &r.id), (&u.old.name, &u.old.id));
    assert_eq!(r.tags[TAG_GENERATION], "1");
    let made = |req: &InstanceRequest, id: &str| Instance {
        id: id.into(),
        name: req.name.clone(),
        state: "Running".into(),
        address: Some("172.20.0.99".into()),
        tags: req.tags.clone(),
    };
    // side by side: the replacement is the slot's, the old one needs the update
    let mut surge = seen.clone();
    surge.push(made(&r, "vm-r"));
    let plan = diff(&want, &surge);
    assert!(plan.changes.is_empty(), "{:?}", plan.changes);
    let old = plan
        .needs_update
        .iter()
        .find(|x| x.old.name == "demo-gpu-0")
        .expect("the old instance needs the update");
    assert_eq!(
        old.replaced_by.as_ref().map(|i| i.id.as_str()),
        Some("vm-r")
    );
    assert!(
        !plan.forceable.iter().any(|x| x.new.name == "demo-gpu-0"),
        "a slot under a roll is not forced again"
    );
    // the old one gone: forcing the replacement makes generation 2, another name
    surge.retain(|i| i.name != "demo-gpu-0");
    let plan = diff(&want, &surge);
    let again = plan
        .forceable
        .iter()
        .find(|x| x.old.id == "vm-r")
        .unwrap()
        .replacement();
    assert_eq!(again.tags[TAG_GENERATION], "2");
    assert!(again.name != r.name && again.id != r.id && again.name.starts_with("demo-gpu-0-"));
    // the same generation twice is a duplicate
    surge.push(made(&r, "vm-r2"));
    let plan = diff(&want, &surge);
    assert!(
        matches!(&plan.changes[..], [Change::Delete { old, reason }] if old.id == "vm-r2" && reason.contains("duplicate of vm-r")),
        "{:?}",
        plan.changes
    );
}

/// `demo` with `cps` control planes and `control_plane` as its `spec.controlPlane` (flow YAML).
fn with_control_planes(cps: u32, control_plane: &str, provider: &str) -> ClusterConfig {
    cluster(&format!(
        r#"apiVersion: kprov.io/v1alpha1
kind: Cluster
metadata: {{name: demo}}
spec:
  provider: {provider}
  kubernetesVersion: {v}
  controlPlane: {control_plane}
---
apiVersion: kprov.io/v1alpha1
kind: InstanceGroup
metadata: {{name: control-plane}}
spec: {{role: control-plane, count: {cps}, arch: arm64, size: {{cpu: 4, memory: 8Gi}}}}
"#,
        v = crate::spec::versions::default_version()
    ))
}

#[test]
fn the_provider_load_balancer_is_asked_for_with_several_control_planes_or_when_named() {
    let zstack = r#"{zstack: {endpoint: "http://127.0.0.1:9"}}"#;
    let libvirt = "{libvirt: {uri: \"qemu:///system\"}}";
    let lb = |cps, cp: &str, p| desired(&with_control_planes(cps, cp, p)).api_load_balancer;
    let three = lb(3, "{}", zstack).expect("3 control planes on ZStack get a load balancer");
    assert_eq!((three.port, three.address.as_deref()), (6443, None));
    assert_eq!(
        three.tags.get(TAG_CLUSTER).map(String::as_str),
        Some("demo")
    );
    assert!(
        lb(1, "{}", zstack).is_none(),
        "one control plane: none by default"
    );
    let one = lb(1, "{loadBalancer: zstack, vip: 172.20.0.5}", zstack).expect("asked for");
    assert_eq!(one.address.as_deref(), Some("172.20.0.5"));
    assert!(lb(3, "{loadBalancer: none}", zstack).is_none());
    assert!(lb(3, "{endpoint: api.example}", zstack).is_none());
    let kube_vip = lb(3, "{}", libvirt).expect("3 control planes on libvirt get kube-vip");
    assert_eq!(
        (kube_vip.kind.as_str(), three.kind.as_str()),
        ("kube-vip", "zstack")
    );
    assert!(lb(1, "{}", libvirt).is_none());
    let pinned = lb(1, "{loadBalancer: kube-vip, vip: 192.168.150.240}", libvirt).expect("named");
    assert_eq!(pinned.address.as_deref(), Some("192.168.150.240"));
}

#[test]
fn a_missing_load_balancer_is_a_change_shown_first() {
    let d = desired(&with_control_planes(
        3,
        "{vip: 172.20.0.5}",
        r#"{zstack: {endpoint: "http://127.0.0.1:9"}}"#,
    ));
    let mut plan = diff(&d, &observe(&d.instances));
    assert!(plan.is_empty(), "present and complete: nothing to do");
    plan.api_load_balancer_missing = true;
    assert!(!plan.is_empty());
    assert_eq!(plan.change_count(), 1);
    let text = render(&plan, &crate::report::Plain);
    assert!(
        text.contains("LoadBalancer kprov-demo-api") && text.contains("TCP :6443 on 172.20.0.5"),
        "{text}"
    );
    assert!(text.contains("1 change for cluster demo"), "{text}");
}
