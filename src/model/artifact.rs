//! Artifacts: what a run publishes besides its status (reference §6). An artifact is kept in
//! its task's state, keyed by run and name, so every event of it is in its task's partition.
//!
//! The `createArtifact` body (`post-artifact-request`) is read here into an [`Artifact`], and
//! [`Artifact::replace`] holds Taskcluster's rules for creating an artifact that exists.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, ErrorCode, Timestamp};

/// Artifact names go into a URL's path with their slashes kept, as Taskcluster's clients send
/// them.
pub const NAME_ENCODING: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Longest `contentType` (`post-artifact-request.yml`).
const MAX_CONTENT_TYPE_CHARS: usize = 255;
/// Longest message of an `error` artifact.
const MAX_ERROR_MESSAGE_CHARS: usize = 4096;
/// The content type of a `link` artifact created without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/binary";
/// The artifact name of a run's live log when its worker names none: what the API serves a
/// push without `name` under, and what a worker pushes and uploads under by default.
pub const DEFAULT_LIVE_LOG_NAME: &str = "public/logs/live.log";

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Artifact {
    pub content_type: String,
    pub expires: Timestamp,
    pub storage: Storage,
}

/// Where the artifact's content is, by `storageType`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Storage {
    /// Uploaded to the queue's own blob store through a signed PUT URL. `content_length`,
    /// when the creator gave one, is what the upload must be.
    S3 { content_length: Option<u64> },
    /// A URL elsewhere; GET redirects there.
    Reference { url: String },
    /// Another artifact of the same run, by name; GET follows it.
    Link { artifact: String },
    /// The worker could not provide the artifact; GET answers 424 with this.
    Error {
        reason: ArtifactErrorReason,
        message: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactErrorReason {
    FileMissingOnWorker,
    InvalidResourceOnWorker,
    TooLargeFileOnWorker,
    FileNotReadableOnWorker,
}

impl Storage {
    pub fn type_name(&self) -> &'static str {
        match self {
            Storage::S3 { .. } => "s3",
            Storage::Reference { .. } => "reference",
            Storage::Link { .. } => "link",
            Storage::Error { .. } => "error",
        }
    }
}

/// `post-artifact-request`, one variant per storage type.
#[derive(Deserialize)]
#[serde(
    tag = "storageType",
    rename_all = "lowercase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
enum Request {
    S3 {
        expires: Timestamp,
        content_type: String,
        content_length: Option<u64>,
    },
    Reference {
        expires: Timestamp,
        content_type: String,
        url: String,
    },
    Link {
        expires: Timestamp,
        content_type: Option<String>,
        artifact: String,
    },
    Error {
        expires: Timestamp,
        reason: ArtifactErrorReason,
        message: String,
    },
    Object {},
}

impl Artifact {
    /// Reads a `createArtifact` body; what does not fit the schema is `InputValidationError`.
    pub fn from_request(body: &Value) -> Result<Artifact, ApiError> {
        let invalid = |message: String| {
            ApiError::new(
                ErrorCode::InputValidationError,
                format!("the request does not match post-artifact-request: {message}"),
            )
        };
        if body.get("storageType").and_then(Value::as_str) == Some("object") {
            return Err(ApiError::input(
                "storageType `object` needs Taskcluster's object service, which this queue does \
                 not have; create the artifact with storageType `s3` instead",
            ));
        }
        let request = Request::deserialize(body).map_err(|error| invalid(error.to_string()))?;
        let artifact = match request {
            Request::S3 {
                expires,
                content_type,
                content_length,
            } => Artifact {
                content_type,
                expires,
                storage: Storage::S3 { content_length },
            },
            Request::Reference {
                expires,
                content_type,
                url,
            } => {
                if !is_uri(&url) {
                    return Err(invalid(format!("`url` `{url}` is not an absolute URI")));
                }
                Artifact {
                    content_type,
                    expires,
                    storage: Storage::Reference { url },
                }
            }
            Request::Link {
                expires,
                content_type,
                artifact,
            } => {
                if !is_artifact_name(&artifact) {
                    return Err(invalid(
                        "`artifact` must be a name of printable ASCII characters".into(),
                    ));
                }
                Artifact {
                    content_type: content_type.unwrap_or_else(|| DEFAULT_CONTENT_TYPE.into()),
                    expires,
                    storage: Storage::Link { artifact },
                }
            }
            Request::Error {
                expires,
                reason,
                message,
            } => {
                if message.chars().count() > MAX_ERROR_MESSAGE_CHARS {
                    return Err(invalid(format!(
                        "`message` is longer than {MAX_ERROR_MESSAGE_CHARS} characters"
                    )));
                }
                Artifact {
                    content_type: DEFAULT_CONTENT_TYPE.into(),
                    expires,
                    storage: Storage::Error { reason, message },
                }
            }
            Request::Object {} => unreachable!("object requests are refused above"),
        };
        if artifact.content_type.chars().count() > MAX_CONTENT_TYPE_CHARS {
            return Err(invalid(format!(
                "`contentType` is longer than {MAX_CONTENT_TYPE_CHARS} characters"
            )));
        }
        Ok(artifact)
    }

