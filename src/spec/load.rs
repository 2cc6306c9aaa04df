//! Reading spec documents from YAML text, keeping where every field came from.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use super::error::{SpecError, SpecErrors, Where};
use super::locate::{clamp_to_end, end_of_input, Positions};
use super::{Cluster, ClusterConfig, InstanceGroup, API_VERSION};

/// Where a document came from, to turn field paths into positions.
#[derive(Debug, Clone)]
pub enum Source {
    /// Document `doc` of a file.
    File {
        /// File name.
        file: String,
        /// Document index in the file.
        doc: usize,
        /// Field positions of the whole file.
        positions: Arc<Positions>,
    },
    /// Built from command-line flags: field path → flag.
    Flags(BTreeMap<String, String>),
    /// Read back from the state store.
    Store(String),
}

impl Source {
    /// Where `path` (a field path inside this document) is.
    pub fn locate(&self, path: &str) -> Where {
        match self {
            Source::File {
                file,
                doc,
                positions,
            } => match positions.find(*doc, path) {
                Some((line, column)) => Where::File {
                    file: file.clone(),
                    line,
                    column,
                },
                None => Where::File {
                    file: file.clone(),
                    line: 1,
                    column: 1,
                },
            },
            Source::Flags(map) => {
                let mut p = path.to_string();
                loop {
                    if let Some(f) = map.get(&p) {
                        return Where::Flag(f.clone());
                    }
                    match p.rfind(['.', '[']) {
                        Some(cut) => p.truncate(cut),
                        None => return Where::Unknown,
                    }
                }
            }
            Source::Store(key) => Where::Store(key.clone()),
        }
    }
}

/// A cluster spec with the origin of each document.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// The documents.
    pub config: ClusterConfig,
    /// Origin of the Cluster document.
    pub cluster_src: Source,
    /// Origin of each InstanceGroup, parallel to `config.groups`.
    pub group_srcs: Vec<Source>,
}

impl LoadedSpec {
    /// A spec without file positions (built in code or from flags).
    pub fn from_config(config: ClusterConfig, src: Source) -> Self {
        let group_srcs = config.groups.iter().map(|_| src.clone()).collect();
        LoadedSpec {
            config,
            cluster_src: src,
            group_srcs,
        }
    }
}

/// Documents found in a YAML stream.
#[derive(Debug, Default)]
pub struct Documents {
    /// Cluster documents with their origin.
    pub clusters: Vec<(Cluster, Source)>,
    /// InstanceGroup documents with their origin.
    pub groups: Vec<(InstanceGroup, Source)>,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "apiVersion")]
    api_version: Option<serde_yaml::Value>,
    kind: Option<serde_yaml::Value>,
}

