//! Benchmark: libvirt API calls of `kprov` per create (N domains), no-op update, plan and delete,
//! against the host's libvirtd (qemu:///system; a blank 16 MiB base image: nothing boots, every
//! libvirt object is real). kprov is not changed for this: each run gets libvirt's client-side
//! log (`LIBVIRT_LOG_FILTERS="1:rpc 1:libvirt"`, `LIBVIRT_LOG_OUTPUTS="1:file:…"`), and
//!
//! * an **RPC call** is one `RPC_CLIENT_MSG_TX_QUEUE` line of the remote program
//!   (`prog=536903814`) with `type=0` (a call; `type=3` lines are stream data packets of a volume
//!   upload, keepalive pings belong to another program);
//! * each call is attributed to the public API entry (`virDomainGetXMLDesc`, …) logged last on
//!   the same thread (kprov makes one libvirt call at a time), for the breakdown.
//!
//! Sizes: 1 control plane + N-1 workers for N = 3 (twice: the counts must be equal) and N = 9;
//! the per-domain cost is the difference of the two sizes / 6. Run: `cargo bench --bench
//! libvirt_calls` (as root; peers from `bash tests/peers/install.sh`). Takes the VM host lock.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Instant;

use kprov_testkit::vm::*;

/// The kprov binary under test.
const KPROV: KprovBin = KprovBin::new(env!("CARGO_BIN_EXE_kprov"));

/// RPC calls of one kprov run: total, the part spent opening the connection, and per API.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Calls {
    total: usize,
    open: usize,
    by_api: BTreeMap<String, usize>,
    stream_packets: usize,
}

/// Whether a function logging at debug level is a public API entry of libvirt.so (module
/// "libvirt"), not libvirt's RPC client or setup internals.
fn is_api(func: &str) -> bool {
    let internal = [
        "virNetClient",
        "virNetSocket",
        "virNetMessage",
        "virNetTLS",
        "virNetSASL",
    ]
    .iter()
    .any(|p| func.starts_with(p))
        || func.starts_with("virKeepAlive")
        || func.starts_with("virRegister")
        || func == "virGlobalInit"
        || func == "virConnectOpenInternal";
    func.starts_with("vir") && !internal
}

/// Count the remote-program calls in a libvirt client log (see the module docs).
fn count(log: &str) -> Calls {
    let mut last_api: BTreeMap<String, String> = BTreeMap::new();
    let mut c = Calls {
        total: 0,
        open: 0,
        by_api: BTreeMap::new(),
        stream_packets: 0,
    };
    for line in log.lines() {
        // "DATE TIME: THREAD: LEVEL : FUNC:LINE : message"
        let parts: Vec<&str> = line.splitn(4, ": ").collect();
        let [_, thread, level, rest] = parts[..] else {
            continue;
        };
        let func = rest.split(':').next().unwrap_or("");
        let msg = rest.split_once(" : ").map(|x| x.1).unwrap_or("");
        if msg.starts_with("RPC_CLIENT_MSG_TX_QUEUE") {
            if !msg.contains(" prog=536903814 ") {
                continue; // keepalive
            }
            if msg.contains(" type=3 ") {
                c.stream_packets += 1;
                continue;
            }
            if !(msg.contains(" type=0 ") || msg.contains(" type=4 ")) {
                continue;
            }
            c.total += 1;
            let api = last_api.get(thread).cloned().unwrap_or_else(|| "?".into());
            if api.starts_with("virConnectOpen") {
                c.open += 1;
            }
            *c.by_api.entry(api).or_default() += 1;
        } else if level.trim() == "debug" && is_api(func) {
            // a public API entry of libvirt.so (module "libvirt"): `virDomainCreate:NNN : dom=…`
            last_api.insert(thread.to_string(), func.to_string());
        }
    }
    c
}

