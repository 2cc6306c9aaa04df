//! A cluster's etcd through the v3 API (the `etcd-client` crate, gRPC over TLS): membership —
//! list, add, remove with quorum checks — and snapshots, as a control-plane replacement needs
//! them. kprov authenticates with a short-lived client certificate it mints from the cluster's
//! etcd CA in the state store ([`Access::from_ca`]); the key never leaves memory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::pki::{self, CaPair, PkiError};

/// Common name of the client certificate kprov uses with etcd.
pub const CLIENT_CN: &str = "kprov-etcd-client";
/// How long that certificate is valid.
const CLIENT_CERT_VALIDITY: Duration = Duration::from_secs(3600);
/// Timeout of one call, and of connecting.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A replacement member counts as caught up when its raft index is at most this far behind
/// the leader's (a busy cluster applies thousands of entries a second; an idle one none).
pub const MAX_RAFT_LAG: u64 = 1000;

/// What can go wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The client certificate could not be made.
    #[error("cannot make an etcd client certificate from the cluster's etcd CA: {0}")]
    Pki(#[from] PkiError),
    /// No endpoint answered.
    #[error("cannot reach etcd at {endpoints}: {source}; check that the control plane runs and the endpoint is reachable")]
    Connect {
        /// The endpoints tried.
        endpoints: String,
        /// Why.
        source: etcd_client::Error,
    },
    /// A call failed.
    #[error("etcd {call} failed: {source}")]
    Call {
        /// The call (`MemberList`, …).
        call: &'static str,
        /// Why.
        source: etcd_client::Error,
    },
    /// Removing the member would leave too few healthy members for a quorum.
    #[error("removing etcd member {member} would lose quorum: {healthy} healthy member(s) would remain of {remaining}, {needed} needed; nothing was removed. fix: bring the unhealthy members back (or replace them first)")]
    QuorumLoss {
        /// The member asked for.
        member: String,
        /// Healthy members other than it.
        healthy: usize,
        /// Voting members after the removal.
        remaining: usize,
        /// The quorum of those.
        needed: usize,
    },
    /// The last voting member cannot be removed.
    #[error("etcd member {0} is the cluster's only voting member; removing it ends the cluster. fix: add its replacement first")]
    LastMember(String),
    /// The replacement that must be running before an old member goes is not.
    #[error("the replacement etcd member {name} is not ready: {why}; nothing was removed. fix: wait until it has joined and caught up, then run again")]
    ReplacementNotReady {
        /// Its name.
        name: String,
        /// What is missing.
        why: String,
    },
    /// The snapshot could not be written.
    #[error("cannot write the etcd snapshot to {path}: {source}")]
    Snapshot {
        /// The destination.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where etcd is and the credentials to use (CA certificate, client certificate and key, PEM).
#[derive(Clone)]
pub struct Access {
    /// Client URLs (`https://10.0.0.5:2379`).
    pub endpoints: Vec<String>,
    /// Where to reach a member by name instead of its advertised client URL: the loopback end
    /// of a port-forward to its pod, when etcd is reached through the API server.
    pub member_endpoints: std::collections::BTreeMap<String, String>,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// Access to `endpoints` with a client certificate (CN [`CLIENT_CN`], one hour) signed by
    /// the cluster's etcd CA, which etcd trusts for clients (kubeadm's `--trusted-ca-file`).
    pub fn from_ca(etcd_ca: &CaPair, endpoints: Vec<String>) -> Result<Access, EtcdError> {
        let (cert_pem, key_pem) =
            pki::sign_client_cert(etcd_ca, CLIENT_CN, &[], CLIENT_CERT_VALIDITY)?;
        Ok(Access {
            endpoints,
            member_endpoints: Default::default(),
            ca_pem: etcd_ca.cert_pem.clone(),
            cert_pem,
            key_pem,
        })
    }

    fn options(&self) -> ConnectOptions {
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        ConnectOptions::new()
            .with_tls(tls)
            .with_timeout(CALL_TIMEOUT)
            .with_connect_timeout(CALL_TIMEOUT)
    }

    /// A client for `endpoints` (all of them, or one member's).
    async fn client(&self, endpoints: &[String]) -> Result<Client, EtcdError> {
        Client::connect(endpoints, Some(self.options()))
            .await
            .map_err(|source| EtcdError::Connect {
                endpoints: endpoints.join(","),
                source,
            })
    }
}

/// One etcd member as `MemberList` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// Member id.
    pub id: u64,
    /// Name (empty for a member added but not started yet).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs (empty until started).
    pub client_urls: Vec<String>,
    /// A non-voting learner.
    pub is_learner: bool,
}

/// One member's answer to `Status`, when it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    /// Its raft index.
    pub raft_index: u64,
    /// The leader's member id as it sees it.
    pub leader: u64,
}

