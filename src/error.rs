//! Errors: [`Error`], what the library's public API returns, and [`SettingError`], a setting
//! with a value it cannot take.
//!
//! Inside the crate errors travel as `anyhow` chains, with typed links where a caller needs
//! data to act on (a [`SettingError`], an [`Error`] naming a model file, a vocabulary
//! mismatch, an RPC server). At the public API, [`Error::from_chain`] turns a chain into an
//! [`Error`] whose message is the chain's one line.
//!
//! This module depends on nothing else in the crate, so every other module can use it.

use std::fmt;
use std::path::PathBuf;

/// A setting with a value it cannot take.
///
/// `setting` is named as JSON writes it (`top_p`, `weights`, `max_tokens`, …) and `problem`
/// mentions other settings in backticks, so that each front end words them for its users
/// (`--top-p` on the command line, the field name over HTTP) with [`SettingError::render`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    /// The setting, as JSON names it.
    pub setting: String,
    /// What is wrong, e.g. "must be in (0, 1], got 2"; other settings in backticks.
    pub problem: String,
}

impl SettingError {
    pub fn new(setting: impl Into<String>, problem: impl Into<String>) -> Self {
        Self { setting: setting.into(), problem: problem.into() }
    }

    /// The message, with every setting name (the subject and those in backticks) written
    /// by `name`.
    pub fn render(&self, name: &dyn Fn(&str) -> String) -> String {
        let mut out = format!("{} ", name(&self.setting));
        let mut parts = self.problem.split('`');
        out.push_str(parts.next().unwrap_or_default());
        for (i, part) in parts.enumerate() {
            if i % 2 == 0 {
                out.push_str(&name(part));
            } else {
                out.push_str(part);
            }
        }
        out
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(&|s| s.to_string()))
    }
}

impl std::error::Error for SettingError {}

/// An error about `setting`, as the crate's internal `anyhow` chains carry it.
pub fn invalid(setting: &str, problem: impl Into<String>) -> anyhow::Error {
    SettingError::new(setting, problem).into()
}

/// What went wrong, with the data a caller needs to act on it. Every message is one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting (weights, temperature, max_tokens, …) has a value it cannot take.
    #[error("{message}")]
    Setting {
        /// The setting, as JSON names it (`top_p`, `weights`, …).
        setting: String,
        /// What is wrong with it; other settings in backticks.
        problem: String,
        /// The whole message.
        message: String,
    },
    /// A recipe cannot be read or makes no sense (no experts, two experts of one name, bad
    /// TOML).
    #[error("{message}")]
    Recipe { message: String },
    /// A model or adapter file is missing, unreadable, not GGUF, or llama.cpp cannot load it.
    #[error("{message}")]
    ModelFile { path: PathBuf, message: String },
    /// Two policies' vocabularies cannot be combined.
    #[error("{message}")]
    Vocabulary { first: PathBuf, second: PathBuf, message: String },
    /// A llama.cpp context cannot be created or is full (lower the context size or the
    /// number of lanes or policies).
    #[error("{message}")]
    Context { message: String },
    /// An RPC server cannot be reached or was lost.
    #[error("{message}")]
    Rpc { server: String, message: String },
    /// Reading or writing a file failed.
    #[error("{message}")]
    Io { kind: std::io::ErrorKind, message: String },
    /// The caller cancelled the generation; what was generated until then.
    #[error("the generation was cancelled")]
    Cancelled { partial: Box<crate::Generation> },
    /// Anything else llama.cpp or the engine reported.
    #[error("{message}")]
    Engine { message: String },
}

/// A server a policy's model was lost with: the requests that need the policy fail with this
/// (the server answers them 503), the others go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLost {
    /// The server, `HOST:PORT`.
    pub server: String,
    pub message: String,
}

impl std::fmt::Display for ServerLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServerLost {}

/// What a typed link of an internal error chain is about, for [`Error::from_chain`].
#[derive(Debug, Clone)]
pub(crate) enum Tag {
    ModelFile(PathBuf),
    Vocabulary(PathBuf, PathBuf),
    Context,
    Rpc(String),
}

