//! The rendered `bootstrap.sh`, run for real with bash: the download function checks SHA-256 and
//! fails loudly on a wrong file (with curl, and with only python3 as on minimal images); phase
//! markers reach the log, the console and the callback URL; `kubeadm join` is retried with
//! backoff through the configured kubeadm path; every rendered script parses (`bash -n`).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kprov_testkit::http_server;

use crate::fixtures::{self, node, NodeKind, Variant};
use kprov::bootstrap::{self, BootstrapOptions, EtcdRestore, NodeAction, Renderer, SnapshotKey};
use sha2::{Digest, Sha256};

fn section(script: &str, begin: &str, end: &str) -> String {
    let start = script
        .find(begin)
        .unwrap_or_else(|| panic!("no {begin} in the script"));
    let stop = script[start..]
        .find(end)
        .unwrap_or_else(|| panic!("no {end} in the script"))
        + start;
    script[start..stop + end.len()].to_string()
}

/// A PATH directory with only the tools a minimal image has (no curl, no wget).
fn minimal_path(dir: &Path) -> PathBuf {
    let bin = dir.join("minimal-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for tool in [
        "bash",
        "sha256sum",
        "cut",
        "mkdir",
        "dirname",
        "rm",
        "mv",
        "sleep",
        "date",
        "cat",
        "python3",
    ] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found in /usr/bin or /bin"));
        std::os::unix::fs::symlink(found, bin.join(tool)).expect("symlink");
    }
    bin
}

fn bash(script: &str, path: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("/bin/bash");
    c.arg("-c").arg(script);
    if let Some(p) = path {
        c.env("PATH", p);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run bash")
}

/// The `kprov_fetch "URL" "DEST" "SHA"` line of a binary in the rendered script.
fn fetch_line(script: &str, binary_dest: &str) -> (String, String, String) {
    let line = script
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kprov_fetch ") && l.contains(&format!("\"{binary_dest}\"")))
        .unwrap_or_else(|| panic!("no fetch of {binary_dest}"));
    let args: Vec<&str> = line.split('"').collect();
    (
        args[1].to_string(),
        args[3].to_string(),
        args[5].to_string(),
    )
}

fn renderer_with_files(url: &str, options: BootstrapOptions) -> (Renderer, Variant) {
    let v = Variant {
        mirror: false,
        ..Variant::default()
    };
    let mut cfg = fixtures::config(&v);
    cfg.cluster.spec.assets.file_repository = Some(format!("{url}/files"));
    (fixtures::renderer_with(cfg, options), v)
}

