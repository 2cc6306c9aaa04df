//! ZStack query API (API doc §4): `GET /zstack/v1/<res>?q=<cond>&q=...&start=&limit=&replyWithCount=true`.
//!
//! Conditions are AND-ed, each one is sent as its own `q` key, and every key and value is
//! percent-encoded (RFC 3986 unreserved characters are kept; a space becomes `%20`, never `+`).
//! The server splits a condition at the first operator it finds, trying them in a fixed order
//! (`!=`, `>=`, `<=`, `!?=`, `!~=`, `~=`, `?=`, `=`, `>`, `<`, `is null`, `not null`), so a value
//! that contains an operator earlier in that order would be misread: [`Query::validate`] runs the
//! server's parser on every condition and refuses such a query instead of sending it.
//! [`super::client::Client::query`] pages with `start`/`limit` until `total` results are read.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters percent-encoded in query keys and values: all but `A-Z a-z 0-9 - . _ ~`.
const QUERY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Default and maximum page size (ZStack's default `limit`).
pub const PAGE_SIZE: usize = 1000;

/// A query operator (§4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `<`
    Lt,
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `?=` (in a comma-separated list)
    In,
    /// `!?=` (not in)
    NotIn,
    /// `~=` (SQL LIKE)
    Like,
    /// `!~=` (SQL NOT LIKE)
    NotLike,
    /// `is null` (no value)
    IsNull,
    /// `not null` (no value)
    NotNull,
}

impl Op {
    /// The operator text.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Lt => "<",
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::In => "?=",
            Op::NotIn => "!?=",
            Op::Like => "~=",
            Op::NotLike => "!~=",
            Op::IsNull => " is null",
            Op::NotNull => " not null",
        }
    }
}

/// Operators in the order the server's parser looks for them.
const PARSE_ORDER: [(&str, Op); 12] = [
    ("!=", Op::Ne),
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("!?=", Op::NotIn),
    ("!~=", Op::NotLike),
    ("~=", Op::Like),
    ("?=", Op::In),
    ("=", Op::Eq),
    (">", Op::Gt),
    ("<", Op::Lt),
    (" is null", Op::IsNull),
    (" not null", Op::NotNull),
];

/// Parse a condition the way the management node does: `(field, op, value)`, or `None` when it
/// contains no operator (the server answers 400).
pub fn parse_condition(cond: &str) -> Option<(String, Op, String)> {
    for (text, op) in PARSE_ORDER {
        if let Some(i) = cond.find(text) {
            let field = cond[..i].to_string();
            let value = cond[i + text.len()..].to_string();
            return Some((field, op, value));
        }
    }
    None
}

/// One condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Field (dotted joins such as `vmNics.ip`, or `__userTag__` / `__systemTag__`).
    pub field: String,
    /// How the field is compared with the value.
    pub op: Op,
    /// Value (empty for `is null` / `not null`; comma-joined for `?=` / `!?=`).
    pub value: String,
}

impl Condition {
    /// The condition as the server reads it, before URL encoding.
    pub fn text(&self) -> String {
        match self.op {
            Op::IsNull | Op::NotNull => format!("{}{}", self.field, self.op.as_str()),
            _ => format!("{}{}{}", self.field, self.op.as_str(), self.value),
        }
    }
}

/// A query on one resource path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Resource path below `/zstack/v1`, e.g. `/vm-instances`.
    pub path: String,
    /// AND-ed conditions.
    pub conditions: Vec<Condition>,
    /// Sort, e.g. `+uuid`.
    pub sort: Option<String>,
}

impl Query {
    /// A query on `path` (below `/zstack/v1`) with no conditions, sorted by `uuid` so that
    /// pages are stable.
    pub fn new(path: impl Into<String>) -> Self {
        Query {
            path: path.into(),
            conditions: Vec::new(),
            sort: Some("+uuid".into()),
        }
    }

    /// Add a condition.
    pub fn cond(mut self, field: &str, op: Op, value: impl Into<String>) -> Self {
        self.conditions.push(Condition {
            field: field.into(),
            op,
            value: value.into(),
        });
        self
    }

    /// Add `field=value`.
    pub fn eq(self, field: &str, value: impl Into<String>) -> Self {
        self.cond(field, Op::Eq, value)
    }

