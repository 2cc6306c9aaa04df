//! [`ZStackCloud`]: the [`Cloud`] implementation for ZStack.
//!
//! Mapping (details in `docs/providers/zstack.md`):
//! * an instance is a VM whose uuid is [`InstanceRequest::id`] (`resourceUuid` at creation);
//! * kprov tags are user tags `kprov::<key>::<value>` ([`super::tags`]);
//! * user-data is the system tag `userdata::<base64>`, the hostname `hostname::<name>`;
//! * GPUs are `pciDevice::<uuid>` system tags (devices picked on one host, `hostUuid` set) or
//!   spec tags, per [`GpuAttach`];
//! * the network is a pre-existing L3 network, never created or deleted by kprov.
//!
//! This file holds the adapter ([`ZStackCloud`], VM lookups, create and delete); what the
//! infrastructure offers is read and searched in `super::infra`, and where a VM goes (with its
//! GPUs) is decided in `super::placement`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    Arch, Cloud, CloudError, CloudResult, EndpointRequest, FlavorInfo, GpuInfo, ImageInfo,
    Instance, InstanceRequest, Inventory, Network, NetworkRequest, PlanProblem, Resource,
    ResourceKind, Role,
};

use super::client::{ApiStats, Client};
use super::config::ZStackConfig;
use super::errors::{code_chain, is_code, parse_error};
use super::infra::{arch_of, enabled, Infra, GIB, MIB};
use super::model::{Tag, VmInstance};
use super::placement::{Claims, Placement};
use super::query::{encode_segment, Query};
use super::tags::{
    cluster_tag, decode_user_tag, encode_user_tags, sanitize_hostname, USER_TAG_PREFIX,
};
use super::PROVIDER;

/// How many uuids go into one `q=resourceUuid?=...` condition (keeps URLs well under 8 KiB).
const UUID_BATCH: usize = 100;

/// VM states that mean "being deleted or deleted".
pub(super) fn is_gone_state(state: &str) -> bool {
    matches!(state, "Destroyed" | "Expunging")
}

/// A ZStack management node as a [`Cloud`].
pub struct ZStackCloud {
    /// The HTTP client of the management node.
    pub(super) client: Client,
    /// The settings it was made with.
    pub(super) config: ZStackConfig,
    /// The infrastructure last read, and when ([`ZStackCloud::infra`]).
    pub(super) infra: tokio::sync::Mutex<Option<(Instant, Arc<Infra>)>>,
    /// GPU devices claimed by creates of this process.
    pub(super) claims: std::sync::Mutex<Claims>,
}

