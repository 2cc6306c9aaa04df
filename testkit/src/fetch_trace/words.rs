//! The shell reader's words: a logical line split into simple commands (words and redirections,
//! `$( )` bodies returned as nested lines), assignments, and the templates words expand to.

/// A piece of an expanded word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Lit(String),
    /// Positional parameter N of the enclosing function.
    Param(usize),
    /// Something not known statically (command substitution, arithmetic, `read` results).
    Unknown(String),
}

pub(super) type Tpl = Vec<Seg>;

pub(super) fn lit(t: &Tpl) -> Option<String> {
    let mut s = String::new();
    for g in t {
        match g {
            Seg::Lit(l) => s.push_str(l),
            _ => return None,
        }
    }
    Some(s)
}

pub(super) fn show(t: &Tpl) -> String {
    t.iter()
        .map(|g| match g {
            Seg::Lit(l) => l.clone(),
            Seg::Param(n) => format!("${n}"),
            Seg::Unknown(u) => format!("<{u}>"),
        })
        .collect()
}

/// A simple command: words (raw, quotes kept) and redirections (operator, raw target).
#[derive(Debug, Clone, Default)]
pub(super) struct Cmd {
    pub(super) words: Vec<String>,
    pub(super) redirs: Vec<(String, String)>,
    pub(super) function: Option<String>,
}

/// Split one logical line into simple commands; `$( )`, `<( )`, `>( )` bodies are returned as
/// nested lines (analysed as commands of the same function).
pub(super) fn split_commands(line: &str, nested: &mut Vec<String>) -> Vec<Cmd> {
    let b: Vec<char> = line.chars().collect();
    let mut cmds = vec![Cmd::default()];
    let mut word = String::new();
    let mut redir: Option<String> = None;
    let mut i = 0;
    let flush = |word: &mut String, redir: &mut Option<String>, cmds: &mut Vec<Cmd>| {
        if word.is_empty() {
            return;
        }
        let c = cmds.last_mut().unwrap();
        match redir.take() {
            Some(op) => c.redirs.push((op, std::mem::take(word))),
            None => c.words.push(std::mem::take(word)),
        }
    };
    // Index after the `)` closing a `(` at `start` (quotes and nesting respected).
    let close = |start: usize| -> usize {
        let mut depth = 0;
        let mut j = start;
        let mut q: Option<char> = None;
        while j < b.len() {
            let c = b[j];
            match q {
                Some('\'') if c == '\'' => q = None,
                Some('"') if c == '"' => q = None,
                Some('"') if c == '\\' => j += 1,
                Some(_) => {}
                None => match c {
                    '\'' | '"' => q = Some(c),
                    '\\' => j += 1,
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                },
            }
            j += 1;
        }
        panic!("unbalanced parentheses in: {line}")
    };
    let mut q: Option<char> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(qc) = q {
            word.push(c);
            if c == qc {
                q = None;
            } else if qc == '"' && c == '\\' && i + 1 < b.len() {
                word.push(b[i + 1]);
                i += 1;
            } else if qc == '"' && c == '$' && b.get(i + 1) == Some(&'(') {
                let end = close(i + 1);
                let inner: String = b[i + 2..end - 1].iter().collect();
                word.push('(');
                word.push_str(&inner);
                word.push(')');
                if !inner.starts_with('(') {
                    nested.push(inner);
                }
                i = end;
                continue;
            }
            i += 1;
            continue;
        }
        match c {
            '\'' | '"' => {
                q = Some(c);
                word.push(c);
            }
            '\\' if i + 1 < b.len() => {
                word.push(c);
                word.push(b[i + 1]);
                i += 1;
            }
            '#' if word.is_empty() => break,
            '$' if b.get(i + 1) == Some(&'(') => {
                let end = close(i + 1);
                let inner: String = b[i + 1..end].iter().collect();
                if !inner.starts_with("((") {
                    nested.push(inner[1..inner.len() - 1].to_string());
                }
                word.push('$');
                word.push_str(&inner);
                i = end;
                continue;
            }
            '$' if b.get(i + 1) == Some(&'{') => {
                let end = b[i..].iter().position(|&x| x == '}').expect("${") + i;
                word.extend(&b[i..=end]);
                i = end + 1;
                continue;
            }
            '<' | '>' if b.get(i + 1) == Some(&'(') => {
                flush(&mut word, &mut redir, &mut cmds);
                let end = close(i + 1);
                nested.push(b[i + 2..end - 1].iter().collect());
                i = end;
                continue;
            }
            '<' | '>' => {
                let fd = !word.is_empty() && word.chars().all(|c| c.is_ascii_digit());
                if fd {
                    word.clear();
                } else {
                    flush(&mut word, &mut redir, &mut cmds);
                }
                let mut op = String::from(c);
                while i + 1 < b.len() && matches!(b[i + 1], '<' | '>' | '&') {
                    op.push(b[i + 1]);
                    i += 1;
                }
                redir = Some(op);
            }
            ' ' | '\t' => flush(&mut word, &mut redir, &mut cmds),
            '(' if word.ends_with('=') => {
                // An array literal `x=( … )` / `x+=( … )`: part of the assignment word.
                let end = close(i);
                word.extend(&b[i..end]);
                i = end;
                continue;
            }
            ';' | '|' | '&' | '(' | ')' => {
                flush(&mut word, &mut redir, &mut cmds);
                while i + 1 < b.len() && matches!(b[i + 1], '|' | '&') {
                    i += 1;
                }
                cmds.push(Cmd::default());
            }
            _ => word.push(c),
        }
        i += 1;
    }
    assert!(q.is_none(), "unterminated quote in: {line}");
    flush(&mut word, &mut redir, &mut cmds);
    cmds.retain(|c| !c.words.is_empty() || !c.redirs.is_empty());
    cmds
}

/// `NAME=VALUE` or `NAME+=VALUE` → (NAME, VALUE).
pub(super) fn assignment(w: &str) -> Option<(&str, &str)> {
    let (n, v) = w.split_once('=')?;
    let n = n.strip_suffix('+').unwrap_or(n);
    (!n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some((n, v))
}

/// Words that start compound commands or are no-ops before the real command word.
pub(super) const KEYWORDS: &[&str] = &[
    "if", "then", "elif", "else", "fi", "do", "done", "while", "until", "!", "{", "}", "time",
];

pub fn glob_match(s: &str, pat: &str) -> bool {
    match pat.split_once('*') {
        None => s == pat,
        Some((a, b)) => s.len() >= a.len() + b.len() && s.starts_with(a) && s.ends_with(b),
    }
}

pub(super) fn strip_suffix_glob(s: &str, pat: &str, longest: bool) -> String {
    let mut cuts: Vec<usize> = (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect();
    if longest {
        cuts.sort();
    } else {
        cuts.sort_by(|a, b| b.cmp(a));
    }
    for i in cuts {
        if glob_match(&s[i..], pat) {
            return s[..i].to_string();
        }
    }
    s.to_string()
}

pub(super) fn strip_prefix_glob(s: &str, pat: &str, longest: bool) -> String {
    let mut cuts: Vec<usize> = (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect();
    if longest {
        cuts.sort_by(|a, b| b.cmp(a));
    }
    for i in cuts {
        if glob_match(&s[..i], pat) {
            return s[i..].to_string();
        }
    }
    s.to_string()
}
