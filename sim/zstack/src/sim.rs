//! Starting, observing and stopping a simulator: [`SimConfig`], [`Simulator`], [`SimHandle`].

use crate::cloud::CloudState;
use crate::error::SimError;
use crate::faults::{FaultAction, FaultEngine, FaultEvent, FaultRule};
use crate::inventory::Inventory;
use crate::model::{LoadBalancer, PciDevice, Vip, VmInstance};
use crate::stats::Stats;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Simulator settings; [`Default`] is the seeded cloud on a free loopback port.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeded fixtures (ignored when `state_file` already holds a state).
    pub inventory: Inventory,
    /// How long an async job runs (default 50 ms); per-API overrides via the `job_delay` fault.
    pub job_delay: Duration,
    /// Session lifetime (`identity/session.timeout`, default 7200 s).
    pub session_ttl: Duration,
    /// Persist the whole state here as JSON after every mutation, and load it on start.
    pub state_file: Option<PathBuf>,
    /// The admin account `(name, plain-text password)`, default `("admin", "password")`.
    pub admin_account: (String, String),
    /// TCP port; 0 picks a free one.
    pub port: u16,
    /// Listen address; must be a loopback address (default 127.0.0.1).
    pub listen: IpAddr,
    /// How long completed job results stay pollable (`rest/completedApi.expiredPeriod`, 10800 s).
    pub job_retention: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            inventory: Inventory::default_seed(),
            job_delay: Duration::from_millis(50),
            session_ttl: Duration::from_secs(7200),
            state_file: None,
            admin_account: ("admin".into(), "password".into()),
            port: 0,
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            job_retention: Duration::from_secs(10800),
        }
    }
}

/// Marker put in a response's extensions: close the connection instead of answering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnection;

/// State shared by the HTTP handlers and job tasks.
pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub addr: SocketAddr,
    cloud: Mutex<CloudState>,
    pub faults: Mutex<FaultEngine>,
    pub stats: Mutex<Stats>,
    vm_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub shutdown: watch::Receiver<bool>,
}

/// Locks a std mutex, recovering from poisoning (a panicked handler must not wedge the sim).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Session TTL in force (fault override or configured).
    pub fn ttl_secs(&self) -> u64 {
        lock(&self.faults)
            .ttl_override
            .unwrap_or(self.cfg.session_ttl.as_secs())
    }

    /// Read-only access to the cloud.
    pub fn read<R>(&self, f: impl FnOnce(&CloudState) -> R) -> R {
        f(&lock(&self.cloud))
    }

    /// Mutates the cloud and persists it (under the lock, so saves are ordered like mutations).
    pub fn mutate<R>(&self, f: impl FnOnce(&mut CloudState) -> R) -> R {
        let mut c = lock(&self.cloud);
        let r = f(&mut c);
        if let Some(p) = &self.cfg.state_file {
            if let Err(e) = c.save(p) {
                tracing::error!(error = %e, "could not persist the simulator state");
            }
        }
        r
    }

    /// The per-VM lock serializing operations on one VM (ZStack's per-VM chain queue).
    pub fn vm_lock(&self, uuid: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.vm_locks)
            .entry(uuid.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone()
    }

    /// Sleeps unless the simulator shuts down first (`false` then).
    pub async fn sleep(&self, d: Duration) -> bool {
        let mut rx = self.shutdown.clone();
        if *rx.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = rx.changed() => false,
        }
    }

    /// Applies an immediate fault action (expire sessions, TTL override, clock skew).
    pub fn apply_immediate(&self, action: &FaultAction) {
        let detail = match action {
            FaultAction::ExpireSessions => {
                self.expire_all_sessions("immediate", "-", "-");
                return;
            }
            FaultAction::SessionTtl { ttl_secs } => {
                lock(&self.faults).ttl_override = *ttl_secs;
                format!("session TTL override {ttl_secs:?} s")
            }
            FaultAction::ClockSkew { secs } => {
                lock(&self.faults).clock_skew_secs = *secs;
                format!("AccessKey clock skew {secs} s")
            }
            _ => return,
        };
        lock(&self.faults).fired("immediate", action.name(), "-", "-", detail);
    }

    /// Invalidates every session (an `expire_sessions` fault, immediate or fired by rule
    /// `rule_id` on the call `method path`), counts it in the stats and logs it.
    pub fn expire_all_sessions(&self, rule_id: &str, method: &str, path: &str) {
        let n = self.mutate(|c| {
            let n = c.sessions.len();
            c.sessions.clear();
            n
        });
        lock(&self.stats).record_expiry(n as u64);
        let detail = if rule_id == "immediate" {
            format!("{n} sessions expired")
        } else {
            format!("{n} sessions expired before this call was authenticated")
        };
        lock(&self.faults).fired(rule_id, "expire_sessions", method, path, detail);
    }

    /// Adds a rule or applies an immediate action; returns the rule id (`immediate` for those).
    pub fn add_fault(&self, rule: FaultRule) -> Result<String, SimError> {
        if rule.is_immediate() {
            if rule.names_a_call() {
                return Err(SimError::Fault(format!(
                    "{} is applied when posted: method, path, nth, times and durations do not apply to it",
                    rule.action.name()
                )));
            }
            self.apply_immediate(&rule.action);
            return Ok("immediate".into());
        }
        lock(&self.faults).add(rule)
    }
}

