//! The two layers a configuration is merged from: the TOML text, and the environment
//! overrides on top of it.
//!
//! Both are parsed here rather than by figment's own providers, for two reasons: a TOML
//! syntax error from the parser quotes the offending line, which may hold a password,
//! so only its message and position are kept; and figment's `Env` turns
//! `CONDUIT_PASSWORD=0042` into the number 42, so every override is kept as the string
//! it is and only read as a number where the setting is a number.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::error::ConfigError;
use super::file::{SECRET_GROUPS, TOP_LEVEL_KEYS};

/// The name of the environment layer (and so of its values' origin).
const ENV_LAYER: &str = "environment";

/// One layer of settings with a name for errors.
pub(super) struct Layer {
    metadata: Metadata,
    dict: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

impl Layer {
    /// The TOML text `text`, read from `origin` (a path, for errors).
    pub fn toml(origin: &str, text: &str) -> Result<Layer, ConfigError> {
        let dict: Dict = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map_or((1, 1), |span| line_and_column(text, span.start));
            ConfigError::Syntax {
                origin: origin.to_owned(),
                line,
                column,
                problem: e.message().trim().to_owned(),
            }
        })?;
        let name = origin.to_owned();
        let metadata = Metadata::named(name.clone()).interpolater(move |_, _| name.clone());
        Ok(Layer { metadata, dict })
    }

    /// The overrides among `vars`: each `<prefix><KEY>` whose first `__`-separated
    /// part is a top-level setting, nested at `__` (`CONDUIT_TLS__CERT_FILE` →
    /// `tls.cert_file`), keys lowercased, values kept as strings. Variables that name
    /// no setting (`CONDUIT_LOG_FORMAT`) are not overrides.
    pub fn env(prefix: &str, vars: impl IntoIterator<Item = (String, String)>) -> Layer {
        let mut dict = Dict::new();
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            let key = rest.to_ascii_lowercase();
            let parts: Vec<&str> = key.split("__").collect();
            if parts.iter().any(|p| p.is_empty()) || !TOP_LEVEL_KEYS.contains(&parts[0]) {
                continue;
            }
            insert(&mut dict, &parts, Value::from(value));
        }
        let prefix = prefix.to_owned();
        let metadata = Metadata::named(ENV_LAYER).interpolater(move |_, keys| {
            let name: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
            format!("environment variable {prefix}{}", name.join("__"))
        });
        Layer { metadata, dict }
    }

    /// Drops from `self` each secret whose source `over` overrides: a file's
    /// `password_file` and a `CONDUIT_PASSWORD` override would otherwise be two
    /// sources of one password; the override wins, as overrides do.
    pub fn yield_secrets_to(&mut self, over: &Layer) {
        for (table, keys) in SECRET_GROUPS {
            let (Some(mine), Some(theirs)) = (
                table_mut(&mut self.dict, table),
                table_ref(&over.dict, table),
            ) else {
                continue;
            };
            if keys.iter().any(|k| theirs.contains_key(*k)) {
                for k in keys {
                    mine.remove(*k);
                }
            }
        }
    }
}

/// Puts `value` at `path` in `dict`, making tables on the way (a string already there
/// is replaced by the table: the later, deeper key is the one meant).
fn insert(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

fn table_ref<'a>(dict: &'a Dict, path: &[&str]) -> Option<&'a Dict> {
    path.iter()
        .try_fold(dict, |d, k| d.get(*k).and_then(Value::as_dict))
}

fn table_mut<'a>(dict: &'a mut Dict, path: &[&str]) -> Option<&'a mut Dict> {
    path.iter().try_fold(dict, |d, k| match d.get_mut(*k) {
        Some(Value::Dict(_, inner)) => Some(inner),
        _ => None,
    })
}

/// 1-based line and column of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = text.get(..offset).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(1, |l| l.chars().count() + 1);
    (line, column)
}
