//! Everything a cluster owns, found by its `kprov.io/cluster` tag (EC2 resources in parallel,
//! plus the ELBv2 ones), and the deletion of one such resource; deleting what is already gone
//! succeeds.

use aws_sdk_ec2::types::Tag;

use crate::{CloudError, CloudResult, Resource, ResourceKind, TAG_CLUSTER};

use super::cloud::{filter, tags_of, AwsCloud};
use super::errors::is_gone;
use super::PROVIDER;

/// States listed for deletion: live ones plus `shutting-down`, so a delete waits for it.
const DELETABLE_STATES: &[&str] = &["pending", "running", "stopping", "stopped", "shutting-down"];

impl AwsCloud {
    /// Every resource of the cluster ([`crate::Cloud::list_resources`]), by kind then id.
    pub(super) async fn owned_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        let by_cluster = || vec![filter(&format!("tag:{TAG_CLUSTER}"), &[cluster])];
        let (instances, volumes, sgs, keys, elbs, network) = futures::join!(
            self.describe_instances(vec![
                filter(&format!("tag:{TAG_CLUSTER}"), &[cluster]),
                filter("instance-state-name", DELETABLE_STATES)
            ]),
            self.ec2
                .describe_volumes()
                .set_filters(Some(by_cluster()))
                .send(),
            self.ec2
                .describe_security_groups()
                .set_filters(Some(by_cluster()))
                .send(),
            self.ec2
                .describe_key_pairs()
                .set_filters(Some(by_cluster()))
                .send(),
            self.list_elb_resources(cluster),
            self.network_resources(cluster),
        );
        let mut out = Vec::new();
        for i in instances? {
            out.push(resource(
                ResourceKind::Instance,
                i.instance_id().unwrap_or_default(),
                i.tags(),
            ));
        }
        out.extend(elbs?);
        for v in volumes
            .map_err(|e| self.err("DescribeVolumes", e))?
            .volumes()
        {
            let state = v.state().map(|s| s.as_str()).unwrap_or_default();
            if !matches!(state, "deleting" | "deleted") {
                out.push(resource(
                    ResourceKind::Volume,
                    v.volume_id().unwrap_or_default(),
                    v.tags(),
                ));
            }
        }
        for g in sgs
            .map_err(|e| self.err("DescribeSecurityGroups", e))?
            .security_groups()
        {
            out.push(resource(
                ResourceKind::SecurityGroup,
                g.group_id().unwrap_or_default(),
                g.tags(),
            ));
        }
        for k in keys
            .map_err(|e| self.err("DescribeKeyPairs", e))?
            .key_pairs()
        {
            // Key pairs are deleted by name, which is what EC2 (and moto) accept everywhere.
            let mut r = resource(
                ResourceKind::KeyPair,
                k.key_name().unwrap_or_default(),
                k.tags(),
            );
            r.name = k.key_name().unwrap_or_default().to_string();
            out.push(r);
        }
        out.extend(network?);
        out.sort_by(|a, b| a.kind.cmp(&b.kind).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// The cluster's subnets, route tables, internet gateways and VPCs (part of
    /// [`AwsCloud::owned_resources`]).
    async fn network_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        let by_cluster = || vec![filter(&format!("tag:{TAG_CLUSTER}"), &[cluster])];
        let (subnets, rts, igws, vpcs) = futures::join!(
            self.ec2
                .describe_subnets()
                .set_filters(Some(by_cluster()))
                .send(),
            self.ec2
                .describe_route_tables()
                .set_filters(Some(by_cluster()))
                .send(),
            self.ec2
                .describe_internet_gateways()
                .set_filters(Some(by_cluster()))
                .send(),
            self.ec2
                .describe_vpcs()
                .set_filters(Some(by_cluster()))
                .send(),
        );
        let mut out = Vec::new();
        for s in subnets
            .map_err(|e| self.err("DescribeSubnets", e))?
            .subnets()
        {
            out.push(resource(
                ResourceKind::Subnet,
                s.subnet_id().unwrap_or_default(),
                s.tags(),
            ));
        }
        for r in rts
            .map_err(|e| self.err("DescribeRouteTables", e))?
            .route_tables()
        {
            out.push(resource(
                ResourceKind::RouteTable,
                r.route_table_id().unwrap_or_default(),
                r.tags(),
            ));
        }
        for g in igws
            .map_err(|e| self.err("DescribeInternetGateways", e))?
            .internet_gateways()
        {
            out.push(resource(
                ResourceKind::Gateway,
                g.internet_gateway_id().unwrap_or_default(),
                g.tags(),
            ));
        }
        for v in vpcs.map_err(|e| self.err("DescribeVpcs", e))?.vpcs() {
            out.push(resource(
                ResourceKind::Network,
                v.vpc_id().unwrap_or_default(),
                v.tags(),
            ));
        }
        Ok(out)
    }

