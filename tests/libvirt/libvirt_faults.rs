//! Cloud faults on libvirt, against the host's real libvirtd (qemu:///system, TCG): what the
//! ZStack and AWS fault tests do with a simulator and a fault proxy, done to the daemon itself.
//!
//! * **connection lost** (the analogue of an expired session): libvirtd killed, kept dead for
//!   2 s and started again while `update --yes` creates the domains — kprov must reconnect and
//!   finish that same run (exit 0, exactly the desired domains running);
//! * **a call that hangs**: libvirtd stopped (SIGSTOP) mid-apply — kprov must fail within a
//!   bounded time (libvirt's client keepalive, `KPROV_LIBVIRT_KEEPALIVE_TIMEOUT`) naming the URI;
//! * **slow jobs**: a 384 MiB base image uploaded while libvirtd is stalled over and over (each
//!   stall shorter than the keepalive timeout) — the apply waits and finishes, with progress;
//! * **libvirt refusing** (the analogue of a cloud error): the pool directory made immutable
//!   (even root cannot create a volume in it), a domain kprov did not make holding a node's name.
//!
//! After each other fault: a clear message (object, URI, fix), nothing a re-run cannot fix — the
//! re-run converges to exactly the desired running domains, a no-op update plans nothing, and
//! `delete` leaves nothing. As in `tests/libvirt/libvirt_kill.rs`, the base image is a blank qcow2:
//! nothing boots, every libvirt object is real. libvirtd is always resumed / restarted on the
//! way out ([`LibvirtdRestore`]), also after a failed assertion.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kprov_testkit::vm::*;

use crate::KPROV;

const URI: &str = "qemu:///system";

/// On the way out: delete the cluster, destroy what is left (foreign test domains included:
/// they carry the cluster's prefix), make the pool directory mutable again, undo the host setup.
struct Cleanup {
    store: String,
    cluster: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .arg("-i")
            .arg(pool_dir(&self.cluster))
            .stderr(Stdio::null())
            .status();
        delete_cluster_and_leftovers(KPROV, &self.store, &self.cluster);
        host_teardown();
    }
}

fn pool_dir(cluster: &str) -> String {
    format!("/var/lib/libvirt/images/kprov.{cluster}")
}

/// A test's setup: the locks, peers, host, a cluster of 1 control plane + 2 workers booting a
/// blank base image of `size`. `None` when peers are missing and `KPROV_SKIP_PEERS=1`.
struct Setup {
    cluster: String,
    kprov: Kprov,
    want: Vec<String>,
    img: tempfile::TempDir,
    // fields drop in declaration order: libvirtd runs again before the cleanup needs it
    _restore: LibvirtdRestore,
    _cleanup: Cleanup,
}

fn setup(test: &str, tag: &str, size: &str, preallocate: bool) -> Option<Setup> {
    if !require_vm_peers(test) {
        return None;
    }
    host_setup();
    let cluster = format!("{tag}{}", std::process::id() % 100000);
    let kprov = Kprov::for_vms(KPROV);
    let cleanup = Cleanup {
        store: format!("file://{}", kprov.state.path().display()),
        cluster: cluster.clone(),
    };
    let img = tempfile::tempdir().unwrap();
    blank_base_image(img.path(), size, preallocate);
    let mut want = vec![
        format!("{cluster}-control-plane-0"),
        format!("{cluster}-nodes-0"),
        format!("{cluster}-nodes-1"),
    ];
    want.sort();
    let s = Setup {
        cluster,
        kprov,
        want,
        img,
        _restore: LibvirtdRestore,
        _cleanup: cleanup,
    };
    s.create();
    Some(s)
}

impl Setup {
    /// `kprov create cluster` (again after a delete).
    fn create(&self) {
        // forwards to a port nothing listens on: the guests never run an OS anyway
        self.kprov.create_cluster(
            &self.cluster,
            "amd64",
            2,
            "2:2Gi",
            "1:1Gi",
            self.img.path(),
            9,
            9,
            9,
        );
    }

