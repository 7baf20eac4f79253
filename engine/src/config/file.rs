//! The file's shape: one struct per section, every key optional (absent: the
//! descriptor's default), unknown keys refused, and the value types a file writes in
//! human form (durations, addresses, networks). No `Debug`: these hold secrets as
//! written.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::IpNet;

/// The top level: the fields of [`ServerDescriptor`](crate::ServerDescriptor), by the
/// same names, plus the secret's sources and the sections.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub auth_timeout: Option<Human>,
    pub max_connections: Option<usize>,
    pub buffer_size: Option<usize>,
    pub heartbeat_interval: Option<Human>,
    pub heartbeat_timeout: Option<Human>,
    pub name: Option<String>,
    pub shards: Option<usize>,
    pub max_frame_bytes: Option<u32>,
    pub max_auth_frame_bytes: Option<u32>,
    pub recv_buffer_bytes: Option<usize>,
    pub max_outbound_bytes: Option<usize>,
    pub slow_consumer: Option<SlowConsumer>,
    pub max_write_batch_bytes: Option<usize>,
    pub drain_timeout: Option<Human>,
    pub allow_v1: Option<bool>,
    pub allow_native: Option<bool>,
    pub auth_failure_delay: Option<Human>,
    pub v1_post_auth_delay: Option<Human>,
    pub max_payload_depth: Option<usize>,
    pub max_payload_values: Option<usize>,
    pub bus_capacity: Option<usize>,
    pub max_refusals_in_flight: Option<usize>,
    pub preempt_timer: Option<Human>,
    pub runtime: Option<RuntimeChoice>,
    pub listen_backlog: Option<u32>,
    pub max_rooms: Option<usize>,
    pub max_rooms_per_connection: Option<usize>,
    pub max_room_name_bytes: Option<usize>,
    pub tls_handshake_timeout: Option<Human>,
    pub max_pending: Option<usize>,
    pub max_pending_per_source: Option<usize>,
    pub max_auth_failures_per_source: Option<u32>,
    pub auth_backoff_base: Option<Human>,
    pub auth_backoff_max: Option<Human>,
    pub max_inbound_frames_per_s: Option<u32>,
    pub max_inbound_bytes_per_s: Option<u64>,
    pub inbound_rate_policy: Option<RatePolicy>,
    pub trusted_proxies: Option<Networks>,
    pub proxy_header_timeout: Option<Human>,
    pub metrics_addr: Option<Address>,
    pub tls: Option<TlsFile>,
    pub websocket: Option<WebSocketFile>,
    pub tokens: Option<TokensFile>,
    pub cluster: Option<ClusterFile>,
    pub log: Option<LogFile>,
}

/// The top-level keys, for telling which `CONDUIT_*` variables are settings: the
/// others (`CONDUIT_LOG_FORMAT`, an application's own) are left alone.
pub(super) const TOP_LEVEL_KEYS: &[&str] = &[
    "host",
    "port",
    "password",
    "password_env",
    "password_file",
    "auth_timeout",
    "max_connections",
    "buffer_size",
    "heartbeat_interval",
    "heartbeat_timeout",
    "name",
    "shards",
    "max_frame_bytes",
    "max_auth_frame_bytes",
    "recv_buffer_bytes",
    "max_outbound_bytes",
    "slow_consumer",
    "max_write_batch_bytes",
    "drain_timeout",
    "allow_v1",
    "allow_native",
    "auth_failure_delay",
    "v1_post_auth_delay",
    "max_payload_depth",
    "max_payload_values",
    "bus_capacity",
    "max_refusals_in_flight",
    "preempt_timer",
    "runtime",
    "listen_backlog",
    "max_rooms",
    "max_rooms_per_connection",
    "max_room_name_bytes",
    "tls_handshake_timeout",
    "max_pending",
    "max_pending_per_source",
    "max_auth_failures_per_source",
    "auth_backoff_base",
    "auth_backoff_max",
    "max_inbound_frames_per_s",
    "max_inbound_bytes_per_s",
    "inbound_rate_policy",
    "trusted_proxies",
    "proxy_header_timeout",
    "metrics_addr",
    "tls",
    "websocket",
    "tokens",
    "cluster",
    "log",
];

/// The secrets, as groups of keys of which at most one may be given (the table they
/// are in, then the keys). An environment override of one replaces the file's choice.
pub(super) const SECRET_GROUPS: &[(&[&str], [&str; 3])] = &[
    (&[], ["password", "password_env", "password_file"]),
    (&["cluster"], ["password", "password_env", "password_file"]),
    (&["cluster"], ["token", "token_env", "token_file"]),
];