#[test]
fn fetch_fails_loudly_on_a_wrong_file_and_accepts_the_right_one() {
    let wrong = b"this is not kubeadm\n".to_vec();
    let good = b"#!/bin/sh\necho pretend kubeadm\n".to_vec();
    // Learn the URL path the rendered script asks for, then serve it.
    let probe = http_server::serve(BTreeMap::new());
    let (r, v) = renderer_with_files(&probe.url, BootstrapOptions::default());
    let (req, _) = node(&v, NodeKind::Worker);
    let action = NodeAction::JoinWorker {
        endpoint: "10.0.0.10:6443".into(),
    };
    let script = r.bootstrap_script(&req, &action).expect("script");
    let (url, dest, want) = fetch_line(&script, "/usr/local/bin/kubeadm");
    let table = kprov::spec::versions::release(&r.config().cluster.spec.kubernetes_version)
        .unwrap()
        .binary("kubeadm")
        .unwrap();
    assert_eq!(
        want,
        table.sha256_for(req.arch),
        "the script checks the versions table's sum"
    );
    assert_eq!(
        url,
        kprov::assets::file_url(&table.url_for(req.arch), &r.config().cluster.spec.assets),
        "downloads come from the file repository"
    );
    assert_eq!(dest, "/usr/local/bin/kubeadm");
    let url_path = url
        .strip_prefix(&probe.url)
        .expect("served by the probe")
        .to_string();
    drop(probe);

    let fetch = section(&script, bootstrap::FETCH_BEGIN, bootstrap::FETCH_END);
    let dir = tempfile::tempdir().expect("tempdir");
    let minimal = minimal_path(dir.path());
    for (label, path) in [("curl", None), ("python3 only", Some(minimal.as_path()))] {
        let server = http_server::serve(BTreeMap::from([
            (url_path.clone(), wrong.clone()),
            ("/good".to_string(), good.clone()),
        ]));
        let wrong_url = format!("{}{url_path}", server.url);
        let target = dir
            .path()
            .join(format!("{}/kubeadm", label.replace(' ', "-")));
        let t = target.to_str().expect("utf-8");

        let out = bash(
            &format!("{fetch}\nkprov_fetch '{wrong_url}' '{t}' '{want}'"),
            path,
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let got = hex::encode(Sha256::digest(&wrong));
        assert!(
            !out.status.success(),
            "[{label}] a wrong file must fail the fetch"
        );
        assert!(
            stderr.contains("kubeadm") && stderr.contains(&want) && stderr.contains(&got),
            "[{label}] the error must name the file and both sums:\n{stderr}"
        );
        assert!(
            !target.exists(),
            "[{label}] a bad download must not be installed"
        );
        assert!(
            !Path::new(&format!("{t}.part")).exists(),
            "[{label}] partial file left behind"
        );
        println!("[{label}] wrong file rejected: {}", stderr.trim());

        let good_sum = hex::encode(Sha256::digest(&good));
        let good_url = format!("{}/good", server.url);
        let out = bash(&format!("{fetch}\nkprov_fetch '{good_url}' '{t}' '{good_sum}' && kprov_fetch '{good_url}' '{t}' '{good_sum}'"), path, &[]);
        assert!(
            out.status.success(),
            "[{label}] right file: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&target).expect("installed"), good);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("already present"),
            "[{label}] a second fetch keeps the checked file"
        );
        let gets = server
            .requests()
            .iter()
            .filter(|s| s.method == "GET" && s.path == "/good")
            .count();
        assert_eq!(
            gets, 1,
            "[{label}] the second fetch must not download again"
        );
    }
}

#[test]
fn phases_report_to_log_console_and_callback() {
    let v = Variant::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let minimal = minimal_path(dir.path());
    for (label, path) in [("curl", None), ("python3 only", Some(minimal.as_path()))] {
        let server = http_server::serve(BTreeMap::new());
        let opts = BootstrapOptions {
            callback_url: Some(server.url.clone()),
            ..BootstrapOptions::default()
        };
        let r = fixtures::renderer_with(fixtures::config(&v), opts);
        let (req, ctx) = node(&v, NodeKind::Worker);
        let files = r.files(&req, &ctx).expect("files");
        let env = files
            .iter()
            .find(|f| f.path == bootstrap::ENV_PATH)
            .expect("env file");
        assert!(
            env.content
                .contains(&format!("KPROV_CALLBACK_URL='{}'", server.url)),
            "{}",
            env.content
        );
        let script = &files
            .iter()
            .find(|f| f.path == bootstrap::SCRIPT_PATH)
            .expect("script")
            .content;
        let report = section(script, bootstrap::REPORT_BEGIN, bootstrap::REPORT_END);
        let log = dir.path().join(format!("{label}.log"));
        let console = dir.path().join(format!("{label}.console"));
        let body =
            format!("{report}\nkprov_phase alpha true\nkprov_phase beta false\necho unreachable");
        let out = bash(
            &body,
            path,
            &[
                ("KPROV_LOG", log.to_str().unwrap()),
                ("KPROV_CONSOLE", console.to_str().unwrap()),
                ("KPROV_CALLBACK_URL", &server.url),
                ("KPROV_NODE_NAME", &req.name),
                ("KPROV_CLUSTER", "demo"),
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "[{label}] a failed phase stops the bootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains("unreachable"));
        for f in [&log, &console] {
            let text = std::fs::read_to_string(f).expect("marker file");
            let markers: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("KPROV_PHASE "))
                .collect();
            assert_eq!(
                markers,
                ["KPROV_PHASE alpha ok", "KPROV_PHASE beta failed"],
                "[{label}] {}",
                f.display()
            );
        }
        let posts: Vec<serde_json::Value> = server
            .requests()
            .iter()
            .filter(|s| s.method == "POST" && s.path == "/kprov/phase")
            .map(|s| serde_json::from_slice(&s.body).expect("callback body is JSON"))
            .collect();
        assert_eq!(posts.len(), 2, "[{label}] one callback per phase");
        assert_eq!(posts[0]["phase"], "alpha");
        assert_eq!(posts[0]["status"], "ok");
        assert_eq!(posts[1]["status"], "failed");
        assert_eq!(posts[1]["node"], req.name.as_str());
        println!("[{label}] markers and {} callbacks ok", posts.len());
    }
}

#[test]
fn join_is_retried_with_backoff_through_the_configured_kubeadm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let standin = dir.path().join("kubeadm");
    let calls = dir.path().join("calls");
    std::fs::write(
        &standin,
        format!(
            "#!/bin/bash\necho \"$*\" >> '{c}'\nif [ \"$1\" = join ]; then\n  n=$(grep -c '^join' '{c}')\n  [ \"$n\" -ge 3 ]\nfi\n",
            c = calls.display()
        ),
    )
    .expect("stand-in");
    std::fs::set_permissions(&standin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let opts = BootstrapOptions {
        kubeadm_path: Some(standin.to_str().unwrap().into()),
        ..BootstrapOptions::default()
    };
    let v = Variant::default();
    let r = fixtures::renderer_with(fixtures::config(&v), opts);
    let (req, ctx) = node(&v, NodeKind::Worker);
    let files = r.files(&req, &ctx).expect("files");
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).expect("mkdir");
    let mut script = PathBuf::new();
    for f in &files {
        if let Some(name) = f.path.strip_prefix("/etc/kprov/") {
            std::fs::write(etc.join(name), &f.content).expect("write");
        }
        if f.path == bootstrap::SCRIPT_PATH {
            script = dir.path().join("bootstrap.sh");
            std::fs::write(&script, &f.content).expect("write");
        }
    }
    let env_text = std::fs::read_to_string(etc.join("bootstrap.env")).expect("env");
    assert!(env_text.contains(&format!("KPROV_KUBEADM='{}'", standin.display())));
    let out = bash(
        &format!(". '{}'\nphase_kubeadm_join", script.display()),
        None,
        &[
            ("KPROV_SOURCE_ONLY", "1"),
            ("KPROV_ENV", etc.join("bootstrap.env").to_str().unwrap()),
            ("KPROV_ETC", etc.to_str().unwrap()),
            ("KPROV_JOIN_RETRY_DELAY", "1"),
        ],
    );
    assert!(
        out.status.success(),
        "join did not succeed on the third try:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let recorded = std::fs::read_to_string(&calls).expect("calls");
    let lines: Vec<&str> = recorded.lines().collect();
    let node_cfg = etc.join("kubeadm-join.node.yaml");
    let join = format!("join --config {}", node_cfg.display());
    assert_eq!(
        lines,
        [
            join.as_str(),
            "reset --force",
            join.as_str(),
            "reset --force",
            join.as_str()
        ],
        "kubeadm calls"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("retrying in 1s") && stdout.contains("retrying in 2s"),
        "backoff doubles:\n{stdout}"
    );
    let cfg = std::fs::read_to_string(&node_cfg).expect("node config");
    assert!(
        !cfg.contains("@KPROV_NODE_IP@"),
        "the node address is filled in:\n{cfg}"
    );
    assert_eq!(
        std::fs::metadata(&node_cfg).unwrap().permissions().mode() & 0o077,
        0,
        "the config holds the token: not readable by others"
    );
}

#[test]
fn every_rendered_script_parses() {
    let mut n = 0;
    for cni in ["flannel", "calico", "none"] {
        for addons in [false, true] {
            let v = Variant {
                cni,
                addons,
                ..Variant::default()
            };
            let r = fixtures::renderer(&v);
            for kind in NodeKind::ALL {
                let (req, ctx) = node(&v, kind);
                let mut actions = vec![(r.clone(), r.action(&req, &ctx).expect("action"))];
                if kind == NodeKind::FirstControlPlane {
                    let init_or_join = NodeAction::InitOrJoin {
                        endpoint: "api.demo.internal:6443".into(),
                    };
                    actions.push((r.clone(), init_or_join.clone()));
                    // the replacement of the only control plane, restoring an etcd snapshot
                    let restoring = r.clone().with_restore(Some(EtcdRestore {
                        url: "https://s3.example/b/demo/restore/etcd-snapshot.enc?X-Amz-Signature=ab&x=1".into(),
                        sha256: "0".repeat(64),
                        key: SnapshotKey::generate(),
                    }));
                    let script = restoring.bootstrap_script(&req, &init_or_join).unwrap();
                    assert!(
                        script.contains("kprov_phase etcd-restore phase_etcd_restore")
                            && script.contains("DirAvailable--var-lib-etcd"),
                        "{script}"
                    );
                    actions.push((restoring, init_or_join));
                }
                for (r, action) in actions {
                    let script = r.bootstrap_script(&req, &action).expect("script");
                    let out = Command::new("/bin/bash")
                        .args(["-n", "-c", &script])
                        .output()
                        .expect("bash -n");
                    assert!(
                        out.status.success(),
                        "{kind:?} {action:?}: bash -n: {}\n{script}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    n += 1;
                }
            }
        }
    }
    println!("bash -n: {n} rendered scripts parse");
}

/// `kprov_image_containerd` (from the rendered script, run with bash against a stand-in
/// `containerd` on PATH): the image's containerd is kept for 1.6 and 1.7 in both upstream
/// (`v1.7.34`) and Debian (`1.6.20~ds1`) spelling, and replaced for 2.x, 1.5 or none.
#[test]
fn the_image_containerd_is_kept_only_for_the_versions_kprovs_config_suits() {
    let v = Variant::default();
    let r = fixtures::renderer(&v);
    let (req, _) = node(&v, NodeKind::Worker);
    let action = NodeAction::JoinWorker {
        endpoint: "10.0.0.10:6443".into(),
    };
    let script = r.bootstrap_script(&req, &action).expect("script");
    let func = section(&script, "kprov_image_containerd() {", "\n}\n");
    let log = "kprov_log() { :; }\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = minimal_path(dir.path());
    let awk = ["/usr/bin/awk", "/bin/awk"]
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("awk");
    std::os::unix::fs::symlink(awk, bin.join("awk")).expect("symlink");
    let cases = [
        (
            Some("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"),
            true,
        ),
        (
            Some("containerd github.com/containerd/containerd v1.7.34 0cd3a2d2"),
            true,
        ),
        (
            Some("containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7"),
            false,
        ),
        (
            Some("containerd github.com/containerd/containerd v1.5.18 abc"),
            false,
        ),
        (None, false),
    ];
    for (version, kept) in cases {
        let fake = bin.join("containerd");
        let _ = std::fs::remove_file(&fake);
        if let Some(v) = version {
            std::fs::write(&fake, format!("#!/bin/bash\necho '{v}'\n")).expect("write");
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let out = bash(
            &format!("{log}{func}\nkprov_image_containerd"),
            Some(&bin),
            &[],
        );
        assert_eq!(
            out.status.success(),
            kept,
            "{version:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The runtime is fetched only under its condition, and the unit follows the install.
    let block = section(&script, "if ! kprov_image_containerd; then", "  fi");
    assert!(
        block.contains("containerd-static-") && block.contains("kprov_containerd_unit"),
        "{block}"
    );
    let runc = section(&script, "if ! command -v runc", "  fi");
    assert!(runc.contains("\"/usr/local/sbin/runc\""), "{runc}");
}

/// A directory with stand-ins for `kubeadm` (records its arguments and what the manifest
/// directory held at that moment; `join` fails `fail_joins` times, `reset` empties the manifest
/// directory as kubeadm's does) and `ip` (the node's interface `enp9s0` with 192.168.150.17).
fn static_pod_stand_ins(dir: &Path, manifests: &Path, fail_joins: usize) -> (PathBuf, PathBuf) {
    let bin = dir.join("stand-in-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let calls = dir.join("calls");
    let kubeadm = bin.join("kubeadm");
    std::fs::write(
        &kubeadm,
        format!(
            "#!/bin/bash\n{{ echo \"$*\"; cat '{m}'/*.yaml 2>/dev/null | grep -E 'vip_interface|path: \"?/etc/kubernetes' | tr -s ' ' ; }} >> '{c}'\n\
             case \"$1\" in\n  reset) rm -f '{m}'/*.yaml ;;\n  join) [ \"$(grep -c '^join' '{c}')\" -gt {fail_joins} ] ;;\nesac\n",
            m = manifests.display(),
            c = calls.display()
        ),
    )
    .expect("kubeadm stand-in");
    std::fs::write(
        bin.join("ip"),
        "#!/bin/bash\ncase \"$*\" in\n  *'route get'*) echo \"$4 dev enp9s0 src 192.168.150.17 uid 0\" ;;\n  *'addr show'*) echo '1: lo    inet 127.0.0.1/8 scope host lo'; echo '2: enp9s0    inet 192.168.150.17/24 brd 192.168.150.255 scope global enp9s0' ;;\nesac\n",
    )
    .expect("ip stand-in");
    for f in ["kubeadm", "ip"] {
        std::fs::set_permissions(bin.join(f), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    (kubeadm, calls)
}

#[test]
fn kube_vip_is_installed_before_kubeadm_with_the_nodes_interface_and_the_right_kubeconfig() {
    let v = Variant::default();
    let mut cfg = fixtures::config(&v);
    cfg.cluster.spec.control_plane.load_balancer = Some(kprov::spec::LoadBalancerKind::KubeVip);
    let vip = kprov::apply::RenderContext {
        control_plane_endpoint: "192.168.150.253:6443".into(),
    };
    for (kind, phase, fail_joins) in [
        (NodeKind::FirstControlPlane, "phase_kubeadm_init", 0),
        (NodeKind::ExtraControlPlane, "phase_kubeadm_join", 1),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifests = dir.path().join("manifests");
        let (kubeadm, calls) = static_pod_stand_ins(dir.path(), &manifests, fail_joins);
        let r = fixtures::renderer_with(
            cfg.clone(),
            BootstrapOptions {
                kubeadm_path: Some(kubeadm.to_str().unwrap().into()),
                ..BootstrapOptions::default()
            },
        );
        let (req, _) = node(&v, kind);
        let files = r.files(&req, &vip).expect("files");
        let etc = dir.path().join("etc");
        let mut script = PathBuf::new();
        for f in &files {
            if let Some(name) = f.path.strip_prefix("/etc/kprov/") {
                let to = etc.join(name);
                std::fs::create_dir_all(to.parent().unwrap()).expect("mkdir");
                std::fs::write(to, &f.content).expect("write");
            }
            if f.path == bootstrap::SCRIPT_PATH {
                script = dir.path().join("bootstrap.sh");
                std::fs::write(&script, &f.content).expect("write");
            }
        }
        assert!(
            etc.join("static-pods/kube-vip.yaml").exists(),
            "{kind:?}: the user-data writes kube-vip"
        );
        // the script sets its own PATH: the stand-ins go in front of it after sourcing
        let out = bash(
            &format!(
                ". '{}'\nPATH='{}':$PATH\n{phase}",
                script.display(),
                kubeadm.parent().unwrap().display()
            ),
            None,
            &[
                ("KPROV_SOURCE_ONLY", "1"),
                ("KPROV_ENV", etc.join("bootstrap.env").to_str().unwrap()),
                ("KPROV_ETC", etc.to_str().unwrap()),
                ("KPROV_MANIFESTS_DIR", manifests.to_str().unwrap()),
                ("KPROV_JOIN_RETRY_DELAY", "1"),
            ],
        );
        let recorded = std::fs::read_to_string(&calls).unwrap_or_default();
        assert!(
            out.status.success(),
            "{kind:?}: {phase} failed:\n{}{}\n{recorded}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let runs: Vec<&str> = recorded.lines().collect();
        // every init/join ran with kube-vip in place, naming the node's interface
        let kubeadm_runs: Vec<usize> = runs
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("init ") || l.starts_with("join "))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(kubeadm_runs.len(), 1 + fail_joins, "{kind:?}:\n{recorded}");
        let kubeconfig = if kind == NodeKind::FirstControlPlane {
            "/etc/kubernetes/super-admin.conf"
        } else {
            "/etc/kubernetes/admin.conf"
        };
        for i in kubeadm_runs {
            assert!(
                runs[i]
                    .contains("--ignore-preflight-errors=DirAvailable--etc-kubernetes-manifests"),
                "{kind:?}: kubeadm accepts the filled manifest directory: {}",
                runs[i]
            );
            let state = runs[i + 1..]
                .iter()
                .take(2)
                .copied()
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                state.contains("value: \"enp9s0\"") && state.contains(kubeconfig),
                "{kind:?}: kube-vip in place (interface enp9s0, {kubeconfig}) when kubeadm ran:\n{recorded}"
            );
        }
        let installed =
            std::fs::read_to_string(manifests.join("kube-vip.yaml")).expect("installed");
        assert!(!installed.contains("@KPROV_"), "{installed}");
        assert!(
            installed.contains("value: \"192.168.150.253\""),
            "{installed}"
        );
        assert!(
            installed.contains("/etc/kubernetes/admin.conf")
                && !installed.contains("super-admin.conf"),
            "{kind:?}: kube-vip uses admin.conf once kubeadm is done:\n{installed}"
        );
    }
}