    /// Exactly the desired domains, all running (a start a failed run asked for may still be
    /// finishing inside libvirtd), and a no-op update plans nothing.
    fn converged(&self, when: &str) {
        assert_eq!(
            domains(&format!("{}-", self.cluster)),
            self.want,
            "{when}: exactly the desired domains"
        );
        let running = || {
            let out = virsh("list --state-running --name");
            self.want.iter().all(|d| out.lines().any(|l| l.trim() == d))
        };
        assert!(
            wait_for("the domains to run", Duration::from_secs(15), running),
            "{when}: not all of {:?} run: {}",
            self.want,
            virsh("list --all")
        );
        let again = self.kprov.ok(&["update", "cluster", &self.cluster]);
        assert!(again.contains("No changes needed"), "{when}: {again}");
    }

    /// Re-run `update --yes` (must succeed), check convergence, delete, check nothing is left.
    fn rerun_converges_and_delete_leaves_nothing(&self, when: &str) {
        let out = self
            .kprov
            .ok(&["update", "cluster", &self.cluster, "--yes"]);
        assert!(out.contains("up to date"), "{when}: re-run: {out}");
        self.converged(when);
        self.kprov
            .ok(&["delete", "cluster", &self.cluster, "--yes"]);
        let left = leftovers(&self.cluster);
        assert!(left.is_empty(), "{when}: delete left {left:?}");
    }
}

