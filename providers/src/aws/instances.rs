//! EC2 instances: found by their deterministic `kprov.io/instance-id` tag, created
//! idempotently (lookup first, a client token, a lookup again after an ambiguous failure), and
//! terminated.

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, InstanceType, ResourceType, Tag, VolumeType,
};

use crate::{
    CloudError, CloudResult, Instance, InstanceRequest, Role, TAG_CLUSTER, TAG_INSTANCE_ID,
};

use super::choice::ImageChoice;
use super::cloud::{filter, protocol, tag, tags_of, AwsCloud};
use super::errors::is_gone;
use super::network::NetState;
use super::select::{client_token, encode_user_data, TypeInfo};
use super::{k8s_cluster_tag, PROVIDER};

/// Instance states that count as "exists" for idempotency and planning.
pub(super) const LIVE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];

impl AwsCloud {
    pub(super) async fn describe_instances(
        &self,
        filters: Vec<Filter>,
    ) -> CloudResult<Vec<aws_sdk_ec2::types::Instance>> {
        let mut pages = self
            .ec2
            .describe_instances()
            .set_filters(Some(filters))
            .max_results(1000)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeInstances", e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().cloned());
            }
        }
        Ok(out)
    }

    /// The live instance(s) carrying the deterministic id of `req`; the lowest EC2 id first,
    /// like the planner keeps it when duplicates exist.
    pub(super) async fn find_instance(
        &self,
        cluster: &str,
        id: &str,
    ) -> CloudResult<Option<Instance>> {
        let mut found: Vec<Instance> = self
            .describe_instances(vec![
                filter(&format!("tag:{TAG_CLUSTER}"), &[cluster]),
                filter(&format!("tag:{TAG_INSTANCE_ID}"), &[id]),
                filter("instance-state-name", LIVE_STATES),
            ])
            .await?
            .iter()
            .map(to_instance)
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found.into_iter().next())
    }

    pub(super) async fn after_create(
        &self,
        req: &InstanceRequest,
        inst: &Instance,
    ) -> CloudResult<()> {
        if req.role == Role::ControlPlane && self.ha() {
            let net = self.network(&req.cluster).await?;
            if let Some(tg) = &net.target_group {
                self.register_target(tg, &inst.id).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn run_instance(
        &self,
        req: &InstanceRequest,
        net: &NetState,
        ty: &TypeInfo,
        img: &ImageChoice,
        token: &str,
    ) -> CloudResult<aws_sdk_ec2::types::Instance> {
        let mut tags: Vec<Tag> = req.tags.iter().map(|(k, v)| tag(k, v)).collect();
        tags.push(tag("Name", &req.name));
        tags.push(tag(&k8s_cluster_tag(&req.cluster), "owned"));
        let mut ebs = EbsBlockDevice::builder()
            .delete_on_termination(true)
            .volume_type(VolumeType::Gp3);
        // The root volume's size must be given when its mapping is overridden (to set
        // DeleteOnTermination): the request's, else the image's own.
        if let Some(g) = req.root_disk_gib.map(|g| g as i32).or(img.root_size_gib) {
            ebs = ebs.volume_size(g);
        }
        // Spread an instance group over the zones: index i of group g goes to subnet (h(g)+i) mod n.
        let h = req
            .instance_group
            .bytes()
            .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
        let subnet = &net.subnets[(h.wrapping_add(req.index) as usize) % net.subnets.len()];
        let call = self
            .ec2_once
            .run_instances()
            .image_id(&img.id)
            .instance_type(InstanceType::from(ty.name.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(token)
            .subnet_id(subnet)
            .security_group_ids(&net.security_group)
            .set_key_name(net.key_name.clone())
            .set_user_data(encode_user_data(&req.name, &req.user_data)?)
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(&img.root_device)
                    .ebs(ebs.build())
                    .build(),
            )
            .tag_specifications(self.tag_spec(ResourceType::Instance, tags.clone()))
            .tag_specifications(self.tag_spec(ResourceType::Volume, tags));
        let out = call.send().await.map_err(|e| self.err("RunInstances", e))?;
        out.instances()
            .first()
            .cloned()
            .ok_or_else(|| protocol("RunInstances returned no instance"))
    }

    pub(super) async fn delete_instance(&self, id: &str) -> CloudResult<()> {
        match self
            .ec2_once
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
        {
            Ok(o) => {
                let prev = o
                    .terminating_instances()
                    .first()
                    .and_then(|c| c.previous_state())
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string());
                if prev.as_deref() == Some("shutting-down") {
                    // Still going away: retryable, so the delete loop waits before the
                    // security group / subnets (which it still holds) are attempted.
                    return Err(CloudError::Transient {
                        provider: PROVIDER,
                        code: "InstanceShuttingDown".into(),
                        message: format!("instance {id} is still shutting down"),
                    });
                }
                Ok(())
            }
            Err(e) => {
                let e = self.err("TerminateInstances", e);
                if is_gone(&e) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The cluster's live instances, by name ([`crate::Cloud::list_instances`]).
    pub(super) async fn cluster_instances(&self, cluster: &str) -> CloudResult<Vec<Instance>> {
        let mut v: Vec<Instance> = self
            .describe_instances(vec![
                filter(&format!("tag:{TAG_CLUSTER}"), &[cluster]),
                filter("instance-state-name", LIVE_STATES),
            ])
            .await?
            .iter()
            .map(to_instance)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    /// Create the instance of `req` unless it exists ([`crate::Cloud::create_instance`]).
    pub(super) async fn create_idempotent(&self, req: &InstanceRequest) -> CloudResult<Instance> {
        self.note_requests(std::slice::from_ref(req));
        // 1. Already there (an earlier run, or an earlier attempt whose answer was lost)?
        if let Some(inst) = self.find_instance(&req.cluster, &req.id).await? {
            self.after_create(req, &inst).await?;
            return Ok(inst);
        }
        let net = self.network(&req.cluster).await?;
        let ty = match self.instance_type_for(req).await? {
            Ok(t) => t,
            Err(p) => {
                return Err(CloudError::fatal(
                    PROVIDER,
                    "InvalidInstanceType",
                    p.problem,
                    p.fix,
                ))
            }
        };
        let img = match self.image_for(req).await? {
            Ok(i) => i,
            Err(p) => {
                return Err(CloudError::fatal(
                    PROVIDER,
                    "InvalidAMIID.NotFound",
                    p.problem,
                    p.fix,
                ))
            }
        };
        let mut token = client_token(req);
        let mut attempt = 0;
        let created = loop {
            attempt += 1;
            match self.run_instance(req, &net, &ty, &img, &token).await {
                Ok(i) => {
                    let state = i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string())
                        .unwrap_or_default();
                    // EC2 answers a reused token with the instance it made then, even if that
                    // one has since been terminated (someone deleted it by hand): make a new
                    // one with a fresh token instead of reporting a dead instance as created.
                    if matches!(state.as_str(), "shutting-down" | "terminated") && attempt == 1 {
                        token = format!(
                            "{}-{}",
                            &token[..40],
                            std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map(|d| d.as_secs())
                                .unwrap_or(0)
                        );
                        continue;
                    }
                    break i;
                }
                Err(e) => {
                    // 2. Ambiguous failure (no answer, dropped answer, 5xx, throttled): the
                    // instance may exist. Look before anyone retries.
                    if e.is_retryable() {
                        if let Some(inst) = self.find_instance(&req.cluster, &req.id).await? {
                            tracing::info!(instance = %req.name, id = %inst.id, "RunInstances failed ({e}) but the instance exists");
                            self.after_create(req, &inst).await?;
                            return Ok(inst);
                        }
                    }
                    return Err(e);
                }
            }
        };
        let mut inst = to_instance(&created);
        // RunInstances echoes the tags it applied; fall back to the request's if it did not.
        if inst.tags.is_empty() {
            inst.tags = req.tags.clone();
            inst.name = req.name.clone();
        }
        tracing::info!(instance = %req.name, id = %inst.id, r#type = %ty.name, ami = %img.id, "instance created");
        self.after_create(req, &inst).await?;
        Ok(inst)
    }
}

pub(super) fn to_instance(i: &aws_sdk_ec2::types::Instance) -> Instance {
    let tags = tags_of(i.tags());
    let id = i.instance_id().unwrap_or_default().to_string();
    Instance {
        name: tags.get("Name").cloned().unwrap_or_else(|| id.clone()),
        id,
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        address: i.private_ip_address().map(str::to_string),
        tags,
    }
}
