//! The cluster network: a VPC with one public subnet per zone, an internet gateway, a route
//! table and one security group (or an existing VPC and its subnets), and the SSH key pair.
//! Each piece is looked up by its tags before it is created, so a re-run after a crash finds
//! what the earlier run made.

use std::collections::BTreeMap;

use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, IpPermission, IpRange, ResourceType, UserIdGroupPair,
};

use crate::{CloudError, CloudResult, Network, NetworkRequest};

use super::cloud::{filter, protocol, AwsCloud};
use super::errors::is_gone;
use super::select::cidr_subnet;
use super::PROVIDER;

/// How many subnets (zones) kprov creates when none are configured.
const DEFAULT_ZONES: usize = 3;

/// The network pieces instances need, found or created by `ensure_network`.
#[derive(Debug, Clone)]
pub(super) struct NetState {
    /// Subnets sorted by zone.
    pub(super) subnets: Vec<String>,
    pub(super) security_group: String,
    pub(super) key_name: Option<String>,
    pub(super) target_group: Option<String>,
}

impl AwsCloud {
    pub(super) async fn zones(&self) -> CloudResult<Vec<String>> {
        if !self.cfg.zones.is_empty() {
            return Ok(self.cfg.zones.clone());
        }
        let out = self
            .ec2
            .describe_availability_zones()
            .filters(filter("state", &["available"]))
            .send()
            .await
            .map_err(|e| self.err("DescribeAvailabilityZones", e))?;
        let mut z: Vec<String> = out
            .availability_zones()
            .iter()
            .filter_map(|z| z.zone_name().map(str::to_string))
            .collect();
        z.sort();
        z.truncate(DEFAULT_ZONES);
        if z.is_empty() {
            return Err(CloudError::fatal(
                PROVIDER,
                "NoZones",
                format!("region {} lists no available zone", self.cfg.region),
                "set spec.provider.aws.zones",
            ));
        }
        Ok(z)
    }

    pub(super) async fn find_vpc(
        &self,
        cluster: &str,
    ) -> CloudResult<Option<(String, Option<String>)>> {
        let out = self
            .ec2
            .describe_vpcs()
            .set_filters(Some(Self::owned_filters(cluster, "vpc")))
            .send()
            .await
            .map_err(|e| self.err("DescribeVpcs", e))?;
        let mut v: Vec<_> = out
            .vpcs()
            .iter()
            .filter_map(|v| Some((v.vpc_id()?.to_string(), v.cidr_block().map(str::to_string))))
            .collect();
        v.sort();
        Ok(v.into_iter().next())
    }

    pub(super) async fn ensure_vpc(&self, cluster: &str) -> CloudResult<(String, String)> {
        if let Some((id, cidr)) = self.find_vpc(cluster).await? {
            return Ok((id, cidr.unwrap_or_else(|| self.cfg.vpc_cidr.clone())));
        }
        let out = self
            .ec2_once
            .create_vpc()
            .cidr_block(&self.cfg.vpc_cidr)
            .tag_specifications(self.tag_spec(
                ResourceType::Vpc,
                self.base_tags(cluster, "vpc", &format!("kprov-{cluster}")),
            ))
            .send()
            .await
            .map_err(|e| self.err("CreateVpc", e))?;
        let id = out
            .vpc()
            .and_then(|v| v.vpc_id())
            .ok_or_else(|| protocol("CreateVpc returned no VPC id"))?
            .to_string();
        tracing::info!(vpc = %id, "created VPC {}", self.cfg.vpc_cidr);
        Ok((id, self.cfg.vpc_cidr.clone()))
    }

