//! The simulated cloud: persisted state plus the operations the API performs on it.
//!
//! Operations are split the way a running job is observed: `*_begin` validates, claims resources
//! and puts the VM into its transitional state (Starting, Stopping, ...) when the job starts;
//! `*_finish` applies the final state when the job completes. Both run under the state mutex, so
//! claims (IPs, PCI devices, host capacity) are atomic across concurrent calls.

use crate::error::{ErrorCode, SimError};
use crate::inventory::Inventory;
use crate::model::*;
use crate::query::{Kind, Source};
use crate::time::GsonTime;
use base64::Engine;
use chrono::{DateTime, Utc};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha512};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::OnceLock;

/// Version of the state-file layout (bump on incompatible changes).
const STATE_FORMAT: u32 = 1;
/// `identity/session.maxConcurrent`.
const MAX_SESSIONS_PER_ACCOUNT: usize = 500;
/// The well-known uuid of ZStack's built-in admin account.
pub(crate) const ADMIN_ACCOUNT_UUID: &str = "36c27e8ff05c4780bf6d2fa65700f22e";

/// A login account; the password is kept as the SHA-512 hex clients send.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Account {
    pub uuid: String,
    pub name: String,
    pub password_sha512: String,
}

/// An AccessKey pair.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct AccessKey {
    pub access_key_id: String,
    pub access_key_secret: String,
    pub account_uuid: String,
}

/// A session. Expiry is computed from `renewed_at` and the TTL in force, so a TTL override
/// applies to sessions that already exist.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Session {
    pub uuid: String,
    pub account_uuid: String,
    pub created_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    /// Set by `renewSession {duration}`; otherwise the global TTL applies.
    pub duration_secs: Option<u64>,
}

impl Session {
    pub fn expires_at(&self, ttl_secs: u64) -> DateTime<Utc> {
        let secs = self.duration_secs.unwrap_or(ttl_secs);
        self.renewed_at + chrono::Duration::seconds(secs.min(i64::MAX as u64 / 1000) as i64)
    }
}

/// How a job ended (or that it has not).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub(crate) enum JobOutcome {
    Running,
    Succeeded { result: Value },
    Failed { error: ErrorCode },
}

/// An async API job (`api-jobs/{id}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Job {
    pub id: String,
    pub api: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: JobOutcome,
}

/// Everything the simulator persists.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct CloudState {
    pub format: u32,
    pub zones: Vec<Zone>,
    pub clusters: Vec<Cluster>,
    pub hosts: Vec<Host>,
    pub primary_storages: Vec<PrimaryStorage>,
    pub backup_storages: Vec<BackupStorage>,
    pub images: Vec<Image>,
    pub instance_offerings: Vec<InstanceOffering>,
    pub l3_networks: Vec<L3Network>,
    pub pci_device_specs: Vec<PciDeviceSpec>,
    pub pci_devices: Vec<PciDevice>,
    pub mdev_device_specs: Vec<MdevDeviceSpec>,
    pub mdev_devices: Vec<MdevDevice>,
    pub vms: Vec<VmInstance>,
    pub tags: Vec<Tag>,
    pub accounts: Vec<Account>,
    pub access_keys: Vec<AccessKey>,
    pub sessions: Vec<Session>,
    pub jobs: Vec<Job>,
    /// Monotonic counter for libvirt-style NIC names.
    pub nic_counter: u64,
}

/// Lowercase hex SHA-512, the password form clients send.
pub(crate) fn sha512_hex(s: &str) -> String {
    hex::encode(Sha512::digest(s.as_bytes()))
}

/// A fresh random 32-hex uuid.
pub(crate) fn new_uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `StringDSL.isZStackUuid`: a version 1-5, RFC-variant uuid without dashes.
pub(crate) fn is_zstack_uuid(s: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new("^[0-9a-f]{8}[0-9a-f]{4}[1-5][0-9a-f]{3}[89ab][0-9a-f]{3}[0-9a-f]{12}$")
            .expect("static regex")
    })
    .is_match(s)
}

fn arg_not_found(field: &str, uuid: &str, type_: &str) -> ErrorCode {
    ErrorCode::invalid_argument(format!(
        "invalid field[{field}], resource[uuid:{uuid}, type:{type_}] not found"
    ))
}

/// SYS.1006 wrapping VM.1010, what `validateOperationByState` produces.
pub(crate) fn wrong_state(vm: &VmInstance, op: &str) -> ErrorCode {
    ErrorCode::operation(format!(
        "the operation[{op}] cannot be performed on vm[uuid:{}] in state[{}]",
        vm.uuid, vm.state
    ))
    .with_cause(ErrorCode::new(
        "VM.1010",
        format!(
            "The vm[uuid:{}] is in state[{}], which doesn't allow operation[{op}]",
            vm.uuid, vm.state
        ),
    ))
}

fn no_host(reason: String) -> ErrorCode {
    ErrorCode::operation(format!("unable to allocate a host: {reason}"))
        .with_cause(ErrorCode::new("HOST_ALLOCATION.1001", reason))
}

/// Which VM states hold their host's CPU/memory.
fn holds_host(state: &str) -> bool {
    !matches!(
        state,
        "Stopped" | "Created" | "Destroyed" | "Expunging" | "Destroying"
    )
}

/// Parsed `params` of `CreateVmInstance` (unknown keys ignored, as the MN does).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct CreateVmParams {
    pub name: Option<String>,
    pub description: Option<String>,
    pub instance_offering_uuid: Option<String>,
    pub cpu_num: Option<u64>,
    pub memory_size: Option<u64>,
    pub image_uuid: Option<String>,
    pub l3_network_uuids: Vec<String>,
    pub default_l3_network_uuid: Option<String>,
    pub root_disk_offering_uuid: Option<String>,
    pub root_disk_size: Option<u64>,
    pub zone_uuid: Option<String>,
    pub cluster_uuid: Option<String>,
    pub host_uuid: Option<String>,
    pub primary_storage_uuid_for_root_volume: Option<String>,
    pub strategy: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub guest_os_type: Option<String>,
    pub resource_uuid: Option<String>,
    pub system_tags: Vec<String>,
    pub user_tags: Vec<String>,
}

/// Parsed `params` of `AddImage`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct AddImageParams {
    pub name: Option<String>,
    pub description: Option<String>,
    pub url: Option<String>,
    pub media_type: Option<String>,
    pub guest_os_type: Option<String>,
    pub system: Option<bool>,
    pub format: Option<String>,
    pub platform: Option<String>,
    pub architecture: Option<String>,
    pub backup_storage_uuids: Vec<String>,
    pub resource_uuid: Option<String>,
    pub system_tags: Vec<String>,
    pub user_tags: Vec<String>,
}

/// Device claims requested through create-time system tags.
#[derive(Debug, Default, Clone)]
struct DeviceClaims {
    pci: Vec<String>,
    pci_specs: Vec<(String, usize)>,
    mdev: Vec<String>,
    mdev_specs: Vec<(String, usize)>,
}

/// What a host must satisfy.
#[derive(Debug, Default)]
struct PlacementReq<'a> {
    arch: String,
    cpu: u64,
    mem: u64,
    zone: Option<&'a str>,
    cluster: Option<&'a str>,
    host: Option<&'a str>,
    pinned: Option<String>,
    prefer: Option<String>,
    pci_specs: Vec<(String, usize)>,
    mdev_specs: Vec<(String, usize)>,
}

impl CloudState {
    /// Builds the initial state from fixtures plus the admin account.
    pub fn from_inventory(inv: &Inventory, admin: &(String, String)) -> Self {
        let mut accounts = vec![Account {
            uuid: ADMIN_ACCOUNT_UUID.into(),
            name: admin.0.clone(),
            password_sha512: sha512_hex(&admin.1),
        }];
        accounts.extend(inv.accounts.iter().map(|a| Account {
            uuid: a.uuid.clone(),
            name: a.name.clone(),
            password_sha512: sha512_hex(&a.password),
        }));
        let access_keys = inv
            .access_keys
            .iter()
            .map(|k| AccessKey {
                access_key_id: k.access_key_id.clone(),
                access_key_secret: k.access_key_secret.clone(),
                account_uuid: accounts
                    .iter()
                    .find(|a| a.uuid == k.account || a.name == k.account)
                    .map(|a| a.uuid.clone())
                    .unwrap_or_else(|| ADMIN_ACCOUNT_UUID.into()),
            })
            .collect();
        CloudState {
            format: STATE_FORMAT,
            zones: inv.zones.clone(),
            clusters: inv.clusters.clone(),
            hosts: inv.hosts.clone(),
            primary_storages: inv.primary_storages.clone(),
            backup_storages: inv.backup_storages.clone(),
            images: inv.images.clone(),
            instance_offerings: inv.instance_offerings.clone(),
            l3_networks: inv.l3_networks.clone(),
            pci_device_specs: inv.pci_device_specs.clone(),
            pci_devices: inv.pci_devices.clone(),
            mdev_device_specs: inv.mdev_device_specs.clone(),
            mdev_devices: inv.mdev_devices.clone(),
            accounts,
            access_keys,
            ..Default::default()
        }
    }