impl std::fmt::Debug for ZStackCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZStackCloud")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ZStackCloud {
    /// An adapter for the management node in `config`. Nothing is sent until the first call.
    pub fn new(config: ZStackConfig) -> CloudResult<Self> {
        let client = Client::new(&config)?;
        Ok(ZStackCloud {
            client,
            config,
            infra: tokio::sync::Mutex::new(None),
            claims: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The settings the adapter was made with.
    pub fn config(&self) -> &ZStackConfig {
        &self.config
    }

    /// Counters of HTTP calls made so far.
    pub fn stats(&self) -> ApiStats {
        self.client.stats()
    }

    pub(super) async fn query_optional<T: serde::de::DeserializeOwned>(
        &self,
        q: Query,
    ) -> CloudResult<Vec<T>> {
        match self.client.query(q.clone()).await {
            Err(e) if is_code(&e, "HTTP404") => {
                tracing::debug!(path = %q.path, "API not available on this management node; treating as empty");
                Ok(Vec::new())
            }
            other => other,
        }
    }

    pub(super) async fn get_vm(&self, uuid: &str) -> CloudResult<Option<VmInstance>> {
        self.get_one("/vm-instances", uuid, "QueryVmInstance").await
    }

    /// One inventory by uuid from a query path (`/vm-instances`, `/vips`, ...), or `None`.
    pub(super) async fn get_one<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        uuid: &str,
        api: &str,
    ) -> CloudResult<Option<T>> {
        let v = self
            .client
            .get(&format!("{path}/{}", encode_segment(uuid)), api)
            .await?;
        let first = v
            .get("inventories")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .cloned();
        first
            .map(|item| {
                serde_json::from_value(item).map_err(|e| CloudError::Protocol {
                    provider: PROVIDER,
                    message: format!("{api}: unexpected inventory shape: {e}"),
                })
            })
            .transpose()
    }

    pub(super) async fn vms_by_uuid(&self, ids: &[String]) -> CloudResult<Vec<VmInstance>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(UUID_BATCH) {
            out.extend(
                self.client
                    .query::<VmInstance>(Query::new("/vm-instances").is_in("uuid", chunk))
                    .await?,
            );
        }
        Ok(out)
    }

    pub(super) async fn vms_of_cluster(&self, cluster: &str) -> CloudResult<Vec<VmInstance>> {
        self.client
            .query(Query::new("/vm-instances").eq("__userTag__", cluster_tag(cluster)))
            .await
    }

    /// kprov user tags of many resources, in ⌈n/100⌉ queries.
    pub(super) async fn user_tags_of(&self, uuids: &[String]) -> CloudResult<Vec<Tag>> {
        let mut out = Vec::new();
        for chunk in uuids.chunks(UUID_BATCH) {
            let tags: Vec<Tag> = self
                .client
                .query(Query::new("/user-tags").is_in("resourceUuid", chunk))
                .await?;
            out.extend(
                tags.into_iter()
                    .filter(|t| t.tag.starts_with(USER_TAG_PREFIX)),
            );
        }
        Ok(out)
    }

    pub(super) fn tag_map(tags: &[Tag]) -> HashMap<String, BTreeMap<String, String>> {
        let mut m: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        for t in tags {
            if let Some((k, v)) = decode_user_tag(&t.tag) {
                m.entry(t.resource_uuid.clone()).or_default().insert(k, v);
            }
        }
        m
    }

    pub(super) fn to_instance(vm: &VmInstance, tags: BTreeMap<String, String>) -> Instance {
        Instance {
            id: vm.uuid.clone(),
            name: vm.name.clone(),
            state: vm.state().to_string(),
            address: vm.address(),
            tags,
        }
    }

    pub(super) async fn expunge(&self, uuid: &str) -> CloudResult<()> {
        let r = self
            .client
            .call(
                Method::PUT,
                &format!("/vm-instances/{}/actions", encode_segment(uuid)),
                Some(json!({ "expungeVmInstance": {} })),
                "ExpungeVmInstance",
                true,
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) => match self.get_vm(uuid).await {
                Ok(None) => Ok(()),
                Ok(Some(vm)) if vm.state() == "Expunging" => self.wait_gone(uuid).await,
                _ => Err(e),
            },
        }
    }

    pub(super) async fn wait_gone(&self, uuid: &str) -> CloudResult<()> {
        let deadline = Instant::now() + self.client.job_timeout();
        let mut attempt = 0;
        while Instant::now() < deadline {
            if self.get_vm(uuid).await?.is_none() {
                return Ok(());
            }
            tokio::time::sleep(self.client.backoff(attempt)).await;
            attempt += 1;
        }
        Err(CloudError::Timeout {
            provider: PROVIDER,
            what: format!("expunging VM {uuid}"),
            after: self.client.job_timeout(),
        })
    }

    /// The `POST /vm-instances` body of a request.
    pub(super) fn create_body(req: &InstanceRequest, p: &Placement) -> Value {
        let mut params = json!({
            "name": req.name,
            "resourceUuid": req.id,
            "description": format!("kprov cluster {}, instance group {}", req.cluster, req.instance_group),
            "imageUuid": p.image,
            "l3NetworkUuids": [p.l3],
            "defaultL3NetworkUuid": p.l3,
            "clusterUuid": p.cluster,
            "strategy": "InstantStart",
        });
        let obj = params.as_object_mut().expect("object");
        match &p.offering {
            Some(o) => {
                obj.insert("instanceOfferingUuid".into(), json!(o));
            }
            None => {
                obj.insert("cpuNum".into(), json!(p.cpus));
                obj.insert("memorySize".into(), json!(p.mem_mib * MIB));
            }
        }
        if let Some(h) = &p.host {
            obj.insert("hostUuid".into(), json!(h));
        }
        if let Some(gib) = req.root_disk_gib {
            obj.insert("rootDiskSize".into(), json!(u64::from(gib) * GIB));
        }
        let mut system_tags = Vec::new();
        if !req.user_data.is_empty() {
            system_tags.push(format!(
                "userdata::{}",
                base64::engine::general_purpose::STANDARD.encode(&req.user_data)
            ));
        }
        system_tags.push(format!("hostname::{}", sanitize_hostname(&req.name)));
        system_tags.extend(p.gpu_tags.iter().cloned());
        json!({
            "params": params,
            "systemTags": system_tags,
            "userTags": encode_user_tags(&req.tags),
        })
    }

    /// Look up an existing VM for a create: `Some` to return it, `None` to (re)create.
    pub(super) async fn existing_for_create(
        &self,
        req: &InstanceRequest,
    ) -> CloudResult<Option<Instance>> {
        let Some(vm) = self.get_vm(&req.id).await? else {
            return Ok(None);
        };
        match vm.state() {
            "Destroyed" => {
                tracing::info!(vm = %req.id, name = %req.name, "expunging a destroyed VM that has the instance's id before re-creating it");
                self.expunge(&req.id).await?;
                Ok(None)
            }
            "Expunging" => {
                self.wait_gone(&req.id).await?;
                Ok(None)
            }
            _ => {
                let tags = Self::tag_map(&self.user_tags_of(std::slice::from_ref(&vm.uuid)).await?)
                    .remove(&vm.uuid)
                    .unwrap_or_default();
                Ok(Some(Self::to_instance(&vm, tags)))
            }
        }
    }
}