    pub(super) async fn ensure_igw(&self, cluster: &str, vpc: &str) -> CloudResult<String> {
        let out = self
            .ec2
            .describe_internet_gateways()
            .set_filters(Some(Self::owned_filters(cluster, "igw")))
            .send()
            .await
            .map_err(|e| self.err("DescribeInternetGateways", e))?;
        let mut found: Vec<_> = out.internet_gateways().iter().collect();
        found.sort_by_key(|g| g.internet_gateway_id().map(str::to_string));
        let (id, attached) = match found.first() {
            Some(g) => (
                g.internet_gateway_id().unwrap_or_default().to_string(),
                g.attachments().iter().any(|a| a.vpc_id() == Some(vpc)),
            ),
            None => {
                let out = self
                    .ec2_once
                    .create_internet_gateway()
                    .tag_specifications(self.tag_spec(
                        ResourceType::InternetGateway,
                        self.base_tags(cluster, "igw", &format!("kprov-{cluster}")),
                    ))
                    .send()
                    .await
                    .map_err(|e| self.err("CreateInternetGateway", e))?;
                let id = out
                    .internet_gateway()
                    .and_then(|g| g.internet_gateway_id())
                    .ok_or_else(|| protocol("CreateInternetGateway returned no id"))?
                    .to_string();
                (id, false)
            }
        };
        if !attached {
            match self
                .ec2_once
                .attach_internet_gateway()
                .internet_gateway_id(&id)
                .vpc_id(vpc)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    let e = self.err("AttachInternetGateway", e);
                    // Attached by an earlier run whose answer was lost.
                    if super::errors::code_of(&e) != Some("Resource.AlreadyAssociated") {
                        return Err(e);
                    }
                }
            }
        }
        Ok(id)
    }

    pub(super) async fn ensure_route_table(
        &self,
        cluster: &str,
        vpc: &str,
        igw: &str,
    ) -> CloudResult<(String, Vec<String>)> {
        let out = self
            .ec2
            .describe_route_tables()
            .set_filters(Some(Self::owned_filters(cluster, "route-table")))
            .send()
            .await
            .map_err(|e| self.err("DescribeRouteTables", e))?;
        let mut found: Vec<_> = out.route_tables().iter().collect();
        found.sort_by_key(|r| r.route_table_id().map(str::to_string));
        let (id, has_default, associated) = match found.first() {
            Some(rt) => (
                rt.route_table_id().unwrap_or_default().to_string(),
                rt.routes().iter().any(|r| {
                    r.destination_cidr_block() == Some("0.0.0.0/0") && r.gateway_id() == Some(igw)
                }),
                rt.associations()
                    .iter()
                    .filter_map(|a| a.subnet_id().map(str::to_string))
                    .collect(),
            ),
            None => {
                let out = self
                    .ec2_once
                    .create_route_table()
                    .vpc_id(vpc)
                    .tag_specifications(self.tag_spec(
                        ResourceType::RouteTable,
                        self.base_tags(cluster, "route-table", &format!("kprov-{cluster}")),
                    ))
                    .send()
                    .await
                    .map_err(|e| self.err("CreateRouteTable", e))?;
                let id = out
                    .route_table()
                    .and_then(|r| r.route_table_id())
                    .ok_or_else(|| protocol("CreateRouteTable returned no id"))?
                    .to_string();
                (id, false, Vec::new())
            }
        };
        if !has_default {
            if let Err(e) = self
                .ec2_once
                .create_route()
                .route_table_id(&id)
                .destination_cidr_block("0.0.0.0/0")
                .gateway_id(igw)
                .send()
                .await
            {
                let e = self.err("CreateRoute", e);
                if super::errors::code_of(&e) != Some("RouteAlreadyExists") {
                    return Err(e);
                }
            }
        }
        Ok((id, associated))
    }

    pub(super) async fn ensure_subnets(
        &self,
        cluster: &str,
        vpc: &str,
        cidr: &str,
        route_table: &str,
        associated: &[String],
    ) -> CloudResult<Vec<String>> {
        let zones = self.zones().await?;
        let out = self
            .ec2
            .describe_subnets()
            .set_filters(Some(Self::owned_filters(cluster, "subnet")))
            .send()
            .await
            .map_err(|e| self.err("DescribeSubnets", e))?;
        let mut have: BTreeMap<String, (String, bool)> = BTreeMap::new();
        for s in out.subnets() {
            if let (Some(id), Some(z)) = (s.subnet_id(), s.availability_zone()) {
                let e = have
                    .entry(z.to_string())
                    .or_insert((id.to_string(), s.map_public_ip_on_launch().unwrap_or(false)));
                if id < e.0.as_str() {
                    *e = (id.to_string(), s.map_public_ip_on_launch().unwrap_or(false));
                }
            }
        }
        let mut ids = Vec::new();
        for (i, zone) in zones.iter().enumerate() {
            let (id, public) = match have.get(zone) {
                Some(x) => x.clone(),
                None => {
                    let block = cidr_subnet(cidr, 4, i as u32).ok_or_else(|| {
                        CloudError::fatal(
                            PROVIDER,
                            "InvalidVpc.Range",
                            format!("cannot carve subnet {i} out of {cidr}"),
                            "use a vpcCidr of /16 to /24",
                        )
                    })?;
                    let out = self
                        .ec2_once
                        .create_subnet()
                        .vpc_id(vpc)
                        .cidr_block(&block)
                        .availability_zone(zone)
                        .tag_specifications(self.tag_spec(
                            ResourceType::Subnet,
                            self.base_tags(cluster, "subnet", &format!("kprov-{cluster}-{zone}")),
                        ))
                        .send()
                        .await
                        .map_err(|e| self.err("CreateSubnet", e))?;
                    let id = out
                        .subnet()
                        .and_then(|s| s.subnet_id())
                        .ok_or_else(|| protocol("CreateSubnet returned no id"))?
                        .to_string();
                    (id, false)
                }
            };
            if !public {
                // Nodes reach the internet (packages, images) through the gateway without a NAT.
                self.ec2_once
                    .modify_subnet_attribute()
                    .subnet_id(&id)
                    .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
                    .send()
                    .await
                    .map_err(|e| self.err("ModifySubnetAttribute", e))?;
            }
            if !associated.contains(&id) {
                if let Err(e) = self
                    .ec2_once
                    .associate_route_table()
                    .route_table_id(route_table)
                    .subnet_id(&id)
                    .send()
                    .await
                {
                    let e = self.err("AssociateRouteTable", e);
                    if super::errors::code_of(&e) != Some("Resource.AlreadyAssociated") {
                        return Err(e);
                    }
                }
            }
            ids.push(id);
        }
        Ok(ids)
    }

    pub(super) async fn find_security_group(
        &self,
        cluster: &str,
    ) -> CloudResult<Option<aws_sdk_ec2::types::SecurityGroup>> {
        let out = self
            .ec2
            .describe_security_groups()
            .set_filters(Some(Self::owned_filters(cluster, "security-group")))
            .send()
            .await
            .map_err(|e| self.err("DescribeSecurityGroups", e))?;
        let mut v: Vec<_> = out.security_groups().to_vec();
        v.sort_by(|a, b| a.group_id().cmp(&b.group_id()));
        Ok(v.into_iter().next())
    }

    pub(super) async fn ensure_security_group(
        &self,
        cluster: &str,
        vpc: &str,
        vpc_cidr: &str,
    ) -> CloudResult<String> {
        let existing = self.find_security_group(cluster).await?;
        let (id, perms) = match existing {
            Some(sg) => (
                sg.group_id().unwrap_or_default().to_string(),
                sg.ip_permissions().to_vec(),
            ),
            None => {
                let name = format!("kprov-{cluster}");
                let out = self
                    .ec2_once
                    .create_security_group()
                    .group_name(&name)
                    .description(format!("kprov cluster {cluster}: nodes and API server"))
                    .vpc_id(vpc)
                    .tag_specifications(self.tag_spec(
                        ResourceType::SecurityGroup,
                        self.base_tags(cluster, "security-group", &name),
                    ))
                    .send()
                    .await
                    .map_err(|e| self.err("CreateSecurityGroup", e))?;
                (
                    out.group_id()
                        .ok_or_else(|| protocol("CreateSecurityGroup returned no id"))?
                        .to_string(),
                    Vec::new(),
                )
            }
        };
        let has_self = perms.iter().any(|p| {
            p.ip_protocol() == Some("-1")
                && p.user_id_group_pairs()
                    .iter()
                    .any(|g| g.group_id() == Some(id.as_str()))
        });
        let has_cidr = |port: i32, cidr: &str| {
            perms.iter().any(|p| {
                p.ip_protocol() == Some("tcp")
                    && p.from_port() == Some(port)
                    && p.to_port() == Some(port)
                    && p.ip_ranges().iter().any(|r| r.cidr_ip() == Some(cidr))
            })
        };
        let mut want = Vec::new();
        if !has_self {
            // Node-to-node: everything between members (kubelet, CNI overlay, etcd, API).
            want.push(
                IpPermission::builder()
                    .ip_protocol("-1")
                    .user_id_group_pairs(UserIdGroupPair::builder().group_id(&id).build())
                    .build(),
            );
        }
        let api = i32::from(self.cfg.api_port);
        // The VPC itself (NLB health checks and traffic), then the configured outside CIDRs.
        let mut api_cidrs = vec![vpc_cidr.to_string()];
        api_cidrs.extend(self.cfg.api_access.iter().cloned());
        for c in api_cidrs.iter().filter(|c| !has_cidr(api, c)) {
            want.push(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(api)
                    .to_port(api)
                    .ip_ranges(IpRange::builder().cidr_ip(c).build())
                    .build(),
            );
        }
        for c in self.cfg.ssh_access.iter().filter(|c| !has_cidr(22, c)) {
            want.push(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(22)
                    .to_port(22)
                    .ip_ranges(IpRange::builder().cidr_ip(c).build())
                    .build(),
            );
        }
        if !want.is_empty() {
            if let Err(e) = self
                .ec2_once
                .authorize_security_group_ingress()
                .group_id(&id)
                .set_ip_permissions(Some(want))
                .send()
                .await
            {
                let e = self.err("AuthorizeSecurityGroupIngress", e);
                if super::errors::code_of(&e) != Some("InvalidPermission.Duplicate") {
                    return Err(e);
                }
            }
        }
        Ok(id)
    }

    pub(super) fn key_name(cluster: &str) -> String {
        format!("kprov-{cluster}")
    }

    pub(super) async fn find_key_pair(
        &self,
        cluster: &str,
    ) -> CloudResult<Option<(String, Option<String>)>> {
        match self
            .ec2
            .describe_key_pairs()
            .key_names(Self::key_name(cluster))
            .send()
            .await
        {
            Ok(o) => Ok(o.key_pairs().first().map(|k| {
                (
                    k.key_name().unwrap_or_default().to_string(),
                    k.key_pair_id().map(str::to_string),
                )
            })),
            Err(e) => {
                let e = self.err("DescribeKeyPairs", e);
                if is_gone(&e) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub(super) async fn ensure_key_pair(&self, cluster: &str) -> CloudResult<Option<String>> {
        let Some(key) = self.cfg.ssh_public_key.as_deref() else {
            return Ok(None);
        };
        let name = Self::key_name(cluster);
        if self.find_key_pair(cluster).await?.is_some() {
            return Ok(Some(name));
        }
        match self
            .ec2_once
            .import_key_pair()
            .key_name(&name)
            .public_key_material(Blob::new(key.trim().as_bytes().to_vec()))
            .tag_specifications(self.tag_spec(
                ResourceType::KeyPair,
                self.base_tags(cluster, "key-pair", &name),
            ))
            .send()
            .await
        {
            Ok(_) => Ok(Some(name)),
            Err(e) => {
                let e = self.err("ImportKeyPair", e);
                if super::errors::code_of(&e) == Some("InvalidKeyPair.Duplicate") {
                    Ok(Some(name))
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Look up (never create) the network of `cluster`: for `create_instance` in a process
    /// that has not run `ensure_network`.
    pub(super) async fn lookup_network(&self, cluster: &str) -> CloudResult<Option<NetState>> {
        let subnets = match &self.cfg.vpc_id {
            Some(v) => self.reused_subnets(v).await?,
            None => {
                if self.find_vpc(cluster).await?.is_none() {
                    return Ok(None);
                }
                let out = self
                    .ec2
                    .describe_subnets()
                    .set_filters(Some(Self::owned_filters(cluster, "subnet")))
                    .send()
                    .await
                    .map_err(|e| self.err("DescribeSubnets", e))?;
                let mut s: Vec<(String, String)> = out
                    .subnets()
                    .iter()
                    .filter_map(|s| {
                        Some((
                            s.availability_zone()?.to_string(),
                            s.subnet_id()?.to_string(),
                        ))
                    })
                    .collect();
                s.sort();
                s.into_iter().map(|(_, id)| id).collect()
            }
        };
        let Some(sg) = self.find_security_group(cluster).await? else {
            return Ok(None);
        };
        if subnets.is_empty() {
            return Ok(None);
        }
        let key_name = match self.cfg.ssh_public_key {
            Some(_) => self.find_key_pair(cluster).await?.map(|(n, _)| n),
            None => None,
        };
        let target_group = if self.ha() {
            self.find_target_group(cluster).await?
        } else {
            None
        };
        Ok(Some(NetState {
            subnets,
            security_group: sg.group_id().unwrap_or_default().to_string(),
            key_name,
            target_group,
        }))
    }

    pub(super) async fn reused_subnets(&self, vpc: &str) -> CloudResult<Vec<String>> {
        let mut call = self.ec2.describe_subnets();
        if self.cfg.subnet_ids.is_empty() {
            call = call.filters(filter("vpc-id", &[vpc]));
        } else {
            call = call.set_subnet_ids(Some(self.cfg.subnet_ids.clone()));
        }
        let out = call
            .send()
            .await
            .map_err(|e| self.err("DescribeSubnets", e))?;
        let mut s: Vec<(String, String)> = out
            .subnets()
            .iter()
            .filter(|s| s.vpc_id() == Some(vpc))
            .filter_map(|s| {
                Some((
                    s.availability_zone()?.to_string(),
                    s.subnet_id()?.to_string(),
                ))
            })
            .collect();
        s.sort();
        if s.is_empty() {
            return Err(CloudError::fatal(
                PROVIDER,
                "InvalidSubnetID.NotFound",
                format!("VPC {vpc} has none of the subnets asked for"),
                "check spec.provider.aws.vpcId / subnetIds",
            ));
        }
        Ok(s.into_iter().map(|(_, id)| id).collect())
    }

    pub(super) async fn network(&self, cluster: &str) -> CloudResult<NetState> {
        let mut guard = self.net.lock().await;
        if let Some(n) = guard.as_ref() {
            if !self.ha() || n.target_group.is_some() {
                return Ok(n.clone());
            }
        }
        let found = self.lookup_network(cluster).await?.ok_or_else(|| {
            CloudError::fatal(
                PROVIDER,
                "NetworkNotReady",
                format!("the network of cluster {cluster} does not exist yet"),
                "run `kprov update cluster --yes`, which creates it first",
            )
        })?;
        *guard = Some(found.clone());
        Ok(found)
    }

    /// Find or make every piece of the cluster network ([`crate::Cloud::ensure_network`]).
    pub(super) async fn ensure_cluster_network(
        &self,
        req: &NetworkRequest,
    ) -> CloudResult<Network> {
        let cluster = req.cluster.as_str();
        let mut guard = self.net.lock().await;
        let (vpc_id, cidr, subnets, owned) = match &self.cfg.vpc_id {
            Some(v) => {
                let out = self
                    .ec2
                    .describe_vpcs()
                    .vpc_ids(v)
                    .send()
                    .await
                    .map_err(|e| self.err("DescribeVpcs", e))?;
                let cidr = out
                    .vpcs()
                    .first()
                    .and_then(|x| x.cidr_block())
                    .map(str::to_string)
                    .unwrap_or_default();
                (v.clone(), cidr, self.reused_subnets(v).await?, false)
            }
            None => {
                let (vpc, cidr) = self.ensure_vpc(cluster).await?;
                let igw = self.ensure_igw(cluster, &vpc).await?;
                let (rt, associated) = self.ensure_route_table(cluster, &vpc, &igw).await?;
                let subnets = self
                    .ensure_subnets(cluster, &vpc, &cidr, &rt, &associated)
                    .await?;
                (vpc, cidr, subnets, true)
            }
        };
        let security_group = self.ensure_security_group(cluster, &vpc_id, &cidr).await?;
        let key_name = self.ensure_key_pair(cluster).await?;
        let target_group = if self.ha() {
            Some(
                self.ensure_load_balancer(cluster, &vpc_id, &subnets)
                    .await?,
            )
        } else {
            None
        };
        *guard = Some(NetState {
            subnets,
            security_group,
            key_name,
            target_group,
        });
        Ok(Network {
            id: vpc_id.clone(),
            name: if owned {
                format!("kprov-{cluster} ({vpc_id})")
            } else {
                vpc_id
            },
            cidr: Some(cidr).filter(|c| !c.is_empty()),
            owned,
        })
    }
}