    /// Loads a state file; `Ok(None)` when it does not exist yet.
    pub fn load(path: &Path) -> Result<Option<Self>, SimError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SimError::io(format!("reading {}", path.display()), e)),
        };
        let mut st: CloudState = serde_json::from_str(&text).map_err(|e| SimError::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if st.format != STATE_FORMAT {
            return Err(SimError::State {
                path: path.to_path_buf(),
                message: format!("format {} is not {STATE_FORMAT}", st.format),
            });
        }
        st.settle_after_restart();
        Ok(Some(st))
    }

    /// Writes the state atomically (temp file in the same directory, then rename), so a reader
    /// or a crash never sees a half-written file.
    pub fn save(&self, path: &Path) -> Result<(), SimError> {
        let text = serde_json::to_vec(self).map_err(|e| SimError::State {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state".into());
        let tmp_name = format!(".{name}.tmp-{}", std::process::id());
        let tmp = match dir {
            Some(d) => d.join(tmp_name),
            None => Path::new(&tmp_name).to_path_buf(),
        };
        std::fs::write(&tmp, &text)
            .map_err(|e| SimError::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            SimError::io(
                format!("renaming {} to {}", tmp.display(), path.display()),
                e,
            )
        })
    }

    /// A restarted MN has no running jobs: they fail, and VMs caught mid-transition are settled
    /// to where the transition was heading.
    fn settle_after_restart(&mut self) {
        let now = Utc::now();
        for j in &mut self.jobs {
            if matches!(j.outcome, JobOutcome::Running) {
                j.outcome = JobOutcome::Failed {
                    error: ErrorCode::internal(
                        "the job was interrupted by a management node restart",
                    ),
                };
                j.finished_at = Some(now);
            }
        }
        let expunging: Vec<String> = self
            .vms
            .iter()
            .filter(|v| v.state == "Expunging")
            .map(|v| v.uuid.clone())
            .collect();
        for u in expunging {
            self.expunge_finish(&u);
        }
        for v in &mut self.vms {
            let to = match v.state.as_str() {
                "Starting" | "Rebooting" => "Running",
                "Stopping" => "Stopped",
                "Destroying" => "Destroyed",
                _ => continue,
            };
            v.state = to.into();
            if to != "Running" && v.host_uuid.is_some() {
                v.last_host_uuid = v.host_uuid.take();
            }
        }
    }

    // ---------------------------------------------------------------- lookups

    /// True if any resource has this uuid (resourceUuid conflicts are global in ZStack).
    pub fn uuid_exists(&self, u: &str) -> bool {
        self.zones.iter().any(|x| x.uuid == u)
            || self.clusters.iter().any(|x| x.uuid == u)
            || self.hosts.iter().any(|x| x.uuid == u)
            || self.primary_storages.iter().any(|x| x.uuid == u)
            || self.backup_storages.iter().any(|x| x.uuid == u)
            || self.images.iter().any(|x| x.uuid == u)
            || self.instance_offerings.iter().any(|x| x.uuid == u)
            || self
                .l3_networks
                .iter()
                .any(|x| x.uuid == u || x.ip_ranges.iter().any(|r| r.uuid == u))
            || self.pci_device_specs.iter().any(|x| x.uuid == u)
            || self.pci_devices.iter().any(|x| x.uuid == u)
            || self.mdev_device_specs.iter().any(|x| x.uuid == u)
            || self.mdev_devices.iter().any(|x| x.uuid == u)
            || self.vms.iter().any(|x| {
                x.uuid == u
                    || x.vm_nics.iter().any(|n| n.uuid == u)
                    || x.all_volumes.iter().any(|v| v.uuid == u)
            })
            || self.tags.iter().any(|x| x.uuid == u)
    }

    /// The resource type name (`VmInstanceVO`, ...) of a uuid, for tag validation.
    fn resource_type_of(&self, u: &str) -> Option<&'static str> {
        if self.vms.iter().any(|x| x.uuid == u) {
            Some("VmInstanceVO")
        } else if self
            .vms
            .iter()
            .any(|x| x.vm_nics.iter().any(|n| n.uuid == u))
        {
            Some("VmNicVO")
        } else if self
            .vms
            .iter()
            .any(|x| x.all_volumes.iter().any(|n| n.uuid == u))
        {
            Some("VolumeVO")
        } else if self.images.iter().any(|x| x.uuid == u) {
            Some("ImageVO")
        } else if self.hosts.iter().any(|x| x.uuid == u) {
            Some("HostVO")
        } else if self.clusters.iter().any(|x| x.uuid == u) {
            Some("ClusterVO")
        } else if self.zones.iter().any(|x| x.uuid == u) {
            Some("ZoneVO")
        } else if self.l3_networks.iter().any(|x| x.uuid == u) {
            Some("L3NetworkVO")
        } else if self.instance_offerings.iter().any(|x| x.uuid == u) {
            Some("InstanceOfferingVO")
        } else if self.pci_devices.iter().any(|x| x.uuid == u) {
            Some("PciDeviceVO")
        } else if self.backup_storages.iter().any(|x| x.uuid == u) {
            Some("BackupStorageVO")
        } else if self.primary_storages.iter().any(|x| x.uuid == u) {
            Some("PrimaryStorageVO")
        } else {
            None
        }
    }

    pub fn vm(&self, u: &str) -> Option<&VmInstance> {
        self.vms.iter().find(|v| v.uuid == u)
    }

    fn vm_mut(&mut self, u: &str) -> Option<&mut VmInstance> {
        self.vms.iter_mut().find(|v| v.uuid == u)
    }

    /// The VM's `{"inventory": ...}` job result.
    pub fn vm_result(&self, u: &str) -> Result<Value, ErrorCode> {
        self.vm(u)
            .map(|v| json!({ "inventory": v }))
            .ok_or_else(|| ErrorCode::new("SYS.1003", format!("vm[uuid:{u}] not found")))
    }

    fn host_view(&self, h: &Host) -> Host {
        let (cpu, mem) = self.used_capacity(&h.uuid);
        let mut v = h.clone();
        v.available_cpu_capacity = h.total_cpu_capacity.saturating_sub(cpu);
        v.available_memory_capacity = h.total_memory_capacity.saturating_sub(mem);
        v
    }

    fn used_capacity(&self, host: &str) -> (u64, u64) {
        self.vms
            .iter()
            .filter(|v| v.host_uuid.as_deref() == Some(host) && holds_host(&v.state))
            .fold((0, 0), |(c, m), v| (c + v.cpu_num, m + v.memory_size))
    }

    // ---------------------------------------------------------------- sessions

    /// `logInByAccount`: `password` is the SHA-512 hex the client computed.
    pub fn login(
        &mut self,
        name: &str,
        password: &str,
        ttl: u64,
    ) -> Result<SessionView, ErrorCode> {
        let now = Utc::now();
        self.sessions.retain(|s| s.expires_at(ttl) > now);
        let acct = self
            .accounts
            .iter()
            .find(|a| a.name == name && a.password_sha512 == password)
            .ok_or_else(|| ErrorCode::new("ID.1000", "wrong account or username or password"))?
            .clone();
        let live = self
            .sessions
            .iter()
            .filter(|s| s.account_uuid == acct.uuid)
            .count();
        if live >= MAX_SESSIONS_PER_ACCOUNT {
            return Err(ErrorCode::new(
                "ID.1006",
                format!("account[{name}] has reached the maximum of {MAX_SESSIONS_PER_ACCOUNT} concurrent sessions"),
            ));
        }
        let s = Session {
            uuid: new_uuid(),
            account_uuid: acct.uuid,
            created_at: now,
            renewed_at: now,
            duration_secs: None,
        };
        let view = session_view(&s, ttl);
        self.sessions.push(s);
        Ok(view)
    }

    /// The account of a live session.
    pub fn session_account(&self, uuid: &str, ttl: u64) -> Option<String> {
        let now = Utc::now();
        self.sessions
            .iter()
            .find(|s| s.uuid == uuid && s.expires_at(ttl) > now)
            .map(|s| s.account_uuid.clone())
    }

    /// Logout; unknown sessions are fine (logout is idempotent on the MN).
    pub fn logout(&mut self, uuid: &str) {
        self.sessions.retain(|s| s.uuid != uuid);
    }

    /// `renewSession`: restarts the session's lifetime (optionally with a new duration).
    pub fn renew(
        &mut self,
        uuid: &str,
        duration: Option<u64>,
        ttl: u64,
    ) -> Result<Value, ErrorCode> {
        let now = Utc::now();
        let s = self
            .sessions
            .iter_mut()
            .find(|s| s.uuid == uuid && s.expires_at(ttl) > now)
            .ok_or_else(ErrorCode::session_expired)?;
        s.renewed_at = now;
        if duration.is_some() {
            s.duration_secs = duration;
        }
        let v = session_view(s, ttl);
        Ok(json!({ "inventory": v }))
    }

    /// The AccessKey secret and account for an id.
    pub fn access_key(&self, id: &str) -> Option<(String, String)> {
        self.access_keys
            .iter()
            .find(|k| k.access_key_id == id)
            .map(|k| (k.access_key_secret.clone(), k.account_uuid.clone()))
    }

    // ---------------------------------------------------------------- jobs

    pub fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    /// Drops completed jobs older than the retention (`rest/completedApi.expiredPeriod`).
    pub fn purge_jobs(&mut self, retention: std::time::Duration) {
        let now = Utc::now();
        let keep = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        self.jobs.retain(|j| {
            j.finished_at
                .is_none_or(|f| now.signed_duration_since(f) <= keep)
        });
    }

    pub fn finish_job(&mut self, id: &str, outcome: Result<Value, ErrorCode>) {
        if let Some(j) = self.jobs.iter_mut().find(|j| j.id == id) {
            j.outcome = match outcome {
                Ok(result) => JobOutcome::Succeeded { result },
                Err(error) => JobOutcome::Failed { error },
            };
            j.finished_at = Some(Utc::now());
        }
    }

    // ---------------------------------------------------------------- placement

    fn free_pci_on(&self, host: &str, spec: &str) -> Vec<String> {
        self.pci_devices
            .iter()
            .filter(|d| {
                d.host_uuid == host
                    && d.pci_spec_uuid.as_deref() == Some(spec)
                    && pci_passthrough_free(d)
            })
            .map(|d| d.uuid.clone())
            .collect()
    }

    fn free_mdev_on(&self, host: &str, spec: &str) -> Vec<String> {
        self.mdev_devices
            .iter()
            .filter(|d| {
                d.host_uuid == host
                    && d.mdev_spec_uuid.as_deref() == Some(spec)
                    && d.vm_instance_uuid.is_none()
                    && d.state == "Enabled"
            })
            .map(|d| d.uuid.clone())
            .collect()
    }

    /// Picks a host: right architecture, inside the requested zone/cluster/host, Enabled and
    /// Connected, with free CPU/memory and the requested free devices. Prefers `prefer` (the
    /// last host on start), then the host with most free memory. Errors say which filter emptied
    /// the candidate list.
    fn place(&self, r: &PlacementReq) -> Result<String, ErrorCode> {
        let mut c: Vec<&Host> = self
            .hosts
            .iter()
            .filter(|h| r.zone.is_none_or(|z| h.zone_uuid == z))
            .filter(|h| r.cluster.is_none_or(|x| h.cluster_uuid == x))
            .filter(|h| r.host.is_none_or(|x| h.uuid == x))
            .filter(|h| r.pinned.as_deref().is_none_or(|x| h.uuid == x))
            .collect();
        if c.is_empty() {
            return Err(no_host(
                "no host in the requested zone/cluster/host (or the one holding the VM's devices)"
                    .into(),
            ));
        }
        c.retain(|h| h.architecture == r.arch);
        if c.is_empty() {
            return Err(no_host(format!(
                "no host of architecture[{}] among the candidates",
                r.arch
            )));
        }
        c.retain(|h| h.state == "Enabled" && h.status == "Connected");
        if c.is_empty() {
            return Err(no_host(format!(
                "no Enabled and Connected host of architecture[{}]",
                r.arch
            )));
        }
        c.retain(|h| {
            let (cpu, mem) = self.used_capacity(&h.uuid);
            h.total_cpu_capacity.saturating_sub(cpu) >= r.cpu
                && h.total_memory_capacity.saturating_sub(mem) >= r.mem
        });
        if c.is_empty() {
            return Err(no_host(format!(
                "no host of architecture[{}] has enough capacity for cpu[{}] memory[{} bytes]",
                r.arch, r.cpu, r.mem
            )));
        }
        c.retain(|h| {
            r.pci_specs
                .iter()
                .all(|(s, n)| self.free_pci_on(&h.uuid, s).len() >= *n)
                && r.mdev_specs
                    .iter()
                    .all(|(s, n)| self.free_mdev_on(&h.uuid, s).len() >= *n)
        });
        if c.is_empty() {
            return Err(no_host(format!(
                "no host of architecture[{}] with enough capacity has the requested free devices {:?} {:?}",
                r.arch, r.pci_specs, r.mdev_specs
            )));
        }
        if let Some(p) = &r.prefer {
            if c.iter().any(|h| &h.uuid == p) {
                return Ok(p.clone());
            }
        }
        c.sort_by(|a, b| {
            let fa = a
                .total_memory_capacity
                .saturating_sub(self.used_capacity(&a.uuid).1);
            let fb = b
                .total_memory_capacity
                .saturating_sub(self.used_capacity(&b.uuid).1);
            fb.cmp(&fa).then_with(|| a.name.cmp(&b.name))
        });
        Ok(c[0].uuid.clone())
    }

    /// The host the VM's attached devices pin it to (and an error if they disagree).
    fn device_pin(&self, vm: &str) -> Result<Option<String>, ErrorCode> {
        let hosts: HashSet<&str> = self
            .pci_devices
            .iter()
            .filter(|d| d.vm_instance_uuid.as_deref() == Some(vm))
            .map(|d| d.host_uuid.as_str())
            .chain(
                self.mdev_devices
                    .iter()
                    .filter(|d| d.vm_instance_uuid.as_deref() == Some(vm))
                    .map(|d| d.host_uuid.as_str()),
            )
            .collect();
        match hosts.len() {
            0 => Ok(None),
            1 => Ok(hosts.into_iter().next().map(str::to_string)),
            _ => Err(ErrorCode::operation(format!(
                "the devices attached to vm[uuid:{vm}] are on different hosts"
            ))),
        }
    }

    // ---------------------------------------------------------------- IPs

    fn used_ips(&self, l3: &str) -> HashSet<Ipv4Addr> {
        self.vms
            .iter()
            .flat_map(|v| v.vm_nics.iter())
            .filter(|n| n.l3_network_uuid == l3)
            .filter_map(|n| n.ip.as_deref()?.parse().ok())
            .collect()
    }

    /// Free addresses of an L3, in range order (`GET /l3-networks/{uuid}/ip/free`).
    pub fn free_ips(&self, l3: &L3Network, start: usize, limit: usize) -> Vec<Value> {
        let used = self.used_ips(&l3.uuid);
        let mut out = Vec::new();
        let mut skipped = 0;
        for r in &l3.ip_ranges {
            let (Ok(s), Ok(e), Ok(g)) = (
                r.start_ip.parse::<Ipv4Addr>(),
                r.end_ip.parse::<Ipv4Addr>(),
                r.gateway.parse::<Ipv4Addr>(),
            ) else {
                continue;
            };
            for a in u32::from(s)..=u32::from(e) {
                let ip = Ipv4Addr::from(a);
                if ip == g || used.contains(&ip) {
                    continue;
                }
                if skipped < start {
                    skipped += 1;
                    continue;
                }
                if out.len() >= limit {
                    return out;
                }
                out.push(
                    json!({"ipRangeUuid": r.uuid, "l3NetworkUuid": l3.uuid, "ip": ip.to_string(),
                    "netmask": r.netmask, "gateway": r.gateway}),
                );
            }
        }
        out
    }

    /// Allocates an address on `l3`: `wanted` (from a `staticIp::` tag) or the first free one.
    fn allocate_ip(
        &self,
        l3: &L3Network,
        wanted: Option<&str>,
        taken: &HashSet<Ipv4Addr>,
    ) -> Result<(Ipv4Addr, IpRange), ErrorCode> {
        let mut used = self.used_ips(&l3.uuid);
        used.extend(taken.iter().copied());
        if let Some(w) = wanted {
            let ip: Ipv4Addr = w.parse().map_err(|_| {
                ErrorCode::invalid_argument(format!("staticIp[{w}] is not a valid IPv4 address"))
            })?;
            let range = l3
                .ip_ranges
                .iter()
                .find(|r| {
                    let (Ok(s), Ok(e)) =
                        (r.start_ip.parse::<Ipv4Addr>(), r.end_ip.parse::<Ipv4Addr>())
                    else {
                        return false;
                    };
                    (u32::from(s)..=u32::from(e)).contains(&u32::from(ip))
                })
                .ok_or_else(|| {
                    ErrorCode::invalid_argument(format!(
                        "staticIp[{w}] is not in any ip range of l3[uuid:{}]",
                        l3.uuid
                    ))
                })?;
            if used.contains(&ip) || r_gateway(range) == Some(ip) {
                return Err(ErrorCode::operation(format!(
                    "the static ip[{w}] on l3[uuid:{}] is already used",
                    l3.uuid
                )));
            }
            return Ok((ip, range.clone()));
        }
        for r in &l3.ip_ranges {
            let (Ok(s), Ok(e)) = (r.start_ip.parse::<Ipv4Addr>(), r.end_ip.parse::<Ipv4Addr>())
            else {
                continue;
            };
            for a in u32::from(s)..=u32::from(e) {
                let ip = Ipv4Addr::from(a);
                if Some(ip) != r_gateway(r) && !used.contains(&ip) {
                    return Ok((ip, r.clone()));
                }
            }
        }
        Err(ErrorCode::operation(format!(
            "no available ip on l3 network[uuid:{}, name:{}]",
            l3.uuid, l3.name
        )))
    }

    // ---------------------------------------------------------------- tags

    fn add_tag(&mut self, resource_uuid: &str, resource_type: &str, tag: &str, type_: &str) -> Tag {
        let t = Tag {
            uuid: new_uuid(),
            resource_uuid: resource_uuid.into(),
            resource_type: resource_type.into(),
            tag: tag.into(),
            type_: type_.into(),
            inherent: false,
            create_date: GsonTime::now(),
            last_op_date: GsonTime::now(),
        };
        self.tags.push(t.clone());
        t
    }

    /// `CreateUserTag` / `CreateSystemTag` (§7): validates, refuses duplicates (SYS.1006).
    pub fn create_tag(&mut self, params: &Value, type_: &str) -> Result<Value, ErrorCode> {
        let get = |k: &str| {
            params
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (rtype, ruuid, tag) = (get("resourceType"), get("resourceUuid"), get("tag"));
        if ruuid.is_empty() || tag.is_empty() || rtype.is_empty() {
            return Err(ErrorCode::invalid_argument(
                "resourceType, resourceUuid and tag are mandatory",
            ));
        }
        match self.resource_type_of(&ruuid) {
            Some(t) if t == rtype => {}
            Some(t) => {
                return Err(ErrorCode::invalid_argument(format!(
                    "resource[uuid:{ruuid}] is a {t}, not a {rtype}"
                )))
            }
            None => {
                return Err(ErrorCode::invalid_argument(format!(
                    "no resource[uuid:{ruuid}, type:{rtype}] found"
                )))
            }
        }
        if type_ == "System" {
            validate_system_tag_format(&tag)?;
        }
        if self
            .tags
            .iter()
            .any(|t| t.resource_uuid == ruuid && t.tag == tag && t.type_ == type_)
        {
            return Err(ErrorCode::operation(format!(
                "Duplicated Tag[tag:{tag}, type:{type_}, resourceType:{rtype}, resourceUuid:{ruuid}]"
            )));
        }
        let t = self.add_tag(&ruuid, &rtype, &tag, type_);
        Ok(json!({ "inventory": t }))
    }

    /// `DeleteTag`: deleting a missing tag succeeds.
    pub fn delete_tag(&mut self, uuid: &str) -> Value {
        self.tags.retain(|t| t.uuid != uuid);
        json!({})
    }

    fn drop_tags_of(&mut self, uuids: &HashSet<String>) {
        self.tags.retain(|t| !uuids.contains(&t.resource_uuid));
    }

    // ---------------------------------------------------------------- VM create

    /// Validates a `CreateVmInstance` and inserts the VM in its transitional state with host,
    /// IPs and devices claimed. Nothing is changed when it fails.
    pub fn create_vm_begin(&mut self, p: &CreateVmParams) -> Result<String, ErrorCode> {
        if let Some(r) = &p.resource_uuid {
            if !is_zstack_uuid(r) {
                return Err(ErrorCode::invalid_argument(format!(
                    "resourceUuid[{r}] is not a valid uuid. A valid uuid is a UUID(v4 recommended) with '-' stripped"
                )));
            }
        }
        let name = p.name.clone().unwrap_or_default();
        if name.is_empty() || name.chars().count() > 255 {
            return Err(ErrorCode::invalid_argument(
                "field[name] of message[APICreateVmInstanceMsg] is mandatory and at most 255 characters",
            ));
        }
        let strategy = p.strategy.as_deref().unwrap_or("InstantStart");
        if !matches!(strategy, "InstantStart" | "JustCreate" | "CreateStopped") {
            return Err(ErrorCode::invalid_argument(format!(
                "strategy[{strategy}] is not one of [InstantStart, JustCreate, CreateStopped]"
            )));
        }
        let vm_type = p.type_.as_deref().unwrap_or("UserVm");
        if !matches!(vm_type, "UserVm" | "ApplianceVm") {
            return Err(ErrorCode::invalid_argument(format!(
                "type[{vm_type}] is invalid"
            )));
        }
        let image_uuid = p
            .image_uuid
            .clone()
            .ok_or_else(|| ErrorCode::invalid_argument("field[imageUuid] is mandatory"))?;
        let image = self
            .images
            .iter()
            .find(|i| i.uuid == image_uuid)
            .ok_or_else(|| arg_not_found("imageUuid", &image_uuid, "ImageVO"))?
            .clone();
        if image.status != "Ready" || image.state != "Enabled" {
            return Err(ErrorCode::operation(format!(
                "image[uuid:{}] is in state[{}] status[{}], it must be Enabled and Ready",
                image.uuid, image.state, image.status
            )));
        }
        if image.media_type == "ISO"
            && p.root_disk_offering_uuid.is_none()
            && p.root_disk_size.is_none()
        {
            return Err(ErrorCode::invalid_argument(
                "rootDiskOfferingUuid or rootDiskSize is required when creating a vm from an ISO",
            ));
        }
        let (cpu, mem, offering) = match &p.instance_offering_uuid {
            Some(o) => {
                let off = self
                    .instance_offerings
                    .iter()
                    .find(|x| &x.uuid == o)
                    .ok_or_else(|| {
                        arg_not_found("instanceOfferingUuid", o, "InstanceOfferingVO")
                    })?;
                if off.state != "Enabled" {
                    return Err(ErrorCode::operation(format!(
                        "instance offering[uuid:{o}] is disabled"
                    )));
                }
                (off.cpu_num, off.memory_size, Some(off.uuid.clone()))
            }
            None => match (p.cpu_num, p.memory_size) {
                (Some(c), Some(m)) if c > 0 && m > 0 => (c, m, None),
                _ => {
                    return Err(ErrorCode::invalid_argument(
                        "instanceOfferingUuid or both cpuNum and memorySize must be set",
                    ))
                }
            },
        };
        if p.l3_network_uuids.is_empty() {
            return Err(ErrorCode::invalid_argument(
                "field[l3NetworkUuids] must not be empty",
            ));
        }
        let mut l3s = Vec::new();
        for u in &p.l3_network_uuids {
            let l3 = self
                .l3_networks
                .iter()
                .find(|l| &l.uuid == u)
                .ok_or_else(|| arg_not_found("l3NetworkUuids", u, "L3NetworkVO"))?;
            if l3s.iter().any(|x: &L3Network| x.uuid == l3.uuid) {
                return Err(ErrorCode::invalid_argument(format!(
                    "duplicate l3 network[uuid:{u}]"
                )));
            }
            l3s.push(l3.clone());
        }
        let default_l3 = p
            .default_l3_network_uuid
            .clone()
            .unwrap_or_else(|| l3s[0].uuid.clone());
        if !l3s.iter().any(|l| l.uuid == default_l3) {
            return Err(ErrorCode::invalid_argument(format!(
                "defaultL3NetworkUuid[{default_l3}] is not in l3NetworkUuids"
            )));
        }
        if let Some(z) = &p.zone_uuid {
            if !self.zones.iter().any(|x| &x.uuid == z) {
                return Err(arg_not_found("zoneUuid", z, "ZoneVO"));
            }
        }
        if let Some(c) = &p.cluster_uuid {
            if !self.clusters.iter().any(|x| &x.uuid == c) {
                return Err(arg_not_found("clusterUuid", c, "ClusterVO"));
            }
        }
        if let Some(h) = &p.host_uuid {
            if !self.hosts.iter().any(|x| &x.uuid == h) {
                return Err(arg_not_found("hostUuid", h, "HostVO"));
            }
        }
        let arch = p
            .architecture
            .clone()
            .unwrap_or_else(|| image.architecture.clone());
        if !matches!(
            arch.as_str(),
            "x86_64" | "aarch64" | "mips64el" | "loongarch64"
        ) {
            return Err(ErrorCode::invalid_argument(format!(
                "architecture[{arch}] is not one of [x86_64, aarch64, mips64el, loongarch64]"
            )));
        }
        if let Some(rd) = p.root_disk_size {
            if rd < image.size && image.media_type != "ISO" {
                return Err(ErrorCode::invalid_argument(format!(
                    "rootDiskSize[{rd}] is smaller than the image's size[{}]",
                    image.size
                )));
            }
        }

        // System tags: formats, userdata, hostname, static IPs and device claims.
        let mut userdata = 0;
        let mut claims = DeviceClaims::default();
        let mut static_ips: Vec<(String, String)> = Vec::new();
        for t in &p.system_tags {
            validate_system_tag_format(t)?;
            if let Some(b64) = t.strip_prefix("userdata::") {
                userdata += 1;
                lenient_b64().decode(b64.trim()).map_err(|_| {
                    ErrorCode::invalid_argument(
                        "the userdata in the system tag userdata::<base64> is not base64 encoded",
                    )
                })?;
            } else if let Some(h) = t.strip_prefix("hostname::") {
                if !valid_hostname(h) {
                    return Err(ErrorCode::invalid_argument(format!(
                        "hostname[{h}] is not a valid hostname (RFC 1123)"
                    )));
                }
                let clash = self.vms.iter().find(|v| {
                    v.default_l3_network_uuid.as_deref() == Some(default_l3.as_str())
                        && self.tags.iter().any(|x| {
                            x.resource_uuid == v.uuid && x.type_ == "System" && x.tag == *t
                        })
                });
                if let Some(v) = clash {
                    return Err(ErrorCode::invalid_argument(format!(
                        "conflict hostname in system tag[{t}]: vm[uuid:{}] already has hostname[{h}] on l3 network[uuid:{default_l3}]",
                        v.uuid
                    )));
                }
            } else if let Some(rest) = t.strip_prefix("staticIp::") {
                let (l3, ip) = rest.split_once("::").ok_or_else(|| {
                    ErrorCode::invalid_argument(format!(
                        "system tag[{t}] must be staticIp::<l3Uuid>::<ip>"
                    ))
                })?;
                if !l3s.iter().any(|x| x.uuid == l3) {
                    return Err(ErrorCode::invalid_argument(format!(
                        "the l3 network[uuid:{l3}] of system tag[{t}] is not one of the vm's l3 networks"
                    )));
                }
                static_ips.push((l3.into(), ip.into()));
            } else if let Some(u) = t.strip_prefix("pciDevice::") {
                claims.pci.push(u.into());
            } else if let Some(rest) = t.strip_prefix("pciDeviceSpec::") {
                claims.pci_specs.push(parse_spec_claim(t, rest)?);
            } else if let Some(u) = t.strip_prefix("mdevDevice::") {
                claims.mdev.push(u.into());
            } else if let Some(rest) = t.strip_prefix("mdevDeviceSpec::") {
                claims.mdev_specs.push(parse_spec_claim(t, rest)?);
            }
        }
        if userdata > 1 {
            return Err(ErrorCode::invalid_argument(
                "only one userdata system tag is allowed, but multiple were given",
            ));
        }
        for (s, _) in &claims.pci_specs {
            if !self.pci_device_specs.iter().any(|x| &x.uuid == s) {
                return Err(arg_not_found("pciDeviceSpec", s, "PciDeviceSpecVO"));
            }
        }
        for (s, _) in &claims.mdev_specs {
            if !self.mdev_device_specs.iter().any(|x| &x.uuid == s) {
                return Err(arg_not_found("mdevDeviceSpec", s, "MdevDeviceSpecVO"));
            }
        }
        let mut pinned: Option<String> = None;
        let mut pin = |h: &str, what: &str| -> Result<(), ErrorCode> {
            match &pinned {
                Some(p) if p != h => Err(ErrorCode::operation(format!(
                    "{what} is on host[uuid:{h}] but other requested devices are on host[uuid:{p}]"
                ))),
                _ => {
                    pinned = Some(h.to_string());
                    Ok(())
                }
            }
        };
        for u in &claims.pci {
            let d = self
                .pci_devices
                .iter()
                .find(|d| &d.uuid == u)
                .ok_or_else(|| arg_not_found("pciDevice", u, "PciDeviceVO"))?;
            if !pci_passthrough_free(d) {
                return Err(ErrorCode::operation(format!(
                    "pci device[uuid:{u}] is not available: status[{}] vmInstanceUuid[{}] virtStatus[{}]",
                    d.status,
                    d.vm_instance_uuid.as_deref().unwrap_or("null"),
                    d.virt_status
                )));
            }
            pin(&d.host_uuid, &format!("pci device[uuid:{u}]"))?;
        }
        for u in &claims.mdev {
            let d = self
                .mdev_devices
                .iter()
                .find(|d| &d.uuid == u)
                .ok_or_else(|| arg_not_found("mdevDevice", u, "MdevDeviceVO"))?;
            if d.vm_instance_uuid.is_some() || d.state != "Enabled" {
                return Err(ErrorCode::operation(format!(
                    "mdev device[uuid:{u}] is already attached to vm[uuid:{}]",
                    d.vm_instance_uuid.as_deref().unwrap_or("null")
                )));
            }
            pin(&d.host_uuid, &format!("mdev device[uuid:{u}]"))?;
        }
        if claims.pci.iter().collect::<HashSet<_>>().len() != claims.pci.len()
            || claims.mdev.iter().collect::<HashSet<_>>().len() != claims.mdev.len()
        {
            return Err(ErrorCode::invalid_argument(
                "the same device is requested twice",
            ));
        }

        // The uuid conflict surfaces when the VO is persisted: an unhandled exception, SYS.1000.
        let uuid = p.resource_uuid.clone().unwrap_or_else(new_uuid);
        if self.uuid_exists(&uuid) {
            return Err(ErrorCode::internal(format!(
                "could not persist VmInstanceVO: a resource with uuid[{uuid}] already exists (duplicate primary key)"
            )));
        }

        // Placement: JustCreate allocates no host; the others start the VM (CreateStopped then
        // cold-stops it) so they need one.
        let host = if strategy == "JustCreate"
            && claims.pci.is_empty()
            && claims.pci_specs.is_empty()
            && claims.mdev.is_empty()
            && claims.mdev_specs.is_empty()
        {
            None
        } else {
            let req = PlacementReq {
                arch: arch.clone(),
                cpu,
                mem,
                zone: p.zone_uuid.as_deref(),
                cluster: p.cluster_uuid.as_deref(),
                host: p.host_uuid.as_deref(),
                pinned,
                prefer: None,
                pci_specs: claims.pci_specs.clone(),
                mdev_specs: claims.mdev_specs.clone(),
            };
            Some(self.place(&req)?)
        };
        let host_rec = host
            .as_ref()
            .and_then(|h| self.hosts.iter().find(|x| &x.uuid == h))
            .cloned();
        for l in &l3s {
            if let Some(h) = &host_rec {
                if l.zone_uuid != h.zone_uuid {
                    return Err(ErrorCode::operation(format!(
                        "l3 network[uuid:{}] is not in the zone of host[uuid:{}]",
                        l.uuid, h.uuid
                    )));
                }
            }
        }
        let ps = match &p.primary_storage_uuid_for_root_volume {
            Some(ps) => self
                .primary_storages
                .iter()
                .find(|x| &x.uuid == ps)
                .ok_or_else(|| {
                    arg_not_found("primaryStorageUuidForRootVolume", ps, "PrimaryStorageVO")
                })?
                .uuid
                .clone(),
            None => self
                .primary_storages
                .iter()
                .find(|x| match &host_rec {
                    Some(h) => x.attached_cluster_uuids.contains(&h.cluster_uuid),
                    None => true,
                })
                .map(|x| x.uuid.clone())
                .ok_or_else(|| {
                    ErrorCode::operation("no primary storage available for the root volume")
                })?,
        };

        // IPs.
        let mut taken = HashSet::new();
        let mut nics = Vec::new();
        for (i, l) in l3s.iter().enumerate() {
            let wanted = static_ips
                .iter()
                .find(|(x, _)| *x == l.uuid)
                .map(|(_, ip)| ip.as_str());
            let (ip, range) = self.allocate_ip(l, wanted, &taken)?;
            taken.insert(ip);
            let nic_uuid = new_uuid();
            let b = uuid::Uuid::parse_str(&nic_uuid)
                .map(|u| *u.as_bytes())
                .unwrap_or_default();
            nics.push(VmNic {
                uuid: nic_uuid,
                vm_instance_uuid: uuid.clone(),
                l3_network_uuid: l.uuid.clone(),
                ip: Some(ip.to_string()),
                mac: format!(
                    "fa:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    b[0], b[1], b[2], b[3], b[4]
                ),
                netmask: Some(range.netmask.clone()),
                gateway: Some(range.gateway.clone()),
                device_id: i as u32,
                internal_name: format!("vnic{}.{i}", self.nic_counter + 1),
                ..Default::default()
            });
        }
        self.nic_counter += 1;

        // Claim devices (the host is fixed now).
        let mut pci = claims.pci.clone();
        let mut mdev = claims.mdev.clone();
        if let Some(h) = &host {
            for (s, n) in &claims.pci_specs {
                let free: Vec<String> = self
                    .free_pci_on(h, s)
                    .into_iter()
                    .filter(|d| !pci.contains(d))
                    .take(*n)
                    .collect();
                pci.extend(free);
            }
            for (s, n) in &claims.mdev_specs {
                let free: Vec<String> = self
                    .free_mdev_on(h, s)
                    .into_iter()
                    .filter(|d| !mdev.contains(d))
                    .take(*n)
                    .collect();
                mdev.extend(free);
            }
        }
        for d in self
            .pci_devices
            .iter_mut()
            .filter(|d| pci.contains(&d.uuid))
        {
            d.vm_instance_uuid = Some(uuid.clone());
            d.status = "Attached".into();
            d.last_op_date = GsonTime::now();
        }
        for d in self
            .mdev_devices
            .iter_mut()
            .filter(|d| mdev.contains(&d.uuid))
        {
            d.vm_instance_uuid = Some(uuid.clone());
            d.status = "Attached".into();
            d.last_op_date = GsonTime::now();
        }

        let root_uuid = new_uuid();
        let root = Volume {
            uuid: root_uuid.clone(),
            name: format!("ROOT-for-{name}"),
            description: Some(format!("Root volume for VM[uuid:{uuid}]")),
            primary_storage_uuid: Some(ps),
            vm_instance_uuid: Some(uuid.clone()),
            root_image_uuid: Some(image.uuid.clone()),
            install_path: format!(
                "/zstack_ps/rootVolumes/acct-admin/vol-{root_uuid}/{root_uuid}.qcow2"
            ),
            format: if image.format == "iso" {
                "qcow2".into()
            } else {
                image.format.clone()
            },
            size: p.root_disk_size.unwrap_or(image.size),
            actual_size: image.actual_size,
            ..Default::default()
        };
        let state = match strategy {
            "JustCreate" => "Created",
            _ => "Starting",
        };
        let vm = VmInstance {
            uuid: uuid.clone(),
            name,
            description: p.description.clone(),
            zone_uuid: host_rec
                .as_ref()
                .map(|h| h.zone_uuid.clone())
                .or_else(|| p.zone_uuid.clone())
                .or_else(|| Some(l3s[0].zone_uuid.clone())),
            cluster_uuid: host_rec.as_ref().map(|h| h.cluster_uuid.clone()),
            host_uuid: if state == "Starting" {
                host.clone()
            } else {
                None
            },
            last_host_uuid: None,
            image_uuid: Some(image.uuid.clone()),
            instance_offering_uuid: offering,
            root_volume_uuid: Some(root_uuid),
            default_l3_network_uuid: Some(default_l3),
            platform: Some(p.platform.clone().unwrap_or_else(|| image.platform.clone())),
            architecture: Some(arch),
            guest_os_type: p
                .guest_os_type
                .clone()
                .or_else(|| image.guest_os_type.clone()),
            type_: vm_type.into(),
            cpu_num: cpu,
            memory_size: mem,
            allocator_strategy: Some("LeastVmPreferredHostAllocatorStrategy".into()),
            state: state.into(),
            vm_nics: nics,
            all_volumes: vec![root],
            ..Default::default()
        };
        self.vms.push(vm);
        let mut seen_user = HashSet::new();
        for t in &p.user_tags {
            if seen_user.insert(t.clone()) {
                self.add_tag(&uuid, "VmInstanceVO", t, "User");
            }
        }
        let mut seen_sys = HashSet::new();
        for t in &p.system_tags {
            if seen_sys.insert(t.clone()) {
                self.add_tag(&uuid, "VmInstanceVO", t, "System");
            }
        }
        Ok(uuid)
    }

    /// Completes a create: Running (InstantStart), Stopped (CreateStopped), Created (JustCreate).
    pub fn create_vm_finish(&mut self, uuid: &str, strategy: &str) -> Result<Value, ErrorCode> {
        let vm = self.vm_mut(uuid).ok_or_else(|| {
            ErrorCode::internal(format!("vm[uuid:{uuid}] vanished while being created"))
        })?;
        match strategy {
            "InstantStart" => {
                vm.state = "Running".into();
                vm.last_host_uuid = vm.host_uuid.clone();
            }
            "CreateStopped" => {
                vm.state = "Stopped".into();
                vm.last_host_uuid = vm.host_uuid.take();
            }
            _ => vm.state = "Created".into(),
        }
        vm.last_op_date = GsonTime::now();
        self.vm_result(uuid)
    }

    // ---------------------------------------------------------------- VM actions

    fn existing_vm(&self, uuid: &str) -> Result<&VmInstance, ErrorCode> {
        self.vm(uuid)
            .ok_or_else(|| arg_not_found("uuid", uuid, "VmInstanceVO"))
    }

    fn set_state(&mut self, uuid: &str, state: &str) {
        if let Some(v) = self.vm_mut(uuid) {
            v.state = state.into();
            v.last_op_date = GsonTime::now();
        }
    }

    /// Start: `Ok(true)` when a transition began, `Ok(false)` when already Running (no-op).
    pub fn start_begin(&mut self, uuid: &str, params: &Value) -> Result<bool, ErrorCode> {
        let vm = self.existing_vm(uuid)?.clone();
        match vm.state.as_str() {
            "Running" => return Ok(false),
            "Stopped" | "Created" => {}
            _ => return Err(wrong_state(&vm, "StartVmInstance")),
        }
        let host_param = params.get("hostUuid").and_then(Value::as_str);
        let cluster_param = params.get("clusterUuid").and_then(Value::as_str);
        if let Some(h) = host_param {
            if !self.hosts.iter().any(|x| x.uuid == h) {
                return Err(arg_not_found("hostUuid", h, "HostVO"));
            }
        }
        if let Some(c) = cluster_param {
            if !self.clusters.iter().any(|x| x.uuid == c) {
                return Err(arg_not_found("clusterUuid", c, "ClusterVO"));
            }
        }
        let req = PlacementReq {
            arch: vm.architecture.clone().unwrap_or_else(|| "x86_64".into()),
            cpu: vm.cpu_num,
            mem: vm.memory_size,
            zone: vm.zone_uuid.as_deref(),
            cluster: cluster_param,
            host: host_param,
            pinned: self.device_pin(uuid)?,
            prefer: vm.last_host_uuid.clone(),
            ..Default::default()
        };
        let host = self.place(&req)?;
        let cluster = self
            .hosts
            .iter()
            .find(|h| h.uuid == host)
            .map(|h| h.cluster_uuid.clone());
        let v = self.vm_mut(uuid).expect("checked above");
        v.host_uuid = Some(host);
        v.cluster_uuid = cluster;
        v.state = "Starting".into();
        v.last_op_date = GsonTime::now();
        Ok(true)
    }

    pub fn start_finish(&mut self, uuid: &str) -> Result<Value, ErrorCode> {
        if let Some(v) = self.vm_mut(uuid) {
            v.state = "Running".into();
            v.last_host_uuid = v.host_uuid.clone();
            v.last_op_date = GsonTime::now();
        }
        self.vm_result(uuid)
    }

    /// Stop: `Ok(false)` when already Stopped (no-op).
    pub fn stop_begin(&mut self, uuid: &str, params: &Value) -> Result<bool, ErrorCode> {
        if let Some(t) = params.get("type").and_then(Value::as_str) {
            if !matches!(t, "grace" | "cold") {
                return Err(ErrorCode::invalid_argument(format!(
                    "type[{t}] is not one of [grace, cold]"
                )));
            }
        }
        let vm = self.existing_vm(uuid)?.clone();
        match vm.state.as_str() {
            "Stopped" => Ok(false),
            "Running" => {
                self.set_state(uuid, "Stopping");
                Ok(true)
            }
            _ => Err(wrong_state(&vm, "StopVmInstance")),
        }
    }

    /// Stopped VMs release their host (ZStack nulls `hostUuid`, keeps `lastHostUuid`).
    pub fn stop_finish(&mut self, uuid: &str) -> Result<Value, ErrorCode> {
        if let Some(v) = self.vm_mut(uuid) {
            v.state = "Stopped".into();
            if v.host_uuid.is_some() {
                v.last_host_uuid = v.host_uuid.take();
            }
            v.last_op_date = GsonTime::now();
        }
        self.vm_result(uuid)
    }

    /// Reboot: only from Running; otherwise VM.1003 → SYS.1006 → VM.1010.
    pub fn reboot_begin(&mut self, uuid: &str) -> Result<(), ErrorCode> {
        let vm = self.existing_vm(uuid)?.clone();
        if vm.state != "Running" {
            return Err(
                ErrorCode::new("VM.1003", format!("unable to reboot vm[uuid:{uuid}]"))
                    .with_cause(wrong_state(&vm, "RebootVmInstance")),
            );
        }
        self.set_state(uuid, "Rebooting");
        Ok(())
    }

    pub fn reboot_finish(&mut self, uuid: &str) -> Result<Value, ErrorCode> {
        self.set_state(uuid, "Running");
        self.vm_result(uuid)
    }

    /// Destroy: `Ok(false)` when nothing is to be done (missing or already Destroyed).
    pub fn destroy_begin(&mut self, uuid: &str) -> Result<bool, ErrorCode> {
        let Some(vm) = self.vm(uuid).cloned() else {
            return Ok(false);
        };
        match vm.state.as_str() {
            "Destroyed" => Ok(false),
            "Created" | "Running" | "Stopped" | "Starting" | "Stopping" | "Rebooting"
            | "Migrating" | "Error" | "Unknown" | "Paused" | "Crashed" | "NoState" => {
                self.set_state(uuid, "Destroying");
                Ok(true)
            }
            _ => Err(wrong_state(&vm, "DestroyVmInstance")),
        }
    }

    /// Destroyed VMs keep IPs, tags and devices until expunged (§11.5), but not their host.
    pub fn destroy_finish(&mut self, uuid: &str) -> Value {
        if let Some(v) = self.vm_mut(uuid) {
            v.state = "Destroyed".into();
            if v.host_uuid.is_some() {
                v.last_host_uuid = v.host_uuid.take();
            }
            v.last_op_date = GsonTime::now();
        }
        json!({})
    }

    pub fn expunge_begin(&mut self, uuid: &str) -> Result<(), ErrorCode> {
        let vm = self.existing_vm(uuid)?.clone();
        if vm.state != "Destroyed" {
            return Err(wrong_state(&vm, "ExpungeVmInstance"));
        }
        self.set_state(uuid, "Expunging");
        Ok(())
    }

    /// Deletes the VM and frees its IPs (with the NICs), tags and devices.
    pub fn expunge_finish(&mut self, uuid: &str) -> Value {
        let Some(pos) = self.vms.iter().position(|v| v.uuid == uuid) else {
            return json!({});
        };
        let vm = self.vms.remove(pos);
        let mut owned: HashSet<String> = HashSet::from([vm.uuid.clone()]);
        owned.extend(vm.vm_nics.iter().map(|n| n.uuid.clone()));
        owned.extend(vm.all_volumes.iter().map(|n| n.uuid.clone()));
        self.drop_tags_of(&owned);
        for d in self
            .pci_devices
            .iter_mut()
            .filter(|d| d.vm_instance_uuid.as_deref() == Some(uuid))
        {
            d.vm_instance_uuid = None;
            d.status = "Active".into();
            d.last_op_date = GsonTime::now();
        }
        for d in self
            .mdev_devices
            .iter_mut()
            .filter(|d| d.vm_instance_uuid.as_deref() == Some(uuid))
        {
            d.vm_instance_uuid = None;
            d.status = "Active".into();
            d.last_op_date = GsonTime::now();
        }
        json!({})
    }

    pub fn recover_begin(&mut self, uuid: &str) -> Result<(), ErrorCode> {
        let vm = self.existing_vm(uuid)?.clone();
        if vm.state != "Destroyed" {
            return Err(wrong_state(&vm, "RecoverVmInstance"));
        }
        Ok(())
    }

    pub fn recover_finish(&mut self, uuid: &str) -> Result<Value, ErrorCode> {
        self.set_state(uuid, "Stopped");
        self.vm_result(uuid)
    }

    /// `updateVmInstance`: name / description.
    pub fn update_vm(&mut self, uuid: &str, params: &Value) -> Result<Value, ErrorCode> {
        self.existing_vm(uuid)?;
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(n) = &name {
            if n.is_empty() || n.chars().count() > 255 {
                return Err(ErrorCode::invalid_argument(
                    "name must be 1..255 characters",
                ));
            }
        }
        let desc = params
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string);
        let v = self.vm_mut(uuid).expect("checked above");
        if let Some(n) = name {
            v.name = n;
        }
        if desc.is_some() {
            v.description = desc;
        }
        v.last_op_date = GsonTime::now();
        self.vm_result(uuid)
    }

    // ---------------------------------------------------------------- PCI / mdev

    fn check_device_vm(&self, vm_uuid: &str, dev_host: &str) -> Result<(), ErrorCode> {
        let vm = self.existing_vm(vm_uuid)?;
        if matches!(vm.state.as_str(), "Destroyed" | "Expunging" | "Destroying") {
            return Err(wrong_state(vm, "AttachPciDeviceToVm"));
        }
        let host = self
            .hosts
            .iter()
            .find(|h| h.uuid == dev_host)
            .ok_or_else(|| {
                ErrorCode::internal(format!("host[uuid:{dev_host}] of the device is missing"))
            })?;
        if vm
            .architecture
            .as_deref()
            .is_some_and(|a| a != host.architecture)
        {
            return Err(ErrorCode::operation(format!(
                "the device is on a {} host but vm[uuid:{vm_uuid}] is {}",
                host.architecture,
                vm.architecture.as_deref().unwrap_or("?")
            )));
        }
        if let Some(h) = &vm.host_uuid {
            if h != dev_host {
                return Err(ErrorCode::operation(format!(
                    "vm[uuid:{vm_uuid}] runs on host[uuid:{h}], the device is on host[uuid:{dev_host}]"
                )));
            }
        }
        if let Some(p) = self.device_pin(vm_uuid)? {
            if p != dev_host {
                return Err(ErrorCode::operation(format!(
                    "vm[uuid:{vm_uuid}] already has devices on host[uuid:{p}], the device is on host[uuid:{dev_host}]"
                )));
            }
        }
        Ok(())
    }

    /// `AttachPciDeviceToVm`: claims the device exclusively (SYS.1006 if attached elsewhere).
    pub fn attach_pci(&mut self, dev: &str, vm_uuid: &str) -> Result<(), ErrorCode> {
        let d = self
            .pci_devices
            .iter()
            .find(|d| d.uuid == dev)
            .ok_or_else(|| arg_not_found("pciDeviceUuid", dev, "PciDeviceVO"))?
            .clone();
        if d.vm_instance_uuid.as_deref() == Some(vm_uuid) {
            self.existing_vm(vm_uuid)?;
            return Ok(()); // already attached to this VM: idempotent (unconfirmed)
        }
        if let Some(other) = &d.vm_instance_uuid {
            return Err(ErrorCode::operation(format!(
                "pci device[uuid:{dev}] is already attached to vm[uuid:{other}]"
            )));
        }
        if !pci_passthrough_free(&d) {
            return Err(ErrorCode::operation(format!(
                "pci device[uuid:{dev}] cannot be passed through: state[{}] status[{}] virtStatus[{}]",
                d.state, d.status, d.virt_status
            )));
        }
        self.check_device_vm(vm_uuid, &d.host_uuid)?;
        let d = self
            .pci_devices
            .iter_mut()
            .find(|x| x.uuid == dev)
            .expect("found above");
        d.vm_instance_uuid = Some(vm_uuid.into());
        d.status = "Attached".into();
        d.last_op_date = GsonTime::now();
        Ok(())
    }

    /// `DetachPciDeviceFromVm`.
    pub fn detach_pci(&mut self, dev: &str, vm_uuid: &str) -> Result<(), ErrorCode> {
        let d = self
            .pci_devices
            .iter_mut()
            .find(|d| d.uuid == dev)
            .ok_or_else(|| arg_not_found("pciDeviceUuid", dev, "PciDeviceVO"))?;
        if d.vm_instance_uuid.as_deref() != Some(vm_uuid) {
            return Err(ErrorCode::operation(format!(
                "pci device[uuid:{dev}] is not attached to vm[uuid:{vm_uuid}]"
            )));
        }
        d.vm_instance_uuid = None;
        d.status = "Active".into();
        d.last_op_date = GsonTime::now();
        Ok(())
    }

    pub fn pci_result(&self, dev: &str) -> Result<Value, ErrorCode> {
        self.pci_devices
            .iter()
            .find(|d| d.uuid == dev)
            .map(|d| json!({ "inventory": d }))
            .ok_or_else(|| ErrorCode::new("SYS.1003", format!("pci device[uuid:{dev}] not found")))
    }

    /// `AddPciDeviceSpecToVmInstance`: claims `n` free devices of the spec on the VM's (last)
    /// host, or on any host of its architecture when it has none yet.
    pub fn add_pci_spec(
        &mut self,
        spec: &str,
        vm_uuid: &str,
        n: usize,
    ) -> Result<Value, ErrorCode> {
        if !self.pci_device_specs.iter().any(|s| s.uuid == spec) {
            return Err(arg_not_found("pciSpecUuid", spec, "PciDeviceSpecVO"));
        }
        let vm = self.existing_vm(vm_uuid)?.clone();
        if n == 0 {
            return Err(ErrorCode::invalid_argument(
                "pciDeviceNumber must be positive",
            ));
        }
        let pinned = match self.device_pin(vm_uuid)? {
            Some(p) => Some(p),
            None => vm.host_uuid.clone(),
        };
        let arch = vm.architecture.clone().unwrap_or_default();
        let host = self
            .hosts
            .iter()
            .filter(|h| h.architecture == arch)
            .filter(|h| pinned.as_deref().is_none_or(|p| p == h.uuid))
            .find(|h| self.free_pci_on(&h.uuid, spec).len() >= n)
            .map(|h| h.uuid.clone())
            .ok_or_else(|| {
                ErrorCode::operation(format!(
                    "no host usable by vm[uuid:{vm_uuid}] has {n} free pci devices of spec[uuid:{spec}]"
                ))
            })?;
        let chosen: Vec<String> = self.free_pci_on(&host, spec).into_iter().take(n).collect();
        for d in self
            .pci_devices
            .iter_mut()
            .filter(|d| chosen.contains(&d.uuid))
        {
            d.vm_instance_uuid = Some(vm_uuid.into());
            d.status = "Attached".into();
            d.last_op_date = GsonTime::now();
        }
        Ok(
            json!({"inventory": {"vmInstanceUuid": vm_uuid, "pciSpecUuid": spec, "pciDeviceNumber": n,
            "createDate": GsonTime::now(), "lastOpDate": GsonTime::now()}}),
        )
    }

    /// Attach a vGPU slice.
    pub fn attach_mdev(&mut self, dev: &str, vm_uuid: &str) -> Result<Value, ErrorCode> {
        let d = self
            .mdev_devices
            .iter()
            .find(|d| d.uuid == dev)
            .ok_or_else(|| arg_not_found("mdevDeviceUuid", dev, "MdevDeviceVO"))?
            .clone();
        if let Some(other) = &d.vm_instance_uuid {
            if other != vm_uuid {
                return Err(ErrorCode::operation(format!(
                    "mdev device[uuid:{dev}] is already attached to vm[uuid:{other}]"
                )));
            }
        } else {
            self.check_device_vm(vm_uuid, &d.host_uuid)?;
        }
        let d = self
            .mdev_devices
            .iter_mut()
            .find(|x| x.uuid == dev)
            .expect("found above");
        d.vm_instance_uuid = Some(vm_uuid.into());
        d.status = "Attached".into();
        d.last_op_date = GsonTime::now();
        Ok(json!({ "inventory": d }))
    }

    /// Detach a vGPU slice.
    pub fn detach_mdev(&mut self, dev: &str, vm_uuid: &str) -> Result<Value, ErrorCode> {
        let d = self
            .mdev_devices
            .iter_mut()
            .find(|d| d.uuid == dev)
            .ok_or_else(|| arg_not_found("mdevDeviceUuid", dev, "MdevDeviceVO"))?;
        if d.vm_instance_uuid.as_deref() != Some(vm_uuid) {
            return Err(ErrorCode::operation(format!(
                "mdev device[uuid:{dev}] is not attached to vm[uuid:{vm_uuid}]"
            )));
        }
        d.vm_instance_uuid = None;
        d.status = "Active".into();
        d.last_op_date = GsonTime::now();
        Ok(json!({ "inventory": d }))
    }

    /// Free passthrough devices a VM could use (`candidate-pci-devices`).
    pub fn candidate_pci(&self, vm_uuid: &str) -> Result<Vec<Value>, ErrorCode> {
        let vm = self.existing_vm(vm_uuid)?;
        let pin = self.device_pin(vm_uuid)?.or_else(|| vm.host_uuid.clone());
        Ok(self
            .pci_devices
            .iter()
            .filter(|d| pci_passthrough_free(d))
            .filter(|d| pin.as_deref().is_none_or(|p| p == d.host_uuid))
            .filter(|d| {
                self.hosts.iter().any(|h| {
                    h.uuid == d.host_uuid
                        && Some(h.architecture.as_str()) == vm.architecture.as_deref()
                })
            })
            .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
            .collect())
    }

    // ---------------------------------------------------------------- images

    /// `AddImage`: inserts the image as Downloading (the simulator never downloads the URL).
    pub fn add_image_begin(&mut self, p: &AddImageParams) -> Result<String, ErrorCode> {
        if let Some(r) = &p.resource_uuid {
            if !is_zstack_uuid(r) {
                return Err(ErrorCode::invalid_argument(format!(
                    "resourceUuid[{r}] is not a valid uuid"
                )));
            }
        }
        let name = p.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(ErrorCode::invalid_argument("field[name] is mandatory"));
        }
        let url = p.url.clone().unwrap_or_default();
        let ok_scheme = [
            "http://",
            "https://",
            "file:///",
            "ftp://",
            "sftp://",
            "upload://",
            "zstore://",
        ]
        .iter()
        .any(|s| url.starts_with(s));
        if !ok_scheme {
            return Err(ErrorCode::invalid_argument(format!(
                "url[{url}] is not a supported image url"
            )));
        }
        if p.backup_storage_uuids.is_empty() {
            return Err(ErrorCode::invalid_argument(
                "field[backupStorageUuids] must not be empty",
            ));
        }
        for b in &p.backup_storage_uuids {
            if !self.backup_storages.iter().any(|x| &x.uuid == b) {
                return Err(arg_not_found("backupStorageUuids", b, "BackupStorageVO"));
            }
        }
        let media = p
            .media_type
            .clone()
            .unwrap_or_else(|| "RootVolumeTemplate".into());
        if !matches!(
            media.as_str(),
            "RootVolumeTemplate" | "ISO" | "DataVolumeTemplate"
        ) {
            return Err(ErrorCode::invalid_argument(format!(
                "mediaType[{media}] is invalid"
            )));
        }
        let format = p.format.clone().unwrap_or_else(|| {
            if media == "ISO" {
                "iso".into()
            } else {
                "qcow2".into()
            }
        });
        if !matches!(format.as_str(), "qcow2" | "raw" | "iso" | "vmtx" | "vhd") {
            return Err(ErrorCode::invalid_argument(format!(
                "format[{format}] is invalid"
            )));
        }
        for t in &p.system_tags {
            validate_system_tag_format(t)?;
        }
        let uuid = p.resource_uuid.clone().unwrap_or_else(new_uuid);
        if self.uuid_exists(&uuid) {
            return Err(ErrorCode::internal(format!(
                "could not persist ImageVO: a resource with uuid[{uuid}] already exists"
            )));
        }
        let img = Image {
            uuid: uuid.clone(),
            name,
            description: p.description.clone(),
            status: "Downloading".into(),
            size: 0,
            actual_size: 0,
            url: Some(url),
            media_type: media,
            guest_os_type: p.guest_os_type.clone(),
            platform: p.platform.clone().unwrap_or_else(|| "Linux".into()),
            architecture: p.architecture.clone().unwrap_or_else(|| "x86_64".into()),
            format,
            system: p.system.unwrap_or(false),
            backup_storage_refs: p
                .backup_storage_uuids
                .iter()
                .map(|b| ImageBackupStorageRef {
                    image_uuid: uuid.clone(),
                    backup_storage_uuid: b.clone(),
                    install_path: format!("zstore://{uuid}"),
                    status: "Downloading".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        self.images.push(img);
        for t in &p.user_tags {
            self.add_tag(&uuid, "ImageVO", t, "User");
        }
        for t in &p.system_tags {
            self.add_tag(&uuid, "ImageVO", t, "System");
        }
        Ok(uuid)
    }

    pub fn add_image_finish(&mut self, uuid: &str) -> Result<Value, ErrorCode> {
        let img = self
            .images
            .iter_mut()
            .find(|i| i.uuid == uuid)
            .ok_or_else(|| {
                ErrorCode::new(
                    "SYS.1002",
                    format!("image[uuid:{uuid}] vanished while downloading"),
                )
            })?;
        img.status = "Ready".into();
        img.size = 2_361_393_152;
        img.actual_size = 658_505_728;
        for r in &mut img.backup_storage_refs {
            r.status = "Ready".into();
        }
        img.last_op_date = GsonTime::now();
        Ok(json!({ "inventory": img }))
    }

    /// A failed download removes the record (§9).
    pub fn add_image_abort(&mut self, uuid: &str) {
        self.images.retain(|i| i.uuid != uuid);
        self.tags.retain(|t| t.resource_uuid != uuid);
    }

    /// `DeleteImage` (Delay policy): status Deleted; missing image succeeds.
    pub fn delete_image(&mut self, uuid: &str) -> Value {
        if let Some(i) = self.images.iter_mut().find(|i| i.uuid == uuid) {
            i.status = "Deleted".into();
            i.last_op_date = GsonTime::now();
        }
        json!({})
    }

    /// `expungeImage` / `recoverImage`.
    pub fn image_action(&mut self, uuid: &str, action: &str) -> Result<Value, ErrorCode> {
        let img = self
            .images
            .iter_mut()
            .find(|i| i.uuid == uuid)
            .ok_or_else(|| arg_not_found("imageUuid", uuid, "ImageVO"))?;
        if img.status != "Deleted" {
            return Err(ErrorCode::operation(format!(
                "image[uuid:{uuid}] is not Deleted (status {}), cannot {action}",
                img.status
            )));
        }
        if action == "expungeImage" {
            self.add_image_abort(uuid);
            Ok(json!({}))
        } else {
            img.status = "Ready".into();
            img.last_op_date = GsonTime::now();
            Ok(json!({ "inventory": img }))
        }
    }
}

fn r_gateway(r: &IpRange) -> Option<Ipv4Addr> {
    r.gateway.parse().ok()
}

fn session_view(s: &Session, ttl: u64) -> SessionView {
    SessionView {
        uuid: s.uuid.clone(),
        account_uuid: s.account_uuid.clone(),
        user_uuid: s.account_uuid.clone(),
        user_type: "AccountVO".into(),
        expired_date: GsonTime(s.expires_at(ttl)),
        create_date: GsonTime(s.created_at),
    }
}

fn pci_passthrough_free(d: &PciDevice) -> bool {
    d.vm_instance_uuid.is_none()
        && d.state == "Enabled"
        && d.status == "Active"
        && !d.virt_status.ends_with("_VIRTUALIZED")
}

/// Java's `Base64.getDecoder()` accepts missing padding; so do we.
fn lenient_b64() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn parse_spec_claim(tag: &str, rest: &str) -> Result<(String, usize), ErrorCode> {
    let (spec, n) = rest.split_once("::").ok_or_else(|| {
        ErrorCode::invalid_argument(format!(
            "system tag[{tag}] must be <prefix>::<specUuid>::<number>"
        ))
    })?;
    let n: usize = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        ErrorCode::invalid_argument(format!(
            "system tag[{tag}]: the number must be a positive integer"
        ))
    })?;
    Ok((spec.to_string(), n))
}