#[async_trait]
impl Cloud for ZStackCloud {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn default_concurrency(&self) -> usize {
        self.config.concurrency.max(1)
    }

    /// [`super::USER_DATA_LIMIT`].
    fn user_data_limit(&self) -> Option<usize> {
        Some(super::USER_DATA_LIMIT)
    }

    async fn discover(&self) -> CloudResult<Inventory> {
        let infra = self.infra(true).await?;
        let gpus = self.load_gpus(&infra, true).await?;
        let mut zones: Vec<String> = infra.zones.iter().map(|z| z.name.clone()).collect();
        zones.sort();
        let arches: BTreeSet<Arch> = infra
            .clusters
            .iter()
            .filter(|c| enabled(c.state.as_deref()))
            .filter_map(|c| arch_of(c.architecture.as_deref()))
            .collect();
        let images = infra
            .usable_images()
            .into_iter()
            .map(|i| ImageInfo {
                id: i.uuid.clone(),
                name: i.name.clone(),
                arch: arch_of(i.architecture.as_deref()),
            })
            .collect();
        let mut flavors: Vec<FlavorInfo> = infra
            .offerings
            .iter()
            .filter(|o| enabled(o.state.as_deref()))
            .map(|o| FlavorInfo {
                id: o.uuid.clone(),
                name: o.name.clone(),
                cpus: o.cpu_num,
                memory_mib: o.memory_size / MIB,
                arches: Vec::new(),
                gpus: 0,
            })
            .collect();
        flavors
            .sort_by(|a, b| (a.cpus, a.memory_mib, &a.name).cmp(&(b.cpus, b.memory_mib, &b.name)));
        let mut networks: Vec<Network> = infra
            .l3s
            .iter()
            .filter(|l| l.system != Some(true))
            .map(|l| Network {
                id: l.uuid.clone(),
                name: l.name.clone(),
                cidr: l.cidr(),
                owned: false,
            })
            .collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        let mut gpus: Vec<GpuInfo> = gpus
            .into_iter()
            .filter(|d| !d.split)
            .map(|d| GpuInfo {
                host: infra.host_name(&d.host),
                id: d.uuid,
                vendor: d.vendor,
                model: d.model,
                arch: d.arch,
                attached_to: d.attached_to,
            })
            .collect();
        gpus.sort_by(|a, b| (&a.host, &a.id).cmp(&(&b.host, &b.id)));
        Ok(Inventory {
            zones,
            arches: arches.into_iter().collect(),
            images,
            flavors,
            networks,
            gpus,
        })
    }

    async fn check(&self, desired: &[InstanceRequest]) -> CloudResult<Vec<PlanProblem>> {
        self.plan_problems(desired).await
    }

    async fn ensure_network(&self, _req: &NetworkRequest) -> CloudResult<Network> {
        let infra = self.infra(true).await?;
        let l3 = infra
            .l3_for(self.config.l3_network.as_deref())
            .map_err(|(m, f)| CloudError::fatal(PROVIDER, "NoL3Network", m, f))?;
        Ok(Network {
            id: l3.uuid.clone(),
            name: l3.name.clone(),
            cidr: l3.cidr(),
            owned: false,
        })
    }

