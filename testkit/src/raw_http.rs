//! A minimal HTTP/1.0 client for talking to peers' control endpoints (moto's `/moto-api/`, the
//! fault proxy's `/__fault__/rules`), independent of any HTTP library under test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// `METHOD path` with a JSON `body` to 127.0.0.1:`port`; returns status and body.
pub fn request(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