/// System tags must look like `key::value`; the MN rejects tags no SystemTag pattern matches.
/// Unknown keys are accepted (the MN has hundreds of patterns), malformed ones are not.
pub(crate) fn validate_system_tag_format(t: &str) -> Result<(), ErrorCode> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new("^[A-Za-z][A-Za-z0-9_.-]*::.+").expect("static regex"));
    if re.is_match(t) {
        Ok(())
    } else {
        Err(ErrorCode::invalid_argument(format!(
            "no system tag matches [{t}]: system tags have the form key::value"
        )))
    }
}

impl Source for CloudState {
    fn list(&self, kind: Kind) -> Vec<Value> {
        fn all<T: Serialize>(v: &[T]) -> Vec<Value> {
            v.iter()
                .map(|x| serde_json::to_value(x).unwrap_or(Value::Null))
                .collect()
        }
        match kind {
            Kind::Vm => all(&self.vms),
            Kind::Nic => self
                .vms
                .iter()
                .flat_map(|v| v.vm_nics.iter())
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
                .collect(),
            Kind::Volume => self
                .vms
                .iter()
                .flat_map(|v| v.all_volumes.iter())
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
                .collect(),
            Kind::Image => all(&self.images),
            Kind::ImageBsRef => self
                .images
                .iter()
                .flat_map(|i| i.backup_storage_refs.iter())
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
                .collect(),
            Kind::Offering => all(&self.instance_offerings),
            Kind::L3 => all(&self.l3_networks),
            Kind::IpRange => self
                .l3_networks
                .iter()
                .flat_map(|l| l.ip_ranges.iter())
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
                .collect(),
            Kind::NetworkService => self
                .l3_networks
                .iter()
                .flat_map(|l| l.network_services.iter())
                .map(|n| serde_json::to_value(n).unwrap_or(Value::Null))
                .collect(),
            Kind::Zone => all(&self.zones),
            Kind::Cluster => all(&self.clusters),
            Kind::Host => self
                .hosts
                .iter()
                .map(|h| serde_json::to_value(self.host_view(h)).unwrap_or(Value::Null))
                .collect(),
            Kind::PrimaryStorage => all(&self.primary_storages),
            Kind::BackupStorage => all(&self.backup_storages),
            Kind::PciDevice => all(&self.pci_devices),
            Kind::Gpu => self
                .pci_devices
                .iter()
                .filter(|d| d.type_.starts_with("GPU_"))
                .map(|d| {
                    let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
                    let mem = self
                        .pci_device_specs
                        .iter()
                        .find(|s| Some(&s.uuid) == d.pci_spec_uuid.as_ref())
                        .and_then(|s| s.ram_size);
                    if let Value::Object(m) = &mut v {
                        m.insert(
                            "serialNumber".into(),
                            json!(format!("SIM{}", &d.uuid[..12])),
                        );
                        m.insert("memory".into(), json!(mem));
                        let watts = if mem.unwrap_or(0) >= 32 << 30 {
                            250
                        } else {
                            70
                        };
                        m.insert("power".into(), json!(watts));
                        m.insert("isDriverLoaded".into(), json!(true));
                    }
                    v
                })
                .collect(),
            Kind::PciSpec => all(&self.pci_device_specs),
            Kind::MdevDevice => all(&self.mdev_devices),
            Kind::MdevSpec => all(&self.mdev_device_specs),
            Kind::SystemTag => self
                .tags
                .iter()
                .filter(|t| t.type_ == "System")
                .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                .collect(),
            Kind::UserTag => self
                .tags
                .iter()
                .filter(|t| t.type_ == "User")
                .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                .collect(),
        }
    }