    async fn list_instances(&self, cluster: &str) -> CloudResult<Vec<Instance>> {
        let vms: Vec<VmInstance> = self
            .vms_of_cluster(cluster)
            .await?
            .into_iter()
            .filter(|v| !is_gone_state(v.state()))
            .collect();
        if vms.is_empty() {
            return Ok(Vec::new());
        }
        let uuids: Vec<String> = vms.iter().map(|v| v.uuid.clone()).collect();
        let mut tags = Self::tag_map(&self.user_tags_of(&uuids).await?);
        let mut out: Vec<Instance> = vms
            .iter()
            .map(|v| Self::to_instance(v, tags.remove(&v.uuid).unwrap_or_default()))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn create_instance(&self, req: &InstanceRequest) -> CloudResult<Instance> {
        let inst = self.create_vm(req).await?;
        if req.role == Role::ControlPlane {
            self.register_backend(&req.cluster, &inst.id).await?;
        }
        Ok(inst)
    }

    async fn control_plane_endpoint(&self, cluster: &str) -> CloudResult<Option<String>> {
        self.api_endpoint(cluster).await
    }

    async fn check_control_plane_endpoint(
        &self,
        req: &EndpointRequest,
    ) -> CloudResult<Vec<PlanProblem>> {
        self.check_endpoint(req).await
    }

    /// A VIP, a load balancer on it and a TCP listener on the API port (`super::endpoint`).
    async fn ensure_control_plane_endpoint(&self, req: &EndpointRequest) -> CloudResult<String> {
        self.ensure_endpoint(req).await
    }

    async fn pending_repairs(
        &self,
        cluster: &str,
        instances: &[Instance],
    ) -> CloudResult<Vec<String>> {
        Ok(self
            .unregistered_backends(cluster, instances)
            .await?
            .into_iter()
            .map(|(_, i, _)| format!("put {} ({}) behind the API load balancer", i.name, i.id))
            .collect())
    }

    async fn repair(&self, cluster: &str, instances: &[Instance]) -> CloudResult<()> {
        self.register_backends(cluster, instances).await
    }

    async fn list_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        let vms = self.vms_of_cluster(cluster).await?;
        let endpoint = self.endpoint_resources(cluster).await?;
        let mut owned: HashSet<&str> = vms.iter().map(|v| v.uuid.as_str()).collect();
        owned.extend(endpoint.iter().map(|r| r.id.as_str()));
        let cluster_tags: Vec<Tag> = self
            .client
            .query(Query::new("/user-tags").eq("tag", cluster_tag(cluster)))
            .await?;
        let orphan_owners: BTreeSet<String> = cluster_tags
            .iter()
            .filter(|t| !owned.contains(t.resource_uuid.as_str()))
            .map(|t| t.resource_uuid.clone())
            .collect();
        self.vm_and_tag_resources(cluster, &vms, endpoint, orphan_owners)
            .await
    }

    async fn delete_resource(&self, resource: &Resource) -> CloudResult<()> {
        self.delete_one(resource).await
    }
}

