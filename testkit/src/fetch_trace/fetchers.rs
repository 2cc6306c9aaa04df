//! The shell reader's rules for commands that touch the network: curl, wget, python urllib,
//! image pulls, kubeadm, kubectl apply, package managers; any other fetch tool is a problem.

use std::collections::BTreeMap;

use super::script::Script;
use super::words::Cmd;
use super::{Action, Trace};

/// Fetch tools with no rule here: their appearance is a problem, not silence.
pub(super) const UNRULED_FETCHERS: &[&str] = &[
    "git", "skopeo", "helm", "pip", "pip3", "snap", "rsync", "scp", "nc", "aria2c", "fetch",
    "perl", "ruby", "node", "oras", "regctl", "crane",
];

/// Actions found so far, and files made from others (`sed … SRC > DST`).
#[derive(Default)]
pub(super) struct Found {
    pub(super) actions: Vec<Action>,
    pub(super) derived: BTreeMap<String, String>,
}

/// A command being classified.
pub(super) struct Site<'a> {
    pub(super) s: &'a Script,
    pub(super) c: &'a Cmd,
    pub(super) f: Option<&'a str>,
}

/// Options taking a value, per tool (their values are not URLs).
pub(super) const CURL_VALUE_OPTS: &[&str] = &[
    "-o",
    "-m",
    "-H",
    "-d",
    "--data",
    "--data-binary",
    "--retry",
    "--connect-timeout",
    "--max-time",
    "-X",
    "-u",
    "-A",
    "-e",
    "-w",
    "--output",
    "--header",
    "--cacert",
    "-T",
    "--retry-delay",
];
pub(super) const WGET_VALUE_OPTS: &[&str] =
    &["-O", "-T", "-o", "-t", "--output-document", "--header"];

/// Arguments that are not options or option values.
pub(super) fn positional<'a>(args: &[&'a str], value_opts: &[&str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if a.starts_with('-') {
            skip = value_opts.contains(&a.trim_matches('"'));
        } else {
            out.push(*a);
        }
    }
    out
}

/// The value after the first of `names`.
pub(super) fn opt_value<'a>(args: &[&'a str], names: &[&str]) -> Option<&'a str> {
    let i = args.iter().position(|a| names.contains(a))?;
    args.get(i + 1).copied()
}

impl Site<'_> {
    pub(super) fn name(&self) -> &str {
        self.f.unwrap_or("top level")
    }

    /// Concrete values of a raw word (problems recorded).
    pub(super) fn values(&self, raw: &str, t: &mut Trace) -> Vec<String> {
        let mut out = Vec::new();
        for x in self.s.expand(raw, self.f, 0) {
            match self.s.resolve(&x, self.f, 0) {
                Ok(v) => out.extend(v),
                Err(e) => t.problems.push(format!(
                    "{}: `{}`: {e}",
                    self.name(),
                    self.c.words.join(" ")
                )),
            }
        }
        out
    }

    pub(super) fn downloads(&self, urls: &[&str], t: &mut Trace, out: &mut Found) {
        for u in urls {
            for x in self.values(u, t) {
                out.actions.push(Action::Download(x));
            }
        }
    }

    /// The URL argument of `python3 -c CODE ARGS…` when CODE fetches (`urlopen(sys.argv[N]`).
    pub(super) fn python(&self, args: &[&str], t: &mut Trace, out: &mut Found) {
        let code = opt_value(args, &["-c"]).unwrap_or_default();
        let fetches = ["urlopen", "urllib", "requests", "http.client", "socket"];
        if !fetches.iter().any(|k| code.contains(k)) {
            return;
        }
        let n = code
            .find("urlopen(")
            .and_then(|p| code[p..].find("sys.argv[").map(|q| p + q + 9))
            .and_then(|p| code.get(p..p + 1)?.parse::<usize>().ok());
        let after: Vec<&str> = args
            .iter()
            .skip_while(|a| **a != "-c")
            .skip(2)
            .copied()
            .collect();
        match n.and_then(|n| after.get(n.checked_sub(1)?)) {
            Some(u) => self.downloads(&[u], t, out),
            None => t.problems.push(format!(
                "{}: python fetches something not taken from sys.argv",
                self.name()
            )),
        }
    }

    pub(super) fn classify(
        &self,
        base: &str,
        args: &[&str],
        files: &BTreeMap<String, String>,
        t: &mut Trace,
        out: &mut Found,
    ) {
        match base {
            "curl" => self.downloads(&positional(args, CURL_VALUE_OPTS), t, out),
            "wget" => self.downloads(&positional(args, WGET_VALUE_OPTS), t, out),
            "python3" | "python" => self.python(args, t, out),
            // Any package-manager run may reach the OS repositories.
            "apt-get" | "apt" | "dnf" | "yum" | "zypper" | "apk" => {
                out.actions.push(Action::Packages {
                    tool: base.to_string(),
                    function: self.name().to_string(),
                })
            }
            "ctr" | "crictl" | "nerdctl" | "docker" | "podman" if args.contains(&"pull") => {
                match positional(args, &["-n", "--namespace", "--platform"]).last() {
                    Some(i) => {
                        for x in self.values(i, t) {
                            out.actions.push(Action::ImagePull(x));
                        }
                    }
                    None => t
                        .problems
                        .push(format!("{}: {base} pull of what?", self.name())),
                }
            }
            "kubeadm" => {
                let config = opt_value(args, &["--config"]).map(|v| self.values(v, t));
                let config = config.unwrap_or_default();
                if args.first() == Some(&"config") && args.contains(&"pull") {
                    out.actions
                        .push(Action::KubeadmImagesPull(config.join(",")));
                } else if let Some(sub @ ("init" | "join")) = args.first().copied() {
                    for config in config {
                        let sub = sub.to_string();
                        out.actions.push(Action::Kubeadm { sub, config });
                    }
                }
            }
            "kubectl" if args.contains(&"apply") => {
                let paths = opt_value(args, &["-f", "--filename"]).map(|v| self.values(v, t));
                for p in paths.unwrap_or_default() {
                    out.actions.push(if p.contains("://") {
                        Action::Download(p)
                    } else {
                        Action::Apply(p)
                    });
                }
            }
            "sed" => {
                let dst = self.c.redirs.iter().find(|(op, _)| op == ">");
                if let (Some((_, dst)), Some(src)) = (dst, positional(args, &["-e"]).last()) {
                    let pairs = self.values(src, t).into_iter().zip(self.values(dst, t));
                    out.derived.extend(pairs.map(|(s, d)| (d, s)));
                }
            }
            "bash" | "sh" => {
                let script = positional(args, &["-c"]).first().map(|p| self.values(p, t));
                for p in script.unwrap_or_default() {
                    match files.get(&p) {
                        Some(text) => Script::analyse(text, files, t),
                        None => t.problems.push(format!("runs {p}, which is not written")),
                    }
                }
            }
            b if UNRULED_FETCHERS.contains(&b) => t.problems.push(format!(
                "{}: `{}`: {b} may fetch; teach fetch_trace.rs about it",
                self.name(),
                self.c.words.join(" ")
            )),
            _ => {}
        }
    }
}
