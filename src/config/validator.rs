//! The validator: collects every problem with its path and line, and reads each value so
//! that one that cannot be read is reported at its own path and hides no other.

use super::locate::LineIndex;
use super::{values, Problem, Range};
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// What replaces a value that could not be read, tried in turn until the whole deserializes:
/// absent (for optional fields), then an empty mapping (a struct of defaults), string, list.
/// A replaced value is reported once; what validation finds about its stand-in is not.
const STAND_INS: usize = 4;

fn stand_in(i: usize) -> Value {
    match i {
        0 => Value::Null,
        1 => Value::Mapping(serde_yaml::Mapping::new()),
        2 => Value::String(String::new()),
        _ => Value::Sequence(Vec::new()),
    }
}

/// `parent.key` / `parent[i]`, as problems name paths.
fn path_of(at: &str, segments: &[Segment]) -> String {
    let mut path = at.to_string();
    for s in segments {
        match s {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Unknown => path.push_str(if path.is_empty() { "?" } else { ".?" }),
        }
    }
    path
}

fn untagged_mut(v: &mut Value) -> &mut Value {
    match v {
        Value::Tagged(t) => untagged_mut(&mut t.value),
        other => other,
    }
}

/// The key of `map` that serde_path_to_error names `key`.
fn key_named(map: &serde_yaml::Mapping, key: &str) -> Option<Value> {
    map.keys()
        .find(|k| match k {
            Value::String(s) => s == key,
            Value::Bool(b) => b.to_string() == key,
            Value::Number(n) => n.to_string() == key,
            _ => false,
        })
        .cloned()
}

/// The value at `segments` below `v`.
fn node_mut<'v>(v: &'v mut Value, segments: &[Segment]) -> Option<&'v mut Value> {
    let Some((last, parents)) = segments.split_last() else {
        return Some(v);
    };
    match (last, untagged_mut(node_mut(v, parents)?)) {
        (Segment::Seq { index }, Value::Sequence(items)) => items.get_mut(*index),
        (Segment::Map { key }, Value::Mapping(map)) => {
            let k = key_named(map, key)?;
            map.get_mut(&k)
        }
        _ => None,
    }
}

/// Removes the mapping entry at `segments`; false when it is not one.
fn remove_entry(v: &mut Value, segments: &[Segment]) -> bool {
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return false;
    };
    match node_mut(v, parents).map(untagged_mut) {
        Some(Value::Mapping(map)) => key_named(map, key).is_some_and(|k| map.remove(&k).is_some()),
        _ => false,
    }
}

/// How many values of one section may fail to deserialize before the rest is given up.
const MAX_ROUNDS: usize = 1000;

pub(super) struct Validator<'a> {
    pub(super) lines: &'a LineIndex,
    pub(super) problems: Vec<Problem>,
    /// Paths whose value could not be read (reported) and was replaced or dropped.
    pub(super) broken: HashSet<String>,
}

