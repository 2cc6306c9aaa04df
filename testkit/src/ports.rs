//! Port allocation: every peer a test starts listens on a free loopback port of its own.
//!
//! A port the kernel hands out for `bind(0)` is an ephemeral one: between the check and the
//! peer's own `bind` (an etcd member, a registry started a second later) any outgoing connection
//! of the machine may take it as its source port, and the peer then fails with "address already
//! in use" (seen in CI: an etcd member of a rolling-update test). So ports come from just below
//! the kernel's ephemeral range, where source ports never land, and a process-wide counter never
//! hands the same port to two peers of one test binary.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// How many ports below the ephemeral range are used.
const SPAN: u32 = 10_000;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The low end of the kernel's ephemeral port range (Linux default 32768).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A TCP port on 127.0.0.1 that nobody listens on right now, below the ephemeral range.
pub fn free_port() -> u16 {
    let low = ephemeral_low();
    if low <= SPAN + 1024 {
        return kernel_port();
    }
    let base = low - SPAN;
    // test binaries of one run start at different points of the span
    let seed = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + (seed + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    kernel_port()
}

/// A port the kernel picks.
fn kernel_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("addr")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "no port handed out twice");
        let low = ephemeral_low();
        assert!(
            ports.iter().all(|p| u32::from(*p) < low),
            "{ports:?} vs {low}"
        );
        for p in ports {
            TcpListener::bind(("127.0.0.1", p)).expect("free");
        }
    }
}