    /// Taskcluster's rules for creating an artifact that already exists (reference §3.5): the
    /// same artifact again is accepted (`Ok(false)`: nothing to record unless the expiry
    /// grows); a `reference` may get a new URL or become a `link`; anything else is a 409.
    /// `Ok(true)` means the new artifact replaces the old one.
    pub fn replace(&self, new: &Artifact) -> Result<bool, ApiError> {
        let shortened = new.expires < self.expires;
        let compatible = match (&self.storage, &new.storage) {
            (Storage::Reference { .. }, Storage::Reference { .. } | Storage::Link { .. }) => true,
            (Storage::Link { artifact: old }, Storage::Link { artifact }) => old == artifact,
            (old, storage) => old == storage && self.content_type == new.content_type,
        };
        if !compatible || shortened {
            return Err(ApiError::conflict(format!(
                "Artifact already exists with different storageType, contentType, details or a \
                 later expiry: it is `{}` ({}, expires {})",
                self.storage.type_name(),
                self.content_type,
                self.expires
            )));
        }
        Ok(self != new)
    }

    /// An entry of `listArtifacts`, and the reply of `artifactInfo`.
    pub fn to_json(&self, name: &str) -> Value {
        let mut entry = json!({
            "storageType": self.storage.type_name(),
            "name": name,
            "expires": self.expires,
            "contentType": self.content_type,
        });
        if let Storage::S3 {
            content_length: Some(length),
        } = self.storage
        {
            entry["contentLength"] = json!(length);
        }
        entry
    }
}

/// Artifact names are printable ASCII (`^[\x20-\x7e]+$`).
pub fn is_artifact_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|byte| (0x20..=0x7e).contains(&byte))
}

/// An absolute URI: a scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`), a colon, and
/// something after it, with no spaces or control characters.
fn is_uri(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut scheme_chars = scheme.chars();
    scheme_chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !rest.is_empty()
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expires() -> &'static str {
        "2030-01-01T00:00:00.000Z"
    }

    fn read(body: Value) -> Result<Artifact, ApiError> {
        Artifact::from_request(&body)
    }

    #[test]
    fn each_storage_type_reads_with_its_fields() {
        let s3 = read(json!({"storageType": "s3", "expires": expires(),
            "contentType": "text/plain", "contentLength": 5}))
        .unwrap();
        assert_eq!(
            s3.storage,
            Storage::S3 {
                content_length: Some(5)
            }
        );
        let link = read(json!({"storageType": "link", "expires": expires(),
            "artifact": "public/a"}))
        .unwrap();
        assert_eq!(link.content_type, DEFAULT_CONTENT_TYPE);
        let error = read(json!({"storageType": "error", "expires": expires(),
            "reason": "file-missing-on-worker", "message": "gone"}))
        .unwrap();
        assert_eq!(error.storage.type_name(), "error");
        let reference = read(json!({"storageType": "reference", "expires": expires(),
            "contentType": "text/html", "url": "https://example.com/x"}))
        .unwrap();
        assert_eq!(reference.to_json("r")["storageType"], "reference");
    }

    #[test]
    fn schema_violations_are_input_validation_errors() {
        for body in [
            json!({"storageType": "s3", "expires": expires()}),
            json!({"storageType": "s3", "expires": expires(), "contentType": "a", "x": 1}),
            json!({"storageType": "reference", "expires": expires(), "contentType": "a",
                "url": "not a url"}),
            json!({"storageType": "error", "expires": expires(), "reason": "bad",
                "message": "m"}),
            json!({"storageType": "azure", "expires": expires(), "contentType": "a"}),
            json!({"storageType": "s3", "expires": "yesterday", "contentType": "a"}),
            json!({"storageType": "s3", "expires": expires(), "contentType": "a".repeat(256)}),
        ] {
            let error = read(body.clone()).unwrap_err();
            assert_eq!(
                error.code,
                ErrorCode::InputValidationError,
                "{body}: {error}"
            );
        }
        let object = read(json!({"storageType": "object", "expires": expires(),
            "contentType": "a"}))
        .unwrap_err();
        assert_eq!(object.code, ErrorCode::InputError);
    }

    #[test]
    fn re_creating_follows_taskclusters_compatibility_rules() {
        let reference = read(json!({"storageType": "reference", "expires": expires(),
            "contentType": "text/html", "url": "https://example.com/x"}))
        .unwrap();
        assert_eq!(reference.replace(&reference), Ok(false));
        let mut moved = reference.clone();
        moved.storage = Storage::Reference {
            url: "https://example.com/y".into(),
        };
        assert_eq!(reference.replace(&moved), Ok(true));
        let link = read(json!({"storageType": "link", "expires": expires(),
            "artifact": "public/a"}))
        .unwrap();
        assert_eq!(reference.replace(&link), Ok(true));
        assert!(link.replace(&reference).is_err());

        let s3 = read(json!({"storageType": "s3", "expires": expires(),
            "contentType": "text/plain"}))
        .unwrap();
        let mut other_type = s3.clone();
        other_type.content_type = "application/json".into();
        assert!(s3.replace(&other_type).is_err());
        let mut later = s3.clone();
        later.expires = later.expires.plus_millis(1);
        assert_eq!(s3.replace(&later), Ok(true));
        assert!(later.replace(&s3).is_err(), "an expiry may not shrink");
    }
}
