//! The control-plane endpoint on ZStack: a VIP on the cluster's L3 network, a load balancer on
//! it and a TCP listener on the API port whose backends are the control planes' NICs
//! (`docs/providers/zstack-api.md` §8).
//!
//! Each piece has a deterministic `resourceUuid` derived from the cluster name, so a run killed
//! anywhere finds what it made before (a lost answer included) and completes the chain instead
//! of making a second one. The VIP and the load balancer carry the cluster's user tags (a
//! listener's user tags are not stored by ZStack, so it is found through its uuid and its load
//! balancer). Destroying a VM takes its NIC out of every listener (ZStack does that itself), so
//! only joining control planes need a call: [`ZStackCloud::register_backend`] at create, and
//! [`ZStackCloud::unregistered_backends`] for a run that died in between.

use std::collections::HashSet;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::{
    CloudError, CloudResult, EndpointRequest, Instance, PlanProblem, Resource, ResourceKind,
    TAG_CLUSTER,
};

use super::cloud::ZStackCloud;
use super::errors::is_code;
use super::model::{L3Network, Listener, LoadBalancer, Vip, VmInstance};
use super::query::{encode_segment, Query};
use super::tags::{cluster_tag, encode_user_tags};
use super::PROVIDER;

/// The pieces of the endpoint, in the order they are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Vip,
    LoadBalancer,
    Listener,
}

impl Part {
    fn as_str(self) -> &'static str {
        match self {
            Part::Vip => "vip",
            Part::LoadBalancer => "load-balancer",
            Part::Listener => "listener",
        }
    }
}

/// The deterministic uuid of `part` of `cluster`'s endpoint (a UUID v5, which ZStack accepts
/// as `resourceUuid`).
fn part_uuid(cluster: &str, part: Part) -> String {
    const NS: uuid::Uuid = uuid::uuid!("8f0c3c4e-2b7d-5a61-9d3e-4a5b6c7d8e9f");
    uuid::Uuid::new_v5(
        &NS,
        format!("{cluster}/api-endpoint/{}", part.as_str()).as_bytes(),
    )
    .simple()
    .to_string()
}

/// The name every piece gets: `kprov-CLUSTER-api`.
fn part_name(cluster: &str) -> String {
    format!("kprov-{cluster}-api")
}

impl ZStackCloud {
    async fn find_vip(&self, cluster: &str) -> CloudResult<Option<Vip>> {
        self.get_one("/vips", &part_uuid(cluster, Part::Vip), "QueryVip")
            .await
    }

    async fn find_load_balancer(&self, cluster: &str) -> CloudResult<Option<LoadBalancer>> {
        self.get_one(
            "/load-balancers",
            &part_uuid(cluster, Part::LoadBalancer),
            "QueryLoadBalancer",
        )
        .await
    }

    async fn find_listener(&self, cluster: &str) -> CloudResult<Option<Listener>> {
        self.get_one(
            "/load-balancers/listeners",
            &part_uuid(cluster, Part::Listener),
            "QueryLoadBalancerListener",
        )
        .await
    }

    /// `VIP:PORT` when the whole chain exists (VIP, load balancer, listener).
    pub(super) async fn api_endpoint(&self, cluster: &str) -> CloudResult<Option<String>> {
        let Some(listener) = self.find_listener(cluster).await? else {
            return Ok(None);
        };
        let Some(vip) = self.find_vip(cluster).await? else {
            return Ok(None);
        };
        Ok(match (vip.ip, listener.load_balancer_port) {
            (Some(ip), Some(port)) => Some(format!("{ip}:{port}")),
            _ => None,
        })
    }

    /// The cluster's L3 network (the VIP's, and the control planes').
    async fn endpoint_l3(&self) -> CloudResult<L3Network> {
        let infra = self.infra(false).await?;
        infra
            .l3_for(self.config.l3_network.as_deref())
            .cloned()
            .map_err(|(m, f)| CloudError::fatal(PROVIDER, "NoL3Network", m, f))
    }

