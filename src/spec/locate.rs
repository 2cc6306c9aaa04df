//! Source positions of YAML fields, so validation errors can say `file:line:column`.
//!
//! serde loses positions once a document is deserialised; this walks the same text with
//! `yaml-rust2`'s marked event parser and records where each field path starts.

use std::collections::BTreeMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Positions (1-based line, 1-based column) of field paths in each document of a YAML stream.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    docs: Vec<BTreeMap<String, (usize, usize)>>,
    /// Where the text ends ([`end_of_input`]): no position handed out lies past it.
    end: (usize, usize),
}

impl Positions {
    /// Index `text`. Unparsable text gives an empty index (the serde error reports it).
    pub fn index(text: &str) -> Positions {
        let end = end_of_input(text);
        let mut rx = Receiver::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut rx, true).is_err() {
            return Positions {
                docs: Vec::new(),
                end,
            };
        }
        Positions { docs: rx.docs, end }
    }

    /// The position of `path` (e.g. `spec.networking.podCIDR`, `spec.taints[1]`) in document
    /// `doc`, or of its closest recorded ancestor.
    pub fn find(&self, doc: usize, path: &str) -> Option<(usize, usize)> {
        // An empty value at the very end (`apiVersion:` as the last line, no final newline) is
        // marked on the line after it, which the file does not have.
        self.find_unclamped(doc, path)
            .map(|pos| clamp_to_end(pos, self.end))
    }

    fn find_unclamped(&self, doc: usize, path: &str) -> Option<(usize, usize)> {
        let map = self.docs.get(doc)?;
        let mut p = path.to_string();
        loop {
            if let Some(pos) = map.get(&p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
            if p.is_empty() {
                return map.get("").copied();
            }
        }
    }

    /// Number of documents seen.
    pub fn documents(&self) -> usize {
        self.docs.len()
    }
}

/// Where `text` ends, as a 1-based (line, column): just past its last character. Line breaks are
/// counted as the YAML parser counts them (LF, CR LF, CR, NEL, LS, PS), so this is in the same
/// numbering as the positions it bounds.
pub fn end_of_input(text: &str) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // CR LF is one break, counted at the LF.
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                line += 1;
                column = 1;
            }
            _ => column += 1,
        }
    }
    (line, column)
}

/// `pos`, or `end` when `pos` lies past it. Parsers that run out of input report the start of
/// the line after the last one; for a file without a final newline that line does not exist, so
/// `file:line:column` would point past the file. The end of its last line is where input ran out.
pub fn clamp_to_end(pos: (usize, usize), end: (usize, usize)) -> (usize, usize) {
    pos.min(end)
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Receiver {
    docs: Vec<BTreeMap<String, (usize, usize)>>,
    stack: Vec<Frame>,
}

fn pos(m: Marker) -> (usize, usize) {
    (m.line(), m.col() + 1)
}

impl Receiver {
    fn record(&mut self, path: String, m: Marker) {
        if let Some(d) = self.docs.last_mut() {
            d.entry(path).or_insert(pos(m));
        }
    }

    /// Path of the node that starts now, or None when the scalar is a mapping key.
    fn next_path(&mut self, scalar: Option<&str>, m: Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(if path.is_empty() {
                    k
                } else {
                    format!("{path}.{k}")
                }),
                None => {
                    let k = scalar.unwrap_or("?").to_string();
                    let full = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    *key = Some(k);
                    self.record(full, m);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Receiver {
    fn on_event(&mut self, ev: Event, m: Marker) {
        match ev {
            Event::DocumentStart => {
                self.docs.push(BTreeMap::new());
                self.stack.clear();
            }
            Event::Scalar(v, ..) => {
                if let Some(p) = self.next_path(Some(&v), m) {
                    if let Some(d) = self.docs.last_mut() {
                        d.insert(p, pos(m)); // a scalar value points at the value itself
                    }
                }
            }
            Event::Alias(_) => {
                self.next_path(None, m);
            }
            Event::MappingStart(..) => {
                let p = self.next_path(None, m).unwrap_or_default();
                self.record(p.clone(), m);
                self.stack.push(Frame::Map { path: p, key: None });
            }
            Event::SequenceStart(..) => {
                let p = self.next_path(None, m).unwrap_or_default();
                self.record(p.clone(), m);
                self.stack.push(Frame::Seq { path: p, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_fields_and_sequence_items() {
        let text = "a: 1\nspec:\n  networking:\n    podCIDR: 10.0.0.0/8\n  taints:\n  - x:NoSchedule\n  - y:NoSchedule\n---\nb: 2\n";
        let p = Positions::index(text);
        assert_eq!(p.documents(), 2);
        assert_eq!(p.find(0, "spec.networking.podCIDR"), Some((4, 14)));
        assert_eq!(p.find(0, "spec.taints[1]"), Some((7, 5)));
        assert_eq!(p.find(0, "spec.networking.missing"), Some((3, 3)));
        assert_eq!(p.find(1, "b"), Some((9, 4)));
    }

    #[test]
    fn end_of_input_counts_breaks_as_yaml_does() {
        assert_eq!(end_of_input(""), (1, 1));
        assert_eq!(end_of_input("a: 1\nb: 2\nmetadata"), (3, 9));
        assert_eq!(end_of_input("a: 1\nb: 2\n"), (3, 1));
        assert_eq!(end_of_input("a: 1\r\nb: 2"), (2, 5));
        assert_eq!(end_of_input("a: 1\rb: 2"), (2, 5));
        assert_eq!(end_of_input("a: \u{85}b."), (2, 3));
        assert_eq!(clamp_to_end((4, 1), (3, 9)), (3, 9));
        assert_eq!(clamp_to_end((3, 2), (3, 9)), (3, 2));
    }

    #[test]
    fn an_empty_value_at_the_end_is_found_on_the_last_line() {
        let text = "kind: Cluster\nmetadata: x\napiVersion:";
        assert_eq!(Positions::index(text).find(0, "apiVersion"), Some((3, 12)));
    }
}