/// What [`Etcd::remove_member`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// The member was removed.
    Removed(Member),
    /// No member of that name: removed before (a re-run), nothing to do.
    AlreadyGone,
}

/// A connection to a cluster's etcd.
pub struct Etcd {
    access: Access,
    client: Client,
}

impl Etcd {
    /// Connect to any of `access`'s endpoints.
    pub async fn connect(access: &Access) -> Result<Etcd, EtcdError> {
        let client = access.client(&access.endpoints).await?;
        Ok(Etcd {
            access: access.clone(),
            client,
        })
    }

    /// Every member (`MemberList`).
    pub async fn members(&mut self) -> Result<Vec<Member>, EtcdError> {
        let resp = self
            .client
            .member_list()
            .await
            .map_err(|source| EtcdError::Call {
                call: "MemberList",
                source,
            })?;
        Ok(resp
            .members()
            .iter()
            .map(|m| Member {
                id: m.id(),
                name: m.name().to_string(),
                peer_urls: m.peer_urls().to_vec(),
                client_urls: m.client_urls().to_vec(),
                is_learner: m.is_learner(),
            })
            .collect())
    }

    /// Add a member that will listen for peers at `peer_url` (`MemberAdd`); it joins when it
    /// is started with `--initial-cluster-state existing`. Returns its id.
    pub async fn add_member(&mut self, peer_url: &str) -> Result<u64, EtcdError> {
        let mut tries = 0;
        loop {
            match self.client.member_add([peer_url.to_string()], None).await {
                Ok(resp) => return Ok(resp.member().map(|m| m.id()).unwrap_or_default()),
                Err(e) if unavailable(&e) && tries < RECONFIG_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(RECONFIG_WAIT).await;
                }
                Err(source) => {
                    return Err(EtcdError::Call {
                        call: "MemberAdd",
                        source,
                    })
                }
            }
        }
    }

    /// `Status` of one member, asked at its own client URL; `None` when it does not answer.
    pub async fn health(&self, member: &Member) -> Option<Health> {
        let url = match self.access.member_endpoints.get(&member.name) {
            Some(forwarded) => forwarded.clone(),
            None => member.client_urls.first()?.clone(),
        };
        let mut c = self.access.client(&[url]).await.ok()?;
        let s = c.status().await.ok()?;
        Some(Health {
            raft_index: s.raft_index(),
            leader: s.leader(),
        })
    }

    /// Remove member `name` (`MemberRemove`), only when that keeps a quorum of healthy members
    /// and — when `replacement` is given — that member has joined, is a voting member, answers
    /// and is within [`MAX_RAFT_LAG`] of the leader. A member already gone is not an error
    /// (a re-run after a kill).
    pub async fn remove_member(
        &mut self,
        name: &str,
        replacement: Option<&str>,
    ) -> Result<Removal, EtcdError> {
        let mut tries = 0;
        loop {
            let members = self.members().await?;
            let Some(target) = members.iter().find(|m| m.name == name).cloned() else {
                return Ok(Removal::AlreadyGone);
            };
            let healthy = self.check_removal(&target, &members, replacement).await?;
            // Without a leader (an election after a member died) etcd drops the proposal and
            // the call only times out: wait for one first.
            let led = healthy.iter().any(|(_, h)| h.leader != 0);
            let result = if led {
                self.client.member_remove(target.id).await.map(|_| ())
            } else {
                Err(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
                    "no etcd leader yet",
                )))
            };
            match result {
                Ok(()) => return Ok(Removal::Removed(target)),
                // "not now", or no answer (the removal may have happened: the next pass lists)
                Err(e) if retryable(&e) && tries < RECONFIG_RETRIES => {
                    tries += 1;
                    tracing::debug!("etcd MemberRemove {name}: {e}; trying again");
                    tokio::time::sleep(RECONFIG_WAIT).await;
                }
                Err(source) => {
                    return Err(EtcdError::Call {
                        call: "MemberRemove",
                        source,
                    })
                }
            }
        }
    }

    /// Refuse removing `target` unless the voting members other than it keep a quorum of
    /// healthy ones (and `replacement`, if given, is ready). Returns their health.
    async fn check_removal(
        &self,
        target: &Member,
        members: &[Member],
        replacement: Option<&str>,
    ) -> Result<Vec<(u64, Health)>, EtcdError> {
        let voting: Vec<&Member> = members.iter().filter(|m| !m.is_learner).collect();
        let remaining = voting.len() - usize::from(!target.is_learner);
        if remaining == 0 {
            return Err(EtcdError::LastMember(target.name.clone()));
        }
        let mut healthy = Vec::new();
        for m in voting.iter().filter(|m| m.id != target.id) {
            if let Some(h) = self.health(m).await {
                healthy.push((m.id, h));
            }
        }
        let needed = remaining / 2 + 1;
        if healthy.len() < needed {
            return Err(EtcdError::QuorumLoss {
                member: target.name.clone(),
                healthy: healthy.len(),
                remaining,
                needed,
            });
        }
        if let Some(r) = replacement {
            check_replacement(r, members, &healthy)?;
        }
        Ok(healthy)
    }

    /// Stream a snapshot of the keyspace (`Maintenance.Snapshot`) to `dest`, written 0600 under
    /// a temporary name and renamed when complete; returns its size in bytes. It holds every
    /// secret of the cluster: keep it like the CA keys.
    pub async fn snapshot(&mut self, dest: &Path) -> Result<u64, EtcdError> {
        use std::io::Write as _;
        let io = |source| EtcdError::Snapshot {
            path: dest.to_path_buf(),
            source,
        };
        let partial = dest.with_extension("partial");
        let mut file = open_private(&partial).map_err(io)?;
        let mut stream = self
            .client
            .snapshot()
            .await
            .map_err(|source| EtcdError::Call {
                call: "Snapshot",
                source,
            })?;
        let mut size = 0u64;
        while let Some(chunk) = stream.message().await.map_err(|source| EtcdError::Call {
            call: "Snapshot",
            source,
        })? {
            file.write_all(chunk.blob()).map_err(io)?;
            size += chunk.blob().len() as u64;
        }
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&partial, dest).map_err(io)?;
        Ok(size)
    }
}

