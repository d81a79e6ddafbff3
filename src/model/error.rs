//! The one error type of every call on the queue, and the one table from Taskcluster's error
//! codes to HTTP statuses. It sits in the model because what a decision may not do is what the
//! caller is told: the model's validation and decisions and authentication return it,
//! and the API writes it out in Taskcluster's shape.

use std::fmt;

/// Taskcluster's error codes (the `code` of an error body).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorCode {
    /// The body is not JSON, or not sent as `application/json`.
    MalformedPayload,
    /// A URL parameter or query argument does not match its pattern.
    InvalidRequestArguments,
    /// The body fails the endpoint's JSON schema.
    InputValidationError,
    /// Semantically wrong input: dates, dependencies, artifact rules, link cycles.
    InputError,
    AuthenticationFailed,
    InsufficientScopes,
    ResourceNotFound,
    /// Idempotency conflict, wrong state, past deadline, sealed group, run cap.
    RequestConflict,
    ResourceExpired,
    InputTooLarge,
    InternalServerError,
    /// A bound on work held at once is reached; retrying later can succeed.
    ServiceUnavailable,
}

impl ErrorCode {
    /// The table: every code's HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::MalformedPayload
            | ErrorCode::InvalidRequestArguments
            | ErrorCode::InputValidationError
            | ErrorCode::InputError => 400,
            ErrorCode::AuthenticationFailed => 401,
            ErrorCode::InsufficientScopes => 403,
            ErrorCode::ResourceNotFound => 404,
            ErrorCode::RequestConflict => 409,
            ErrorCode::ResourceExpired => 410,
            ErrorCode::InputTooLarge => 413,
            ErrorCode::InternalServerError => 500,
            ErrorCode::ServiceUnavailable => 503,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedPayload => "MalformedPayload",
            ErrorCode::InvalidRequestArguments => "InvalidRequestArguments",
            ErrorCode::InputValidationError => "InputValidationError",
            ErrorCode::InputError => "InputError",
            ErrorCode::AuthenticationFailed => "AuthenticationFailed",
            ErrorCode::InsufficientScopes => "InsufficientScopes",
            ErrorCode::ResourceNotFound => "ResourceNotFound",
            ErrorCode::RequestConflict => "RequestConflict",
            ErrorCode::ResourceExpired => "ResourceExpired",
            ErrorCode::InputTooLarge => "InputTooLarge",
            ErrorCode::InternalServerError => "InternalServerError",
            ErrorCode::ServiceUnavailable => "ServiceUnavailable",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as the API reports it: a code and a human-readable message. Structured details
/// (for example `missingTaskDependencies`) travel beside the message where Taskcluster has them.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InputError, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceNotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RequestConflict, message)
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}