/// A kprov run in the background, its output collected by threads (no pipe can fill up).
struct Running {
    child: Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
    started: Instant,
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = r.read_to_end(&mut s);
                String::from_utf8_lossy(&s).to_string()
            })
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Running {
            child,
            out,
            err,
            started: Instant::now(),
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait at most `limit`; on timeout kill it (SIGKILL) and fail naming `what`. Returns the
    /// status, stdout+stderr and when it ended (since start).
    fn wait(mut self, limit: Duration, what: &str) -> (ExitStatus, String, Instant) {
        while self.running() {
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let text = format!("{}{}", self.out.join().unwrap(), self.err.join().unwrap());
                panic!(
                    "{what}: kprov still running after {:?}, killed; output:\n{text}",
                    limit
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let ended = Instant::now();
        let status = self.child.wait().unwrap();
        let text = format!("{}{}", self.out.join().unwrap(), self.err.join().unwrap());
        (status, text, ended)
    }
}

/// Poll (every 50 ms, ≤ 120 s) until `cond` holds while `run` is still going; `false` if kprov
/// exited first.
fn when_reached(run: &mut Running, cond: impl Fn() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(120) {
        if !run.running() {
            return false;
        }
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the fault point was not reached within 120 s");
}

fn current_libvirtd() -> i32 {
    let pid = libvirtd_pid().expect("/run/libvirtd.pid");
    assert!(signal(pid, "0"), "libvirtd {pid} is not running");
    pid
}

/// How long kprov waits for a restarting libvirtd in the restart test (its
/// `KPROV_LIBVIRT_KEEPALIVE_TIMEOUT`, set explicitly: the default could change).
const RECONNECT_WINDOW: Duration = Duration::from_secs(30);
/// How long the restart test keeps libvirtd dead before starting it again: long enough that
/// kprov's next call always finds it refusing connections (the path that must wait and
/// reconnect), short enough to leave most of [`RECONNECT_WINDOW`] for libvirtd to come back.
const HELD_DOWN: Duration = Duration::from_secs(2);

#[test]
fn libvirtd_restarted_mid_update_kprov_reconnects_and_finishes() {
    let test = "libvirtd_restarted_mid_update_kprov_reconnects_and_finishes";
    let _serial = vm_lock();
    let _host = host_lock();
    let Some(mut s) = setup(test, "lfr", "16M", false) else {
        return;
    };
    let t0 = Instant::now();
    s.kprov.env.push((
        "KPROV_LIBVIRT_KEEPALIVE_TIMEOUT".into(),
        format!("{}s", RECONNECT_WINDOW.as_secs()),
    ));
    let cp = s.want[0].clone();
    let mut run = Running::start(s.kprov.cmd(&["update", "cluster", &s.cluster, "--yes"]));
    // once the first domain is defined (kprov is starting it or making the next node's
    // volumes): kill -9 libvirtd, keep it dead for HELD_DOWN, start it again
    let reached = when_reached(&mut run, || domains(&cp) == [cp.clone()]);
    assert!(reached, "kprov finished before the first domain appeared");
    let pid = current_libvirtd();
    let killed_at = Instant::now();
    assert!(signal(pid, "KILL"), "kill -9 libvirtd {pid}");
    assert!(
        wait_for("libvirtd to die", Duration::from_secs(10), || !signal(
            pid, "0"
        )),
        "libvirtd {pid} survived SIGKILL"
    );
    std::thread::sleep(HELD_DOWN.saturating_sub(killed_at.elapsed()));
    assert!(
        run.running(),
        "kprov ended while libvirtd was dead: it must wait for it"
    );
    ensure_libvirtd();
    let down = killed_at.elapsed();
    // kprov's window starts when it notices the loss (at the kill at the earliest): a libvirtd
    // that takes most of it to come back is the host's problem, not kprov's — say so
    assert!(
        down < RECONNECT_WINDOW / 2,
        "libvirtd took {down:?} to answer again after the kill; the test needs it back within \
         half of kprov's {RECONNECT_WINDOW:?} reconnect window (host overloaded?)"
    );
    let (status, text, ended) = run.wait(Duration::from_secs(300), "update during restart");
    eprintln!(
        "[faults] libvirtd down {:.1}s; kprov ended {:.1}s after the kill, {status}:\n{text}",
        down.as_secs_f64(),
        ended.duration_since(killed_at).as_secs_f64()
    );
    // kprov is designed to reconnect (docs/providers/libvirt.md, "Lost connection"): the one
    // outcome is that it noticed the loss, reconnected and finished the apply
    assert!(
        status.success(),
        "update across a libvirtd restart must reconnect and finish: {text}"
    );
    assert!(
        text.contains("the libvirt connection was closed; reopening it"),
        "kprov must have noticed the lost connection: {text}"
    );
    assert!(
        text.contains("reconnected to libvirtd"),
        "kprov must have reconnected: {text}"
    );
    assert!(text.contains("up to date"), "{text}");
    s.converged("after the update across the libvirtd restart");
    s.kprov.ok(&["delete", "cluster", &s.cluster, "--yes"]);
    let left = leftovers(&s.cluster);
    assert!(left.is_empty(), "delete left {left:?}");
    eprintln!(
        "[faults] restart test done in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn libvirtd_stopped_mid_update_fails_in_bounded_time_naming_the_uri_and_a_rerun_converges() {
    let test =
        "libvirtd_stopped_mid_update_fails_in_bounded_time_naming_the_uri_and_a_rerun_converges";
    let _serial = vm_lock();
    let _host = host_lock();
    let Some(mut s) = setup(test, "lfs", "16M", false) else {
        return;
    };
    let t0 = Instant::now();
    s.kprov
        .env
        .push(("KPROV_LIBVIRT_KEEPALIVE_TIMEOUT".into(), "3s".into()));
    let cp = s.want[0].clone();
    let mut run = Running::start(s.kprov.cmd(&["update", "cluster", &s.cluster, "--yes"]));
    let reached = when_reached(&mut run, || domains(&cp) == [cp.clone()]);
    assert!(reached, "kprov finished before the first domain appeared");
    let pid = current_libvirtd();
    assert!(signal(pid, "STOP"), "SIGSTOP libvirtd {pid}");
    let stopped_at = Instant::now();
    // Never forever: the executor's retries (8 attempts, backoff ≤ 20 s) on a 3 s keepalive.
    let (status, text, ended) = run.wait(Duration::from_secs(150), "update, libvirtd stopped");
    let took = ended.duration_since(stopped_at);
    eprintln!(
        "[faults] libvirtd stopped; kprov exited {:.1}s later, {status}:\n{text}",
        took.as_secs_f64()
    );
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        took < Duration::from_secs(90),
        "kprov took {took:?} to give up"
    );
    assert!(
        text.contains(&format!("cannot reach {URI}"))
            && text.contains("KPROV_LIBVIRT_KEEPALIVE_TIMEOUT")
            && text.contains("re-run"),
        "the failure must name the URI, the timeout setting and the fix: {text}"
    );
    // A new run while libvirtd is still stopped: opening the connection is bounded too.
    let t = Instant::now();
    let out = s.kprov.run(&["update", "cluster", &s.cluster]);
    let plan_took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!(
        "[faults] plan with libvirtd stopped: {:.1}s, {}: {err}",
        plan_took.as_secs_f64(),
        out.status
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        plan_took < Duration::from_secs(20),
        "opening took {plan_took:?}"
    );
    assert!(
        err.contains(&format!("cannot reach {URI}")) && err.contains("has not answered"),
        "{err}"
    );
    assert!(signal(pid, "CONT"), "SIGCONT libvirtd {pid}");
    assert!(
        wait_for(
            "libvirtd to answer",
            Duration::from_secs(30),
            libvirtd_answers
        ),
        "libvirtd does not answer after SIGCONT"
    );
    // the failed run released its lock: no --force-unlock
    s.rerun_converges_and_delete_leaves_nothing("after SIGSTOP/SIGCONT");
    eprintln!(
        "[faults] stop test done in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn a_stalling_libvirtd_and_a_large_base_upload_still_finish_with_progress() {
    let test = "a_stalling_libvirtd_and_a_large_base_upload_still_finish_with_progress";
    let _serial = vm_lock();
    let _host = host_lock();
    let Some(mut s) = setup(test, "lfw", "384M", true) else {
        return;
    };
    let t0 = Instant::now();
    // stalls of 1.5 s are well inside an 8 s keepalive timeout: slow, not dead
    s.kprov
        .env
        .push(("KPROV_LIBVIRT_KEEPALIVE_TIMEOUT".into(), "8s".into()));
    s.kprov.env.push(("KPROV_LOG".into(), "info".into()));
    let pid = current_libvirtd();
    let mut run = Running::start(s.kprov.cmd(&["update", "cluster", &s.cluster, "--yes"]));
    let mut stalls = 0;
    let mut stalled = Duration::ZERO;
    while run.running() && run.started.elapsed() < Duration::from_secs(240) {
        std::thread::sleep(Duration::from_millis(400));
        assert!(signal(pid, "STOP"));
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(signal(pid, "CONT"));
        stalled += t.elapsed();
        stalls += 1;
    }
    let (status, text, ended) = run.wait(Duration::from_secs(240), "update, libvirtd stalling");
    let wall = ended.duration_since(t0);
    eprintln!(
        "[faults] {stalls} stalls ({:.1}s stopped) during an apply of {:.1}s, {status}:\n{text}",
        stalled.as_secs_f64(),
        wall.as_secs_f64()
    );
    assert!(
        status.success(),
        "a slow libvirtd must not fail the apply: {text}"
    );
    assert!(
        stalls >= 3,
        "only {stalls} stalls: the apply was not slowed"
    );
    assert!(
        text.contains("create instances: 3 to do") && text.contains("3 instances ready"),
        "progress of the apply: {text}"
    );
    assert!(
        text.contains(&format!("uploading volume kprov.{}.base-amd64-", s.cluster))
            && text.contains("of 384 MiB"),
        "progress of the base image upload: {text}"
    );
    assert!(
        !text.contains("reopening it"),
        "a slow libvirtd is not a lost one: {text}"
    );
    s.converged("after a stalling libvirtd");
    s.kprov.ok(&["delete", "cluster", &s.cluster, "--yes"]);
    let left = leftovers(&s.cluster);
    assert!(left.is_empty(), "delete left {left:?}");
    eprintln!(
        "[faults] slow test done in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn libvirt_refusing_names_the_object_and_leaves_nothing_a_rerun_cannot_fix() {
    let test = "libvirt_refusing_names_the_object_and_leaves_nothing_a_rerun_cannot_fix";
    let _serial = vm_lock();
    let _host = host_lock();
    let Some(s) = setup(test, "lfx", "16M", false) else {
        return;
    };
    let t0 = Instant::now();
    let c = s.cluster.clone();
    let dir = pool_dir(&c);

    // 1. The pool's directory is immutable: libvirt (root) cannot create a volume in it. The
    // pool is the one kprov would make (`kprov.C` at its default path), defined beforehand.
    let pool = format!("kprov.{c}");
    virsh(&format!("pool-define-as {pool} dir --target {dir}"));
    virsh(&format!("pool-build {pool}"));
    virsh(&format!("pool-start {pool}"));
    assert!(
        virsh("pool-list --name").lines().any(|l| l.trim() == pool),
        "pool {pool} could not be made"
    );
    let st = Command::new("chattr").arg("+i").arg(&dir).status();
    assert!(
        st.is_ok_and(|s| s.success()),
        "chattr +i {dir} (needs a file system with immutable files)"
    );
    let t = Instant::now();
    let out = s.kprov.run(&["update", "cluster", &c, "--yes"]);
    let took = t.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "[faults] immutable pool dir: {:.1}s, {}:\n{text}",
        took.as_secs_f64(),
        out.status
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("kprov.{c}.base-amd64-"))
            && text.contains("Operation not permitted")
            && text.contains("libvirt host"),
        "the error must name the volume, the cause and where to fix it: {text}"
    );
    // not retried as if the host were unreachable
    assert!(!text.contains("cannot reach"), "{text}");
    assert!(took < Duration::from_secs(30), "took {took:?}: retried?");
    assert!(
        domains(&format!("{c}-")).is_empty(),
        "no domain without its volumes: {:?}",
        domains(&format!("{c}-"))
    );
    let st = Command::new("chattr").arg("-i").arg(&dir).status();
    assert!(st.is_ok_and(|s| s.success()), "chattr -i {dir}");

    // 2. A domain kprov did not make holds a node's name.
    let foreign = format!("{c}-nodes-1");
    let xml = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        xml.path(),
        format!(
            "<domain type='qemu'><name>{foreign}</name><memory unit='MiB'>64</memory>\
             <os><type arch='x86_64' machine='pc'>hvm</type></os></domain>"
        ),
    )
    .unwrap();
    virsh(&format!("define {}", xml.path().display()));
    let foreign_uuid = virsh(&format!("domuuid {foreign}")).trim().to_string();
    assert!(!foreign_uuid.is_empty(), "could not define {foreign}");
    let out = s.kprov.run(&["update", "cluster", &c, "--yes"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("[faults] foreign domain {foreign}: {}:\n{text}", out.status);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "domain {foreign} on {URI} has uuid {foreign_uuid}"
        )) && text.contains("undefine"),
        "the error must name the domain, its uuid and the fix: {text}"
    );
    // refused before anything was made for that node; the others are there
    let vols = virsh(&format!("vol-list {pool}"));
    assert!(
        !vols.contains(&format!("{foreign}.")),
        "volumes made for the refused node: {vols}"
    );
    assert_eq!(
        domains(&format!("{c}-")),
        s.want,
        "the other nodes and the foreign domain"
    );
    // kprov's delete leaves the foreign domain alone
    s.kprov.ok(&["delete", "cluster", &c, "--yes"]);
    assert_eq!(
        leftovers(&c),
        vec![format!("domain {foreign}")],
        "only the foreign domain is left"
    );
    assert_eq!(
        virsh(&format!("domuuid {foreign}")).trim(),
        foreign_uuid,
        "the foreign domain is untouched"
    );
    virsh(&format!("undefine {foreign}"));

    // 3. With both causes gone, a create converges.
    s.create();
    s.rerun_converges_and_delete_leaves_nothing("after libvirt refused");
    eprintln!(
        "[faults] refusing test done in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}