/// A value several keys write as a word, `header:<name>` or `cookie:<name>`.
pub(super) enum Source<'t> {
    Word(&'t str),
    Header(http::HeaderName),
    Cookie(&'t str),
}

impl Validator<'_> {
    /// Reads `text` (at `at`) as a word, `header:<name>` or `cookie:<name>`; `None` (with
    /// a problem) for a header name that is not one.
    pub(super) fn source<'t>(&mut self, at: &str, text: &'t str) -> Option<Source<'t>> {
        if let Some(name) = text.strip_prefix("header:") {
            return match http::HeaderName::from_bytes(name.trim().as_bytes()) {
                Ok(h) => Some(Source::Header(h)),
                Err(_) => {
                    self.problem(at, format!("\"{text}\" does not name a valid header"));
                    None
                }
            };
        }
        match text.strip_prefix("cookie:").map(str::trim) {
            Some(name) if !name.is_empty() => Some(Source::Cookie(name)),
            _ => Some(Source::Word(text)),
        }
    }

    pub(super) fn problem(&mut self, at: impl Into<String>, message: impl Into<String>) {
        let at = at.into();
        if self.is_broken(&at) {
            return;
        }
        let line = self.lines.line_of(&at);
        self.problems.push(Problem {
            at,
            line,
            message: message.into(),
        });
    }

    /// Whether the value at `at`, or one that holds it, could not be read.
    pub(super) fn is_broken(&self, at: &str) -> bool {
        let mut p = at;
        loop {
            if self.broken.contains(p) {
                return true;
            }
            match p.rfind(['.', '[']) {
                Some(cut) => p = &p[..cut],
                None => return false,
            }
        }
    }

    /// A required field (`at.field`): a problem when absent, unless it was written but
    /// could not be read (reported already).
    pub(super) fn required<T>(&mut self, at: &str, field: &str, value: Option<T>) -> Option<T> {
        if value.is_none() && !self.is_broken(&format!("{at}.{field}")) {
            self.problem(at, format!("missing field `{field}`"));
        }
        value
    }

    /// Whether `v` (at `at`) is within `range`; if not, a problem: "must be at least MIN,
    /// got V" or "must be at most MAX, got V" (NaN is below every minimum).
    pub(super) fn in_range<T: PartialOrd>(
        &mut self,
        at: &str,
        v: &T,
        range: &Range<T>,
        show: impl Fn(&T) -> String,
    ) -> bool {
        let message = if !matches!(
            v.partial_cmp(&range.min),
            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
        ) {
            format!("must be at least {}, got {}", show(&range.min), show(v))
        } else if v > &range.max {
            format!("must be at most {}, got {}", show(&range.max), show(v))
        } else {
            return true;
        };
        self.problem(at, message);
        false
    }

    /// `n` (at `at`) if within `range`; otherwise a problem, and the nearest bound.
    pub(super) fn int<T>(&mut self, at: &str, n: values::Int, range: Range<T>) -> T
    where
        T: Copy + TryFrom<i128> + TryInto<i128>,
    {
        let wide = Range::new(
            range.min.try_into().unwrap_or(i128::MIN),
            range.max.try_into().unwrap_or(i128::MAX),
        );
        self.in_range(at, &n.0, &wide, i128::to_string);
        let clamped = n.0.clamp(wide.min, wide.max.max(wide.min));
        T::try_from(clamped).unwrap_or(range.max)
    }

    /// `d` (at `at`) if within `range`; otherwise a problem, and the nearest bound.
    pub(super) fn duration(&mut self, at: &str, d: Duration, range: Range<Duration>) -> Duration {
        self.in_range(at, &d, &range, |d| {
            humantime::format_duration(*d).to_string()
        });
        d.clamp(range.min, range.max.max(range.min))
    }

    /// Deserializes `value` (found at `at`) into `T`. Every value that cannot be read is
    /// reported at its own path and replaced (see [`stand_in`]) or, for an unknown key,
    /// removed, until the rest deserializes: so one bad field hides no other. `None` when
    /// `value` as a whole could not be read.
    pub(super) fn typed<T: DeserializeOwned>(&mut self, at: &str, mut value: Value) -> Option<T> {
        // Stand-ins tried so far, by path. Each round reports a new path, tries a path's
        // next stand-in or removes an entry, so the rounds end; MAX_ROUNDS is a guard.
        let mut tried: HashMap<String, usize> = HashMap::new();
        for _ in 0..MAX_ROUNDS {
            let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(t) => return (!self.broken.contains(at)).then_some(t),
                Err(e) => e,
            };
            let mut segments: Vec<Segment> = e.path().iter().cloned().collect();
            let message = e.into_inner().to_string();
            let unknown = message
                .strip_prefix("unknown field `")
                .and_then(|m| m.split('`').next())
                .map(str::to_string);
            if let Some(field) = &unknown {
                // Point an unknown key at its own line.
                if !matches!(segments.last(), Some(Segment::Map { key }) if key == field) {
                    segments.push(Segment::Map { key: field.clone() });
                }
            }
            let path = path_of(at, &segments);
            if !self.is_broken(&path) {
                self.problem(path.clone(), message);
            }
            if unknown.is_some() {
                if !remove_entry(&mut value, &segments) {
                    return None;
                }
                continue;
            }
            let n = tried.entry(path.clone()).or_insert(0);
            if *n < STAND_INS {
                *node_mut(&mut value, &segments)? = stand_in(*n);
                *n += 1;
                self.broken.insert(path);
            } else if !remove_entry(&mut value, &segments) {
                return None;
            }
        }
        self.problem(at, "too many problems; fix the ones above first");
        None
    }

    pub(super) fn section<T: DeserializeOwned + Default>(
        &mut self,
        doc: &mut serde_yaml::Mapping,
        key: &str,
    ) -> T {
        match doc.remove(key) {
            None | Some(serde_yaml::Value::Null) => T::default(),
            Some(v) => self.typed(key, v).unwrap_or_default(),
        }
    }
}
