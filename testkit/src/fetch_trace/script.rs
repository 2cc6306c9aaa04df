//! The shell reader behind `fetch_trace.rs`: splits a bash script into simple commands,
//! tracks its variables (top-level assignments in order, `local`s and loop variables per
//! function), resolves words through every call site of their function, and turns commands that
//! touch the network into `Action`s. It reads the scripts kprov renders, not all of bash:
//! whatever it cannot follow becomes a problem in the `Trace`, never a silent skip.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::fetchers::{Found, Site};
use super::words::{
    assignment, lit, show, split_commands, strip_prefix_glob, strip_suffix_glob, Cmd, Seg, Tpl,
    KEYWORDS,
};
use super::{Action, Trace};

/// One script being read.
#[derive(Default)]
pub struct Script {
    /// Top-level variables, evaluated in order (as the shell does before `main` runs).
    globals: HashMap<String, String>,
    /// Function → variable → definitions (templates).
    locals: HashMap<String, HashMap<String, Vec<String>>>,
    /// Every simple command, with its function.
    pub(super) cmds: Vec<Cmd>,
    functions: BTreeSet<String>,
}

impl Script {
    /// Read `text` (a script run with `bash`, or a runcmd line) and add what it does to `t`.
    pub fn analyse(text: &str, files: &BTreeMap<String, String>, t: &mut Trace) {
        if text.matches("<<").count() > text.matches("<<<").count() {
            t.problems.push("here-documents are not read".into());
        }
        let mut s = Script::default();
        s.read(text, files, t);
        s.actions(files, t);
    }

    pub(super) fn read(&mut self, text: &str, files: &BTreeMap<String, String>, t: &mut Trace) {
        let mut function: Option<String> = None;
        let mut depth = 0i32;
        let mut logical = String::new();
        let mut in_array = false;
        for raw in text.lines() {
            if let Some(x) = raw.strip_suffix('\\') {
                logical.push_str(x);
                continue;
            }
            // A multi-line array literal (`local need=(` … `)`) is one logical line.
            if in_array || raw.trim_end().ends_with("=(") {
                in_array = raw.trim() != ")";
                logical.push_str(raw);
                logical.push(' ');
                if in_array {
                    continue;
                }
            } else {
                logical.push_str(raw);
            }
            let line = std::mem::take(&mut logical);
            let tl = line.trim();
            if !tl.starts_with('#') {
                let mut from = 0;
                while let Some(p) = tl[from..].find("http") {
                    let u = &tl[from + p..];
                    if u.starts_with("http://") || u.starts_with("https://") {
                        let end = u
                            .find(|c: char| c.is_whitespace() || "\"'$`)".contains(c))
                            .unwrap_or(u.len());
                        t.literal_urls.insert(u[..end].to_string());
                    }
                    from += p + 4;
                }
            }
            if let Some(name) = tl.strip_suffix("() {") {
                assert!(function.is_none(), "nested function {name}");
                function = Some(name.to_string());
                self.functions.insert(name.to_string());
                depth = 1;
                continue;
            }
            let mut pending = vec![line];
            while let Some(l) = pending.pop() {
                for mut c in split_commands(&l, &mut pending) {
                    match c.words.first().map(String::as_str) {
                        Some("{") => depth += 1,
                        Some("}") => depth -= 1,
                        _ => {}
                    }
                    c.function = function.clone();
                    self.note_assignments(&c, files, t);
                    self.cmds.push(c);
                }
            }
            if function.is_some() && depth == 0 {
                function = None;
            }
        }
    }

