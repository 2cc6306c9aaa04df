//! Debian nginx on a free loopback port as a plain file server for tests: `GET /src/…` serves
//! `root/src`, `PUT /put/…` writes under `root/put` (`dav_methods PUT; create_full_put_path on`)
//! and GET reads it back. The access log counts requests. Stopped by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::peers::{euid_is_root, require};
use crate::ports::free_port;
use crate::process::ChildGuard;

/// A running nginx.
pub struct Nginx {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Document root (`src/` and `put/` below it).
    pub root: PathBuf,
    /// Access log (`METHOD URI STATUS` per line).
    pub access_log: PathBuf,
    _guard: ChildGuard,
}

impl Nginx {
    /// Start one with its files in `dir`; `None` when peers are skipped.
    pub fn start(test: &str, dir: &Path) -> Option<Nginx> {
        let bin = require(test, "nginx")?;
        let port = free_port();
        let root = dir.join("root");
        for d in ["src", "put", "tmp"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let access_log = dir.join("access.log");
        let t = dir.join("nginx-tmp");
        std::fs::create_dir_all(&t).unwrap();
        let user = if euid_is_root() {
            "user root root;\n"
        } else {
            ""
        };
        let conf = format!(
            "{user}daemon off;\nworker_processes 1;\npid {pid};\nerror_log {err} warn;\nevents {{ worker_connections 256; }}\nhttp {{\n  log_format k '$request_method $uri $status';\n  access_log {acc} k;\n  client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  fastcgi_temp_path {t}/fastcgi;\n  uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n  client_max_body_size 0;\n  server {{\n    listen 127.0.0.1:{port};\n    root {root};\n    location /src/ {{ }}\n    location /put/ {{\n      dav_methods PUT;\n      create_full_put_path on;\n      dav_access user:rw group:r all:r;\n    }}\n  }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            err = dir.join("error.log").display(),
            acc = access_log.display(),
            t = t.display(),
            root = root.display(),
        );
        let conf_file = dir.join("nginx.conf");
        std::fs::write(&conf_file, conf).unwrap();
        let log = dir.join("nginx.out");
        let mut g = ChildGuard::spawn(
            "nginx",
            Command::new(bin)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&conf_file),
            &log,
        );
        g.wait_listening(port, &dir.join("error.log"));
        Some(Nginx {
            addr: format!("127.0.0.1:{port}"),
            root,
            access_log,
            _guard: g,
        })
    }

    /// Access log lines with this method (e.g. `PUT`).
    pub fn requests(&self, method: &str) -> Vec<String> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&format!("{method} ")))
            .map(str::to_string)
            .collect()
    }
}