    /// Delete one resource of the cluster ([`crate::Cloud::delete_resource`]).
    pub(super) async fn delete_owned(&self, r: &Resource) -> CloudResult<()> {
        let id = r.id.as_str();
        let res = match r.kind {
            ResourceKind::Instance => return self.delete_instance(id).await,
            ResourceKind::LoadBalancer if id.contains(":targetgroup/") => self
                .elb_once
                .delete_target_group()
                .target_group_arn(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteTargetGroup", e)),
            ResourceKind::LoadBalancer => self
                .elb_once
                .delete_load_balancer()
                .load_balancer_arn(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteLoadBalancer", e)),
            ResourceKind::Volume => self
                .ec2_once
                .delete_volume()
                .volume_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteVolume", e)),
            ResourceKind::SecurityGroup => self
                .ec2_once
                .delete_security_group()
                .group_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteSecurityGroup", e)),
            ResourceKind::KeyPair => self
                .ec2_once
                .delete_key_pair()
                .key_name(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteKeyPair", e)),
            ResourceKind::Subnet => self
                .ec2_once
                .delete_subnet()
                .subnet_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteSubnet", e)),
            ResourceKind::RouteTable => self.delete_route_table(id).await,
            ResourceKind::Gateway => self.delete_igw(id).await,
            ResourceKind::Network => self
                .ec2_once
                .delete_vpc()
                .vpc_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("DeleteVpc", e)),
            ResourceKind::Tag
            | ResourceKind::StoragePool
            | ResourceKind::Listener
            | ResourceKind::Vip => {
                return Err(CloudError::fatal(
                    PROVIDER,
                    "Unsupported",
                    format!(
                        "kprov's AWS adapter does not own {} resources ({id})",
                        r.kind
                    ),
                    "delete it by hand",
                ))
            }
        };
        match res {
            Err(e) if is_gone(&e) => Ok(()),
            other => other,
        }
    }

    async fn delete_route_table(&self, id: &str) -> CloudResult<()> {
        let out = match self
            .ec2
            .describe_route_tables()
            .route_table_ids(id)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => return Err(self.err("DescribeRouteTables", e)),
        };
        for a in out.route_tables().iter().flat_map(|r| r.associations()) {
            if a.main() == Some(true) {
                continue;
            }
            if let Some(assoc) = a.route_table_association_id() {
                if let Err(e) = self
                    .ec2_once
                    .disassociate_route_table()
                    .association_id(assoc)
                    .send()
                    .await
                {
                    let e = self.err("DisassociateRouteTable", e);
                    if !is_gone(&e) {
                        return Err(e);
                    }
                }
            }
        }
        self.ec2_once
            .delete_route_table()
            .route_table_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("DeleteRouteTable", e))
    }

    async fn delete_igw(&self, id: &str) -> CloudResult<()> {
        let out = self
            .ec2
            .describe_internet_gateways()
            .internet_gateway_ids(id)
            .send()
            .await
            .map_err(|e| self.err("DescribeInternetGateways", e))?;
        for a in out.internet_gateways().iter().flat_map(|g| g.attachments()) {
            if let Some(vpc) = a.vpc_id() {
                if let Err(e) = self
                    .ec2_once
                    .detach_internet_gateway()
                    .internet_gateway_id(id)
                    .vpc_id(vpc)
                    .send()
                    .await
                {
                    let e = self.err("DetachInternetGateway", e);
                    if !is_gone(&e) {
                        return Err(e);
                    }
                }
            }
        }
        self.ec2_once
            .delete_internet_gateway()
            .internet_gateway_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("DeleteInternetGateway", e))
    }
}

fn resource(kind: ResourceKind, id: &str, tags: &[Tag]) -> Resource {
    let tags = tags_of(tags);
    Resource {
        kind,
        id: id.to_string(),
        name: tags.get("Name").cloned().unwrap_or_else(|| id.to_string()),
        tags,
    }
}
