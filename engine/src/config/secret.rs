//! A secret's one source: written inline, named environment variable, or file.

use std::env::VarError;
use std::path::PathBuf;

use super::error::ConfigError;

/// Reads an environment variable (the process's, or a test's own).
pub(super) type Lookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

/// The three ways a secret called `name` may be given, inside the table at `table`
/// (`""` for the top level, `"cluster."` for `[cluster]`).
pub(super) struct Sources<'a> {
    pub table: &'a str,
    pub name: &'static str,
    pub inline: Option<String>,
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl Sources<'_> {
    /// The secret, from whichever one source is given (`None` when none is). More than
    /// one is refused: which should win would be a guess. A file's trailing line
    /// break (`echo secret > file`) is not part of the secret.
    pub fn resolve(self, lookup: Lookup<'_>) -> Result<Option<String>, ConfigError> {
        let Sources {
            table,
            name,
            inline,
            env,
            file,
        } = self;
        let given = usize::from(inline.is_some())
            + usize::from(env.is_some())
            + usize::from(file.is_some());
        if given > 1 {
            return Err(ConfigError::Conflict {
                field: format!("{table}{name}"),
                problem: format!(
                    "give exactly one of `{name}`, `{name}_env` and `{name}_file`, not {given}"
                ),
            });
        }
        if let Some(var) = env {
            return match lookup(&var) {
                Ok(value) => Ok(Some(value)),
                Err(e) => Err(ConfigError::EnvVar {
                    field: format!("{table}{name}_env"),
                    var,
                    problem: match e {
                        VarError::NotPresent => "is not set",
                        VarError::NotUnicode(_) => "is not valid UTF-8",
                    },
                }),
            };
        }
        if let Some(path) = file {
            return match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned())),
                Err(source) => Err(ConfigError::File {
                    field: format!("{table}{name}_file"),
                    path,
                    source,
                }),
            };
        }
        Ok(inline)
    }
}