    /// Record variable definitions: globals in order at top level, templates inside functions.
    pub(super) fn note_assignments(
        &mut self,
        c: &Cmd,
        files: &BTreeMap<String, String>,
        t: &mut Trace,
    ) {
        let words: Vec<&str> = c
            .words
            .iter()
            .map(String::as_str)
            .skip_while(|w| KEYWORDS.contains(w))
            .collect();
        let Some(&first) = words.first() else {
            return;
        };
        let mut defs: Vec<(String, String)> = Vec::new();
        let assign = |w: &str| assignment(w).map(|(n, v)| (n.to_string(), v.to_string()));
        match first {
            "local" | "export" | "readonly" | "declare" => {
                for w in &words[1..] {
                    // `local x` alone declares; only assignments define.
                    if let Some(d) = assign(w) {
                        defs.push(d);
                    }
                }
            }
            "for" if words.get(2) == Some(&"in") => {
                for w in &words[3..] {
                    defs.push((words[1].to_string(), w.to_string()));
                }
            }
            "read" => {
                for w in words[1..].iter().filter(|w| !w.starts_with('-')) {
                    defs.push((w.to_string(), "$(read)".into()));
                }
            }
            ":" if c.function.is_none() => {
                // `: "${X:=default}"`: assign when unset.
                for w in &words[1..] {
                    let w = w.trim_matches('"');
                    if let Some((n, d)) = w
                        .strip_prefix("${")
                        .and_then(|x| x.strip_suffix('}'))
                        .and_then(|x| x.split_once(":="))
                    {
                        if !self.globals.contains_key(n) {
                            let v = self.eval_global(d, t);
                            self.globals.insert(n.to_string(), v);
                        }
                    }
                }
            }
            "." | "source" if c.function.is_none() => {
                let path = self.eval_global(words.get(1).copied().unwrap_or(""), t);
                match files.get(&path) {
                    Some(text) => self.read(&text.clone(), files, t),
                    None => t
                        .problems
                        .push(format!("sources {path}, which is not written")),
                }
            }
            _ => {
                for w in &words {
                    match assign(w) {
                        Some(d) => defs.push(d),
                        None => break,
                    }
                }
            }
        }
        for (n, v) in defs {
            match &c.function {
                None => {
                    let v = self.eval_global(&v, t);
                    self.globals.insert(n, v);
                }
                Some(f) => self
                    .locals
                    .entry(f.clone())
                    .or_default()
                    .entry(n)
                    .or_default()
                    .push(v),
            }
        }
    }

    /// A top-level word's value (must be fully known there).
    pub(super) fn eval_global(&self, raw: &str, t: &mut Trace) -> String {
        let alts = self.expand(raw, None, 0);
        match alts.as_slice() {
            [one] => lit(one).unwrap_or_else(|| {
                t.problems
                    .push(format!("top-level value {raw} is {}", show(one)));
                show(one)
            }),
            _ => {
                t.problems
                    .push(format!("top-level value {raw} has several values"));
                String::new()
            }
        }
    }

