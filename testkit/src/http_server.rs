//! A tiny HTTP/1.1 server on a free 127.0.0.1 port for tests: GET serves fixed bodies (by exact
//! path, or by path suffix for the VMs' file repository), every request is recorded (when,
//! method, URL-decoded path, body), and it stops when dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Seconds since the server started.
    pub at: f64,
    /// `GET`, `POST`…
    pub method: String,
    /// Path with query.
    pub path: String,
    /// Body (JSON for callbacks).
    pub body: Vec<u8>,
}

/// How GET finds what to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The key equal to the path; other requests than GET answer `ok`.
    Exact,
    /// The first key the path ends with; other requests than GET answer `{}`.
    Suffix,
}

struct Shared {
    seen: Mutex<Vec<Seen>>,
    files: Mutex<BTreeMap<String, Vec<u8>>>,
    lookup: Lookup,
    start: Instant,
}

/// The running server.
pub struct Server {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Start serving `files` (path → body) by exact path.
pub fn serve(files: BTreeMap<String, Vec<u8>>) -> Server {
    Server::start(files, Lookup::Exact)
}

/// Start serving `files` (path suffix → body): the VMs' file repository and phone-home recorder.
pub fn serve_suffix(files: BTreeMap<String, Vec<u8>>) -> Server {
    Server::start(files, Lookup::Suffix)
}

impl Server {
    /// Start serving `files` (path or path suffix → body), one thread per connection.
    pub fn start(files: BTreeMap<String, Vec<u8>>, lookup: Lookup) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            seen: Mutex::new(Vec::new()),
            files: Mutex::new(files),
            lookup,
            start: Instant::now(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (shared2, stop2) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // bounded: stops when the Server is dropped
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let shared3 = shared2.clone();
                        std::thread::spawn(move || {
                            let _ = handle(s, &shared3);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Server {
            port,
            url: format!("http://127.0.0.1:{port}"),
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// Replace what GET serves.
    pub fn set_files(&self, files: BTreeMap<String, Vec<u8>>) {
        *self.shared.files.lock().unwrap() = files;
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("lock").clone()
    }

    /// Seconds since the server started.
    pub fn now(&self) -> f64 {
        self.shared.start.elapsed().as_secs_f64()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(s: TcpStream, shared: &Shared) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    // Decoded, as a web server maps a URL to a file (apt asks for `socat_1.7%2b…_amd64.deb`).
    let raw = parts.next().unwrap_or("");
    let path = percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    shared.seen.lock().unwrap().push(Seen {
        at: shared.start.elapsed().as_secs_f64(),
        method: method.clone(),
        path: path.clone(),
        body,
    });
    let data = (method == "GET").then(|| {
        let files = shared.files.lock().unwrap();
        match shared.lookup {
            Lookup::Exact => files.get(&path).cloned(),
            Lookup::Suffix => suffix_lookup(&files, &path).cloned(),
        }
    });
    let (status, payload): (&str, Vec<u8>) = match data {
        Some(Some(b)) => ("200 OK", b),
        Some(None) => ("404 Not Found", b"not found\n".to_vec()),
        None if shared.lookup == Lookup::Exact => ("200 OK", b"ok\n".to_vec()),
        None => ("200 OK", b"{}".to_vec()),
    };
    let mut w = s;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    )?;
    w.write_all(&payload)?;
    w.flush()
}

/// The content whose key `path` matches, the longest key winning: a key is a suffix of the
/// path, or `PREFIX*SUFFIX` where the path's last segment starts with PREFIX and the path ends
/// with SUFFIX (`containerd-static-*-linux-amd64.tar.gz` next to crictl's
/// `-linux-amd64.tar.gz`).
pub fn suffix_lookup<'a>(files: &'a BTreeMap<String, Vec<u8>>, path: &str) -> Option<&'a Vec<u8>> {
    let last = path.rsplit('/').next().unwrap_or(path);
    files
        .iter()
        .filter(|(k, _)| match k.split_once('*') {
            Some((pre, suf)) => last.starts_with(pre) && path.ends_with(suf),
            None => path.ends_with(k.as_str()),
        })
        .max_by_key(|(k, _)| k.len())
        .map(|(_, d)| d)
}
