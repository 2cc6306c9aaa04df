//! An in-process [`Cloud`] with fault injection, for engine tests and benchmarks.
//!
//! It behaves like a well-mannered cloud: creates are idempotent by [`InstanceRequest::id`],
//! listing is by cluster tag, deleting something gone succeeds. Faults let tests prove that the
//! executor retries what is retryable, gives up on what is not, and converges after a crash.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use kprov_providers::{
    Arch, Cloud, CloudError, CloudResult, ImageInfo, Instance, InstanceRequest, Inventory, Network,
    NetworkRequest, PlanProblem, Resource, ResourceKind, TAG_CLUSTER,
};

/// A fault the memory cloud injects.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Calls number `from..from+count` (1-based, counting every call) fail with a transient error.
    TransientBurst {
        /// First failing call.
        from: u64,
        /// How many calls fail.
        count: u64,
    },
    /// Call number `n` fails with a fatal error.
    FatalAt(u64),
    /// Every mutating call takes this long.
    Latency(Duration),
    /// After `n` successful mutating calls, every further call fails fatally ("the process died").
    CrashAfter(u64),
}

#[derive(Default)]
struct World {
    instances: BTreeMap<String, (Instance, String)>,
    networks: BTreeMap<String, Network>,
    next: u64,
}

/// The in-memory cloud.
pub struct MemoryCloud {
    world: Mutex<World>,
    faults: Mutex<Vec<Fault>>,
    calls: AtomicU64,
    mutations: AtomicU64,
    creates: AtomicU64,
}

impl Default for MemoryCloud {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryCloud {
    /// An empty cloud with no faults.
    pub fn new() -> Self {
        MemoryCloud {
            world: Mutex::new(World::default()),
            faults: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            mutations: AtomicU64::new(0),
            creates: AtomicU64::new(0),
        }
    }

    /// Add a fault.
    pub fn inject(&self, fault: Fault) {
        self.faults.lock().unwrap().push(fault);
    }

    /// Remove all faults.
    pub fn clear_faults(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// Total calls received (including failed ones).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Instances actually created (a second create of the same id does not count).
    pub fn creates(&self) -> u64 {
        self.creates.load(Ordering::SeqCst)
    }

    /// Pre-populate instances (for plan benchmarks and drift tests).
    pub fn seed_instance(&self, req: &InstanceRequest) {
        let mut w = self.world.lock().unwrap();
        w.next += 1;
        let inst = Instance {
            id: format!("mem-{}", w.next),
            name: req.name.clone(),
            state: "Running".into(),
            address: Some(format!("192.0.2.{}", w.next % 250 + 1)),
            tags: req.tags.clone(),
        };
        w.instances
            .insert(req.id.clone(), (inst, req.cluster.clone()));
    }

    async fn enter(&self, mutating: bool) -> CloudResult<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let faults = self.faults.lock().unwrap().clone();
        for f in faults {
            match f {
                Fault::TransientBurst { from, count } if n >= from && n < from + count => {
                    return Err(CloudError::Transient {
                        provider: "memory",
                        code: "503".into(),
                        message: format!("injected transient failure on call {n}"),
                    });
                }
                Fault::FatalAt(k) if k == n => {
                    return Err(CloudError::Fatal {
                        provider: "memory",
                        code: "INJECTED".into(),
                        message: format!("injected fatal failure on call {n}"),
                        fix: "this is a test fault".into(),
                    });
                }
                Fault::Latency(d) if mutating => tokio::time::sleep(d).await,
                Fault::CrashAfter(k) if self.mutations.load(Ordering::SeqCst) >= k => {
                    return Err(CloudError::Fatal {
                        provider: "memory",
                        code: "CRASHED".into(),
                        message: "injected crash".into(),
                        fix: "re-run".into(),
                    });
                }
                _ => {}
            }
        }
        if mutating {
            self.mutations.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[async_trait]
impl Cloud for MemoryCloud {
    fn name(&self) -> &'static str {
        "memory"
    }

    /// No limit: user-data is only stored in memory.
    fn user_data_limit(&self) -> Option<usize> {
        None
    }

    async fn discover(&self) -> CloudResult<Inventory> {
        self.enter(false).await?;
        Ok(Inventory {
            zones: vec!["zone-a".into()],
            arches: vec![Arch::Amd64, Arch::Arm64],
            images: vec![
                ImageInfo {
                    id: "img-amd64".into(),
                    name: "debian-12-amd64".into(),
                    arch: Some(Arch::Amd64),
                },
                ImageInfo {
                    id: "img-arm64".into(),
                    name: "debian-12-arm64".into(),
                    arch: Some(Arch::Arm64),
                },
            ],
            ..Default::default()
        })
    }

    async fn check(&self, _desired: &[InstanceRequest]) -> CloudResult<Vec<PlanProblem>> {
        Ok(Vec::new())
    }

    async fn ensure_network(&self, req: &NetworkRequest) -> CloudResult<Network> {
        self.enter(true).await?;
        let mut w = self.world.lock().unwrap();
        let net = w
            .networks
            .entry(req.cluster.clone())
            .or_insert_with(|| Network {
                id: format!("net-{}", req.cluster),
                name: req.cluster.clone(),
                cidr: Some("192.0.2.0/24".into()),
                owned: true,
            });
        Ok(net.clone())
    }

    async fn list_instances(&self, cluster: &str) -> CloudResult<Vec<Instance>> {
        self.enter(false).await?;
        let w = self.world.lock().unwrap();
        Ok(w.instances
            .values()
            .filter(|(_, c)| c == cluster)
            .map(|(i, _)| i.clone())
            .collect())
    }

    async fn create_instance(&self, req: &InstanceRequest) -> CloudResult<Instance> {
        self.enter(true).await?;
        let mut w = self.world.lock().unwrap();
        if let Some((i, _)) = w.instances.get(&req.id) {
            return Ok(i.clone());
        }
        drop(w);
        self.creates.fetch_add(1, Ordering::SeqCst);
        self.seed_instance(req);
        w = self.world.lock().unwrap();
        Ok(w.instances[&req.id].0.clone())
    }

    async fn list_resources(&self, cluster: &str) -> CloudResult<Vec<Resource>> {
        self.enter(false).await?;
        let w = self.world.lock().unwrap();
        let mut out: Vec<Resource> = w
            .instances
            .values()
            .filter(|(_, c)| c == cluster)
            .map(|(i, _)| Resource {
                kind: ResourceKind::Instance,
                id: i.id.clone(),
                name: i.name.clone(),
                tags: i.tags.clone(),
            })
            .collect();
        if let Some(n) = w.networks.get(cluster) {
            out.push(Resource {
                kind: ResourceKind::Network,
                id: n.id.clone(),
                name: n.name.clone(),
                tags: [(TAG_CLUSTER.to_string(), cluster.to_string())].into(),
            });
        }
        Ok(out)
    }

    async fn delete_resource(&self, r: &Resource) -> CloudResult<()> {
        self.enter(true).await?;
        let mut w = self.world.lock().unwrap();
        match r.kind {
            ResourceKind::Instance => w.instances.retain(|_, (i, _)| i.id != r.id),
            ResourceKind::Network => {
                if w.instances
                    .values()
                    .any(|(_, c)| Some(c) == r.tags.get(TAG_CLUSTER))
                {
                    return Err(CloudError::Transient {
                        provider: "memory",
                        code: "DependencyViolation".into(),
                        message: format!("network {} still has instances", r.id),
                    });
                }
                w.networks.retain(|_, n| n.id != r.id)
            }
            _ => {}
        }
        Ok(())
    }
}
