//! Query strings, label selectors (`key`, `!key`, `key=value`, `key==value`, `key!=value`,
//! `key in (a,b)`, `key notin (a,b)`), field selectors (`field=value`, `field!=value`) and JSON
//! merge patch (RFC 7386), as the API server reads them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

/// The query string's parameters, URL-decoded, in order.
pub(crate) fn params(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// The last value of parameter `name`.
pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector; empty selects everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct Labels(Vec<Req>);

/// Split `s` at commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// `(a, b)` → `["a", "b"]`.
fn set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

impl Labels {
    /// Parse `labelSelector`; the error is the server's `400` message.
    pub fn parse(s: &str) -> Result<Labels, String> {
        let mut reqs = Vec::new();
        for part in split_top(s).into_iter().map(str::trim) {
            if part.is_empty() {
                continue;
            }
            let bad = || format!("unable to parse requirement: found '{part}'");
            let req = if let Some(k) = part.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                Req::NotIn(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Req::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(rest).ok_or_else(bad)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Req::In(k.trim().into(), set(rest).ok_or_else(bad)?)
            } else {
                Req::Exists(part.to_string())
            };
            let key = match &req {
                Req::Exists(k) | Req::NotExists(k) | Req::In(k, _) | Req::NotIn(k, _) => k,
            };
            if !valid_key(key) {
                return Err(bad());
            }
            reqs.push(req);
        }
        Ok(Labels(reqs))
    }

    /// Does an object with `labels` match?
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k));
        self.0.iter().all(|r| match r {
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
            Req::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
        })
    }
}

/// Does a `LabelSelector` (matchLabels and matchExpressions) select `labels`? An empty
/// selector selects everything, as for a policy/v1 PodDisruptionBudget.
pub(crate) fn selects(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    let ml = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v));
    let me = sel.match_expressions.iter().flatten().all(|e| {
        let vs = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => get(&e.key).is_some_and(|v| vs.contains(v)),
            "NotIn" => get(&e.key).is_none_or(|v| !vs.contains(v)),
            "Exists" => get(&e.key).is_some(),
            "DoesNotExist" => get(&e.key).is_none(),
            _ => false,
        }
    });
    ml && me
}

/// A parsed field selector: (field, value, equal?) requirements.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fields(Vec<(String, String, bool)>);

impl Fields {
    /// Parse `fieldSelector`, allowing only `supported` fields (others are the server's `400`
    /// "field label not supported").
    pub fn parse(s: &str, supported: &[&str]) -> Result<Fields, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (f, v, eq) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, v, true)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let f = f.trim();
            if !supported.contains(&f) {
                return Err(format!("field label not supported: {f}"));
            }
            out.push((f.to_string(), v.trim().to_string(), eq));
        }
        Ok(Fields(out))
    }

    /// Does an object whose field values `get` returns match? A missing field is `""`.
    pub fn matches(&self, get: impl Fn(&str) -> String) -> bool {
        self.0.iter().all(|(f, v, eq)| (get(f) == *v) == *eq)
    }
}

/// Apply a JSON merge patch (RFC 7386) to `target`: objects merge key by key, `null` removes,
/// anything else (lists included) replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}
