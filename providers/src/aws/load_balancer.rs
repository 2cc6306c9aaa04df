//! The network load balancer in front of an HA control plane: target group, NLB and TCP
//! listener (made by `ensure_network`), control planes registered as targets (after create,
//! or by `repair`), and the listing of ELBv2 resources for deletion.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2 as elbv2;
use aws_sdk_elasticloadbalancingv2::types::{
    Action as ElbAction, ActionTypeEnum, LoadBalancerSchemeEnum, LoadBalancerTypeEnum,
    ProtocolEnum, TargetDescription, TargetTypeEnum,
};

use crate::{CloudResult, Instance, Resource, ResourceKind, TAG_CLUSTER};

use super::cloud::{protocol, AwsCloud};
use super::errors::is_gone;
use super::select::elb_name;
use super::{k8s_cluster_tag, TAG_RESOURCE};

impl AwsCloud {
    pub(super) async fn find_target_group(&self, cluster: &str) -> CloudResult<Option<String>> {
        match self
            .elb
            .describe_target_groups()
            .names(elb_name(cluster, "api"))
            .send()
            .await
        {
            Ok(o) => Ok(o
                .target_groups()
                .first()
                .and_then(|t| t.target_group_arn())
                .map(str::to_string)),
            Err(e) => {
                let e = self.err("DescribeTargetGroups", e);
                if is_gone(&e) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub(super) async fn find_load_balancer(
        &self,
        cluster: &str,
    ) -> CloudResult<Option<(String, Option<String>)>> {
        match self
            .elb
            .describe_load_balancers()
            .names(elb_name(cluster, "api"))
            .send()
            .await
        {
            Ok(o) => Ok(o.load_balancers().first().and_then(|l| {
                Some((
                    l.load_balancer_arn()?.to_string(),
                    l.dns_name().map(str::to_string),
                ))
            })),
            Err(e) => {
                let e = self.err("DescribeLoadBalancers", e);
                if is_gone(&e) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub(super) fn elb_tags(cluster: &str, resource: &str) -> CloudResult<Vec<elbv2::types::Tag>> {
        [
            (TAG_CLUSTER.to_string(), cluster.to_string()),
            (k8s_cluster_tag(cluster), "owned".into()),
            (TAG_RESOURCE.into(), resource.into()),
        ]
        .into_iter()
        .map(|(k, v)| Ok(elbv2::types::Tag::builder().key(k).value(v).build()))
        .collect()
    }

    /// The NLB of an HA control plane: target group, load balancer, TCP listener.
    pub(super) async fn ensure_load_balancer(
        &self,
        cluster: &str,
        vpc: &str,
        subnets: &[String],
    ) -> CloudResult<String> {
        let name = elb_name(cluster, "api");
        let port = i32::from(self.cfg.api_port);
        let tg = match self.find_target_group(cluster).await? {
            Some(a) => a,
            None => {
                let out = self
                    .elb_once
                    .create_target_group()
                    .name(&name)
                    .protocol(ProtocolEnum::Tcp)
                    .port(port)
                    .vpc_id(vpc)
                    .target_type(TargetTypeEnum::Instance)
                    .health_check_protocol(ProtocolEnum::Tcp)
                    .set_tags(Some(Self::elb_tags(cluster, "target-group")?))
                    .send()
                    .await
                    .map_err(|e| self.err("CreateTargetGroup", e))?;
                out.target_groups()
                    .first()
                    .and_then(|t| t.target_group_arn())
                    .ok_or_else(|| protocol("CreateTargetGroup returned no ARN"))?
                    .to_string()
            }
        };
        let lb = match self.find_load_balancer(cluster).await? {
            Some((a, _)) => a,
            None => {
                let out = self
                    .elb_once
                    .create_load_balancer()
                    .name(&name)
                    .r#type(LoadBalancerTypeEnum::Network)
                    .scheme(LoadBalancerSchemeEnum::InternetFacing)
                    .set_subnets(Some(subnets.to_vec()))
                    .set_tags(Some(Self::elb_tags(cluster, "load-balancer")?))
                    .send()
                    .await
                    .map_err(|e| self.err("CreateLoadBalancer", e))?;
                out.load_balancers()
                    .first()
                    .and_then(|l| l.load_balancer_arn())
                    .ok_or_else(|| protocol("CreateLoadBalancer returned no ARN"))?
                    .to_string()
            }
        };
        let listeners = self
            .elb
            .describe_listeners()
            .load_balancer_arn(&lb)
            .send()
            .await
            .map_err(|e| self.err("DescribeListeners", e))?;
        if !listeners.listeners().iter().any(|l| l.port() == Some(port)) {
            let action = ElbAction::builder()
                .r#type(ActionTypeEnum::Forward)
                .target_group_arn(&tg)
                .build();
            if let Err(e) = self
                .elb_once
                .create_listener()
                .load_balancer_arn(&lb)
                .protocol(ProtocolEnum::Tcp)
                .port(port)
                .default_actions(action)
                .send()
                .await
            {
                let e = self.err("CreateListener", e);
                if super::errors::code_of(&e) != Some("DuplicateListener") {
                    return Err(e);
                }
            }
        }
        Ok(tg)
    }

    /// The API endpoint (`DNS-NAME:PORT`) of the cluster's NLB, when it has one. The engine
    /// should hand this to joining nodes instead of the first control plane's address.
    pub async fn api_endpoint(&self, cluster: &str) -> CloudResult<Option<String>> {
        Ok(self
            .find_load_balancer(cluster)
            .await?
            .and_then(|(_, dns)| dns)
            .map(|d| format!("{d}:{}", self.cfg.api_port)))
    }

    /// Live control-plane instances that are not targets of the cluster's API load balancer
    /// (with the target group ARN). Empty when the cluster has no load balancer.
    pub(super) async fn unregistered_control_planes(
        &self,
        cluster: &str,
        instances: &[Instance],
    ) -> CloudResult<Vec<(String, Instance)>> {
        // Asked whether or not this process saw an HA request: after a crash it may not have.
        let Some(tg) = self.find_target_group(cluster).await? else {
            return Ok(Vec::new());
        };
        let health = self
            .elb
            .describe_target_health()
            .target_group_arn(&tg)
            .send()
            .await
            .map_err(|e| self.err("DescribeTargetHealth", e))?;
        let registered: std::collections::HashSet<&str> = health
            .target_health_descriptions()
            .iter()
            .filter_map(|d| d.target().and_then(|t| t.id()))
            .collect();
        Ok(instances
            .iter()
            .filter(|i| i.tags.get(crate::TAG_ROLE).map(String::as_str) == Some("control-plane"))
            .filter(|i| !registered.contains(i.id.as_str()))
            .map(|i| (tg.clone(), i.clone()))
            .collect())
    }

    pub(super) async fn register_target(&self, tg: &str, instance: &str) -> CloudResult<()> {
        let target = TargetDescription::builder()
            .id(instance)
            .port(i32::from(self.cfg.api_port))
            .build();
        // Registering an already registered target is a no-op in ELBv2: safe to repeat.
        self.elb_once
            .register_targets()
            .target_group_arn(tg)
            .targets(target)
            .send()
            .await
            .map_err(|e| self.err("RegisterTargets", e))?;
        Ok(())
    }

    /// Target groups and load balancers tagged with the cluster (ELBv2 has no tag filter:
    /// list, then read tags in batches of 20).
    pub(super) async fn list_elb_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        let mut arns: Vec<(String, String)> = Vec::new();
        let mut lbs = self.elb.describe_load_balancers().into_paginator().send();
        while let Some(p) = lbs.next().await {
            let p = p.map_err(|e| self.err("DescribeLoadBalancers", e))?;
            arns.extend(p.load_balancers().iter().filter_map(|l| {
                Some((
                    l.load_balancer_arn()?.to_string(),
                    l.load_balancer_name().unwrap_or_default().to_string(),
                ))
            }));
        }
        let mut tgs = self.elb.describe_target_groups().into_paginator().send();
        while let Some(p) = tgs.next().await {
            let p = p.map_err(|e| self.err("DescribeTargetGroups", e))?;
            arns.extend(p.target_groups().iter().filter_map(|t| {
                Some((
                    t.target_group_arn()?.to_string(),
                    t.target_group_name().unwrap_or_default().to_string(),
                ))
            }));
        }
        let mut out = Vec::new();
        for chunk in arns.chunks(20) {
            let d = self
                .elb
                .describe_tags()
                .set_resource_arns(Some(chunk.iter().map(|(a, _)| a.clone()).collect()))
                .send()
                .await
                .map_err(|e| self.err("DescribeTags", e))?;
            for td in d.tag_descriptions() {
                let tags: BTreeMap<String, String> = td
                    .tags()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or_default().to_string(),
                            t.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                if tags.get(TAG_CLUSTER).map(String::as_str) == Some(cluster) {
                    let arn = td.resource_arn().unwrap_or_default().to_string();
                    let name = chunk
                        .iter()
                        .find(|(a, _)| *a == arn)
                        .map(|(_, n)| n.clone())
                        .unwrap_or_else(|| arn.clone());
                    out.push(Resource {
                        kind: ResourceKind::LoadBalancer,
                        id: arn,
                        name,
                        tags,
                    });
                }
            }
        }
        Ok(out)
    }
}
