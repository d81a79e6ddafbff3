//! Free-form JSON inside events (task payloads, `extra`).
//!
//! The log's binary codec cannot carry a self-describing `serde_json::Value`, so in binary
//! formats the value travels as its compact JSON text; in JSON it is the value itself.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Debug, Default)]
pub struct Json(pub serde_json::Value);

impl Json {
    pub fn empty_object() -> Self {
        Json(serde_json::Value::Object(Default::default()))
    }
}

impl From<serde_json::Value> for Json {
    fn from(value: serde_json::Value) -> Self {
        Json(value)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.0.serialize(serializer)
        } else {
            let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
            serializer.serialize_str(&text)
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            serde_json::Value::deserialize(deserializer).map(Json)
        } else {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            serde_json::from_str(&text)
                .map(Json)
                .map_err(serde::de::Error::custom)
        }
    }
}
