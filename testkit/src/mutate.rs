//! Mutations of valid inputs for the property tests (`tests/cli/input_props.rs`): structural ones on
//! the parsed documents (drop, duplicate, retype, extreme numbers, random unicode, unknown
//! fields, whole documents dropped or repeated) and textual ones on the rendered file (truncate,
//! repeated lines, YAML anchors and aliases, an alias bomb, raw characters). Each mutation holds
//! only indices and values, so proptest shrinks a failing case to the fewest, simplest ones.

use proptest::prelude::*;
use serde_yaml::{Mapping, Value};

/// Numbers (and number-like scalars) at and past the edges of every integer type kprov reads.
pub const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e400",
    "-.inf",
    ".nan",
    "-0.0",
    "0x7fffffff",
    "0o777",
    "1_000",
    "3.5",
    "\"12\"",
    "~",
];

/// A value of each YAML type, to put where another type is expected.
pub const KINDS: &[&str] = &[
    "~",
    "true",
    "7",
    "x",
    "\"\"",
    "[1, two]",
    "[]",
    "{a: 1}",
    "{}",
    "!!binary aGk=",
];

/// Raw text inserted into the file: YAML syntax, tabs, quotes, document markers, directives.
pub const RAW: &[&str] = &[
    "\t",
    "'",
    "\"",
    ": ",
    " #",
    "---\n",
    "...\n",
    "&a ",
    "*a",
    "!!str ",
    "{",
    "]",
    "- ",
    "%YAML 1.2\n",
    "\u{feff}",
    "\r\n",
    "\u{85}",
    "\u{2028}",
    "<<: *a\n",
    "? ",
];

/// A structural mutation of the parsed documents. Node indices count a pre-order walk of every
/// document and wrap around.
#[derive(Debug, Clone)]
pub enum Tree {
    /// Remove the node from its mapping or sequence.
    Drop(usize),
    /// Repeat a sequence item (or the whole document when the node is a document root).
    Duplicate(usize),
    /// Replace the node with `KINDS[k]`.
    Retype(usize, usize),
    /// Replace the node with `EXTREMES[k]`.
    Extreme(usize, usize),
    /// Replace the node with a random string.
    Unicode(usize, String),
    /// Set document `d`'s `metadata.name` to a random string.
    Name(usize, String),
    /// Add a field (random or near-miss name) to the nearest mapping.
    AddField(usize, String),
}

/// A mutation of the rendered text.
#[derive(Debug, Clone)]
pub enum Text {
    /// Cut the file at this byte (rounded down to a character boundary).
    Truncate(usize),
    /// Repeat a line (a duplicate key, or a second item).
    DupLine(usize),
    /// Anchor the value on line `a`, alias it from line `b` (before it: an unknown alias).
    Alias(usize, usize),
    /// Replace the value on a line with an alias bomb (nine-fold nested aliases).
    Bomb(usize),
    /// Insert `RAW[k]` at a byte.
    Raw(usize, usize),
    /// Insert random characters at a byte.
    Chars(usize, String),
    /// Replace the value on a line with sequences nested this deep (past parsers' limits).
    Deep(usize, usize),
}

/// Random strings: any `char` (controls, surrogates' neighbours, RTL, emoji), short.
pub fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>(), 0..12).prop_map(|v| v.into_iter().collect()),
        "[a-zA-Z0-9._:/@ -]{0,70}",
        Just("a".repeat(64)),
        Just(String::new()),
    ]
}

/// A structural mutation.
pub fn tree() -> impl Strategy<Value = Tree> {
    prop_oneof![
        3 => any::<usize>().prop_map(Tree::Drop),
        1 => any::<usize>().prop_map(Tree::Duplicate),
        2 => (any::<usize>(), 0..KINDS.len()).prop_map(|(n, k)| Tree::Retype(n, k)),
        2 => (any::<usize>(), 0..EXTREMES.len()).prop_map(|(n, k)| Tree::Extreme(n, k)),
        2 => (any::<usize>(), any_text()).prop_map(|(n, s)| Tree::Unicode(n, s)),
        2 => (0..4usize, any_text()).prop_map(|(d, s)| Tree::Name(d, s)),
        1 => (any::<usize>(), prop_oneof![any_text(), Just("podCidr".to_string()), Just("count".to_string())])
            .prop_map(|(n, s)| Tree::AddField(n, s)),
    ]
}

