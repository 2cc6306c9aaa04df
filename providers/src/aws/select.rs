//! Pure helpers of the adapter, unit-tested without a cloud.

use std::net::Ipv4Addr;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::{Arch, CloudError, CloudResult, InstanceRequest, TAG_SPEC_HASH};

use super::PROVIDER;

/// EC2's limit on user-data: 16 KB of raw bytes, before the base64 the API wants.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// What kprov needs to know about an instance type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    /// Name, e.g. `m6g.large`.
    pub name: String,
    /// Architectures it runs (empty when the API did not say).
    pub arches: Vec<Arch>,
    /// Default vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// GPUs built in.
    pub gpus: u32,
    /// GPU descriptions, `MANUFACTURER NAME` (e.g. `NVIDIA T4`).
    pub gpu_names: Vec<String>,
    /// A current-generation type.
    pub current_generation: bool,
    /// A bare-metal type.
    pub bare_metal: bool,
}

impl TypeInfo {
    /// The architecture names, for messages.
    pub fn arch_list(&self) -> String {
        if self.arches.is_empty() {
            return "unknown".into();
        }
        self.arches
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Rank of an instance family class when several types have the same size: general purpose
/// first, then burstable, compute, memory; specialised ones last.
fn class_rank(name: &str) -> u8 {
    match name.chars().next() {
        Some('m') => 0,
        Some('t') => 1,
        Some('c') => 2,
        Some('r') => 3,
        _ => 9,
    }
}

/// Generation number of a type (`m6g.large` → 6), for preferring newer families.
fn generation(name: &str) -> u32 {
    name.chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

/// The smallest current-generation, non-GPU, virtualised type of `arch` with at least `cpus`
/// vCPUs and `memory_mib` MiB: fewest vCPUs, then least memory, then general purpose before
/// burstable before compute before memory families, then the newest generation, then the name.
pub fn pick_instance_type(
    types: &[TypeInfo],
    arch: Arch,
    cpus: u32,
    memory_mib: u64,
) -> Option<&TypeInfo> {
    types
        .iter()
        .filter(|t| {
            t.arches.contains(&arch) && t.current_generation && !t.bare_metal && t.gpus == 0
        })
        .filter(|t| t.vcpus >= cpus && t.memory_mib >= memory_mib)
        .min_by(|a, b| {
            (
                a.vcpus,
                a.memory_mib,
                class_rank(&a.name),
                std::cmp::Reverse(generation(&a.name)),
                &a.name,
            )
                .cmp(&(
                    b.vcpus,
                    b.memory_mib,
                    class_rank(&b.name),
                    std::cmp::Reverse(generation(&b.name)),
                    &b.name,
                ))
        })
}

/// Base64 of the user-data as `RunInstances` wants it, after checking EC2's 16 KB limit on the
/// raw bytes (moto does not enforce it; EC2 does, with a less helpful message).
pub fn encode_user_data(instance: &str, data: &[u8]) -> CloudResult<Option<String>> {
    if data.is_empty() {
        return Ok(None);
    }
    if data.len() > USER_DATA_LIMIT {
        return Err(CloudError::Fatal {
            provider: PROVIDER,
            code: "UserDataTooLarge".into(),
            message: format!("user-data of {instance} is {} bytes, over EC2's limit of {USER_DATA_LIMIT} bytes", data.len()),
            fix: "shrink the bootstrap (fewer files or add-ons in the spec); kprov gzips user-data that does not fit".into(),
        });
    }
    Ok(Some(base64::engine::general_purpose::STANDARD.encode(data)))
}

/// The `ClientToken` of an instance: a hash of cluster, instance group, index and spec hash, so
/// a retry of the same request is recognised by EC2 and a replacement (new spec hash) is not.
pub fn client_token(req: &InstanceRequest) -> String {
    let hash = req
        .tags
        .get(TAG_SPEC_HASH)
        .map(String::as_str)
        .unwrap_or("");
    let d = Sha256::digest(
        format!(
            "{}/{}/{}/{hash}",
            req.cluster, req.instance_group, req.index
        )
        .as_bytes(),
    );
    // EC2 allows 64 ASCII characters.
    format!("kprov-{}", hex::encode(&d[..24]))
}

/// The `index`-th subnet of `vpc_cidr` with `newbits` more prefix bits (Terraform's
/// `cidrsubnet`), e.g. (`172.20.0.0/16`, 4, 2) → `172.20.32.0/20`.
pub fn cidr_subnet(vpc_cidr: &str, newbits: u8, index: u32) -> Option<String> {
    let (addr, len) = vpc_cidr.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let new_len = len.checked_add(newbits)?;
    if new_len > 28 || (newbits < 32 && u64::from(index) >= 1u64 << newbits) {
        return None;
    }
    let base = u32::from(addr) & (u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0));
    let net = base | (index << (32 - u32::from(new_len)));
    Some(format!("{}/{new_len}", Ipv4Addr::from(net)))
}

/// An ELB name (≤ 32 characters of `[A-Za-z0-9-]`, no leading/trailing `-`) for the cluster's
/// `what` (`api`): `kprov-CLUSTER-what`, with the cluster part shortened and a hash appended
/// when that does not fit, so different long cluster names still get different names.
pub fn elb_name(cluster: &str, what: &str) -> String {
    let clean: String = cluster
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let full = format!("kprov-{clean}-{what}");
    if full.len() <= 32 {
        return full;
    }
    let h = hex::encode(&Sha256::digest(cluster.as_bytes())[..3]);
    let room = 32 - "kprov-".len() - 1 - h.len() - 1 - what.len();
    let short = clean[..room.min(clean.len())].trim_end_matches('-');
    format!("kprov-{short}-{h}-{what}")
}

/// EC2's spelling of an architecture in image filters.
pub fn ec2_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "x86_64",
        Arch::Arm64 => "arm64",
    }
}

