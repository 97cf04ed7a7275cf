//! The YAML text as a [`serde_yaml::Value`], read so that nothing in it hides the rest of
//! the file: an integer too large for 64 bits is kept (tagged [`BIG_INT_TAG`], for
//! [`super::values::Int`] to report as out of range at its own path), and of a duplicated
//! key the first value is kept (the index in [`super::locate`] reports the second with
//! its line). serde_yaml's own `Value` refuses both for the whole document.

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, VariantAccess, Visitor};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};
use std::cell::RefCell;
use std::fmt;

/// The tag of an integer beyond 64 bits; its value is the number in decimal.
pub const BIG_INT_TAG: &str = "gateway/big-int";

/// A parsed document and the keys found more than once in one mapping (as written).
pub struct Tree {
    pub value: Value,
    pub duplicates: Vec<String>,
}

pub fn parse(text: &str) -> Result<Tree, serde_yaml::Error> {
    let duplicates = RefCell::new(Vec::new());
    let value = Seed(&duplicates).deserialize(serde_yaml::Deserializer::from_str(text))?;
    Ok(Tree {
        value,
        duplicates: duplicates.into_inner(),
    })
}

/// Builds a value like serde_yaml's `Value` visitor, with the two differences above.
#[derive(Clone, Copy)]
struct Seed<'a>(&'a RefCell<Vec<String>>);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn big(n: impl fmt::Display) -> Value {
    Value::Tagged(Box::new(TaggedValue {
        tag: Tag::new(BIG_INT_TAG),
        value: Value::String(n.to_string()),
    }))
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_i128<E: de::Error>(self, n: i128) -> Result<Value, E> {
        Ok(i64::try_from(n).map_or_else(|_| big(n), |n| Value::Number(n.into())))
    }

    fn visit_u128<E: de::Error>(self, n: u128) -> Result<Value, E> {
        Ok(u64::try_from(n).map_or_else(|_| big(n), |n| Value::Number(n.into())))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(self)? {
            let value = map.next_value_seed(self)?;
            if mapping.contains_key(&key) {
                let shown = match &key {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim_end()
                        .to_string(),
                };
                self.0.borrow_mut().push(shown);
            } else {
                mapping.insert(key, value);
            }
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, contents): (String, _) = data.variant()?;
        if tag.is_empty() {
            return Err(de::Error::custom("empty YAML tag is not allowed"));
        }
        let value = contents.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_serde_yaml() {
        let text = "a: 1\nb: [x, -2, 2.5, ~, true]\nc: !T {d: e}\n'1': f\n";
        let ours = parse(text).map(|t| t.value).ok();
        let theirs: Option<Value> = serde_yaml::from_str(text).ok();
        assert!(ours.is_some());
        assert_eq!(ours, theirs);
    }

    #[test]
    fn keeps_big_integers_and_first_duplicates() {
        let t = match parse("a: 99999999999999999999999\nb: -99999999999999999999999\na: 2\n") {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(t.duplicates, vec!["a".to_string()]);
        assert_eq!(t.value["a"], big("99999999999999999999999"));
        assert_eq!(t.value["b"], big("-99999999999999999999999"));
    }
}
