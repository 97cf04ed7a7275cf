//! Maps a config path such as `routes[1].upstream` to the line it stands on in the YAML text.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line numbers (1-based) of every key and sequence item in a YAML document, by path.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
    duplicates: Vec<Duplicate>,
}

/// A key written a second time in the same mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The path the key opens, e.g. `routes[0].upstream`.
    pub path: String,
    pub key: String,
    /// The line of this occurrence, and of the first.
    pub line: usize,
    pub first: usize,
}

impl LineIndex {
    /// Indexes `text`. A document the parser rejects yields an empty index: the
    /// syntax error is reported by serde_yaml with its own location.
    pub fn build(text: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        // Event by event, not `Parser::load`: that recurses once per nesting level, and a
        // deep enough document overflows the stack. The walker keeps its own stack.
        loop {
            match parser.next_token() {
                Ok((Event::DocumentEnd | Event::StreamEnd, _)) => break,
                Ok((ev, mark)) => walker.on_event(ev, mark),
                Err(_) => return Self::default(),
            }
        }
        Self {
            lines: walker.lines,
            duplicates: walker.duplicates,
        }
    }

    /// Keys written more than once in one mapping, in file order.
    pub fn duplicates(&self) -> &[Duplicate] {
        &self.duplicates
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    /// A mapping: `key` is the key whose value comes next, `None` while a key is expected;
    /// `seen` holds its keys so far, with their lines.
    Map {
        path: String,
        key: Option<String>,
        seen: HashMap<String, usize>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
    duplicates: Vec<Duplicate>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Walker {
    /// Called when a value (scalar or collection) starts; returns the path of that value.
    fn enter_value(&mut self, line: usize) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key, .. }) => key.take().map(|k| join(path, &k)),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                self.lines.insert(p.clone(), line);
                Some(p)
            }
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map { path, key, seen }) = self.stack.last_mut() {
                    if key.is_none() {
                        // A mapping key: remember its line under the path it opens.
                        let at = join(path, &value);
                        self.lines.entry(at.clone()).or_insert(line);
                        match seen.get(&value) {
                            Some(&first) => self.duplicates.push(Duplicate {
                                path: at,
                                key: value.clone(),
                                line,
                                first,
                            }),
                            None => {
                                seen.insert(value.clone(), line);
                            }
                        }
                        *key = Some(value);
                        return;
                    }
                }
                self.enter_value(line);
            }
            Event::Alias(_) => {
                self.enter_value(line);
            }
            Event::MappingStart(..) => {
                let path = self.enter_value(line).unwrap_or_default();
                self.stack.push(Frame::Map {
                    path,
                    key: None,
                    seen: HashMap::new(),
                });
            }
            Event::SequenceStart(..) => {
                let path = self.enter_value(line).unwrap_or_default();
                self.stack.push(Frame::Seq { path, next: 0 });
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
    fn finds_keys_and_items() {
        let text = "a: 1\nroutes:\n  - name: x\n    upstream: api\n  - name: y\n    upstream: b\nup:\n  api:\n    backends: []\n";
        let idx = LineIndex::build(text);
        assert_eq!(idx.line_of("a"), Some(1));
        assert_eq!(idx.line_of("routes"), Some(2));
        assert_eq!(idx.line_of("routes[0].upstream"), Some(4));
        assert_eq!(idx.line_of("routes[1].upstream"), Some(6));
        assert_eq!(idx.line_of("routes[1]"), Some(5));
        assert_eq!(idx.line_of("up.api.backends"), Some(9));
        // Falls back to the nearest ancestor.
        assert_eq!(idx.line_of("routes[1].nope"), Some(5));
        assert_eq!(idx.line_of("zzz"), None);
        assert!(idx.duplicates().is_empty());
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let idx = LineIndex::build(&("- ".repeat(5_000) + "x\n"));
        assert_eq!(idx.line_of("[0][0][0]"), Some(1));
    }

    #[test]
    fn finds_duplicate_keys_at_their_second_line() {
        let text = "a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\na: 4\ne: [{c: 1}, {c: 2}]\n";
        let idx = LineIndex::build(text);
        let dups: Vec<(&str, usize, usize)> = idx
            .duplicates()
            .iter()
            .map(|d| (d.path.as_str(), d.line, d.first))
            .collect();
        assert_eq!(dups, vec![("b.c", 5, 3), ("a", 6, 1)]);
        // The first occurrence keeps the path's line.
        assert_eq!(idx.line_of("b.c"), Some(3));
    }
}