    fn tags_of(&self, resource_uuid: &str, type_: &str) -> Vec<String> {
        self.tags
            .iter()
            .filter(|t| t.resource_uuid == resource_uuid && t.type_ == type_)
            .map(|t| t.tag.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud() -> CloudState {
        CloudState::from_inventory(
            &Inventory::default_seed(),
            &("admin".into(), "password".into()),
        )
    }

    fn params(c: &CloudState, image: &str, offering: &str) -> CreateVmParams {
        CreateVmParams {
            name: Some("vm".into()),
            image_uuid: Some(
                c.images
                    .iter()
                    .find(|i| i.name == image)
                    .unwrap()
                    .uuid
                    .clone(),
            ),
            instance_offering_uuid: Some(
                c.instance_offerings
                    .iter()
                    .find(|o| o.name == offering)
                    .unwrap()
                    .uuid
                    .clone(),
            ),
            l3_network_uuids: vec![c.l3_networks[0].uuid.clone()],
            ..Default::default()
        }
    }

    #[test]
    fn uuid_format_check() {
        assert!(is_zstack_uuid(&new_uuid()));
        assert!(!is_zstack_uuid("not-a-uuid"));
        assert!(!is_zstack_uuid("0123456789abcdef0123456789abcdef")); // version nibble 0
    }

    #[test]
    fn create_allocates_first_free_ip_and_capacity() {
        let mut c = cloud();
        let p = params(&c, "ubuntu-22.04-amd64", "xlarge");
        let a = c.create_vm_begin(&p).unwrap();
        let b = c.create_vm_begin(&p).unwrap();
        let ip = |c: &CloudState, u: &str| c.vm(u).unwrap().vm_nics[0].ip.clone().unwrap();
        assert_eq!(ip(&c, &a), "172.20.0.10");
        assert_eq!(ip(&c, &b), "172.20.0.11");
        let host = c.vm(&a).unwrap().host_uuid.clone().unwrap();
        assert!(c
            .hosts
            .iter()
            .any(|h| h.uuid == host && h.architecture == "x86_64"));
        // 2 hosts x 128 GiB / 64 GiB = 4 xlarge VMs; the 5th does not fit.
        c.create_vm_begin(&p).unwrap();
        c.create_vm_begin(&p).unwrap();
        let e = c.create_vm_begin(&p).unwrap_err();
        assert_eq!(e.code, "SYS.1006");
        assert!(e.chain_contains("HOST_ALLOCATION.1001"));
        assert_eq!(c.vms.len(), 4, "a failed create leaves nothing behind");
    }

    #[test]
    fn userdata_rules() {
        let mut c = cloud();
        let mut p = params(&c, "ubuntu-22.04-arm64", "small");
        p.system_tags = vec!["userdata::***".into()];
        assert_eq!(c.create_vm_begin(&p).unwrap_err().code, "SYS.1007");
        p.system_tags = vec![
            "userdata::I2Nsb3VkLWNvbmZpZw".into(),
            "userdata::eA==".into(),
        ];
        assert_eq!(c.create_vm_begin(&p).unwrap_err().code, "SYS.1007");
        p.system_tags = vec!["userdata::I2Nsb3VkLWNvbmZpZw".into()]; // unpadded is fine
        c.create_vm_begin(&p).unwrap();
    }
}
