//! Port allocation: every peer a test starts listens on a free loopback port of its own.

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("addr")
        .port()
}
