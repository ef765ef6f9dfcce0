//! What the OpenAI shapes share: which endpoint a body is for, and a request's error (an HTTP
//! status and OpenAI's error fields).

use serde_json::{json, Value};

/// A request error: HTTP status and OpenAI-style error fields.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(Into::into),
        }
    }

    /// A fault of the server's, not of the request.
    pub fn server(message: impl Into<String>) -> Self {
        Self::status(500, message)
    }

    /// An error with this HTTP status (4xx: the request's fault, 5xx: the server's).
    pub fn status(status: u16, message: impl Into<String>) -> Self {
        let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
        Self { status, message: message.into(), kind, param: None }
    }

    pub fn not_found() -> Self {
        Self::status(404, "no such route")
    }

    pub fn body(&self) -> Value {
        json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": Value::Null } })
    }
}

/// Which endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Completion,
    Chat,
}
