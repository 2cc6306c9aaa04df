//! The one libvirt connection of an adapter, kept alive and reopened.
//!
//! A lost connection (libvirtd restarted or killed) or a silent one (libvirtd stopped or hung:
//! libvirt's client keepalive closes it after [`super::LibvirtConfig::keepalive_timeout`], which
//! needs the event loop this module runs on a thread of its own) fails the call in flight with a
//! retryable [`CloudError::Unreachable`] naming the URI; the next call opens a new connection.
//! Opening is bounded by the same timeout; while an open that timed out is still waiting for
//! libvirtd, further calls fail at once instead of waiting again.

use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

use virt::connect::Connect;

use super::cloud::LibvirtCloud;
use super::errors::verr;
use super::PROVIDER;
use crate::{CloudError, CloudResult};

/// The connection, reopened when libvirt reports it closed (see the module docs).
pub(super) struct Link {
    /// `None` after a dead connection was dropped and reopening failed.
    pub(super) conn: Option<Connect>,
    /// An open that did not finish within the timeout: when it started, and where its thread
    /// will deliver the connection.
    pub(super) pending: Option<(Instant, mpsc::Receiver<CloudResult<Connect>>)>,
    /// When a connection that worked was found closed (until a new one is open).
    pub(super) lost_since: Option<Instant>,
}

/// Register libvirt's default event loop and run it on a thread (once per process, before the
/// first connection is opened): libvirt's client keepalive — kprov's only bound on a call to a
/// libvirtd that stopped answering — works only with an event loop.
fn ensure_event_loop() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Err(e) = virt::event::event_register_default_impl() {
            tracing::warn!(
                "libvirt event loop: {}; calls to a libvirtd that stops answering may hang",
                e.message()
            );
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                if virt::event::event_run_default_impl().is_err() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("libvirt event loop thread: {e}");
        }
    });
}

/// Open `uri` and turn on keepalive (not on the in-process `test:///` driver).
fn open_now(uri: &str, keepalive: Duration) -> CloudResult<Connect> {
    let conn = Connect::open(Some(uri)).map_err(|e| {
        let mut err = verr(&format!("opening {uri}"), e);
        if let CloudError::Unreachable {
            endpoint, message, ..
        } = &mut err
        {
            *endpoint = uri.to_string();
            message.push_str(
                "; is libvirtd running on that host (`libvirtd -d` / `systemctl start libvirtd`)?",
            );
        }
        err
    })?;
    if driver(uri) != "test" {
        let (interval, count) = super::keepalive_params(keepalive);
        if let Err(e) = conn.set_keep_alive(interval, count) {
            tracing::warn!(
                uri,
                "libvirt keepalive not enabled: {}; a call to a libvirtd that stops answering may hang",
                e.message()
            );
        }
    }
    Ok(conn)
}

/// Open `uri` on a thread of its own (an open to a libvirtd that accepts the socket but never
/// answers would block for good: keepalive starts only once the connection is open).
fn start_open(uri: &str, keepalive: Duration) -> mpsc::Receiver<CloudResult<Connect>> {
    ensure_event_loop();
    let (tx, rx) = mpsc::channel();
    let u = uri.to_string();
    let spawned = std::thread::Builder::new()
        .name("libvirt-open".into())
        .spawn(move || {
            // a receiver that gave up drops the late connection (closing it)
            let _ = tx.send(open_now(&u, keepalive));
        });
    if let Err(e) = spawned {
        let (tx, rx2) = mpsc::channel();
        let _ = tx.send(Err(CloudError::Protocol {
            provider: PROVIDER,
            message: format!("cannot start a thread to open {uri}: {e}"),
        }));
        return rx2;
    }
    rx
}

/// The error for an open that did not finish in time.
fn open_hung(uri: &str, waited: Duration) -> CloudError {
    CloudError::Unreachable {
        provider: PROVIDER,
        endpoint: uri.to_string(),
        message: format!(
            "opening the connection: libvirtd accepted it but has not answered for {}s (stopped, hung or overloaded?); check it with `virsh -c {uri} version` and re-run (kprov waits {}, default 30s)",
            waited.as_secs(),
            super::KEEPALIVE_TIMEOUT_ENV
        ),
    }
}

