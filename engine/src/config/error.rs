//! [`ConfigError`]: everything that can be wrong with a configuration, each case naming
//! the setting by its dotted path (`tls.cert_file`) and never quoting a secret.

use std::path::PathBuf;

use figment::error::{Actual, Kind};
use figment::Profile;

/// Why a configuration could not be loaded. Every case names the setting by its full
/// dotted path (`port`, `tls.cert_file`, `tokens.keys[0].key`) and, where a value
/// came from the file or an environment variable, which one (`origin`). No message
/// quotes the value of a secret (passwords, token keys, broker credentials): a wrong
/// type is described by its kind, a secret file by its path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file itself could not be read.
    #[error("cannot read the configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{origin}: not valid TOML at line {line}, column {column}: {problem}")]
    Syntax {
        /// The file (or `configuration text`).
        origin: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the parser expected (without the text around it).
        problem: String,
    },
    /// A key that is not a setting (a misspelling, a setting in the wrong section).
    #[error("unknown setting `{field}` ({origin}); expected one of: {}", expected.join(", "))]
    UnknownField {
        /// The key's full dotted path.
        field: String,
        /// Where it was written.
        origin: String,
        /// The settings of that section.
        expected: Vec<&'static str>,
    },
    /// A value of the wrong kind (a string where a number belongs, …).
    #[error("`{field}` has the wrong type: found {found}, expected {expected} ({origin})")]
    WrongType {
        /// The setting.
        field: String,
        /// Where it was written.
        origin: String,
        /// The kind of value found (never the value itself).
        found: String,
        /// What the setting takes.
        expected: String,
    },
    /// A value of the right kind that does not parse or is out of range: a bad duration,
    /// address or network, an unknown choice, a number too large for the setting.
    #[error("`{field}`: {problem} ({origin})")]
    InvalidValue {
        /// The setting.
        field: String,
        /// Where it was written.
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// A required setting of a section is missing.
    #[error("`{field}` is required ({origin})")]
    MissingField {
        /// The setting.
        field: String,
        /// The section's origin.
        origin: String,
    },
    /// A secret has more than one source (`password` and `password_env`, say) or none
    /// where one is needed, or a setting is given without the one it depends on.
    #[error("`{field}`: {problem}")]
    Conflict {
        /// The setting.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The environment variable a `*_env` setting names is not set (or not UTF-8).
    #[error("`{field}`: environment variable {var} {problem}")]
    EnvVar {
        /// The `*_env` setting.
        field: String,
        /// The variable it names.
        var: String,
        /// `is not set`, `is not valid UTF-8` or `is empty`.
        problem: &'static str,
    },
    /// A file a setting names (a `*_file` secret, a TLS certificate or key) cannot be
    /// read. Its content is never quoted.
    #[error("`{field}`: cannot read {}: {source}", path.display())]
    File {
        /// The setting.
        field: String,
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The settings parse but the server refuses them
    /// ([`ServerDescriptor::validate`](crate::ServerDescriptor::validate), a token key
    /// that does not load).
    #[error("invalid setting `{field}`: {problem}")]
    Invalid {
        /// The setting.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    /// The dotted path of the setting at fault, when the error is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
            ConfigError::UnknownField { field, .. }
            | ConfigError::WrongType { field, .. }
            | ConfigError::InvalidValue { field, .. }
            | ConfigError::MissingField { field, .. }
            | ConfigError::Conflict { field, .. }
            | ConfigError::EnvVar { field, .. }
            | ConfigError::File { field, .. }
            | ConfigError::Invalid { field, .. } => Some(field),
        }
    }

    /// Maps the descriptor's own check ([`crate::Error::Config`]) to the setting's
    /// path in the file: the cluster's checks name their field inside `[cluster]`.
    pub(super) fn from_descriptor(e: crate::Error) -> ConfigError {
        match e {
            crate::Error::Config { field, problem } => match problem.strip_prefix("cluster: ") {
                Some(problem) => {
                    let field = match field {
                        "cluster" => "cluster_name",
                        "auth" => "user",
                        other => other,
                    };
                    ConfigError::Invalid {
                        field: format!("cluster.{field}"),
                        problem: problem.to_owned(),
                    }
                }
                None => ConfigError::Invalid {
                    field: field.to_owned(),
                    problem,
                },
            },
            other => ConfigError::Invalid {
                field: String::new(),
                problem: other.to_string(),
            },
        }
    }

    /// Maps figment's error for the first problem found. `origin` names the layer a
    /// value came from: the file's path, or the environment variable for its key.
    pub(super) fn from_figment(e: figment::Error) -> ConfigError {
        // figment's path ends at an unknown key, but at the table of a missing one.
        let mut parts: Vec<&str> = e.path.iter().map(String::as_str).collect();
        if let Kind::MissingField(name) = &e.kind {
            parts.push(name);
        }
        let field = dotted(&parts);
        let origin = match &e.metadata {
            Some(m) => m.interpolate(e.profile.as_ref().unwrap_or(&Profile::Default), &parts),
            None => "configuration".to_owned(),
        };
        let invalid = |problem: String| ConfigError::InvalidValue {
            field: field.clone(),
            origin: origin.clone(),
            problem,
        };
        match &e.kind {
            Kind::UnknownField(_, expected) => ConfigError::UnknownField {
                field,
                origin,
                expected: expected.to_vec(),
            },
            Kind::MissingField(_) => ConfigError::MissingField { field, origin },
            Kind::InvalidType(found, expected) => ConfigError::WrongType {
                found: kind_of(found),
                expected: expected.clone(),
                field,
                origin,
            },
            // A number out of a setting's range is shown (no secret is a number
            // setting); anything else only by its kind.
            Kind::InvalidValue(Actual::Unsigned(n), expected) => {
                invalid(format!("{n} is out of range: expected {expected}"))
            }
            Kind::InvalidValue(Actual::Signed(n), expected) => {
                invalid(format!("{n} is out of range: expected {expected}"))
            }
            Kind::InvalidValue(found, expected) => {
                invalid(format!("{} is not {expected}", kind_of(found)))
            }
            Kind::UnknownVariant(found, expected) => invalid(format!(
                "unknown choice {found:?}; expected one of: {}",
                expected.join(", ")
            )),
            Kind::Message(problem) => invalid(problem.clone()),
            Kind::ISizeOutOfRange(_) | Kind::USizeOutOfRange(_) => {
                invalid("the number is out of range for this setting".to_owned())
            }
            Kind::InvalidLength(n, expected) => invalid(format!("{n} items, expected {expected}")),
            Kind::DuplicateField(f) => invalid(format!("`{f}` given twice")),
            Kind::Unsupported(_) | Kind::UnsupportedKey(..) => {
                invalid("unsupported value".to_owned())
            }
        }
    }
}

/// `["tokens", "keys", "0", "key"]` → `tokens.keys[0].key`.
fn dotted(parts: &[&str]) -> String {
    let mut out = String::new();
    for part in parts {
        if part.parse::<usize>().is_ok() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// The kind of a value, without the value: a wrong type given for a password must not
/// print the password.
fn kind_of(actual: &Actual) -> String {
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit => "nothing",
        Actual::Option => "an option",
        Actual::NewtypeStruct => "a value",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        Actual::Enum | Actual::UnitVariant | Actual::NewtypeVariant => "a choice",
        Actual::TupleVariant | Actual::StructVariant => "a choice",
        Actual::Other(_) => "a value",
    }
    .to_owned()
}