/// A textual mutation.
pub fn text() -> impl Strategy<Value = Text> {
    prop_oneof![
        2 => any::<usize>().prop_map(Text::Truncate),
        2 => any::<usize>().prop_map(Text::DupLine),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Text::Alias(a, b)),
        1 => any::<usize>().prop_map(Text::Bomb),
        2 => (any::<usize>(), 0..RAW.len()).prop_map(|(p, k)| Text::Raw(p, k)),
        1 => (any::<usize>(), any_text()).prop_map(|(p, s)| Text::Chars(p, s)),
        1 => (any::<usize>(), 100..3000usize).prop_map(|(p, d)| Text::Deep(p, d)),
    ]
}

/// One case: which base input, then structural and textual mutations (often none, so that
/// plenty of cases are valid and exercise the accepted path).
#[derive(Debug, Clone)]
pub struct Case {
    /// Index into the caller's base inputs (wraps).
    pub base: usize,
    /// Structural mutations, applied in order.
    pub tree: Vec<Tree>,
    /// Textual mutations, applied in order after rendering.
    pub text: Vec<Text>,
}

/// Cases over `bases` base inputs.
pub fn case(bases: usize) -> impl Strategy<Value = Case> {
    (
        0..bases,
        proptest::collection::vec(tree(), 0..3),
        prop_oneof![
            2 => Just(Vec::new()),
            1 => proptest::collection::vec(text(), 1..3),
        ],
    )
        .prop_map(|(base, tree, text)| Case { base, tree, text })
}

#[derive(Debug, Clone)]
enum Step {
    Key(Value),
    Index(usize),
}

/// Paths of every node of `v`, pre-order (the root is the empty path).
fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                here.push(Step::Key(k.clone()));
                paths(child, here, out);
                here.pop();
            }
        }
        Value::Sequence(s) => {
            for (i, child) in s.iter().enumerate() {
                here.push(Step::Index(i));
                paths(child, here, out);
                here.pop();
            }
        }
        Value::Tagged(t) => paths(&t.value, here, out),
        _ => {}
    }
}

