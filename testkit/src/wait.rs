//! Polling until something holds: quietly ([`wait_until`]) or with progress lines for the slow
//! VM steps ([`wait_for`]).

use std::time::{Duration, Instant};

/// Poll `f` every 50 ms until it returns true or `timeout` passes; the last answer of `f`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Wait (polling every second, printing progress every 30 s) until `done` holds or `timeout`
/// passes.
pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    let mut last = 0;
    while t.elapsed() < timeout {
        if done() {
            return true;
        }
        let s = t.elapsed().as_secs();
        if s / 30 != last {
            last = s / 30;
            eprintln!("[vm] waiting for {what}: {s}s");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    done()
}
