//! Small helpers that write YAML scalars the templates embed verbatim.

/// `key: |` literal block of `text` for a mapping key at `parent_indent` spaces, with the content
/// indented two more. The text is normalised to end with exactly one newline; an indentation
/// indicator is added when the first non-empty line starts with a space.
pub(crate) fn literal_block(key: &str, text: &str, parent_indent: usize) -> String {
    let body = text.trim_end_matches('\n');
    if body.is_empty() {
        return format!("{key}: \"\"");
    }
    let first_non_empty = body.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let indicator = if first_non_empty.starts_with(' ') {
        "2"
    } else {
        ""
    };
    let pad = " ".repeat(parent_indent + 2);
    let mut out = format!("{key}: |{indicator}");
    for line in body.lines() {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    out
}

/// The lines of `text`, each indented by `indent` spaces (empty lines stay empty), without a
/// trailing newline: the body of a literal block whose header the template writes.
pub(crate) fn indent_lines(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.trim_end_matches('\n')
        .lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Quote a value for a shell `KEY='value'` assignment.
pub(crate) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_blocks_round_trip() {
        for text in [
            "a\nb\n",
            "  leading\nnext\n",
            "x\n\n\ny",
            "tab\there\n# comment\n",
        ] {
            let doc = format!("m:\n    {}\n", literal_block("content", text, 4));
            let v: serde_yaml::Value =
                serde_yaml::from_str(&doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
            let want = format!("{}\n", text.trim_end_matches('\n'));
            assert_eq!(v["m"]["content"].as_str(), Some(want.as_str()), "{doc}");
        }
        assert_eq!(literal_block("content", "", 4), "content: \"\"");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
