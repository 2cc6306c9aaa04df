//! The state file: seeding a fresh cloud from fixtures, loading and saving it, and settling what
//! a restart interrupted.

use super::identity::{AccessKey, Account, ADMIN_ACCOUNT_UUID};
use super::jobs::JobOutcome;
use super::{sha512_hex, CloudState};
use crate::error::{ErrorCode, SimError};
use crate::inventory::Inventory;
use chrono::Utc;
use std::path::Path;

/// Version of the state-file layout (bump on incompatible changes).
const STATE_FORMAT: u32 = 1;

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
        let mut settled = Vec::new();
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
            settled.push((v.uuid.clone(), to));
        }
        // What the interrupted transitions do to the VMs' load-balancer refs.
        for (u, to) in settled {
            match to {
                "Running" => self.set_lb_nic_status(&u, "Active"),
                "Stopped" => self.set_lb_nic_status(&u, "Inactive"),
                _ => self.remove_lb_nics_of(&u),
            }
        }
    }
}