fn node_mut<'a>(mut v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    for step in path {
        if let Value::Tagged(t) = v {
            v = &mut t.value;
        }
        v = match (step, v) {
            (Step::Key(k), Value::Mapping(m)) => m.get_mut(k)?,
            (Step::Index(i), Value::Sequence(s)) => s.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

fn parse_scalar(s: &str) -> Value {
    serde_yaml::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

/// Apply structural mutations to documents.
pub fn apply_tree(docs: &mut Vec<Value>, muts: &[Tree]) {
    for m in muts {
        // (document, path) of every node.
        let mut all = Vec::new();
        for (d, doc) in docs.iter().enumerate() {
            let mut out = Vec::new();
            paths(doc, &mut Vec::new(), &mut out);
            all.extend(out.into_iter().map(|p| (d, p)));
        }
        if all.is_empty() {
            return;
        }
        let pick = |n: usize| all[n % all.len()].clone();
        match m {
            Tree::Drop(n) => {
                let (d, p) = pick(*n);
                match p.split_last() {
                    None => {
                        docs.remove(d);
                    }
                    Some((last, parent)) => match (last, node_mut(&mut docs[d], parent)) {
                        (Step::Key(k), Some(Value::Mapping(m))) => {
                            m.remove(k);
                        }
                        (Step::Index(i), Some(Value::Sequence(s))) => {
                            s.remove(*i);
                        }
                        _ => {}
                    },
                }
            }
            Tree::Duplicate(n) => {
                let (d, p) = pick(*n);
                match p.split_last() {
                    None => {
                        let copy = docs[d].clone();
                        docs.insert(d, copy);
                    }
                    Some((Step::Index(i), parent)) => {
                        if let Some(Value::Sequence(s)) = node_mut(&mut docs[d], parent) {
                            let item = s[*i].clone();
                            s.insert(*i, item);
                        }
                    }
                    Some(_) => {}
                }
            }
            Tree::Retype(n, k) | Tree::Extreme(n, k) => {
                let table = if matches!(m, Tree::Retype(..)) {
                    KINDS
                } else {
                    EXTREMES
                };
                let (d, p) = pick(*n);
                if let Some(v) = node_mut(&mut docs[d], &p) {
                    *v = parse_scalar(table[*k % table.len()]);
                }
            }
            Tree::Unicode(n, s) => {
                let (d, p) = pick(*n);
                if let Some(v) = node_mut(&mut docs[d], &p) {
                    *v = Value::String(s.clone());
                }
            }
            Tree::Name(d, s) => {
                let d = d % docs.len().max(1);
                if let Some(Value::Mapping(meta)) = docs
                    .get_mut(d)
                    .and_then(|doc| node_mut(doc, &[Step::Key("metadata".into())]))
                {
                    meta.insert("name".into(), Value::String(s.clone()));
                }
            }
            Tree::AddField(n, key) => {
                let (d, mut p) = pick(*n);
                loop {
                    if let Some(Value::Mapping(m)) = node_mut(&mut docs[d], &p) {
                        m.insert(Value::String(key.clone()), "x".into());
                        break;
                    }
                    if p.pop().is_none() {
                        break;
                    }
                }
            }
        }
    }
}

/// Render documents as one YAML stream.
pub fn render(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml::to_string(d).expect("a Value renders"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `(indent + key, value)` of a `key: value` line, if it is one.
fn key_value(line: &str) -> Option<(&str, &str)> {
    let (head, value) = line.split_once(": ")?;
    let key = head.trim_start().trim_start_matches("- ");
    (!key.is_empty() && !key.contains('#')).then_some((head, value))
}

/// Apply textual mutations.
pub fn apply_text(mut s: String, muts: &[Text]) -> String {
    for m in muts {
        let mut lines: Vec<String> = s.split('\n').map(str::to_string).collect();
        let n = lines.len();
        match m {
            Text::Truncate(at) => {
                let at = floor_boundary(&s, at % (s.len() + 1));
                s.truncate(at);
                continue;
            }
            Text::DupLine(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Text::Alias(a, b) => {
                let (a, b) = (a % n, b % n);
                // The anchor goes on a `key: value` or a `key:` line (a block follows).
                let anchored = if let Some((head, value)) = key_value(&lines[a]) {
                    Some(format!("{head}: &a {value}"))
                } else if lines[a].trim_end().ends_with(':') {
                    Some(format!("{} &a", lines[a].trim_end()))
                } else {
                    None
                };
                if let Some(l) = anchored {
                    lines[a] = l;
                }
                if let Some((head, _)) = key_value(&lines[b]).filter(|_| a != b) {
                    lines[b] = format!("{head}: *a");
                }
            }
            Text::Bomb(i) => {
                let i = i % n;
                if let Some((head, _)) = key_value(&lines[i]) {
                    let mut bomb = String::from("[&l0 [x, x, x, x, x, x, x, x, x]");
                    for k in 1..9 {
                        let refs = vec![format!("*l{}", k - 1); 9].join(", ");
                        bomb.push_str(&format!(", &l{k} [{refs}]"));
                    }
                    bomb.push(']');
                    lines[i] = format!("{head}: {bomb}");
                }
            }
            Text::Deep(i, depth) => {
                let i = i % n;
                if let Some((head, _)) = key_value(&lines[i]) {
                    lines[i] = format!("{head}: {}{}", "[".repeat(*depth), "]".repeat(*depth));
                }
            }
            Text::Raw(at, k) => {
                let at = floor_boundary(&s, at % (s.len() + 1));
                s.insert_str(at, RAW[k % RAW.len()]);
                continue;
            }
            Text::Chars(at, chars) => {
                let at = floor_boundary(&s, at % (s.len() + 1));
                s.insert_str(at, chars);
                continue;
            }
        }
        s = lines.join("\n");
    }
    s
}

/// Parse a valid multi-document YAML base into documents.
pub fn documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("the base input is valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The input a case describes, from its base documents.
pub fn build(bases: &[Vec<Value>], c: &Case) -> String {
    let mut docs = bases[c.base % bases.len()].clone();
    apply_tree(&mut docs, &c.tree);
    apply_text(render(&docs), &c.text)
}

/// An empty mapping (for callers building documents).
pub fn mapping() -> Value {
    Value::Mapping(Mapping::new())
}