/// `[tls]`: [`TlsSettings`](crate::tls::TlsSettings).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: Option<ClientAuthChoice>,
}

/// `[websocket]`: [`WebSocketSettings`](crate::ws::WebSocketSettings).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebSocketFile {
    pub port: u16,
    pub path: Option<String>,
    pub allowed_origins: Option<List>,
    pub max_upgrade_request_bytes: Option<usize>,
    pub upgrade_timeout: Option<Human>,
}

/// `[tokens]`: [`TokenAuth`](crate::tokens::TokenAuth).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokensFile {
    pub keys: Vec<TokenKeyFile>,
    pub leeway: Option<Human>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub allow_password: Option<bool>,
    pub refresh: Option<bool>,
}

/// One `[[tokens.keys]]`: its algorithm and the key from exactly one source (an HS256
/// secret, or a PEM public key for `eddsa` and `rs256`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenKeyFile {
    pub algorithm: TokenAlgorithmChoice,
    pub kid: Option<String>,
    pub key: Option<String>,
    pub key_env: Option<String>,
    pub key_file: Option<PathBuf>,
}

/// `[cluster]`: [`ClusterDescriptor`](crate::cluster::ClusterDescriptor) and its
/// [`BrokerAuth`](crate::cluster::BrokerAuth).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterFile {
    pub broker: BrokerChoice,
    pub url: String,
    pub node: usize,
    pub cluster_name: Option<String>,
    pub if_unreachable: Option<UnreachableChoice>,
    pub connect_timeout: Option<Human>,
    pub reconnect_min: Option<Human>,
    pub reconnect_max: Option<Human>,
    pub node_heartbeat: Option<Human>,
    pub node_timeout: Option<Human>,
    pub claim_wait: Option<Human>,
    pub max_payload_bytes: Option<usize>,
    pub max_outbox_messages: Option<usize>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub token: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    pub tls_required: Option<bool>,
    pub tls_root_ca: Option<PathBuf>,
}

/// `[log]`: [`LogSettings`](super::LogSettings).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogFile {
    pub format: Option<super::LogFormat>,
    pub filter: Option<String>,
}

/// `slow_consumer`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum SlowConsumer {
    Disconnect,
    DropNewest,
}

/// `inbound_rate_policy`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RatePolicy {
    Reject,
    Close,
}

/// `runtime`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RuntimeChoice {
    Auto,
    Glommio,
    Tokio,
}

/// `tls.client_auth`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum ClientAuthChoice {
    Required,
    Optional,
}

/// `tokens.keys[].algorithm`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum TokenAlgorithmChoice {
    Hs256,
    Eddsa,
    Rs256,
}

/// `cluster.broker`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum BrokerChoice {
    Redis,
    Nats,
}

/// `cluster.if_unreachable`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum UnreachableChoice {
    Fail,
    LocalOnly,
}

/// A duration written for people: `"30s"`, `"250ms"`, `"5m"`, `"1h 30m"`. A bare
/// number is refused: its unit would be a guess.
pub(super) struct Human(pub Duration);

impl<'de> Deserialize<'de> for Human {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Human, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Human;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"30s\", \"250ms\" or \"5m\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Human, E> {
                humantime::parse_duration(s.trim()).map(Human).map_err(|e| {
                    E::custom(format!(
                        "bad duration {s:?} ({e}); write it like \"30s\", \"250ms\" or \"5m\""
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A socket address, `IP:port` (`127.0.0.1:9464`, `[::1]:9464`).
pub(super) struct Address(pub SocketAddr);

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Address;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an address such as \"127.0.0.1:9464\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Address, E> {
                s.trim().parse().map(Address).map_err(|_| {
                    E::custom(format!(
                        "bad address {s:?}: write an IP address and a port, such as \"127.0.0.1:9464\" or \"[::1]:9464\""
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A list of strings: a TOML array, or (as an environment variable carries it) one
/// string with the items separated by commas.
pub(super) struct List(pub Vec<String>);

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<List, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = List;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of strings (or one string, comma-separated)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<List, E> {
                Ok(List(
                    s.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(List(items))
            }
        }
        d.deserialize_any(V)
    }
}

/// `trusted_proxies`: networks (`10.0.0.0/8`; a bare address is its own /32 or /128),
/// as a [`List`].
pub(super) struct Networks(pub Vec<IpNet>);

impl<'de> Deserialize<'de> for Networks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Networks, D::Error> {
        let List(items) = List::deserialize(d)?;
        items
            .iter()
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        de::Error::custom(format!(
                            "bad network {s:?}: write it like \"10.0.0.0/8\" or \"2001:db8::/32\""
                        ))
                    })
            })
            .collect::<Result<_, _>>()
            .map(Networks)
    }
}
