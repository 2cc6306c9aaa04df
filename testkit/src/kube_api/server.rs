//! The server: its own tokio runtime on a thread of its own (so a test that blocks its thread,
//! waiting for a `kprov` child process, never starves it), a TLS listener on 127.0.0.1, HTTP/1.1
//! with upgrades (hyper), the request log, the "hang the nth request" switch, and the shared
//! state every handler, timer and background task works on.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::state::{State, Timer};
use super::status::{self, Reply};
use super::{portforward, routes, ApiRequest, KubeApiOptions, RegisterHook as Hook};

/// Lock, ignoring poisoning (a panicking hook must not wedge the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The "hang the nth request" switch.
#[derive(Debug, Default)]
pub(crate) struct Hang {
    /// Requests that arrived so far.
    pub arrivals: usize,
    /// The arrival number to hang.
    pub target: Option<usize>,
    /// Requests hanging now.
    pub hanging: usize,
    /// Bumped by every release.
    pub generation: u64,
}

/// Everything the server's tasks share.
pub(crate) struct Shared {
    /// The cluster.
    pub state: Mutex<State>,
    /// Requests served, in order.
    pub requests: Mutex<Vec<ApiRequest>>,
    /// The hang switch.
    pub hang: Mutex<Hang>,
    /// Release generations (hung requests wait for a change).
    pub released: watch::Sender<u64>,
    /// Port-forward targets: (namespace, pod, port) → address.
    pub forwards: Mutex<HashMap<(String, String, u16), SocketAddr>>,
    /// Hooks run after a Node registers.
    pub hooks: Mutex<Vec<Hook>>,
    /// The server's runtime.
    pub handle: tokio::runtime::Handle,
    /// Cancelled when the `KubeApi` drops.
    pub stop: CancellationToken,
    /// The API server is down (no control plane runs it): connections are closed unanswered.
    pub down: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Change the cluster, then run the controllers, take a sample and start the timers the
    /// change asked for.
    pub fn mutate<R>(self: &Arc<Self>, f: impl FnOnce(&mut State) -> R) -> R {
        let (r, timers) = {
            let mut s = lock(&self.state);
            let r = f(&mut s);
            s.reconcile();
            s.sample();
            (r, std::mem::take(&mut s.timers))
        };
        self.start_timers(timers);
        r
    }

    /// Start timers (not generic: `mutate` and the timers call each other).
    fn start_timers(self: &Arc<Self>, timers: Vec<(Duration, Timer)>) {
        for (after, timer) in timers {
            let me = Arc::clone(self);
            self.handle.spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(after) => me.fire(&timer),
                    () = me.stop.cancelled() => {}
                }
            });
        }
    }

    fn fire(self: &Arc<Self>, timer: &Timer) {
        self.mutate(|s| s.fire(timer));
    }

    /// Read the cluster.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&lock(&self.state))
    }

    /// Run the registration hooks for (name, control plane).
    pub fn run_hooks(&self, registered: &[(String, bool)]) {
        let hooks = lock(&self.hooks).clone();
        for (name, cp) in registered {
            for h in &hooks {
                h(name, *cp);
            }
        }
    }

    /// Count an arriving request; if it is the one to hang, a receiver to wait on.
    fn arrive(&self) -> Option<(watch::Receiver<u64>, u64)> {
        let mut h = lock(&self.hang);
        h.arrivals += 1;
        if h.target == Some(h.arrivals) {
            h.target = None;
            h.hanging += 1;
            return Some((self.released.subscribe(), h.generation));
        }
        None
    }

    /// Log a served request.
    pub fn log(&self, method: &str, path: &str, query: &str, status: u16) {
        lock(&self.requests).push(ApiRequest {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            status,
        });
    }
}

