//! A [`ServerDescriptor`] from a TOML file, with environment overrides, and the
//! process's log output ([`init_logging`]). Needs the `config` feature (on by default).
//!
//! ```toml
//! port = 9000
//! name = "chat"
//! password_file = "/run/secrets/conduit"   # or password_env = "CHAT_PASSWORD", or password = "…"
//! heartbeat_interval = "30s"
//! trusted_proxies = ["10.0.0.0/8"]
//! metrics_addr = "127.0.0.1:9464"
//!
//! [tls]
//! cert_file = "/etc/conduit/cert.pem"
//! key_file = "/etc/conduit/key.pem"
//!
//! [log]
//! format = "json"
//! ```
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = conduit::config::Config::from_file("/etc/conduit/conduit.toml")?;
//! conduit::config::init_logging(config.log())?;
//! let server = conduit::Server::new(config.into_descriptor())?;
//! # Ok(()) }
//! ```
//!
//! **Keys.** The top level takes every field of [`ServerDescriptor`] by its name, and
//! each key left out keeps [`ServerDescriptor::new`]'s default. Durations are written
//! for people (`"30s"`, `"250ms"`, `"5m"`, `"1h 30m"`); `metrics_addr` is `IP:port`;
//! `trusted_proxies` is a list of networks; `slow_consumer` is `disconnect` or
//! `drop_newest`, `inbound_rate_policy` `reject` or `close`, `runtime` `auto`, `glommio`
//! or `tokio`. Sections: `[tls]` (`cert_file`, `key_file`, `client_ca_file`,
//! `client_auth` = `required` | `optional`), `[websocket]` (`port`, `path`,
//! `allowed_origins`, `max_upgrade_request_bytes`, `upgrade_timeout`), `[tokens]`
//! (`issuer`, `audience`, `leeway`, `allow_password`, `refresh`, and `[[tokens.keys]]`
//! with `algorithm` = `hs256` | `eddsa` | `rs256`, `kid`, and the key: an HS256 secret
//! or a PEM public key), `[cluster]` (`broker` = `redis` | `nats`, `url`, `node`,
//! `cluster_name`, `if_unreachable` = `fail` | `local_only`, the
//! [`ClusterDescriptor`](crate::cluster::ClusterDescriptor) durations and bounds by
//! their names, `user`, `password`, `token`, `tls_required`, `tls_root_ca`) and `[log]`
//! ([`LogSettings`]). A key that is not a setting is an error. What is code rather than
//! data — handlers, hooks, state — stays in code.
//!
//! **Secrets.** The password, each token key and the broker's `password` and `token`
//! come from exactly one source: inline (`password = "…"`), an environment variable
//! (`password_env = "CHAT_PASSWORD"`) or a file (`password_file = "/run/secrets/x"`,
//! its trailing line break dropped). They are never printed: [`Config`]'s `Debug`
//! shows `"***"`, and no [`ConfigError`] quotes one.
//!
//! **Environment overrides.** [`Config::from_file`] and [`Config::from_toml_str`]
//! apply `CONDUIT_<KEY>` variables on top of the file: `CONDUIT_PORT=9000`, nested keys
//! joined by `__` (`CONDUIT_TLS__CERT_FILE=/etc/cert.pem`,
//! `CONDUIT_CLUSTER__NODE=2`), a list as one comma-separated value
//! (`CONDUIT_TRUSTED_PROXIES=10.0.0.0/8,192.168.0.0/16`). Values are taken as written
//! and read as the setting's type. An override of a secret (`CONDUIT_PASSWORD`,
//! `CONDUIT_PASSWORD_FILE`) replaces the file's source for it. Variables whose first
//! part names no setting (`CONDUIT_LOG_FORMAT`) are not overrides. Keys inside
//! `[[tokens.keys]]` cannot be overridden: name their source with `key_env` instead.

mod build;
mod error;
mod file;
mod layers;
mod log;
mod secret;

use std::path::Path;

use figment::Figment;

pub use self::error::ConfigError;
use self::layers::Layer;
pub use self::log::{init_logging, LogError, LogFormat, LogSettings, LOG_FORMAT_ENV};
use self::secret::Lookup;
use crate::ServerDescriptor;

/// The prefix of environment overrides: `CONDUIT_PORT`, `CONDUIT_TLS__CERT_FILE`.
pub const ENV_PREFIX: &str = "CONDUIT_";

/// Where a configuration's text comes from.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Source<'a> {
    /// A TOML file.
    File(&'a Path),
    /// TOML text.
    Toml(&'a str),
}

/// A loaded, checked configuration: the server's descriptor and the log settings.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The server's settings, checked by [`ServerDescriptor::validate`].
    pub descriptor: ServerDescriptor,
    /// The `[log]` section.
    pub log: LogSettings,
}

impl Config {
    /// The configuration in the TOML file at `path`, with the `CONDUIT_*` environment
    /// overrides on top.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Config::load(Source::File(path.as_ref()), Some(ENV_PREFIX))
    }

    /// The configuration in `toml`, with the `CONDUIT_*` environment overrides on top.
    pub fn from_toml_str(toml: &str) -> Result<Config, ConfigError> {
        Config::load(Source::Toml(toml), Some(ENV_PREFIX))
    }

    /// The configuration in `source`, with the environment variables starting with
    /// `env_prefix` on top (`None`: no overrides, the text alone). Variables named by
    /// `*_env` secrets are read either way.
    pub fn load(source: Source<'_>, env_prefix: Option<&str>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = match env_prefix {
            // Only variables with UTF-8 names and values can be settings.
            Some(_) => std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            None => Vec::new(),
        };
        let lookup = |name: &str| std::env::var(name);
        load_with(source, env_prefix.map(|p| (p, env)), &lookup)
    }

    /// The server's settings.
    pub fn descriptor(&self) -> &ServerDescriptor {
        &self.descriptor
    }

    /// The server's settings, taken.
    pub fn into_descriptor(self) -> ServerDescriptor {
        self.descriptor
    }

    /// The log settings.
    pub fn log(&self) -> &LogSettings {
        &self.log
    }
}

impl ServerDescriptor {
    /// The descriptor in the TOML file at `path`, with the `CONDUIT_*` environment
    /// overrides on top (see [`crate::config`]); its `[log]` section is not used.
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<ServerDescriptor, ConfigError> {
        Config::from_file(path).map(Config::into_descriptor)
    }
}

/// [`Config::load`] with the environment given: `overrides` is the prefix and the
/// variables to take overrides from, `lookup` reads the variables `*_env` secrets name.
fn load_with(
    source: Source<'_>,
    overrides: Option<(&str, Vec<(String, String)>)>,
    lookup: Lookup<'_>,
) -> Result<Config, ConfigError> {
    let mut base = match source {
        Source::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            Layer::toml(&path.display().to_string(), &text)?
        }
        Source::Toml(text) => Layer::toml("configuration text", text)?,
    };
    let mut figment = Figment::new();
    match overrides {
        Some((prefix, vars)) => {
            let env = Layer::env(prefix, vars);
            base.yield_secrets_to(&env);
            figment = figment.merge(base).merge(env);
        }
        None => figment = figment.merge(base),
    }
    // Lossy: an override is a string, read as a number or a boolean where the setting
    // is one ("9000" for `port`).
    let file: file::FileConfig = figment.extract_lossy().map_err(ConfigError::from_figment)?;
    let (descriptor, log) = build::build(file, lookup)?;
    Ok(Config { descriptor, log })
}

#[cfg(test)]
mod tests;