    /// Expand a raw word in `function` into alternatives (a variable with several definitions
    /// gives several).
    pub(super) fn expand(&self, raw: &str, function: Option<&str>, depth: usize) -> Vec<Tpl> {
        let b: Vec<char> = raw.chars().collect();
        let mut alts: Vec<Tpl> = vec![Vec::new()];
        let push = |alts: &mut Vec<Tpl>, add: Vec<Tpl>| {
            let mut out = Vec::new();
            for a in alts.iter() {
                for x in &add {
                    let mut n = a.clone();
                    for g in x {
                        match (n.last_mut(), g) {
                            (Some(Seg::Lit(l)), Seg::Lit(m)) => l.push_str(m),
                            _ => n.push(g.clone()),
                        }
                    }
                    out.push(n);
                }
            }
            out.truncate(256);
            *alts = out;
        };
        let one = |s: Seg| vec![vec![s]];
        let mut i = 0;
        let mut in_dq = false;
        while i < b.len() {
            let c = b[i];
            match c {
                '\'' if !in_dq => {
                    let end = b[i + 1..].iter().position(|&x| x == '\'').expect("'") + i + 1;
                    push(&mut alts, one(Seg::Lit(b[i + 1..end].iter().collect())));
                    i = end + 1;
                    continue;
                }
                '"' => in_dq = !in_dq,
                '\\' if i + 1 < b.len() => {
                    push(&mut alts, one(Seg::Lit(b[i + 1].to_string())));
                    i += 2;
                    continue;
                }
                '$' if b.get(i + 1) == Some(&'(') => {
                    let mut d = 0;
                    let mut j = i + 1;
                    while j < b.len() {
                        match b[j] {
                            '(' => d += 1,
                            ')' => {
                                d -= 1;
                                if d == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        j += 1;
                    }
                    let s: String = b[i..=j.min(b.len() - 1)].iter().collect();
                    push(&mut alts, one(Seg::Unknown(s)));
                    i = j + 1;
                    continue;
                }
                '$' if b.get(i + 1) == Some(&'{') => {
                    let end = b[i..].iter().position(|&x| x == '}').unwrap() + i;
                    let inner: String = b[i + 2..end].iter().collect();
                    push(&mut alts, self.param(&inner, function, depth));
                    i = end + 1;
                    continue;
                }
                '$' => {
                    let mut j = i + 1;
                    if b.get(j)
                        .is_some_and(|c| c.is_ascii_digit() || "@*#?$!".contains(*c))
                    {
                        j += 1;
                    } else {
                        while b
                            .get(j)
                            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
                        {
                            j += 1;
                        }
                    }
                    let name: String = b[i + 1..j].iter().collect();
                    if name.is_empty() {
                        push(&mut alts, one(Seg::Lit("$".into())));
                    } else {
                        push(&mut alts, self.param(&name, function, depth));
                    }
                    i = j;
                    continue;
                }
                _ => push(&mut alts, one(Seg::Lit(c.to_string()))),
            }
            i += 1;
        }
        alts
    }

    /// `${inner}` (or `$name`) in `function`.
    pub(super) fn param(&self, inner: &str, function: Option<&str>, depth: usize) -> Vec<Tpl> {
        let unknown = || vec![vec![Seg::Unknown(format!("${{{inner}}}"))]];
        if depth > 8 {
            return unknown();
        }
        let name_end = inner
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(inner.len());
        let (name, op) = inner.split_at(name_end);
        if name.is_empty() {
            return unknown();
        }
        if let Ok(n) = name.parse::<usize>() {
            return match (n, op) {
                (0, "") => vec![vec![Seg::Lit("$0".into())]],
                (n, "") if function.is_some() => vec![vec![Seg::Param(n)]],
                _ => unknown(),
            };
        }
        let value: Vec<Tpl> = match function
            .and_then(|f| self.locals.get(f))
            .and_then(|l| l.get(name))
        {
            Some(defs) => defs
                .iter()
                .flat_map(|d| self.expand(d, function, depth + 1))
                .collect(),
            None => match self.globals.get(name) {
                Some(v) => vec![vec![Seg::Lit(v.clone())]],
                None if op.starts_with(":-") || op.starts_with(":=") => {
                    return self.expand(&op[2..], function, depth + 1)
                }
                None => return unknown(),
            },
        };
        let strip = |f: &dyn Fn(&str) -> String| -> Vec<Tpl> {
            value
                .iter()
                .map(|t| match lit(t) {
                    Some(s) => vec![Seg::Lit(f(&s))],
                    None => vec![Seg::Unknown(format!("${{{inner}}}"))],
                })
                .collect()
        };
        if op.is_empty() || op.starts_with(":-") || op.starts_with(":=") {
            value
        } else if let Some(p) = op.strip_prefix("%%").or_else(|| op.strip_prefix('%')) {
            let longest = op.starts_with("%%");
            strip(&|s| strip_suffix_glob(s, p, longest))
        } else if let Some(p) = op.strip_prefix("##").or_else(|| op.strip_prefix('#')) {
            let longest = op.starts_with("##");
            strip(&|s| strip_prefix_glob(s, p, longest))
        } else {
            unknown()
        }
    }

    /// Resolve a template of `function` to concrete strings through every call site.
    pub(super) fn resolve(
        &self,
        t: &Tpl,
        function: Option<&str>,
        depth: usize,
    ) -> Result<Vec<String>, String> {
        if let Some(s) = lit(t) {
            return Ok(vec![s]);
        }
        if let Some(Seg::Unknown(u)) = t.iter().find(|g| matches!(g, Seg::Unknown(_))) {
            return Err(format!(
                "{} (the part {u} is not known statically)",
                show(t)
            ));
        }
        let f = function.ok_or_else(|| format!("{}: a script argument", show(t)))?;
        if depth > 8 {
            return Err(format!("{}: call chain too deep", show(t)));
        }
        let sites: Vec<&Cmd> = self
            .cmds
            .iter()
            .filter(|c| self.command_words(c).first().map(String::as_str) == Some(f))
            .collect();
        if sites.is_empty() {
            return Err(format!(
                "{} in {f}, which is never called directly",
                show(t)
            ));
        }
        let mut out = Vec::new();
        for c in sites {
            let args = self.command_words(c);
            let mut alts: Vec<Tpl> = vec![Vec::new()];
            for g in t {
                let add: Vec<Tpl> = match g {
                    Seg::Param(n) => match args.get(*n) {
                        Some(a) => self.expand(a, c.function.as_deref(), 0),
                        None => vec![vec![Seg::Lit(String::new())]],
                    },
                    other => vec![vec![other.clone()]],
                };
                alts = alts
                    .iter()
                    .flat_map(|a| add.iter().map(move |x| [a.clone(), x.clone()].concat()))
                    .collect();
            }
            for a in alts {
                out.extend(self.resolve(&a, c.function.as_deref(), depth + 1)?);
            }
        }
        Ok(out)
    }

    /// The words of a command after keywords and leading assignments.
    pub(super) fn command_words(&self, c: &Cmd) -> Vec<String> {
        let mut w: Vec<String> = c
            .words
            .iter()
            .skip_while(|w| KEYWORDS.contains(&w.as_str()))
            .cloned()
            .collect();
        while w.first().is_some_and(|x| assignment(x).is_some()) {
            w.remove(0);
        }
        w
    }

    /// Functions reachable from the top level (a function named anywhere in a reachable
    /// command counts as called: `kprov_phase NAME FUNCTION` runs it through `"$@"`).
    pub(super) fn reachable(&self) -> BTreeSet<Option<String>> {
        let mut seen: BTreeSet<Option<String>> = BTreeSet::from([None]);
        let mut todo = vec![None];
        while let Some(f) = todo.pop() {
            for c in self.cmds.iter().filter(|c| c.function == f) {
                for w in &c.words {
                    let w = w.trim_matches('"').to_string();
                    if self.functions.contains(&w) && seen.insert(Some(w.clone())) {
                        todo.push(Some(w));
                    }
                }
            }
        }
        seen
    }

    /// Every network action of the reachable commands, added to `t`.
    pub(super) fn actions(&self, files: &BTreeMap<String, String>, t: &mut Trace) {
        let reachable = self.reachable();
        let mut out = Found::default();
        for c in self.cmds.iter().filter(|c| reachable.contains(&c.function)) {
            let mut words = self.command_words(c);
            while matches!(
                words.first().map(|w| w.trim_matches('"')),
                Some("exec" | "nohup" | "setsid" | "sudo" | "env")
            ) {
                words.remove(0);
            }
            let Some(first) = words.first() else {
                continue;
            };
            if first == "\"$@\"" || (first == "command" && words.get(1).is_some_and(|w| w == "-v"))
            {
                continue;
            }
            let at = Site {
                s: self,
                c,
                f: c.function.as_deref(),
            };
            for prog in self.expand(first, at.f, 0) {
                let Some(prog) = lit(&prog) else {
                    t.problems.push(format!(
                        "{}: runs `{}`, which is not known statically",
                        at.name(),
                        show(&prog)
                    ));
                    continue;
                };
                if prog == "$0" {
                    continue; // the script re-running itself (`deferred`)
                }
                let base = prog.rsplit('/').next().unwrap_or(&prog).to_string();
                let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
                at.classify(&base, &args, files, t, &mut out);
            }
        }
        for a in out.actions {
            t.actions.insert(match a {
                Action::Kubeadm { sub, config } => Action::Kubeadm {
                    sub,
                    config: out.derived.get(&config).cloned().unwrap_or(config),
                },
                other => other,
            });
        }
    }
}