/// Run kprov with libvirt's client log into `log`; returns (output, calls, seconds).
fn counted(kprov: &Kprov, args: &[&str], log: &std::path::Path) -> (String, Calls, f64) {
    let _ = std::fs::remove_file(log);
    let t = Instant::now();
    let out = kprov
        .cmd(args)
        .env("LIBVIRT_LOG_FILTERS", "1:rpc 1:libvirt")
        .env("LIBVIRT_LOG_OUTPUTS", format!("1:file:{}", log.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kprov {args:?} failed:\n{text}");
    let calls = count(&std::fs::read_to_string(log).expect("libvirt client log"));
    (text, calls, secs)
}

struct Gone(String, String);

impl Drop for Gone {
    fn drop(&mut self) {
        let _ = KPROV
            .command()
            .args(["delete", "cluster", &self.1, "--yes", "--force-unlock"])
            .env("KPROV_STATE_STORE", &self.0)
            .stdin(Stdio::null())
            .output();
        force_cleanup(&format!("{}-", self.1));
    }
}

struct Row {
    n: u32,
    create: (Calls, f64),
    noop: (Calls, f64),
    plan: (Calls, f64),
    delete: (Calls, f64),
}

fn one(img: &std::path::Path, n: u32, run: u32) -> Row {
    let cluster = format!("lc{n}r{run}p{}", std::process::id() % 10000);
    let kprov = Kprov::for_vms(KPROV);
    let _gone = Gone(
        format!("file://{}", kprov.state.path().display()),
        cluster.clone(),
    );
    kprov.create_cluster(&cluster, "amd64", n - 1, "2:2Gi", "1:1Gi", img, 9, 9, 9);
    let log = kprov.state.path().join("libvirt-client.log");
    let (text, create, create_s) = counted(&kprov, &["update", "cluster", &cluster, "--yes"], &log);
    assert!(text.contains("up to date"), "{text}");
    assert_eq!(domains(&format!("{cluster}-")).len(), n as usize);
    let (text, noop, noop_s) = counted(&kprov, &["update", "cluster", &cluster, "--yes"], &log);
    assert!(text.contains("No changes needed"), "{text}");
    let (text, plan, plan_s) = counted(&kprov, &["update", "cluster", &cluster], &log);
    assert!(text.contains("No changes needed"), "{text}");
    let (text, delete, delete_s) = counted(&kprov, &["delete", "cluster", &cluster, "--yes"], &log);
    assert!(text.contains("Deleted cluster"), "{text}");
    let left = leftovers(&cluster);
    assert!(left.is_empty(), "delete left {left:?}");
    Row {
        n,
        create: (create, create_s),
        noop: (noop, noop_s),
        plan: (plan, plan_s),
        delete: (delete, delete_s),
    }
}

fn top(c: &Calls) -> String {
    let mut v: Vec<(&String, &usize)> = c.by_api.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .map(|(k, n)| format!("{} {n}", k.trim_start_matches("vir")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Undo the host setup on the way out (also after a failed assertion).
struct Teardown;

impl Drop for Teardown {
    fn drop(&mut self) {
        host_teardown();
    }
}

fn main() {
    let _host = host_lock();
    if !require_vm_peers("bench libvirt_calls") {
        return;
    }
    host_setup();
    let teardown = Teardown;
    let img = tempfile::tempdir().unwrap();
    blank_base_image(img.path(), "16M", false);
    let rows: Vec<Row> = [(3, 1), (3, 2), (9, 1)]
        .into_iter()
        .map(|(n, run)| one(img.path(), n, run))
        .collect();
    drop(teardown);

    println!("libvirt API calls (RPC calls to libvirtd, client-side log; qemu:///system, blank base image)");
    for r in &rows {
        println!(
            "N = {} domains (1 control plane + {} workers):",
            r.n,
            r.n - 1
        );
        for (what, (c, s)) in [
            ("create", &r.create),
            ("no-op update --yes", &r.noop),
            ("plan (update)", &r.plan),
            ("delete", &r.delete),
        ] {
            println!(
                "  {what:<19}: {:>4} calls ({} opening the connection), {:>4} stream packets, {s:>6.2} s",
                c.total, c.open, c.stream_packets
            );
        }
        println!("    create by API: {}", top(&r.create.0));
        println!("    delete by API: {}", top(&r.delete.0));
        println!("    no-op by API : {}", top(&r.noop.0));
    }
    let (a, b, big) = (&rows[0], &rows[1], &rows[2]);
    let same = |x: &Calls, y: &Calls| x.total == y.total;
    println!(
        "stable across two N = 3 runs: create {}, no-op {}, delete {}",
        same(&a.create.0, &b.create.0),
        same(&a.noop.0, &b.noop.0),
        same(&a.delete.0, &b.delete.0)
    );
    let per = |x: usize, y: usize| (y as f64 - x as f64) / (big.n - a.n) as f64;
    println!(
        "per extra domain (N = 3 → 9): create {:.1}, no-op {:.1}, plan {:.1}, delete {:.1} calls",
        per(a.create.0.total, big.create.0.total),
        per(a.noop.0.total, big.noop.0.total),
        per(a.plan.0.total, big.plan.0.total),
        per(a.delete.0.total, big.delete.0.total)
    );
}