/// etcd refuses membership changes while it is not sure of its quorum ("etcdserver: unhealthy
/// cluster": members connected for less than its 5 s health interval, e.g. right after a member
/// started); such an answer is retried this many times, this far apart.
const RECONFIG_RETRIES: u32 = 20;
const RECONFIG_WAIT: Duration = Duration::from_millis(500);

/// Is `e` etcd's "not now" (gRPC `Unavailable`)?
fn unavailable(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unavailable)
}

/// "Not now", or no answer in time (the call may still have been carried out).
fn retryable(e: &etcd_client::Error) -> bool {
    unavailable(e)
        || matches!(e, etcd_client::Error::GRpcStatus(s) if matches!(s.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded))
}

/// The replacement `name` must be a started voting member that answers and is caught up with
/// the leader (`indexes`: the health of the members other than the one to remove).
fn check_replacement(
    name: &str,
    members: &[Member],
    indexes: &[(u64, Health)],
) -> Result<(), EtcdError> {
    let not_ready = |why: &str| EtcdError::ReplacementNotReady {
        name: name.to_string(),
        why: why.to_string(),
    };
    let Some(r) = members.iter().find(|m| m.name == name) else {
        return Err(not_ready("it is not a member (not started, or not added)"));
    };
    if r.is_learner {
        return Err(not_ready("it is still a learner"));
    }
    let Some((_, h)) = indexes.iter().find(|(id, _)| *id == r.id) else {
        return Err(not_ready("it does not answer"));
    };
    let leader = indexes
        .iter()
        .find(|(id, _)| *id == h.leader)
        .map(|(_, l)| l.raft_index)
        .unwrap_or(h.raft_index);
    if leader.saturating_sub(h.raft_index) > MAX_RAFT_LAG {
        return Err(not_ready(&format!(
            "its raft index {} is {} behind the leader's",
            h.raft_index,
            leader - h.raft_index
        )));
    }
    Ok(())
}

/// Create `path` for writing, 0600 from the start (a snapshot holds every secret).
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}