/// Entry point: `Simulator::start(SimConfig::default()).await`.
pub struct Simulator;

impl Simulator {
    /// Loads (or seeds) the state, binds the listener and serves in the background.
    pub async fn start(cfg: SimConfig) -> Result<SimHandle, SimError> {
        if !cfg.listen.is_loopback() {
            return Err(SimError::Config(format!(
                "refusing to listen on {}: the simulator only serves loopback addresses",
                cfg.listen
            )));
        }
        let state = match &cfg.state_file {
            Some(p) => match CloudState::load(p)? {
                Some(s) => {
                    tracing::info!(path = %p.display(), vms = s.vms.len(), "loaded simulator state");
                    s
                }
                None => {
                    let s = CloudState::from_inventory(&cfg.inventory, &cfg.admin_account);
                    s.save(p)?;
                    s
                }
            },
            None => CloudState::from_inventory(&cfg.inventory, &cfg.admin_account),
        };
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(cfg.listen, cfg.port))
            .await
            .map_err(|e| SimError::io(format!("binding {}:{}", cfg.listen, cfg.port), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| SimError::io("reading the bound address", e))?;
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg,
            addr,
            cloud: Mutex::new(state),
            faults: Mutex::new(FaultEngine::default()),
            stats: Mutex::new(Stats::default()),
            vm_locks: Mutex::new(HashMap::new()),
            shutdown: rx.clone(),
        });
        let app = crate::api::router(shared.clone());
        let server = tokio::spawn(serve(listener, app, rx));
        tracing::info!(%addr, "ZStack simulator listening");
        Ok(SimHandle {
            addr,
            shared,
            shutdown_tx: tx,
            server: Some(server),
        })
    }
}

/// The accept loop. Hand-rolled (rather than `axum::serve`) so that a response carrying
/// [`DropConnection`] closes the socket without a reply, which is how a lost 202 looks.
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt;
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        };
        let app = app.clone();
        let mut stop_conn = stop.clone();
        tokio::spawn(async move {
            let drop_now = Arc::new(Notify::new());
            let signal = drop_now.clone();
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    let signal = signal.clone();
                    async move {
                        let resp = match app.oneshot(req.map(axum::body::Body::new)).await {
                            Ok(r) => r,
                            Err(e) => match e {},
                        };
                        if resp.extensions().get::<DropConnection>().is_some() {
                            signal.notify_one();
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, Infallible>(resp)
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(error = %e, "connection ended with an error") },
                _ = drop_now.notified() => tracing::debug!("connection dropped without a response (fault)"),
                _ = stop_conn.changed() => {}
            }
        });
    }
}

/// Reads the simulator's VMs; see [`SimHandle::vm_reader`].
#[derive(Clone)]
pub struct VmReader(Arc<Shared>);

impl VmReader {
    /// A snapshot of all VMs.
    pub fn vms(&self) -> Vec<VmInstance> {
        self.0.read(|c| c.vms.clone())
    }
}

/// A running simulator. Dropping it stops the server too; [`SimHandle::shutdown`] also waits.
pub struct SimHandle {
    /// The bound address (127.0.0.1:PORT).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT` (no trailing slash; the API is under `/zstack/v1`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the call counters (per API, per action, sessions).
    pub fn stats(&self) -> Stats {
        lock(&self.shared.stats).clone()
    }

    /// Zeroes the call counters.
    pub fn reset_stats(&self) {
        *lock(&self.shared.stats) = Stats::default();
    }