impl Link {
    fn alive(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.is_alive().unwrap_or(false))
    }

    /// Make sure a live connection is open: reopen a closed one. A libvirtd that refuses
    /// connections after a lost one (restarting) is tried again every 0.5 s for up to `timeout`
    /// after the loss; an open libvirtd does not answer is abandoned after `timeout`.
    pub(super) fn ensure_open(&mut self, uri: &str, timeout: Duration) -> CloudResult<&Connect> {
        if !self.alive() {
            if let Some(dead) = self.conn.take() {
                // its socket is closed: dropping it makes no call
                drop(dead);
                tracing::warn!(uri, "the libvirt connection was closed; reopening it");
                self.lost_since = Some(Instant::now());
            }
            loop {
                match self.open_once(uri, timeout) {
                    Ok(c) => {
                        if self.lost_since.take().is_some() {
                            tracing::warn!(uri, "reconnected to libvirtd");
                        }
                        self.conn = Some(c);
                        break;
                    }
                    Err(CloudError::Unreachable { .. })
                        if self.pending.is_none()
                            && self.lost_since.is_some_and(|t| {
                                t.elapsed() + Duration::from_millis(500) < timeout
                            }) =>
                    {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(self.conn.as_ref().expect("open"))
    }

    /// One attempt to open the connection, bounded by `timeout`; while an earlier attempt is
    /// still waiting for libvirtd, fail at once (or take its connection if it arrived).
    fn open_once(&mut self, uri: &str, timeout: Duration) -> CloudResult<Connect> {
        let (since, rx) = match self.pending.take() {
            Some((since, rx)) => match rx.try_recv() {
                Ok(Ok(c)) => return Ok(c),
                Err(mpsc::TryRecvError::Empty) => {
                    let waited = since.elapsed();
                    self.pending = Some((since, rx));
                    return Err(open_hung(uri, waited));
                }
                // that open failed: try again
                Ok(Err(_)) | Err(mpsc::TryRecvError::Disconnected) => {
                    (Instant::now(), start_open(uri, timeout))
                }
            },
            None => (Instant::now(), start_open(uri, timeout)),
        };
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.pending = Some((since, rx));
                Err(open_hung(uri, since.elapsed()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(CloudError::Protocol {
                provider: PROVIDER,
                message: format!("opening {uri}: the opening thread ended without an answer"),
            }),
        }
    }

    /// Classify the error of a call made on this connection: on a connection that is now
    /// closed every error is the lost connection (retryable, naming the URI and the fix); a
    /// system error on a live one is the libvirt host refusing (e.g. permission denied, disk
    /// full, a file in the way) — not retryable.
    pub(super) fn classify(&self, e: CloudError, uri: &str, timeout: Duration) -> CloudError {
        let alive = self.alive();
        match e {
            CloudError::Unreachable { message, .. } if alive => CloudError::fatal(
                PROVIDER,
                "HostError",
                format!("{message} (libvirtd on {uri} refused)"),
                "fix the cause on the libvirt host (permissions, free space, a file or object in the way) and re-run",
            ),
            e if alive => e,
            e => {
                let message = match e {
                    CloudError::Unreachable { message, .. }
                    | CloudError::Transient { message, .. }
                    | CloudError::Protocol { message, .. }
                    | CloudError::Fatal { message, .. }
                    | CloudError::Auth { message, .. } => message,
                    other => other.to_string(),
                };
                CloudError::Unreachable {
                    provider: PROVIDER,
                    endpoint: uri.to_string(),
                    message: format!(
                        "{message}; the connection to libvirtd was lost (libvirtd restarted or stopped, or it answered nothing — not even keepalive pings — for {}s, {}); check it with `virsh -c {uri} version`, then re-run",
                        timeout.as_secs(),
                        super::KEEPALIVE_TIMEOUT_ENV
                    ),
                }
            }
        }
    }
}

/// The libvirt driver of a URI (`qemu`, `test`, …).
pub(super) fn driver(uri: &str) -> &str {
    let scheme = uri.split(':').next().unwrap_or("");
    scheme.split('+').next().unwrap_or(scheme)
}

impl LibvirtCloud {
    /// Run `f` with the connection on the blocking pool.
    pub(super) async fn with_conn<T, F>(&self, f: F) -> CloudResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connect) -> CloudResult<T> + Send + 'static,
    {
        let link = self.conn.clone();
        let (uri, timeout) = (self.cfg.uri.clone(), self.cfg.keepalive_timeout);
        tokio::task::spawn_blocking(move || {
            let mut guard = link.lock().unwrap_or_else(|p| p.into_inner());
            let conn = guard.ensure_open(&uri, timeout)?;
            f(conn).map_err(|e| guard.classify(e, &uri, timeout))
        })
        .await
        .map_err(|e| CloudError::Protocol {
            provider: PROVIDER,
            message: format!("libvirt worker: {e}"),
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_of_uris() {
        assert_eq!(driver("qemu+ssh://h/system"), "qemu");
        assert_eq!(driver("test:///default"), "test");
        assert_eq!(driver("qemu:///system"), "qemu");
    }
}