    /// Add `field?=v1,v2,...`.
    pub fn is_in<I, S>(self, field: &str, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let joined = values
            .into_iter()
            .map(|v| v.as_ref().to_string())
            .collect::<Vec<_>>()
            .join(",");
        self.cond(field, Op::In, joined)
    }

    /// Check that the server will read every condition as meant (no operator hidden in a
    /// field or value).
    pub fn validate(&self) -> Result<(), String> {
        for c in &self.conditions {
            if c.field.is_empty() {
                return Err(format!("empty field in query condition on {}", self.path));
            }
            let text = c.text();
            let parsed = parse_condition(&text);
            let expected = match c.op {
                Op::IsNull | Op::NotNull => (c.field.clone(), c.op, String::new()),
                _ => (c.field.clone(), c.op, c.value.clone()),
            };
            if parsed.as_ref() != Some(&expected) {
                return Err(format!(
                    "query condition `{text}` on {} would be misread by ZStack's parser",
                    self.path
                ));
            }
        }
        Ok(())
    }

    /// The query string (without `?`) for one page.
    pub fn page_query(&self, start: usize, limit: usize) -> String {
        let mut parts: Vec<String> = self
            .conditions
            .iter()
            .map(|c| format!("q={}", encode(&c.text())))
            .collect();
        if let Some(s) = &self.sort {
            parts.push(format!("sort={}", encode(s)));
        }
        parts.push(format!("start={start}"));
        parts.push(format!("limit={limit}"));
        parts.push("replyWithCount=true".into());
        parts.join("&")
    }

    /// Path plus query string for one page.
    pub fn page_url(&self, start: usize, limit: usize) -> String {
        format!("{}?{}", self.path, self.page_query(start, limit))
    }
}

/// Percent-encode a query key or value.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY_ENCODE).to_string()
}

/// Percent-encode one path segment (a uuid, normally a no-op).
pub fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, QUERY_ENCODE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_repeated_q_keys_with_proper_encoding() {
        let q = Query::new("/vm-instances")
            .eq("__userTag__", "kprov::kprov.io/cluster::demo")
            .cond("state", Op::NotIn, "Destroyed,Expunging")
            .cond("vmInstanceUuid", Op::IsNull, "");
        assert_eq!(
            q.page_query(0, 1000),
            "q=__userTag__%3Dkprov%3A%3Akprov.io%2Fcluster%3A%3Ademo\
             &q=state%21%3F%3DDestroyed%2CExpunging\
             &q=vmInstanceUuid%20is%20null\
             &sort=%2Buuid&start=0&limit=1000&replyWithCount=true"
        );
        assert!(q.validate().is_ok());
    }

    #[test]
    fn in_lists_are_comma_joined() {
        let q = Query::new("/user-tags").is_in("resourceUuid", ["a1", "b2"]);
        assert_eq!(q.conditions[0].text(), "resourceUuid?=a1,b2");
        assert!(q
            .page_url(1000, 1000)
            .starts_with("/user-tags?q=resourceUuid%3F%3Da1%2Cb2&"));
        assert!(q.page_url(1000, 1000).contains("&start=1000&limit=1000&"));
    }

    #[test]
    fn parser_precedence_quirk() {
        assert_eq!(
            parse_condition("name=a"),
            Some(("name".into(), Op::Eq, "a".into()))
        );
        assert_eq!(
            parse_condition("state!?=A,B"),
            Some(("state".into(), Op::NotIn, "A,B".into()))
        );
        // `!=` is looked for first, so this is `name=a` != `b`:
        assert_eq!(
            parse_condition("name=a!=b"),
            Some(("name=a".into(), Op::Ne, "b".into()))
        );
        assert_eq!(
            parse_condition("uuid not null"),
            Some(("uuid".into(), Op::NotNull, "".into()))
        );
        assert_eq!(parse_condition("name"), None);
        assert!(Query::new("/images").eq("name", "a!=b").validate().is_err());
        assert!(Query::new("/images").eq("name", "x>=1").validate().is_err());
        assert!(Query::new("/images")
            .eq("name", "debian-12 (arm64)")
            .validate()
            .is_ok());
    }

    #[test]
    fn spaces_are_percent_twenty_and_unicode_is_utf8() {
        assert_eq!(encode("a b+c"), "a%20b%2Bc");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode("A-z_0.9~"), "A-z_0.9~");
    }
}
