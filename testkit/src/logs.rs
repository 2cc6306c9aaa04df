//! Log lines captured from `tracing` in-process, for tests that check what a library warns.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Log lines captured from `tracing` by a process-wide subscriber.
///
/// Process-wide rather than `set_default` per test: tracing caches per-callsite interest, and a
/// callsite first hit on another test's thread while a thread-local subscriber is being set up
/// can stay disabled for it. Tests that read logs live in their own binary and install this
/// first thing.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// The process-wide capture (installed on first call).
    pub fn global() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let w = logs.clone();
            tracing_subscriber::fmt()
                .with_writer(move || LogWriter(w.0.clone()))
                .with_ansi(false)
                .with_max_level(tracing::Level::WARN)
                .init();
            logs
        })
        .clone()
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