    /// What would stop [`ZStackCloud::ensure_endpoint`]: an L3 network without the
    /// `LoadBalancer` service, a requested address outside its ranges or taken.
    pub(super) async fn check_endpoint(
        &self,
        req: &EndpointRequest,
    ) -> CloudResult<Vec<PlanProblem>> {
        let l3 = self.endpoint_l3().await?;
        let mut problems = Vec::new();
        let problem = |problem: String, fix: &str| PlanProblem {
            instance_group: String::new(),
            problem,
            fix: fix.into(),
        };
        if !l3.has_service("LoadBalancer") {
            problems.push(problem(
                format!(
                    "L3 network `{}` has no LoadBalancer network service (a flat network), so the control planes cannot be put behind a ZStack load balancer",
                    l3.name
                ),
                "use a VPC L3 network (virtual router) as spec.provider.zstack.l3Network, or set spec.controlPlane.loadBalancer: none (nodes join the first control plane)",
            ));
        }
        let Some(ip) = &req.address else {
            return Ok(problems);
        };
        let fix = "choose another spec.controlPlane.vip, or leave it out and let ZStack pick one";
        if !in_ranges(&l3, ip) {
            problems.push(problem(
                format!(
                    "spec.controlPlane.vip {ip} is outside every IP range of L3 network `{}` ({})",
                    l3.name,
                    ranges(&l3)
                ),
                fix,
            ));
            return Ok(problems);
        }
        let own = part_uuid(&req.cluster, Part::Vip);
        let vips: Vec<Vip> = self
            .client
            .query(
                Query::new("/vips")
                    .eq("ip", ip.clone())
                    .eq("l3NetworkUuid", l3.uuid.clone()),
            )
            .await?;
        if let Some(v) = vips.iter().find(|v| v.uuid != own) {
            problems.push(problem(
                format!(
                    "spec.controlPlane.vip {ip} is already the VIP {} ({}) on L3 network `{}`",
                    v.name, v.uuid, l3.name
                ),
                fix,
            ));
        }
        let vms: Vec<VmInstance> = self
            .client
            .query(Query::new("/vm-instances").eq("vmNics.ip", ip.clone()))
            .await?;
        if let Some(vm) = vms.first() {
            problems.push(problem(
                format!(
                    "spec.controlPlane.vip {ip} is the address of VM {} ({})",
                    vm.name, vm.uuid
                ),
                fix,
            ));
        }
        Ok(problems)
    }

