//! Values as written in the YAML file that several sections share: durations and whole
//! numbers, read leniently so that validation can report them at their own path. Each
//! section's own serde types live in its file, in a `raw` module.

use serde::de::{self, VariantAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// A duration written the human way: "250ms", "5s", "1m 30s".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A bare number has no unit: say how to write it rather than "expected a string".
        let s = match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) => s,
            serde_yaml::Value::Number(n) => {
                return Err(serde::de::Error::custom(format!(
                    "{n} has no unit: write a duration like \"{n}ms\" or \"{n}s\""
                )))
            }
            other => {
                return Err(serde::de::Error::custom(format!(
                    "expected a duration like \"250ms\", \"5s\" or \"1m\", found {}",
                    match other {
                        serde_yaml::Value::Null => "nothing",
                        serde_yaml::Value::Bool(_) => "a boolean",
                        serde_yaml::Value::Sequence(_) => "a list",
                        serde_yaml::Value::Mapping(_) => "a mapping",
                        _ => "another value",
                    }
                )))
            }
        };
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration \"{s}\": {e} (write it like \"250ms\", \"5s\" or \"1m\")"
                ))
            })
    }
}

/// A whole number as written, however large or negative: its range is checked in
/// validation, so that `-2` or `99999999999999999999999` is reported like any other value
/// out of range, at its own path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Int(pub i128);

impl fmt::Display for Int {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Int, E> {
                Ok(Int(n.into()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Int, E> {
                Ok(Int(n.into()))
            }
            fn visit_i128<E: de::Error>(self, n: i128) -> Result<Int, E> {
                Ok(Int(n))
            }
            fn visit_u128<E: de::Error>(self, n: u128) -> Result<Int, E> {
                Ok(Int(i128::try_from(n).unwrap_or(i128::MAX)))
            }
            /// Integers beyond 64 bits, as [`super::tree`] keeps them.
            fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Int, A::Error> {
                let (tag, contents): (String, _) = data.variant()?;
                let digits: String = contents.newtype_variant()?;
                if tag.trim_start_matches('!') != super::tree::BIG_INT_TAG.trim_start_matches('!') {
                    return Err(de::Error::invalid_type(
                        de::Unexpected::Other(&format!("a value tagged !{tag}")),
                        &self,
                    ));
                }
                Ok(Int(match digits.parse::<i128>() {
                    Ok(n) => n,
                    Err(_) if digits.starts_with('-') => i128::MIN,
                    Err(_) => i128::MAX,
                }))
            }
        }
        d.deserialize_any(V)
    }
}
