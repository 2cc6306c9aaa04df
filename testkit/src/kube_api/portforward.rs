//! Port-forward: `GET /api/v1/namespaces/NS/pods/NAME/portforward?ports=P[,Q…]` upgraded to a
//! WebSocket with the `v4.channel.k8s.io` subprotocol (kube-rs 5 offers `v5.channel.k8s.io,
//! v4.channel.k8s.io`; the real server picks v4 for port-forward, and so does this).
//!
//! Framing, as kubelet's WebSocket port-forward: every binary message's first byte is a
//! channel — `2i` carries port `i`'s data, `2i+1` its errors. The server's first message on
//! each of the two channels of a port is that port as 2 bytes little-endian; then data flows as
//! `[2i, bytes…]` both ways (the client never sends the port prefix). A port whose target
//! cannot be reached gets one UTF-8 message on its error channel. When every port's target
//! connection has ended (or failed), the server closes the WebSocket; when the client closes
//! it, the target connections are closed.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::select::{param, params};
use super::server::{lock, Shared};
use super::status::{self as st, Reply};

/// The subprotocol served.
const PROTOCOL: &str = "v4.channel.k8s.io";

/// Answer the upgrade request (`101`) and run the session on its own task, or the error
/// `Status` a real server gives (`404` no pod, `400` bad ports or not a WebSocket upgrade).
pub(crate) fn handle(
    shared: &Arc<Shared>,
    req: &mut Request<Bytes>,
    path: &str,
    query: &str,
) -> Result<Response<Full<Bytes>>, Reply> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", ns, "pods", name, "portforward"] = segs.as_slice() else {
        return Err(st::no_route());
    };
    if req.method() != "GET" {
        return Err(st::bad_request(
            "the kube_api stand-in serves port-forward over WebSockets (GET) only, not SPDY",
        ));
    }
    let (ns, name) = (ns.to_string(), name.to_string());
    let uid = shared
        .read(|s| {
            s.pods
                .get(&(ns.clone(), name.clone()))
                .map(|p| p.metadata.uid.clone())
        })
        .ok_or_else(|| st::not_found("pods", &name))?
        .unwrap_or_default();
    let params = params(query);
    let ports: Vec<u16> = params
        .iter()
        .filter(|(k, _)| k == "ports")
        .flat_map(|(_, v)| v.split(',').map(str::trim).map(str::to_string))
        .map(|p| p.parse::<u16>().ok().filter(|p| *p > 0))
        .collect::<Option<_>>()
        .ok_or_else(|| st::bad_request("invalid port: ports must be 1-65535"))?;
    if ports.is_empty() || param(&params, "ports").is_none() {
        return Err(st::bad_request("at least 1 port is required"));
    }
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let key = header("sec-websocket-key");
    if !header("upgrade").eq_ignore_ascii_case("websocket") || key.is_empty() {
        return Err(st::bad_request("Upgrade request required"));
    }
    let offered = header("sec-websocket-protocol");
    if !offered.split(',').any(|p| p.trim() == PROTOCOL) {
        return Err(st::bad_request(format!(
            "requested protocol(s) are not supported: {offered:?}; supports {PROTOCOL}"
        )));
    }
    let targets: Vec<Option<SocketAddr>> = {
        let f = lock(&shared.forwards);
        ports
            .iter()
            .map(|p| f.get(&(ns.clone(), name.clone(), *p)).copied())
            .collect()
    };
    let on_upgrade = hyper::upgrade::on(req);
    let stop = shared.stop.clone();
    let pod = format!("{ns}/{name}");
    shared.handle.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        tokio::select! {
            () = session(ws, ports, targets, pod, uid) => {}
            () = stop.cancelled() => {}
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok(Response::builder()
        .status(101)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", accept)
        .header("Sec-WebSocket-Protocol", PROTOCOL)
        .body(Full::new(Bytes::new()))
        .expect("a valid 101 response"))
}

/// What the port tasks tell the session.
enum Event {
    /// Bytes from port `i`'s target.
    Data(usize, Vec<u8>),
    /// Port `i`'s target connection ended.
    Done,
}

fn frame(ch: usize, payload: &[u8]) -> Message {
    let mut v = Vec::with_capacity(payload.len() + 1);
    v.push(u8::try_from(ch).unwrap_or(u8::MAX));
    v.extend_from_slice(payload);
    Message::binary(v)
}

async fn session<S>(
    ws: WebSocketStream<S>,
    ports: Vec<u16>,
    targets: Vec<Option<SocketAddr>>,
    pod: String,
    uid: String,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    for (i, p) in ports.iter().enumerate() {
        for ch in [2 * i, 2 * i + 1] {
            if sink.send(frame(ch, &p.to_le_bytes())).await.is_err() {
                return;
            }
        }
    }
    let (events, mut rx) = mpsc::channel::<Event>(64);
    let mut writers: Vec<Option<mpsc::UnboundedSender<Vec<u8>>>> = Vec::new();
    let mut readers = Vec::new();
    let mut open = 0;
    for (i, (port, target)) in ports.iter().zip(&targets).enumerate() {
        let conn = match target {
            Some(addr) => TcpStream::connect(addr).await.map_err(|e| e.to_string()),
            None => Err("connect: connection refused".to_string()),
        };
        let tcp = match conn {
            Ok(tcp) => tcp,
            Err(e) => {
                let msg = format!(
                    "error forwarding port {port} to pod {pod}, uid {uid}: failed to connect to \
                     localhost:{port} inside the pod's network namespace: dial tcp4 \
                     127.0.0.1:{port}: {e}"
                );
                let _ = sink.send(frame(2 * i + 1, msg.as_bytes())).await;
                writers.push(None);
                continue;
            }
        };
        let (mut r, mut w) = tcp.into_split();
        let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<u8>>();
        writers.push(Some(wtx));
        tokio::spawn(async move {
            while let Some(b) = wrx.recv().await {
                if w.write_all(&b).await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        });
        let ev = events.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if ev.send(Event::Data(i, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = ev.send(Event::Done).await;
        }));
        open += 1;
    }
    drop(events);
    while open > 0 {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(Event::Data(i, b)) => {
                    if sink.send(frame(2 * i, &b)).await.is_err() {
                        break;
                    }
                }
                Some(Event::Done) => open -= 1,
                None => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) if b.len() > 1 => {
                    let ch = usize::from(b[0]);
                    if ch % 2 == 0 {
                        if let Some(Some(w)) = writers.get(ch / 2) {
                            let _ = w.send(b[1..].to_vec());
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    // Closing the writers' channels shuts the target connections' write sides; the readers
    // go with their read sides.
    drop(writers);
    for r in readers {
        r.abort();
    }
    let _ = sink.send(Message::Close(None)).await;
    let _ = sink.close().await;
}
