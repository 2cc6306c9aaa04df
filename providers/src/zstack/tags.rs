//! How kprov's ownership tags are stored as ZStack user tags, and the system tags kprov sets.
//!
//! Every entry `key = value` of [`crate::InstanceRequest::tags`] becomes one user tag
//!
//! ```text
//! kprov::<enc(key)>::<enc(value)>
//! ```
//!
//! where `enc` keeps `A-Z a-z 0-9 - . _ /` as they are and writes every other byte of the UTF-8
//! text as `%XX` (upper-case hex), `%` itself included. So the cluster tag of cluster `demo` is
//! `kprov::kprov.io/cluster::demo`. Encoded parts never contain `:`, which makes the split on
//! `::` unambiguous, and never contain the characters ZStack's query parser treats as operators
//! (`=`, `!`, `<`, `>`, `?`, `~`) or as list separators (`,`), so a tag can be matched
//! with `q=__userTag__=<tag>` or `q=tag=<tag>` verbatim. The mapping is reversible:
//! [`decode_user_tag`] gives back exactly the key and value.

use std::collections::BTreeMap;

/// Prefix of every user tag kprov writes.
pub const USER_TAG_PREFIX: &str = "kprov::";

fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'/')
}

/// Encode one key or value part (see the module documentation).
pub fn encode_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decode one part; `None` when it is not a valid encoding (a tag kprov did not write).
pub fn decode_part(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if keep(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// The user tag for one `key = value` entry.
pub fn encode_user_tag(key: &str, value: &str) -> String {
    format!(
        "{USER_TAG_PREFIX}{}::{}",
        encode_part(key),
        encode_part(value)
    )
}

/// The key and value of a user tag written by [`encode_user_tag`]; `None` for any other tag.
pub fn decode_user_tag(tag: &str) -> Option<(String, String)> {
    let rest = tag.strip_prefix(USER_TAG_PREFIX)?;
    let (k, v) = rest.split_once("::")?;
    if k.is_empty() {
        return None;
    }
    Some((decode_part(k)?, decode_part(v)?))
}

/// The user tags for a whole tag map, in key order.
pub fn encode_user_tags(tags: &BTreeMap<String, String>) -> Vec<String> {
    tags.iter().map(|(k, v)| encode_user_tag(k, v)).collect()
}

/// The tag map hidden in a list of user tags; tags kprov did not write are ignored.
pub fn decode_user_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, String> {
    tags.into_iter().filter_map(decode_user_tag).collect()
}

/// The user tag marking resources of `cluster`.
pub fn cluster_tag(cluster: &str) -> String {
    encode_user_tag(crate::TAG_CLUSTER, cluster)
}

/// A hostname ZStack accepts in `hostname::` (lower-case letters, digits and `-`, labels of at
/// most 63 characters, no leading or trailing `-`).
pub fn sanitize_hostname(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s = s
        .split('.')
        .map(|label| {
            let l = label.trim_matches('-');
            l[..l.len().min(63)].trim_end_matches('-').to_string()
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(".");
    if s.is_empty() {
        "kprov-node".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_tag_is_readable() {
        assert_eq!(cluster_tag("demo"), "kprov::kprov.io/cluster::demo");
        assert_eq!(
            encode_user_tag("kprov.io/index", "3"),
            "kprov::kprov.io/index::3"
        );
    }

    #[test]
    fn round_trip_of_awkward_strings() {
        let cases = [
            ("kprov.io/cluster", "demo"),
            ("a::b", "c::d"),
            ("k=v", "x!=y>=z<=w?=q~=r,s"),
            ("percent%", "100%25"),
            ("space key", "ünïcødé ✓"),
            ("empty", ""),
            ("colon:", ":"),
        ];
        for (k, v) in cases {
            let t = encode_user_tag(k, v);
            let rest = t.strip_prefix(USER_TAG_PREFIX).unwrap();
            assert!(!rest.replace("::", "").contains(':'), "{t}");
            for bad in ['=', '!', '<', '>', '?', '~', ',', ' '] {
                assert!(!t.contains(bad), "{t} contains {bad}");
            }
            assert_eq!(
                decode_user_tag(&t),
                Some((k.to_string(), v.to_string())),
                "{t}"
            );
        }
    }

    #[test]
    fn foreign_tags_are_ignored() {
        assert_eq!(decode_user_tag("owner::alice"), None);
        assert_eq!(decode_user_tag("kprov::"), None);
        assert_eq!(decode_user_tag("kprov::a b::c"), None);
        assert_eq!(decode_user_tag("kprov::%zz::c"), None);
        let m = decode_user_tags(["kprov::kprov.io/role::node", "other", "kprov::x::%3A"]);
        assert_eq!(m.len(), 2);
        assert_eq!(m["x"], ":");
    }

    #[test]
    fn map_round_trip() {
        let mut m = BTreeMap::new();
        m.insert(crate::TAG_CLUSTER.to_string(), "demo".to_string());
        m.insert(crate::TAG_SPEC_HASH.to_string(), "ab12".to_string());
        m.insert("custom/owner".to_string(), "team a".to_string());
        let tags = encode_user_tags(&m);
        assert_eq!(decode_user_tags(tags.iter().map(String::as_str)), m);
    }

    #[test]
    fn hostnames() {
        assert_eq!(
            sanitize_hostname("Demo-GPU_Workers-0"),
            "demo-gpu-workers-0"
        );
        assert_eq!(sanitize_hostname("__"), "kprov-node");
        assert_eq!(sanitize_hostname(&"a".repeat(80)).len(), 63);
    }
}