/// The default image name pattern (Ubuntu 22.04 server, both architectures).
pub const DEFAULT_AMI_NAME: &str = "ubuntu/images/hvm-ssd*/ubuntu-jammy-22.04-*-server-*";

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{MachineSize, Role};

    fn t(name: &str, arch: Arch, vcpus: u32, mem: u64, gpus: u32) -> TypeInfo {
        TypeInfo {
            name: name.into(),
            arches: vec![arch],
            vcpus,
            memory_mib: mem,
            gpus,
            gpu_names: vec![],
            current_generation: true,
            bare_metal: false,
        }
    }

    #[test]
    fn picks_the_smallest_fitting_type_of_the_arch() {
        let mut old = t("t2.medium", Arch::Amd64, 2, 4096, 0);
        old.current_generation = false;
        let types = vec![
            t("c5.large", Arch::Amd64, 2, 4096, 0),
            t("t3.medium", Arch::Amd64, 2, 4096, 0),
            t("m5.large", Arch::Amd64, 2, 8192, 0),
            t("m6i.large", Arch::Amd64, 2, 8192, 0),
            t("m6g.large", Arch::Arm64, 2, 8192, 0),
            t("t4g.medium", Arch::Arm64, 2, 4096, 0),
            t("g4dn.xlarge", Arch::Amd64, 4, 16384, 1),
            t("m5.xlarge", Arch::Amd64, 4, 16384, 0),
            old,
        ];
        assert_eq!(
            pick_instance_type(&types, Arch::Amd64, 2, 4096)
                .unwrap()
                .name,
            "t3.medium"
        );
        assert_eq!(
            pick_instance_type(&types, Arch::Amd64, 2, 6000)
                .unwrap()
                .name,
            "m6i.large"
        );
        assert_eq!(
            pick_instance_type(&types, Arch::Arm64, 2, 4096)
                .unwrap()
                .name,
            "t4g.medium"
        );
        assert_eq!(
            pick_instance_type(&types, Arch::Amd64, 4, 16384)
                .unwrap()
                .name,
            "m5.xlarge",
            "GPU types are never picked for a shape"
        );
        assert!(pick_instance_type(&types, Arch::Arm64, 64, 4096).is_none());
    }

    #[test]
    fn user_data_is_base64_and_limited_to_16_kib() {
        assert_eq!(
            encode_user_data("x", b"#cloud-config\n").unwrap().unwrap(),
            "I2Nsb3VkLWNvbmZpZwo="
        );
        assert_eq!(encode_user_data("x", b"").unwrap(), None);
        let max = vec![b'a'; USER_DATA_LIMIT];
        let enc = encode_user_data("x", &max).unwrap().unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(enc)
                .unwrap(),
            max
        );
        let err = encode_user_data("demo-nodes-0", &vec![b'a'; USER_DATA_LIMIT + 1]).unwrap_err();
        assert!(!err.is_retryable());
        let msg = err.to_string();
        assert!(
            msg.contains("demo-nodes-0") && msg.contains("16384"),
            "{msg}"
        );
    }

    fn req(index: u32, hash: &str) -> InstanceRequest {
        InstanceRequest {
            cluster: "demo".into(),
            name: format!("demo-nodes-{index}"),
            id: crate::instance_id("demo", "nodes", index),
            instance_group: "nodes".into(),
            index,
            role: Role::Node,
            arch: Arch::Amd64,
            size: MachineSize::Flavor("t3.medium".into()),
            image: None,
            root_disk_gib: None,
            gpu: None,
            network_id: None,
            user_data: vec![],
            tags: BTreeMap::from([(TAG_SPEC_HASH.to_string(), hash.to_string())]),
        }
    }

    #[test]
    fn client_tokens_are_deterministic_per_instance_and_spec() {
        assert_eq!(client_token(&req(0, "a")), client_token(&req(0, "a")));
        assert_ne!(client_token(&req(0, "a")), client_token(&req(1, "a")));
        assert_ne!(
            client_token(&req(0, "a")),
            client_token(&req(0, "b")),
            "a replacement gets a new token"
        );
        assert!(client_token(&req(0, "a")).len() <= 64);
    }

    #[test]
    fn subnets_are_carved_from_the_vpc() {
        assert_eq!(cidr_subnet("172.20.0.0/16", 4, 0).unwrap(), "172.20.0.0/20");
        assert_eq!(
            cidr_subnet("172.20.0.0/16", 4, 2).unwrap(),
            "172.20.32.0/20"
        );
        assert_eq!(cidr_subnet("10.0.0.0/8", 4, 15).unwrap(), "10.240.0.0/12");
        assert!(cidr_subnet("172.20.0.0/16", 4, 16).is_none());
        assert!(cidr_subnet("nonsense", 4, 0).is_none());
    }

    #[test]
    fn elb_names_fit_32_characters() {
        assert_eq!(elb_name("demo", "api"), "kprov-demo-api");
        let long = elb_name("a-very-long-cluster-name-for-production", "api");
        assert!(
            long.len() <= 32 && long.starts_with("kprov-") && long.ends_with("-api"),
            "{long}"
        );
        assert_ne!(
            long,
            elb_name("a-very-long-cluster-name-for-productioN", "api")
        );
    }
}
