//! Free-form JSON inside events (task payloads, `extra`), kept as compact JSON text.
//!
//! The queue never looks inside these values, so they stay text: decoding an event neither
//! parses nor validates it (the log's checksums already vouch for the bytes), which keeps
//! replay fast. Values are only made from a parsed `serde_json::Value` (see
//! [`Json::from_value`]), so the text is always valid, equal values have equal text, and
//! comparing texts compares values.

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
            // Emitted verbatim; the check is cheap next to the I/O of a response.
            let raw =
                RawValue::from_string(self.0.to_string()).map_err(serde::ser::Error::custom)?;
            raw.serialize(serializer)
        } else {
            serializer.serialize_str(self.as_str())
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            // Re-printing normalizes whitespace and number forms, keeping equal values equal.
            serde_json::Value::deserialize(deserializer).map(|value| Json::from_value(&value))
        } else {
            String::deserialize(deserializer).map(|text| Json(text.into_boxed_str()))
        }
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
}