    /// Create one piece with its deterministic uuid; when the create fails or its answer is
    /// lost, look it up before giving up (it may exist).
    async fn create_part<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Value,
        api: &str,
        find: impl std::future::Future<Output = CloudResult<Option<T>>>,
    ) -> CloudResult<T> {
        let err = match self
            .client
            .call(Method::POST, path, Some(body), api, false)
            .await
        {
            Ok(v) => {
                let inv = v.get("inventory").cloned().unwrap_or(Value::Null);
                return serde_json::from_value(inv).map_err(|e| CloudError::Protocol {
                    provider: PROVIDER,
                    message: format!("{api}: unexpected result: {e}"),
                });
            }
            Err(e) => e,
        };
        match find.await? {
            Some(found) => {
                tracing::info!(api, error = %err, "create failed but the resource exists; using it");
                Ok(found)
            }
            None => Err(err),
        }
    }

    /// Make sure the VIP, the load balancer on it and the TCP listener on `req.port` exist;
    /// return `VIP:PORT`.
    pub(super) async fn ensure_endpoint(&self, req: &EndpointRequest) -> CloudResult<String> {
        let cluster = req.cluster.as_str();
        let name = part_name(cluster);
        let tags = encode_user_tags(&req.tags);
        let vip = match self.find_vip(cluster).await? {
            Some(v) => v,
            None => {
                let l3 = self.endpoint_l3().await?;
                let mut params = json!({
                    "name": name,
                    "description": format!("API endpoint of Kubernetes cluster {cluster} (kprov)"),
                    "l3NetworkUuid": l3.uuid,
                    "resourceUuid": part_uuid(cluster, Part::Vip),
                });
                if let Some(ip) = &req.address {
                    params["requiredIp"] = json!(ip);
                }
                let body = json!({"params": params, "userTags": tags});
                let v: Vip = self
                    .create_part("/vips", body, "CreateVip", self.find_vip(cluster))
                    .await?;
                tracing::info!(vip = %v.uuid, ip = ?v.ip, "created ZStack VIP");
                v
            }
        };
        if self.find_load_balancer(cluster).await?.is_none() {
            let body = json!({
                "params": {
                    "name": name,
                    "vipUuid": vip.uuid,
                    "resourceUuid": part_uuid(cluster, Part::LoadBalancer),
                },
                "userTags": tags,
            });
            let lb: LoadBalancer = self
                .create_part(
                    "/load-balancers",
                    body,
                    "CreateLoadBalancer",
                    self.find_load_balancer(cluster),
                )
                .await?;
            tracing::info!(lb = %lb.uuid, "created ZStack load balancer");
        }
        let listener = match self.find_listener(cluster).await? {
            Some(l) => l,
            None => {
                let lb = part_uuid(cluster, Part::LoadBalancer);
                let body = json!({
                    "params": {
                        "name": name,
                        "loadBalancerPort": req.port,
                        "instancePort": req.port,
                        "protocol": "tcp",
                        "resourceUuid": part_uuid(cluster, Part::Listener),
                    },
                });
                let l: Listener = self
                    .create_part(
                        &format!("/load-balancers/{}/listeners", encode_segment(&lb)),
                        body,
                        "CreateLoadBalancerListener",
                        self.find_listener(cluster),
                    )
                    .await?;
                tracing::info!(listener = %l.uuid, port = req.port, "created ZStack load balancer listener");
                l
            }
        };
        let (Some(ip), Some(port)) = (vip.ip, listener.load_balancer_port) else {
            return Err(CloudError::Protocol {
                provider: PROVIDER,
                message: format!("the VIP or listener of cluster {cluster} has no address or port"),
            });
        };
        Ok(format!("{ip}:{port}"))
    }

    /// The NIC of `vm` on the cluster's L3 network (its default one when that is unknown).
    fn backend_nic(vm: &VmInstance, l3: Option<&str>) -> Option<String> {
        vm.vm_nics
            .iter()
            .find(|n| l3.is_some() && n.l3_network_uuid.as_deref() == l3)
            .or_else(|| {
                vm.vm_nics
                    .iter()
                    .find(|n| n.l3_network_uuid == vm.default_l3_network_uuid)
            })
            .or(vm.vm_nics.first())
            .and_then(|n| n.uuid.clone())
    }

    /// Put the NICs in `nics` behind the listener.
    async fn add_backends(&self, listener: &str, nics: &[String]) -> CloudResult<()> {
        let body = json!({"params": {"vmNicUuids": nics}});
        let path = format!(
            "/load-balancers/listeners/{}/vm-instances/nics",
            encode_segment(listener)
        );
        match self
            .client
            .call(
                Method::POST,
                &path,
                Some(body),
                "AddVmNicToLoadBalancer",
                false,
            )
            .await
        {
            Ok(_) => Ok(()),
            // "already on the default server group": a lost answer of an earlier add
            Err(e) if is_code(&e, "SYS.1006") && self.all_attached(listener, nics).await? => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn all_attached(&self, listener: &str, nics: &[String]) -> CloudResult<bool> {
        let Some(l) = self
            .get_one::<Listener>(
                "/load-balancers/listeners",
                listener,
                "QueryLoadBalancerListener",
            )
            .await?
        else {
            return Ok(false);
        };
        let on: HashSet<&str> = l
            .vm_nic_refs
            .iter()
            .map(|r| r.vm_nic_uuid.as_str())
            .collect();
        Ok(nics.iter().all(|n| on.contains(n.as_str())))
    }

    /// Put control plane `vm` behind the cluster's API listener, when the cluster has one.
    pub(super) async fn register_backend(&self, cluster: &str, vm_uuid: &str) -> CloudResult<()> {
        let Some(listener) = self.find_listener(cluster).await? else {
            return Ok(());
        };
        let Some(vm) = self.get_vm(vm_uuid).await? else {
            return Ok(());
        };
        let vip = self.find_vip(cluster).await?;
        let Some(nic) =
            Self::backend_nic(&vm, vip.as_ref().and_then(|v| v.l3_network_uuid.as_deref()))
        else {
            return Ok(());
        };
        if listener.vm_nic_refs.iter().any(|r| r.vm_nic_uuid == nic) {
            return Ok(());
        }
        self.add_backends(&listener.uuid, &[nic]).await?;
        tracing::info!(vm = %vm.uuid, "control plane put behind the API load balancer");
        Ok(())
    }

    /// Live control planes among `instances` whose NIC is not behind the cluster's listener,
    /// with the listener's uuid and each one's NIC. Empty when the cluster has no listener.
    pub(super) async fn unregistered_backends(
        &self,
        cluster: &str,
        instances: &[Instance],
    ) -> CloudResult<Vec<(String, Instance, String)>> {
        let cps: Vec<&Instance> = instances
            .iter()
            .filter(|i| i.is_control_plane() && i.state == "Running")
            .collect();
        if cps.is_empty() {
            return Ok(Vec::new());
        }
        let Some(listener) = self.find_listener(cluster).await? else {
            return Ok(Vec::new());
        };
        let on: HashSet<&str> = listener
            .vm_nic_refs
            .iter()
            .map(|r| r.vm_nic_uuid.as_str())
            .collect();
        let ids: Vec<String> = cps.iter().map(|i| i.id.clone()).collect();
        let vms = self.vms_by_uuid(&ids).await?;
        let vip = self.find_vip(cluster).await?;
        let l3 = vip.as_ref().and_then(|v| v.l3_network_uuid.as_deref());
        Ok(cps
            .into_iter()
            .filter_map(|i| {
                let vm = vms.iter().find(|v| v.uuid == i.id)?;
                let nic = Self::backend_nic(vm, l3)?;
                (!on.contains(nic.as_str())).then(|| (listener.uuid.clone(), i.clone(), nic))
            })
            .collect())
    }

    /// Put every control plane [`ZStackCloud::unregistered_backends`] finds behind the listener.
    pub(super) async fn register_backends(
        &self,
        cluster: &str,
        instances: &[Instance],
    ) -> CloudResult<()> {
        let missing = self.unregistered_backends(cluster, instances).await?;
        let Some((listener, _, _)) = missing.first() else {
            return Ok(());
        };
        let nics: Vec<String> = missing.iter().map(|(_, _, n)| n.clone()).collect();
        self.add_backends(listener, &nics).await
    }

    /// The endpoint's pieces that exist, for `delete`: the listener (found through its
    /// uuid), the load balancers and VIPs tagged with the cluster.
    pub(super) async fn endpoint_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        let tag = cluster_tag(cluster);
        let tags = [(TAG_CLUSTER.to_string(), cluster.to_string())];
        let mut out = Vec::new();
        if let Some(l) = self.find_listener(cluster).await? {
            out.push(Resource {
                kind: ResourceKind::Listener,
                id: l.uuid,
                name: l.name,
                tags: tags.clone().into(),
            });
        }
        let lbs: Vec<LoadBalancer> = self
            .query_optional(Query::new("/load-balancers").eq("__userTag__", tag.clone()))
            .await?;
        out.extend(lbs.into_iter().map(|lb| Resource {
            kind: ResourceKind::LoadBalancer,
            id: lb.uuid,
            name: lb.name,
            tags: tags.clone().into(),
        }));
        let vips: Vec<Vip> = self
            .query_optional(Query::new("/vips").eq("__userTag__", tag))
            .await?;
        out.extend(vips.into_iter().map(|v| Resource {
            kind: ResourceKind::Vip,
            id: v.uuid,
            name: format!("{} ({})", v.name, v.ip.unwrap_or_default()),
            tags: tags.clone().into(),
        }));
        Ok(out)
    }

    /// Delete one piece of the endpoint; a piece already gone succeeds.
    pub(super) async fn delete_endpoint_part(&self, resource: &Resource) -> CloudResult<()> {
        let id = encode_segment(&resource.id);
        let (path, api, query) = match resource.kind {
            ResourceKind::Listener => (
                format!("/load-balancers/listeners/{id}"),
                "DeleteLoadBalancerListener",
                "/load-balancers/listeners",
            ),
            ResourceKind::LoadBalancer => (
                format!("/load-balancers/{id}?deleteMode=Permissive"),
                "DeleteLoadBalancer",
                "/load-balancers",
            ),
            _ => (
                format!("/vips/{id}?deleteMode=Permissive"),
                "DeleteVip",
                "/vips",
            ),
        };
        match self
            .client
            .call(Method::DELETE, &path, None, api, true)
            .await
        {
            Ok(_) => {
                tracing::info!(kind = %resource.kind, id = %resource.id, "deleted ZStack {}", resource.kind);
                Ok(())
            }
            Err(e) => {
                let left = self.get_one::<Value>(query, &resource.id, api).await?;
                if left.is_none() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// Whether `ip` lies in one of the L3 network's ranges.
fn in_ranges(l3: &L3Network, ip: &str) -> bool {
    let Ok(ip) = ip.parse::<std::net::Ipv4Addr>() else {
        return false;
    };
    l3.ip_ranges.iter().any(|r| {
        let parse = |s: &Option<String>| {
            s.as_deref()
                .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
        };
        matches!((parse(&r.start_ip), parse(&r.end_ip)), (Some(a), Some(b)) if a <= ip && ip <= b)
    })
}

/// The L3 network's ranges, for messages.
fn ranges(l3: &L3Network) -> String {
    l3.ip_ranges
        .iter()
        .map(|r| {
            format!(
                "{}-{}",
                r.start_ip.as_deref().unwrap_or("?"),
                r.end_ip.as_deref().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_uuids_are_stable_distinct_and_zstack_shaped() {
        let a = part_uuid("demo", Part::Vip);
        assert_eq!(a, part_uuid("demo", Part::Vip));
        assert_ne!(a, part_uuid("demo", Part::LoadBalancer));
        assert_ne!(a, part_uuid("demo2", Part::Vip));
        assert_eq!(a.len(), 32);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn ranges_bound_the_requested_address() {
        let l3: L3Network = serde_json::from_value(json!({
            "uuid": "l3", "name": "k8s-net",
            "ipRanges": [{"startIp": "172.20.0.10", "endIp": "172.20.3.250"}]
        }))
        .unwrap();
        assert!(in_ranges(&l3, "172.20.0.10"));
        assert!(in_ranges(&l3, "172.20.3.250"));
        assert!(!in_ranges(&l3, "172.20.0.9"));
        assert!(!in_ranges(&l3, "10.0.0.1"));
        assert!(!in_ranges(&l3, "not-an-ip"));
    }
}
