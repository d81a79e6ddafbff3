//! Free-form JSON inside events (task payloads, `extra`), kept as compact JSON text.
//!
//! The queue never looks inside these values, so they stay text: decoding an event neither
//! parses nor validates it (the log's checksums already vouch for the bytes), which keeps
//! replay fast. Values are only made from parsed JSON (see [`Json::from_value`] and the
//! `Deserialize` impl), so the text is always valid, equal values have equal text, and
//! comparing texts compares values.
//!
//! Reading JSON text (a `createTask` body) goes straight to the canonical text, without a
//! `serde_json::Value` tree in between: a tree of many small values takes ten to thirty times
//! the bytes of its text, so a large payload parsed into one costs hundreds of megabytes for a
//! moment. The text is the same as printing the tree would give: object keys sorted, the
//! last of repeated keys winning, numbers and strings printed by `serde_json`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Json(Box<str>);

impl Json {
    /// The compact text of `value`.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Json(value.to_string().into_boxed_str())
    }

    pub fn empty_object() -> Self {
        Json::from_value(&serde_json::Value::Object(Default::default()))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads a JSON object (a task's `payload` or `extra`): anything else is the
    /// deserializer's invalid-type error.
    pub fn deserialize_object<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserializer
                .deserialize_map(CanonicalText)
                .map(|text| Json(text.into_boxed_str()))
        } else {
            Json::deserialize(deserializer)
        }
    }

    /// The length of the text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value as a tree, for the rare reader that needs to look inside.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.as_str()).expect("stored JSON text is valid")
    }
}

impl Default for Json {
    fn default() -> Self {
        Json::empty_object()
    }
}

impl From<serde_json::Value> for Json {
    fn from(value: serde_json::Value) -> Self {
        Json::from_value(&value)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            // Emitted verbatim, borrowed rather than copied; the check is cheap next to the I/O
            // of a response.
            let raw: &RawValue =
                serde_json::from_str(self.as_str()).map_err(serde::ser::Error::custom)?;
            raw.serialize(serializer)
        } else {
            serializer.serialize_str(self.as_str())
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            // Re-printing normalizes whitespace, key order and number forms, keeping equal
            // values equal.
            deserializer
                .deserialize_any(CanonicalText)
                .map(|text| Json(text.into_boxed_str()))
        } else {
            String::deserialize(deserializer).map(|text| Json(text.into_boxed_str()))
        }
    }
}

/// Reads one JSON value into its canonical text (see the module's notes).
struct CanonicalText;

impl CanonicalText {
    fn print<T: Serialize + ?Sized, E: de::Error>(value: &T) -> Result<String, E> {
        serde_json::to_string(value).map_err(E::custom)
    }
}

impl<'de> DeserializeSeed<'de> for CanonicalText {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CanonicalText {
    type Value = String;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<String, E> {
        // As a tree holds it: `null` for what JSON cannot spell, `1.0` for a whole float.
        Self::print(&serde_json::Value::from(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
        Self::print(value)
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok("null".into())
    }

    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Ok("null".into())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<String, A::Error> {
        let mut text = String::from("[");
        while let Some(item) = items.next_element_seed(CanonicalText)? {
            if text.len() > 1 {
                text.push(',');
            }
            text.push_str(&item);
        }
        text.push(']');
        Ok(text)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<String, A::Error> {
        // Sorted as a tree's keys are, the last of repeated keys winning.
        let mut sorted = BTreeMap::new();
        while let Some(key) = entries.next_key::<String>()? {
            let value = entries.next_value_seed(CanonicalText)?;
            sorted.insert(key, value);
        }
        let length = sorted
            .iter()
            .map(|(key, value)| key.len() + value.len() + 4)
            .sum::<usize>();
        let mut text = String::with_capacity(length + 2);
        text.push('{');
        for (key, value) in sorted {
            if text.len() > 1 {
                text.push(',');
            }
            text.push_str(&Self::print::<_, A::Error>(&key)?);
            text.push(':');
            text.push_str(&value);
        }
        text.push('}');
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_have_equal_text() {
        let a: Json = serde_json::from_str(r#"{ "a" : [1, 2.5, "x"] }"#).unwrap();
        let b = Json::from_value(&serde_json::json!({"a": [1, 2.5, "x"]}));
        assert_eq!(a, b);
        assert_eq!(a.as_str(), r#"{"a":[1,2.5,"x"]}"#);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"a":[1,2.5,"x"]}"#);
    }

    #[test]
    fn text_is_read_as_printing_its_tree_gives() {
        for text in [
            r#"{"b": 1, "a": {"d": [true, false, null], "c": -0}, "a": {"z": "last wins"}}"#,
            r#"[1e15, -0, 1.5e300, 18446744073709551615, -9223372036854775808, 0.1, 2e-7]"#,
            r#""tab\t quote\" slash\/ control\u0001 \u00e9 \ud83d\ude00 é""#,
            r#"{"": {}, "\u0000": [], "é": [[[]]], "A": 1, "a": 2, "~": 3}"#,
            "  null  ",
        ] {
            let tree: serde_json::Value = serde_json::from_str(text).unwrap();
            let json: Json = serde_json::from_str(text).unwrap();
            assert_eq!(json.as_str(), tree.to_string(), "{text}");
        }
    }

    #[test]
    fn objects_are_required_where_asked() {
        let object = |text: &str| {
            Json::deserialize_object(&mut serde_json::Deserializer::from_str(text))
                .map(|json| json.as_str().to_owned())
        };
        assert_eq!(object(r#"{"b":[],"a":1}"#).unwrap(), r#"{"a":1,"b":[]}"#);
        for text in ["[]", "1", "\"x\"", "null"] {
            assert!(object(text).is_err(), "{text}");
        }
    }
}