/// Parse every document of `text` (named `file` in messages). Empty documents are skipped.
pub fn load_documents(file: &str, text: &str) -> Result<Documents, SpecErrors> {
    let positions = Arc::new(Positions::index(text));
    let mut heads = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match Option::<Head>::deserialize(de) {
            Ok(h) => heads.push(h),
            Err(e) => return Err(SpecErrors(vec![from_serde(file, text, i, &e, &positions)])),
        }
    }
    let mut docs = Documents::default();
    let mut errors = Vec::new();
    for ((i, de), head) in serde_yaml::Deserializer::from_str(text)
        .enumerate()
        .zip(heads)
    {
        let Some(head) = head else { continue };
        let src = Source::File {
            file: file.to_string(),
            doc: i,
            positions: positions.clone(),
        };
        let api = head
            .api_version
            .as_ref()
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if api != API_VERSION {
            errors.push(SpecError {
                at: src.locate("apiVersion"),
                field: "apiVersion".into(),
                problem: if api.is_empty() {
                    "missing apiVersion".into()
                } else {
                    format!("unsupported apiVersion {api:?}")
                },
                fix: format!("set `apiVersion: {API_VERSION}`"),
            });
            continue;
        }
        match head.kind.as_ref().and_then(|v| v.as_str()).unwrap_or("") {
            "Cluster" => match Cluster::deserialize(de) {
                Ok(c) => docs.clusters.push((c, src)),
                Err(e) => errors.push(from_serde(file, text, i, &e, &positions)),
            },
            "InstanceGroup" => match InstanceGroup::deserialize(de) {
                Ok(g) => docs.groups.push((g, src)),
                Err(e) => errors.push(from_serde(file, text, i, &e, &positions)),
            },
            other => errors.push(SpecError {
                at: src.locate("kind"),
                field: "kind".into(),
                problem: if other.is_empty() {
                    "missing kind".into()
                } else {
                    format!("unknown kind {other:?}")
                },
                fix: "use `kind: Cluster` or `kind: InstanceGroup`".into(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(docs)
    } else {
        Err(SpecErrors(errors))
    }
}

/// Parse a file holding one Cluster and its InstanceGroups, apply defaults and validate it.
pub fn parse_cluster(file: &str, text: &str) -> Result<ClusterConfig, SpecErrors> {
    let docs = load_documents(file, text)?;
    let mut clusters = docs.clusters.into_iter();
    let (cluster, cluster_src) = match (clusters.next(), clusters.next()) {
        (Some(c), None) => c,
        (found, _) => {
            return Err(SpecErrors(vec![SpecError {
                at: Where::File {
                    file: file.into(),
                    line: 1,
                    column: 1,
                },
                field: "kind".into(),
                problem: format!(
                    "{} Cluster documents",
                    if found.is_some() { "several" } else { "no" }
                ),
                fix: "put exactly one `kind: Cluster` document in the file".into(),
            }]))
        }
    };
    let (groups, group_srcs): (Vec<_>, Vec<Source>) = docs.groups.into_iter().unzip();
    let mut spec = LoadedSpec {
        config: ClusterConfig { cluster, groups },
        cluster_src,
        group_srcs,
    };
    super::validate(&mut spec)?;
    Ok(spec.config)
}

/// Turn a serde_yaml error into a [`SpecError`], adding a "did you mean" for unknown names and
/// plain words for Rust type names, bad CIDRs, tabs and unclosed quotes.
fn from_serde(
    file: &str,
    text: &str,
    doc: usize,
    e: &serde_yaml::Error,
    positions: &Positions,
) -> SpecError {
    let msg = e.to_string();
    // serde_yaml: "<path>: <problem> at line L column C"
    let (body, tail) = match msg.rfind(" at line ") {
        Some(cut) => (&msg[..cut], &msg[cut + " at line ".len()..]),
        None => (msg.as_str(), ""),
    };
    let (field, problem) = match body.split_once(": ") {
        Some((f, p)) if !f.contains(' ') => (f.to_string(), p.to_string()),
        _ => (String::new(), body.to_string()),
    };
    let mut at = match e.location() {
        Some(l) => Where::File {
            file: file.to_string(),
            line: l.line(),
            column: l.column(),
        },
        None => match positions.find(doc, &field) {
            Some((line, column)) => Where::File {
                file: file.to_string(),
                line,
                column,
            },
            None => Where::File {
                file: file.to_string(),
                line: 1,
                column: 1,
            },
        },
    };
    // The scalar (rest of the line) where the error points, for messages.
    let here = e
        .location()
        .and_then(|l| text.get(l.index()..))
        .map(|rest| rest.lines().next().unwrap_or("").trim())
        .unwrap_or("");
    let here_char = e
        .location()
        .and_then(|l| text.get(l.index()..))
        .and_then(|rest| rest.chars().next());
    let mut problem = plain_types(&problem);
    let fix = if let Some(s) = suggestion(&problem) {
        s
    } else if problem.contains("invalid IP address syntax") {
        problem = format!(
            "{:?} is not a CIDR",
            here.trim_matches(|c| c == '"' || c == '\''),
        );
        "write ADDRESS/PREFIX with a prefix of at most 32 for IPv4 (128 for IPv6), e.g. 10.244.0.0/16".to_string()
    } else if problem.contains("cannot start any token") && here_char == Some('\t') {
        problem = "a tab character: YAML indents with spaces only".into();
        "replace the tab with spaces".into()
    } else if problem.contains("while scanning a quoted scalar") {
        // The quote's own position is the last "at line L column C" of the message.
        let mut nums = tail.split(" column ");
        if let (Some(Ok(line)), Some(Ok(column))) = (
            nums.next().map(|l| l.trim().parse::<usize>()),
            nums.next().map(|c| c.trim().parse::<usize>()),
        ) {
            at = Where::File {
                file: file.to_string(),
                line,
                column,
            };
        }
        problem = "a quoted value is never closed".into();
        "add the closing quote (a quoted value runs to the matching quote, across lines)".into()
    } else if let Some(name) = problem
        .strip_prefix("duplicate field `")
        .and_then(|r| r.split('`').next())
    {
        format!("keep only one `{name}` in this mapping")
    } else if problem.contains("invalid type") || problem.contains("invalid value") {
        "give the field a value of the expected type (see docs/spec.md)".to_string()
    } else if problem.contains("missing field") {
        "add the missing field (see docs/spec.md)".to_string()
    } else {
        "fix the YAML syntax at that line and column (indent with spaces; quote values that contain `: ` or ` #`)"
            .to_string()
    };
    // libyaml reports running out of input at the start of the line after the last; without a
    // final newline that is past the file.
    if let Where::File { line, column, .. } = &mut at {
        (*line, *column) = clamp_to_end((*line, *column), end_of_input(text));
    }
    SpecError {
        at,
        field: if field.is_empty() {
            "(document)".into()
        } else {
            field
        },
        problem,
        fix,
    }
}

/// serde's Rust type names in "expected …" in words a spec author knows.
fn plain_types(problem: &str) -> String {
    let mut p = problem.to_string();
    for (rust, plain) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number of 0 or more"),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
    ] {
        if let Some(i) = p.find(rust) {
            // Only whole words: `expected u16` but not `expected u160`.
            let end = i + rust.len();
            if !p[end..].starts_with(|c: char| c.is_alphanumeric()) {
                p.replace_range(i..end, plain);
            }
        }
    }
    if let Some(i) = p.find("expected struct ") {
        let name = p[i + "expected struct ".len()..]
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("")
            .to_string();
        p.replace_range(
            i..i + "expected struct ".len() + name.len(),
            &format!("expected a mapping ({name})"),
        );
    }
    p
}

/// For "unknown field `x`, expected one of `a`, `b`" (or variant), suggest the closest name.
fn suggestion(problem: &str) -> Option<String> {
    let rest = problem
        .strip_prefix("unknown field `")
        .or_else(|| problem.strip_prefix("unknown variant `"))?;
    let (word, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    if expected.is_empty() {
        return Some(format!("remove `{word}`: this object takes no fields"));
    }
    match closest(word, &expected) {
        Some(best) => Some(format!("did you mean `{best}`?")),
        None => Some(format!("use one of: {}", expected.join(", "))),
    }
}

/// The candidate closest to `word` if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lw = word.to_ascii_lowercase();
    if let Some(c) = candidates.iter().find(|c| c.to_ascii_lowercase() == lw) {
        return Some(c);
    }
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&lw, &c.to_ascii_lowercase()), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_gets_position_and_suggestion() {
        let text = "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: demo\nspec:\n  kubernetesVersion: 1.31.14\n  provider:\n    zstack:\n      endpoint: http://127.0.0.1:1\n  networking:\n    podCidr: 10.0.0.0/16\n";
        let err = load_documents("c.yaml", text).unwrap_err();
        let e = &err.0[0];
        assert!(e.problem.contains("unknown field `podCidr`"), "{e}");
        assert_eq!(e.fix, "did you mean `podCIDR`?");
        match &e.at {
            Where::File { line, .. } => assert_eq!(*line, 11),
            other => panic!("{other:?}"),
        }
    }

    /// The line and column of the first error of `text`.
    fn first_error_at(text: &str) -> (usize, usize) {
        let err = load_documents("props.yaml", text).unwrap_err();
        match &err.0[0].at {
            Where::File { line, column, .. } => (*line, *column),
            other => panic!("{other:?}"),
        }
    }

    /// A spec cut off after three lines, without a final newline: the parser runs out of input
    /// "at line 4", a line the file does not have. The error points at the end of line 3.
    #[test]
    fn errors_at_the_end_of_a_truncated_file_point_into_it() {
        // YAML syntax: `metadata` never gets its `:`.
        let text = "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata";
        assert_eq!(first_error_at(text), (3, 9));
        // Missing field: `apiVersion:` with its value cut off.
        let text = "kind: Cluster\nmetadata: x\napiVersion:";
        let err = load_documents("props.yaml", text).unwrap_err();
        assert_eq!(err.0[0].problem, "missing apiVersion");
        assert_eq!(first_error_at(text), (3, 12));
        // A NEL (U+0085) is a line break to YAML, so the file's last line is the 4th.
        let text = "apiVersion: kprov.io/v1alpha1\nkind: Cluster\nmetadata: \u{85}admin.";
        assert_eq!(first_error_at(text), (4, 7));
    }

    #[test]
    fn closest_prefers_case_insensitive_match() {
        assert_eq!(
            closest("podcidr", &["podCIDR", "serviceCIDR"]),
            Some("podCIDR")
        );
        assert_eq!(closest("zzz", &["podCIDR", "serviceCIDR"]), None);
    }
}
