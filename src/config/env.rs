//! Environment variables in string values: `${NAME}` is the variable's value (a problem
//! when it is not set), `${NAME:-default}` the value, or `default` when the variable is
//! unset or empty; `$${` is a literal `${`. Only string values are expanded (not keys,
//! not numbers or booleans), before anything else reads the file, so a value from the
//! environment is validated as if it had been written there. A config thus runs in a
//! container unchanged, its addresses and file paths given by `docker run -e`.
//!
//! Names are `[A-Za-z_][A-Za-z0-9_]*`; a default holds no `}`. Every problem is reported
//! with its path and line, all at once; a value is never echoed (it may be a secret).

use super::validator::Validator;
use serde_yaml::Value;

/// Reads a variable: `std::env::var` in the binary, a map in tests.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expands every string value below `v` (at `path`); a value with a problem is reported
/// and replaced by null, and its path marked broken so that no stand-in is reported again.
pub(super) fn interpolate(v: &mut Value, path: &str, env: Lookup<'_>, out: &mut Validator<'_>) {
    match v {
        Value::String(s) => match expand(s, env) {
            Ok(Some(expanded)) => *s = expanded,
            Ok(None) => {}
            Err(problems) => {
                for p in problems {
                    out.problem(path, p);
                }
                out.broken.insert(path.to_string());
                *v = Value::Null;
            }
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), env, out);
            }
        }
        Value::Mapping(map) => {
            for (key, value) in map.iter_mut() {
                let key = match key {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => "?".to_string(),
                };
                let at = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                interpolate(value, &at, env, out);
            }
        }
        Value::Tagged(t) => interpolate(&mut t.value, path, env, out),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// `s` with its `${...}` replaced: `Ok(None)` when it has none, else the new text, or
/// every problem found in it.
pub fn expand(s: &str, env: Lookup<'_>) -> Result<Option<String>, Vec<String>> {
    if !s.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(s.len());
    let mut problems = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        // `$${`: a literal `${`.
        if rest[..at].ends_with('$') {
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let inner = &rest[at + 2..];
        let Some(close) = inner.find('}') else {
            problems.push(r#""${" without its "}" (write $${ for a literal "${")"#.to_string());
            rest = "";
            break;
        };
        let expr = &inner[..close];
        rest = &inner[close + 1..];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if !valid_name(name) {
            problems.push(format!(
                "\"${{{expr}}}\": \"{name}\" is not a variable name (letters, digits and _, not starting with a digit; ${{NAME}} or ${{NAME:-default}})"
            ));
            continue;
        }
        match (env(name), default) {
            (Some(value), Some(d)) if value.is_empty() => out.push_str(d),
            (Some(value), _) => out.push_str(&value),
            (None, Some(d)) => out.push_str(d),
            (None, None) => problems.push(format!(
                "environment variable {name} is not set (write ${{{name}:-default}} for a default)"
            )),
        }
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(Some(out))
    } else {
        Err(problems)
    }
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
