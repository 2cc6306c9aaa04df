//! What an instance runs on: its instance type (named, or the smallest fitting a shape) and
//! its image (an AMI id, or the newest image of a name pattern and owner), both cached, and
//! the plan check of a request against them.

use std::collections::HashMap;

use aws_sdk_ec2::types::InstanceType;

use crate::{Arch, CloudResult, InstanceRequest, MachineSize, PlanProblem};

use super::cloud::{filter, AwsCloud};
use super::partition::partition_for;
use super::select::{ec2_arch, pick_instance_type, TypeInfo, DEFAULT_AMI_NAME};

/// An image chosen for an instance group.
#[derive(Debug, Clone)]
pub(super) struct ImageChoice {
    /// AMI id.
    pub(super) id: String,
    /// AMI name.
    pub(super) name: String,
    /// Architecture, when EC2 reports one kprov knows.
    pub(super) arch: Option<Arch>,
    /// Device name of the root volume (`/dev/sda1`, `/dev/xvda`), for the block device mapping.
    pub(super) root_device: String,
    /// Size of the image's root snapshot, GiB.
    pub(super) root_size_gib: Option<i32>,
}

impl AwsCloud {
    /// Instance types by name (cached). Unknown names are absent from the result.
    pub(super) async fn describe_types(
        &self,
        names: &[String],
    ) -> CloudResult<HashMap<String, TypeInfo>> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.types.lock().expect("types lock");
            for n in names {
                match cache.get(n) {
                    Some(t) => {
                        out.insert(n.clone(), t.clone());
                    }
                    None => missing.push(n.clone()),
                }
            }
        }
        // One call per type: an unknown name fails the whole batch with InvalidInstanceType,
        // and a per-type call tells which one it is.
        for n in missing {
            match self
                .ec2
                .describe_instance_types()
                .instance_types(InstanceType::from(n.as_str()))
                .send()
                .await
            {
                Ok(o) => {
                    for t in o.instance_types() {
                        let info = type_info(t);
                        self.types
                            .lock()
                            .expect("types lock")
                            .insert(info.name.clone(), info.clone());
                        out.insert(info.name.clone(), info);
                    }
                }
                Err(e) => {
                    let e = self.err("DescribeInstanceTypes", e);
                    if matches!(super::errors::code_of(&e), Some(c) if c.starts_with("InvalidInstanceType"))
                    {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Every current-generation type of `arch` (cached), for shape selection.
    pub(super) async fn types_of_arch(&self, arch: Arch) -> CloudResult<Vec<TypeInfo>> {
        let mut all = self.all_types.lock().await;
        if let Some(v) = all.get(&arch) {
            return Ok(v.clone());
        }
        let mut pages = self
            .ec2
            .describe_instance_types()
            .filters(filter(
                "processor-info.supported-architecture",
                &[ec2_arch(arch)],
            ))
            .filters(filter("current-generation", &["true"]))
            .max_results(100)
            .into_paginator()
            .send();
        let mut v = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeInstanceTypes", e))?;
            // Filtered again here: the filters are an optimisation, not something to rely on.
            v.extend(
                page.instance_types()
                    .iter()
                    .map(type_info)
                    .filter(|t| t.arches.contains(&arch)),
            );
        }
        all.insert(arch, v.clone());
        Ok(v)
    }

    /// The instance type of a request: the flavor, or the smallest type fitting the shape.
    pub(super) async fn instance_type_for(
        &self,
        req: &InstanceRequest,
    ) -> CloudResult<Result<TypeInfo, PlanProblem>> {
        match &req.size {
            MachineSize::Flavor(f) => {
                let found = self.describe_types(std::slice::from_ref(f)).await?;
                Ok(found.get(f).cloned().ok_or_else(|| PlanProblem {
                    instance_group: req.instance_group.clone(),
                    problem: format!("instance type {f:?} does not exist in region {}", self.cfg.region),
                    fix: "set flavor to an instance type of this region (aws ec2 describe-instance-types), or use size: {cpu, memory}".into(),
                }))
            }
            MachineSize::Shape { cpus, memory_mib } => {
                let types = self.types_of_arch(req.arch).await?;
                match pick_instance_type(&types, req.arch, *cpus, *memory_mib) {
                    Some(t) => {
                        tracing::info!(
                            "instance group {}: {cpus} vCPU / {memory_mib} MiB {} → instance type {} ({} vCPU, {} MiB)",
                            req.instance_group,
                            req.arch,
                            t.name,
                            t.vcpus,
                            t.memory_mib
                        );
                        self.types.lock().expect("types lock").insert(t.name.clone(), t.clone());
                        Ok(Ok(t.clone()))
                    }
                    None => Ok(Err(PlanProblem {
                        instance_group: req.instance_group.clone(),
                        problem: format!("no current-generation {} instance type has {cpus} vCPU and {memory_mib} MiB", req.arch),
                        fix: "ask for a smaller size, or set flavor to a specific instance type".into(),
                    })),
                }
            }
        }
    }

    /// The image of a request (cached per arch and image setting).
    pub(super) async fn image_for(
        &self,
        req: &InstanceRequest,
    ) -> CloudResult<Result<ImageChoice, PlanProblem>> {
        let key = (req.arch, req.image.clone());
        if let Some(c) = self.images.lock().expect("images lock").get(&key) {
            return Ok(Ok(c.clone()));
        }
        let mut call = self.ec2.describe_images();
        let what;
        match req.image.as_deref() {
            Some(id) if id.starts_with("ami-") => {
                call = call.image_ids(id);
                what = format!("AMI {id}");
            }
            other => {
                let owner =
                    self.cfg.ami_owner.clone().unwrap_or_else(|| {
                        partition_for(&self.cfg.region).canonical_owner.to_string()
                    });
                let name = other
                    .map(str::to_string)
                    .or_else(|| self.cfg.ami_name.clone())
                    .unwrap_or_else(|| DEFAULT_AMI_NAME.into());
                call = call
                    .owners(&owner)
                    .filters(filter("name", &[&name]))
                    .filters(filter("architecture", &[ec2_arch(req.arch)]))
                    .filters(filter("state", &["available"]));
                what = format!(
                    "{} image named {name:?} owned by {owner}",
                    ec2_arch(req.arch)
                );
            }
        }
        let out = match call.send().await {
            Ok(o) => o,
            Err(e) => {
                let e = self.err("DescribeImages", e);
                if matches!(super::errors::code_of(&e), Some(c) if c.starts_with("InvalidAMIID")) {
                    return Ok(Err(PlanProblem {
                        instance_group: req.instance_group.clone(),
                        problem: format!("no {what} in region {}", self.cfg.region),
                        fix: "set image to an AMI id of this region, or unset it to use the default image".into(),
                    }));
                }
                return Err(e);
            }
        };
        let mut images: Vec<_> = out.images().iter().collect();
        // Newest first; the name breaks ties (moto has no creation dates).
        images.sort_by(|a, b| (b.creation_date(), b.name()).cmp(&(a.creation_date(), a.name())));
        let Some(img) = images.first() else {
            return Ok(Err(PlanProblem {
                instance_group: req.instance_group.clone(),
                problem: format!("no {what} in region {}", self.cfg.region),
                fix: "set spec.provider.aws.amiOwner / amiName, or the instance group's image, to an image of this region and architecture".into(),
            }));
        };
        let choice = ImageChoice {
            id: img.image_id().unwrap_or_default().to_string(),
            name: img.name().unwrap_or_default().to_string(),
            arch: img.architecture().and_then(|a| Arch::parse(a.as_str())),
            root_device: img.root_device_name().unwrap_or("/dev/sda1").to_string(),
            root_size_gib: img
                .block_device_mappings()
                .iter()
                .find(|m| m.device_name() == img.root_device_name())
                .or_else(|| img.block_device_mappings().first())
                .and_then(|m| m.ebs())
                .and_then(|e| e.volume_size()),
        };
        self.images
            .lock()
            .expect("images lock")
            .insert(key, choice.clone());
        Ok(Ok(choice))
    }

    /// Every problem of one request: type exists, fits arch and AMI, has the GPUs asked for.
    pub(super) async fn problems_of(&self, req: &InstanceRequest) -> CloudResult<Vec<PlanProblem>> {
        let mut out = Vec::new();
        let ig = req.instance_group.clone();
        let ty = match self.instance_type_for(req).await? {
            Ok(t) => Some(t),
            Err(p) => {
                out.push(p);
                None
            }
        };
        let img = match self.image_for(req).await? {
            Ok(i) => Some(i),
            Err(p) => {
                out.push(p);
                None
            }
        };
        if let Some(t) = &ty {
            if !t.arches.is_empty() && !t.arches.contains(&req.arch) {
                out.push(PlanProblem {
                    instance_group: ig.clone(),
                    problem: format!(
                        "instance type {} runs {} but the instance group's arch is {}",
                        t.name,
                        t.arch_list(),
                        req.arch
                    ),
                    fix: format!(
                        "use an {} instance type, or set arch to {}",
                        req.arch,
                        t.arch_list()
                    ),
                });
            }
        }
        if let Some(i) = &img {
            if let Some(a) = i.arch {
                if a != req.arch {
                    out.push(PlanProblem {
                        instance_group: ig.clone(),
                        problem: format!(
                            "image {} ({}) is {a} but the instance group's arch is {}",
                            i.id, i.name, req.arch
                        ),
                        fix: format!("use an {} image, or set arch: {a}", req.arch),
                    });
                }
                if let Some(t) = &ty {
                    if !t.arches.is_empty()
                        && !t.arches.contains(&a)
                        && t.arches.contains(&req.arch)
                    {
                        out.push(PlanProblem {
                            instance_group: ig.clone(),
                            problem: format!(
                                "instance type {} ({}) cannot boot image {} ({a})",
                                t.name,
                                t.arch_list(),
                                i.id
                            ),
                            fix: "pick an image and an instance type of the same architecture"
                                .into(),
                        });
                    }
                }
            }
        }
        if let (Some(want), Some(i)) = (req.root_disk_gib, &img) {
            if let Some(min) = i.root_size_gib.filter(|m| i64::from(want) < i64::from(*m)) {
                out.push(PlanProblem {
                    instance_group: ig.clone(),
                    problem: format!(
                        "rootDisk {want}Gi is smaller than image {}'s root snapshot ({min}Gi)",
                        i.id
                    ),
                    fix: format!("set rootDisk to at least {min}Gi"),
                });
            }
        }
        if let Some(t) = &ty {
            out.extend(gpu_problem(req, t));
        }
        Ok(out)
    }
}

/// The problem of a request whose instance type `t` lacks the GPUs the request asks for.
fn gpu_problem(req: &InstanceRequest, t: &TypeInfo) -> Option<PlanProblem> {
    let g = req.gpu.as_ref()?;
    let matching = if g.vendor.is_none() && g.model.is_none() {
        t.gpus
    } else {
        let probe = |name: &str| {
            crate::GpuInfo {
                id: String::new(),
                vendor: name.to_string(),
                model: name.to_string(),
                host: String::new(),
                arch: None,
                attached_to: None,
            }
            .matches(g)
        };
        if t.gpu_names.iter().any(|n| probe(n)) {
            t.gpus
        } else {
            0
        }
    };
    if matching < g.count {
        let has = if t.gpus == 0 {
            "has no GPUs".to_string()
        } else {
            format!("has {} GPU(s): {}", t.gpus, t.gpu_names.join(", "))
        };
        let want = [g.vendor.as_deref(), g.model.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        return Some(PlanProblem {
            instance_group: req.instance_group.clone(),
            problem: format!("instance type {} {has}, the instance group asks for {}x{}", t.name, g.count, if want.is_empty() { " GPU".into() } else { format!(" {want}") }),
            fix: "use a GPU instance type with those GPUs (e.g. g4dn.xlarge: 1x NVIDIA T4, g5g.xlarge: arm64 + T4g), or remove gpu".into(),
        });
    }
    None
}

/// kprov's view of an EC2 instance type description.
fn type_info(t: &aws_sdk_ec2::types::InstanceTypeInfo) -> TypeInfo {
    let gpus = t.gpu_info().map(|g| g.gpus()).unwrap_or_default();
    TypeInfo {
        name: t
            .instance_type()
            .map(|i| i.as_str().to_string())
            .unwrap_or_default(),
        arches: t
            .processor_info()
            .map(|p| {
                p.supported_architectures()
                    .iter()
                    .filter_map(|a| Arch::parse(a.as_str()))
                    .collect()
            })
            .unwrap_or_default(),
        vcpus: t
            .v_cpu_info()
            .and_then(|v| v.default_v_cpus())
            .unwrap_or(0)
            .max(0) as u32,
        memory_mib: t
            .memory_info()
            .and_then(|m| m.size_in_mib())
            .unwrap_or(0)
            .max(0) as u64,
        gpus: gpus
            .iter()
            .map(|g| g.count().unwrap_or(0).max(0) as u32)
            .sum(),
        gpu_names: gpus
            .iter()
            .map(|g| {
                format!(
                    "{} {}",
                    g.manufacturer().unwrap_or_default(),
                    g.name().unwrap_or_default()
                )
                .trim()
                .to_string()
            })
            .collect(),
        current_generation: t.current_generation().unwrap_or(false),
        bare_metal: t.bare_metal().unwrap_or(false),
    }
}