    /// Stops serving, ends running jobs and waits for the accept loop to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
    }

    /// Number of VMs that exist (any state but expunged).
    pub fn vm_count(&self) -> usize {
        self.shared.read(|c| c.vms.len())
    }

    /// A snapshot of all VMs.
    pub fn vms(&self) -> Vec<VmInstance> {
        self.shared.read(|c| c.vms.clone())
    }

    /// The user-data VM `name` was created with (its `userdata::` system tag, base64-decoded):
    /// what cloud-init on that VM would read.
    pub fn user_data(&self, name: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        self.shared.read(|c| {
            let vm = c.vms.iter().find(|v| v.name == name)?;
            let tag = c.tags.iter().find_map(|t| {
                (t.resource_uuid == vm.uuid && t.type_ == "System")
                    .then(|| t.tag.strip_prefix("userdata::"))
                    .flatten()
            })?;
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(tag.trim().trim_end_matches('='))
                .ok()
        })
    }

    /// A reader of the VMs that outlives borrows of the handle (for watchers on other tasks,
    /// such as a Kubernetes API stand-in registering a Node per VM).
    pub fn vm_reader(&self) -> VmReader {
        VmReader(self.shared.clone())
    }

    /// A snapshot of all PCI devices.
    pub fn pci_devices(&self) -> Vec<PciDevice> {
        self.shared.read(|c| c.pci_devices.clone())
    }

    /// A snapshot of all VIPs.
    pub fn vips(&self) -> Vec<Vip> {
        self.shared.read(|c| c.vips.clone())
    }

    /// A snapshot of all load balancers (their listeners and NIC refs embedded).
    pub fn load_balancers(&self) -> Vec<LoadBalancer> {
        self.shared.read(|c| c.load_balancers.clone())
    }

    /// The uuid of the first seeded or created resource with this name (image, offering, L3,
    /// zone, cluster, host, storage, PCI spec/device, VM, VIP, load balancer) — handy in tests.
    pub fn uuid_of(&self, name: &str) -> Option<String> {
        self.shared.read(|c| {
            let pairs = c
                .images
                .iter()
                .map(|x| (&x.name, &x.uuid))
                .chain(c.instance_offerings.iter().map(|x| (&x.name, &x.uuid)))
                .chain(c.l3_networks.iter().map(|x| (&x.name, &x.uuid)))
                .chain(c.zones.iter().map(|x| (&x.name, &x.uuid)))
                .chain(c.clusters.iter().map(|x| (&x.name, &x.uuid)))
                .chain(c.hosts.iter().map(|x| (&x.name, &x.uuid)))
                .chain(c.backup_storages.iter().map(|x| (&x.name, &x.uuid)))
                .chain(c.primary_storages.iter().map(|x| (&x.name, &x.uuid)))
                .chain(c.pci_device_specs.iter().map(|x| (&x.name, &x.uuid)))
                .chain(c.pci_devices.iter().map(|x| (&x.name, &x.uuid)))
                .chain(c.mdev_device_specs.iter().map(|x| (&x.name, &x.uuid)))
                .chain(c.vms.iter().map(|x| (&x.name, &x.uuid)))
                .chain(c.vips.iter().map(|x| (&x.name, &x.uuid)))
                .chain(c.load_balancers.iter().map(|x| (&x.name, &x.uuid)));
            pairs
                .into_iter()
                .find(|(n, _)| *n == name)
                .map(|(_, u)| u.clone())
        })
    }

    /// Creates an admin session directly (no HTTP), for tests that are not about login.
    pub fn admin_session(&self) -> String {
        let (name, pw) = &self.shared.cfg.admin_account;
        let hash = crate::cloud::sha512_hex(pw);
        let ttl = self.shared.ttl_secs();
        self.shared
            .mutate(|c| c.login(name, &hash, ttl))
            .map(|s| s.uuid)
            .unwrap_or_default()
    }

    /// Adds a fault rule (or applies an immediate action); returns its id.
    pub fn add_fault(&self, rule: FaultRule) -> Result<String, SimError> {
        self.shared.add_fault(rule)
    }

    /// Removes all fault rules and the TTL / clock-skew overrides.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).reset();
    }

    /// Faults fired so far.
    pub fn fault_log(&self) -> Vec<FaultEvent> {
        lock(&self.shared.faults).log.clone()
    }

    /// Invalidates every session now.
    pub fn expire_sessions(&self) {
        self.shared.apply_immediate(&FaultAction::ExpireSessions);
    }

    /// Overrides the session TTL (`None` restores the configured one).
    pub fn set_session_ttl(&self, ttl: Option<Duration>) {
        self.shared.apply_immediate(&FaultAction::SessionTtl {
            ttl_secs: ttl.map(|d| d.as_secs()),
        });
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
    }
}