/// Start the server for `opts`: the shared state and the port it listens on.
pub(crate) fn start(opts: &KubeApiOptions) -> (Arc<Shared>, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("local address").port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kube-api")
        .enable_all()
        .build()
        .expect("the API server's runtime");
    let shared = Arc::new(Shared {
        state: Mutex::new(State::new(opts.node_ready_after, opts.pod_ready_after)),
        requests: Mutex::new(Vec::new()),
        hang: Mutex::new(Hang::default()),
        released: watch::channel(0).0,
        forwards: Mutex::new(HashMap::new()),
        hooks: Mutex::new(Vec::new()),
        handle: rt.handle().clone(),
        stop: CancellationToken::new(),
        down: std::sync::atomic::AtomicBool::new(false),
    });
    shared.mutate(|_| ());
    let acceptor = super::tls::acceptor(&opts.ca_cert_pem, &opts.ca_key_pem);
    let sh = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("kube-api".into())
        .spawn(move || {
            rt.block_on(accept_loop(listener, sh, acceptor));
            rt.shutdown_background();
        })
        .expect("spawn the API server's thread");
    (shared, port)
}

async fn accept_loop(listener: std::net::TcpListener, shared: Arc<Shared>, tls: TlsAcceptor) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
            () = shared.stop.cancelled() => return,
        };
        if shared.down.load(std::sync::atomic::Ordering::SeqCst) {
            drop(tcp);
            continue;
        }
        let (shared, tls) = (Arc::clone(&shared), tls.clone());
        tokio::spawn(async move {
            let stop = shared.stop.clone();
            tokio::select! {
                () = serve_conn(shared, tls, tcp) => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

async fn serve_conn(shared: Arc<Shared>, tls: TlsAcceptor, tcp: tokio::net::TcpStream) {
    let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
    else {
        return;
    };
    let authenticated = stream
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|c| !c.is_empty());
    let svc = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(shared, authenticated, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await;
}

/// Paths anyone may read (kubeadm's `system:public-info-viewer`).
const PUBLIC: [&str; 4] = ["/version", "/readyz", "/livez", "/healthz"];

async fn handle(
    shared: Arc<Shared>,
    authenticated: bool,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let hang = shared.arrive();
    // The request runs on a task of its own, so that a hung request — received in full before
    // it hangs — is applied once released even if its client has gone meanwhile, as by a server
    // that had received it.
    let sh = Arc::clone(&shared);
    let task = shared.handle.spawn(async move {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes());
        if let Some((mut rx, generation)) = hang {
            let stop = sh.stop.clone();
            tokio::select! {
                _ = rx.wait_for(|g| *g != generation) => {}
                () = stop.cancelled() => {}
            }
        }
        process(sh, authenticated, parts, body).await
    });
    task.await
        .unwrap_or_else(|_| response(status::error(500, "InternalError", "handler panicked")))
}

fn response(reply: Reply) -> Response<Full<Bytes>> {
    Response::builder()
        .status(reply.code)
        .header("Content-Type", reply.content_type)
        .header("Cache-Control", "no-cache, private")
        .body(Full::new(Bytes::from(reply.body)))
        .expect("a valid response")
}

async fn process(
    shared: Arc<Shared>,
    authenticated: bool,
    parts: hyper::http::request::Parts,
    body: Result<Bytes, hyper::Error>,
) -> Response<Full<Bytes>> {
    let method = parts.method.to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    if !authenticated && !PUBLIC.contains(&path.as_str()) {
        shared.log(&method, &path, &query, 401);
        return response(status::unauthorized());
    }
    let Ok(body) = body else {
        shared.log(&method, &path, &query, 400);
        return response(status::bad_request("could not read the request body"));
    };
    let mut req = Request::from_parts(parts, body);
    if path.ends_with("/portforward") {
        let resp = portforward::handle(&shared, &mut req, &path, &query);
        let resp = match resp {
            Ok(r) => r,
            Err(reply) => response(reply),
        };
        shared.log(&method, &path, &query, resp.status().as_u16());
        return resp;
    }
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let reply = routes::route(&shared, &method, &path, &query, &content_type, req.body());
    shared.log(&method, &path, &query, reply.code);
    response(reply)
}