/// A link of an internal error chain that says what it is about ([`Tag`]) besides its
/// words: made with [`tagged`] where an error starts, or added with `.context(..)` to a
/// chain with words of its own.
#[derive(Debug)]
pub(crate) struct Tagged {
    pub(crate) tag: Tag,
    pub(crate) message: String,
}

impl Tagged {
    pub(crate) fn new(tag: Tag, message: impl Into<String>) -> Self {
        Self { tag, message: message.into() }
    }
}

impl fmt::Display for Tagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Tagged {}

/// An internal error that the public API reports as the [`Error`] variant of `tag`.
pub(crate) fn tagged(tag: Tag, message: impl Into<String>) -> anyhow::Error {
    Tagged::new(tag, message).into()
}

impl Error {
    /// The public form of an internal error chain: the first typed link decides the
    /// variant (a tag, a setting error, an I/O error), the message is the chain in one line.
    pub fn from_chain(e: anyhow::Error) -> Self {
        let e = match e.downcast::<Error>() {
            Ok(typed) => return typed,
            Err(e) => e,
        };
        let message = one_line(&e);
        for link in e.chain() {
            if let Some(s) = link.downcast_ref::<SettingError>() {
                return Error::Setting {
                    setting: s.setting.clone(),
                    problem: s.problem.clone(),
                    message,
                };
            }
            if let Some(Tagged { tag, .. }) = link.downcast_ref::<Tagged>() {
                return match tag {
                    Tag::ModelFile(path) => Error::ModelFile { path: path.clone(), message },
                    Tag::Vocabulary(a, b) => {
                        Error::Vocabulary { first: a.clone(), second: b.clone(), message }
                    }
                    Tag::Context => Error::Context { message },
                    Tag::Rpc(server) => Error::Rpc { server: server.clone(), message },
                };
            }
            if let Some(lost) = link.downcast_ref::<ServerLost>() {
                return Error::Rpc { server: lost.server.clone(), message };
            }
            if let Some(io) = link.downcast_ref::<std::io::Error>() {
                return Error::Io { kind: io.kind(), message };
            }
        }
        Error::Engine { message }
    }

    /// The setting this error is about, if it is about one.
    pub fn setting(&self) -> Option<&str> {
        match self {
            Error::Setting { setting, .. } => Some(setting),
            _ => None,
        }
    }
}

impl From<SettingError> for Error {
    fn from(s: SettingError) -> Self {
        let message = s.to_string();
        Error::Setting { setting: s.setting, problem: s.problem, message }
    }
}

/// An error chain in one line: its links joined with ": ", line breaks folded.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// The result type of the public API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn chains_become_the_variant_of_their_first_typed_link() {
        let setting = Err::<(), _>(invalid("top_p", "must be in (0, 1], got 2"))
            .context("input line 3")
            .unwrap_err();
        match Error::from_chain(setting) {
            Error::Setting { setting, problem, message } => {
                assert_eq!(setting, "top_p");
                assert_eq!(problem, "must be in (0, 1], got 2");
                assert_eq!(message, "input line 3: top_p must be in (0, 1], got 2");
            }
            other => panic!("{other:?}"),
        }
        let file = tagged(Tag::ModelFile("m.gguf".into()), "model m.gguf not found")
            .context("policy 'poet'");
        match Error::from_chain(file) {
            Error::ModelFile { path, message } => {
                assert_eq!(path, PathBuf::from("m.gguf"));
                assert_eq!(message, "policy 'poet': model m.gguf not found");
            }
            other => panic!("{other:?}"),
        }
        let io = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
            .context("cannot read recipe r.toml");
        assert!(matches!(
            Error::from_chain(io),
            Error::Io { kind: std::io::ErrorKind::PermissionDenied, .. }
        ));
        let plain = Error::from_chain(anyhow::anyhow!("a\nb"));
        assert!(matches!(&plain, Error::Engine { message } if message == "a b"));
    }

    #[test]
    fn settings_are_rendered_with_the_front_ends_names() {
        let e = SettingError::new("top_p", "must be below `top_k`");
        assert_eq!(
            e.render(&|s| format!("--{}", s.replace('_', "-"))),
            "--top-p must be below --top-k"
        );
        assert_eq!(Error::from(e).setting(), Some("top_p"));
    }
}
