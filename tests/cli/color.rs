//! Colour handling of the CLI, on a real pseudo-terminal (`script` from util-linux): the plan is
//! coloured on a terminal, and plain with `--no-color`, `NO_COLOR`, `CLICOLOR=0` or a pipe.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kprov_zstack_sim::{SimConfig, Simulator};

const PASSWORD: &str = "colour-test-password-7d1f";

/// Run kprov with `args` under a pseudo-terminal (or a pipe when `tty` is false) and `env`,
/// returning everything it wrote.
fn run(state: &std::path::Path, tty: bool, args: &[&str], env: &[(&str, &str)]) -> String {
    // On the terminal kprov runs directly: the audit wrapper (tests/run.sh's leak scan) records
    // its output through pipes, so under it stdout is never a terminal. These runs print no
    // secret (the ZStack password is only in the environment).
    let kprov = if tty {
        Command::new(crate::KPROV.path())
    } else {
        crate::KPROV.command()
    };
    let mut argv: Vec<String> = std::iter::once(kprov.get_program())
        .chain(kprov.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut c = if tty {
        assert!(
            Path::new("/usr/bin/script").exists(),
            "`script` is missing: apt-get install bsdutils"
        );
        let quoted: Vec<String> = argv
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect();
        let mut c = Command::new("script");
        c.args(["-qefc", &quoted.join(" "), "/dev/null"]);
        c
    } else {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    c.env("KPROV_STATE_STORE", format!("file://{}", state.display()))
        .env("ZSTACK_ACCOUNT", "admin")
        .env("ZSTACK_PASSWORD", PASSWORD)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("KPROV_CLUSTER_NAME")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run kprov");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kprov {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plan_is_coloured_only_on_a_terminal_that_wants_colour() {
    let sim = Simulator::start(SimConfig {
        admin_account: ("admin".into(), PASSWORD.into()),
        job_delay: Duration::from_millis(20),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let state = tempfile::tempdir().unwrap();
    let ep = sim.endpoint();
    let dir = state.path().to_path_buf();
    let texts = tokio::task::spawn_blocking(move || {
        run(
            &dir,
            false,
            &[
                "create",
                "cluster",
                "c1",
                "--provider",
                "zstack",
                "--zstack-endpoint",
                &ep,
            ],
            &[],
        );
        let plan = ["update", "cluster", "c1"];
        [
            ("terminal", run(&dir, true, &plan, &[])),
            (
                "--no-color",
                run(&dir, true, &["update", "cluster", "c1", "--no-color"], &[]),
            ),
            ("NO_COLOR=1", run(&dir, true, &plan, &[("NO_COLOR", "1")])),
            ("CLICOLOR=0", run(&dir, true, &plan, &[("CLICOLOR", "0")])),
            ("a pipe", run(&dir, false, &plan, &[])),
        ]
    })
    .await
    .unwrap();
    for (how, text) in &texts {
        assert!(
            text.contains("Will create resources:"),
            "{how}: no plan in\n{text}"
        );
        let coloured = text.contains("\u{1b}[");
        assert_eq!(
            coloured,
            *how == "terminal",
            "{how}: coloured = {coloured} in\n{text:?}"
        );
    }
}