impl ZStackCloud {
    /// The VM of `req`, found or created.
    async fn create_vm(&self, req: &InstanceRequest) -> CloudResult<Instance> {
        let max = self.client.max_retries();
        let mut attempt = 0;
        loop {
            if let Some(found) = self.existing_for_create(req).await? {
                tracing::debug!(vm = %req.id, name = %req.name, state = %found.state, "instance exists already");
                return Ok(found);
            }
            let (placement, mut reservation) = self.place(req).await?;
            let body = Self::create_body(req, &placement);
            let result = self
                .client
                .call(
                    Method::POST,
                    "/vm-instances",
                    Some(body),
                    "CreateVmInstance",
                    false,
                )
                .await;
            let err = match result {
                Ok(v) => {
                    reservation.commit();
                    drop(reservation);
                    let inv = v.get("inventory").cloned().unwrap_or(Value::Null);
                    let vm: VmInstance =
                        serde_json::from_value(inv).map_err(|e| CloudError::Protocol {
                            provider: PROVIDER,
                            message: format!("CreateVmInstance: unexpected result: {e}"),
                        })?;
                    tracing::info!(vm = %vm.uuid, name = %vm.name, state = %vm.state(), "created ZStack VM");
                    return Ok(Self::to_instance(&vm, req.tags.clone()));
                }
                Err(e) => {
                    drop(reservation);
                    e
                }
            };
            // Ambiguous or failed: the VM may exist anyway (duplicate uuid, lost answer).
            match self.get_vm(&req.id).await {
                Ok(Some(vm)) if !is_gone_state(vm.state()) => {
                    tracing::info!(vm = %vm.uuid, error = %err, "create failed but the VM exists; using it");
                    let tags =
                        Self::tag_map(&self.user_tags_of(std::slice::from_ref(&vm.uuid)).await?)
                            .remove(&vm.uuid)
                            .unwrap_or_default();
                    return Ok(Self::to_instance(&vm, tags));
                }
                Ok(_) => {}
                Err(lookup) => {
                    tracing::debug!(error = %lookup, "lookup after a failed create failed too")
                }
            }
            let gpu_conflict = req.gpu.is_some()
                && matches!(&err, CloudError::Fatal { message, .. } if message.contains("SYS.1006"));
            // A create that hung is left to the executor's retries (after the lookup above).
            let retryable = err.is_retryable() && !super::client::is_hang(&err);
            if (retryable || gpu_conflict) && attempt < max {
                tracing::debug!(vm = %req.id, attempt, error = %err, "create failed; retrying");
                tokio::time::sleep(self.client.backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            return Err(err);
        }
    }

    /// The cluster's VMs, the endpoint's pieces, and the kprov tags left on resources that are
    /// gone (`orphan_owners`), as resources to delete.
    async fn vm_and_tag_resources(
        &self,
        cluster: &str,
        vms: &[VmInstance],
        endpoint: Vec<Resource>,
        orphan_owners: BTreeSet<String>,
    ) -> CloudResult<Vec<Resource>> {
        let mut uuids: Vec<String> = vms.iter().map(|v| v.uuid.clone()).collect();
        uuids.extend(orphan_owners.iter().cloned());
        let all_tags = if uuids.is_empty() {
            Vec::new()
        } else {
            self.user_tags_of(&uuids).await?
        };
        let mut tags = Self::tag_map(&all_tags);
        let mut out: Vec<Resource> = vms
            .iter()
            .map(|v| Resource {
                kind: ResourceKind::Instance,
                id: v.uuid.clone(),
                name: v.name.clone(),
                tags: tags.remove(&v.uuid).unwrap_or_default(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let mut orphans: Vec<Resource> = all_tags
            .iter()
            .filter(|t| orphan_owners.contains(&t.resource_uuid))
            .map(|t| Resource {
                kind: ResourceKind::Tag,
                id: t.uuid.clone(),
                name: t.tag.clone(),
                tags: [
                    (crate::TAG_CLUSTER.to_string(), cluster.to_string()),
                    ("zstack/resource-uuid".to_string(), t.resource_uuid.clone()),
                ]
                .into(),
            })
            .collect();
        orphans.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        out.extend(endpoint);
        out.extend(orphans);
        Ok(out)
    }
}

impl ZStackCloud {
    /// [`Cloud::delete_resource`].
    async fn delete_one(&self, resource: &Resource) -> CloudResult<()> {
        match resource.kind {
            ResourceKind::Instance => {
                let id = &resource.id;
                let Some(vm) = self.get_vm(id).await? else {
                    return Ok(());
                };
                if vm.state() == "Expunging" {
                    self.wait_gone(id).await?;
                } else {
                    if vm.state() != "Destroyed" {
                        let r = self
                            .client
                            .call(
                                Method::DELETE,
                                &format!(
                                    "/vm-instances/{}?deleteMode=Permissive",
                                    encode_segment(id)
                                ),
                                None,
                                "DestroyVmInstance",
                                true,
                            )
                            .await;
                        if let Err(e) = r {
                            match self.get_vm(id).await? {
                                None => return Ok(()),
                                Some(v) if is_gone_state(v.state()) => {}
                                Some(_) => return Err(e),
                            }
                        }
                    }
                    self.expunge(id).await?;
                }
                // its devices are free again
                self.claims
                    .lock()
                    .expect("claims lock")
                    .retain(|_, (vm, _)| vm != id);
                tracing::info!(vm = %id, name = %resource.name, "expunged ZStack VM");
                Ok(())
            }
            ResourceKind::Tag => {
                let id = &resource.id;
                let r = self
                    .client
                    .call(
                        Method::DELETE,
                        &format!("/tags/{}", encode_segment(id)),
                        None,
                        "DeleteTag",
                        true,
                    )
                    .await;
                match r {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let left: Vec<Tag> = self
                            .client
                            .query(Query::new("/user-tags").eq("uuid", id.clone()))
                            .await?;
                        if left.is_empty() {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    }
                }
            }
            ResourceKind::Listener | ResourceKind::LoadBalancer | ResourceKind::Vip => {
                self.delete_endpoint_part(resource).await
            }
            ResourceKind::Network => {
                // ZStack L3 networks are infrastructure kprov does not own (ensure_network
                // returns them with owned: false); deleting the cluster never deletes them.
                tracing::debug!(network = %resource.id, "not deleting a pre-existing ZStack L3 network");
                Ok(())
            }
            other => Err(CloudError::fatal(
                PROVIDER,
                "Unsupported",
                format!(
                    "the ZStack adapter does not manage {other} resources ({})",
                    resource.id
                ),
                "delete it by hand in the ZStack UI; kprov never creates such resources on ZStack",
            )),
        }
    }
}

/// Error codes of a raw failed-job body, for callers that need them (tests, diagnostics).
pub fn error_codes(body: &str) -> Vec<String> {
    parse_error(body)
        .map(|e| code_chain(&e))
        .unwrap_or_default()
}
