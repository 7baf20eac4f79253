//! From the file's shape to a [`ServerDescriptor`]: every key given replaces the
//! default of [`ServerDescriptor::new`], every key absent keeps it; secrets are read
//! from their source; then the descriptor's own check runs.

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::file::{
    BrokerChoice, ClientAuthChoice, ClusterFile, FileConfig, RatePolicy, RuntimeChoice,
    SlowConsumer, TlsFile, TokenAlgorithmChoice, TokensFile, UnreachableChoice, WebSocketFile,
};
use super::secret::{Lookup, Sources};
use super::LogSettings;
use crate::cluster::{Broker, BrokerAuth, ClusterDescriptor, Unreachable};
use crate::tls::{ClientAuth, TlsSettings};
use crate::tokens::{TokenAuth, TokenKey};
use crate::ws::WebSocketSettings;
use crate::{RateLimitPolicy, Runtime, ServerDescriptor, SlowConsumerPolicy};

/// Sets `$desc.$field` from `$file.$field` for each field given (`durations`: from
/// its [`Human`](super::file::Human) form).
macro_rules! set {
    ($desc:ident, $file:ident; $($field:ident),+ $(,)?) => {
        $(if let Some(v) = $file.$field { $desc.$field = v; })+
    };
    ($desc:ident, $file:ident, durations; $($field:ident),+ $(,)?) => {
        $(if let Some(v) = $file.$field { $desc.$field = v.0; })+
    };
}

/// The descriptor and log settings `file` describes, checked.
pub(super) fn build(
    file: FileConfig,
    lookup: Lookup<'_>,
) -> Result<(ServerDescriptor, LogSettings), ConfigError> {
    let password = Sources {
        table: "",
        name: "password",
        inline: file.password,
        env: file.password_env,
        file: file.password_file,
    }
    .resolve(lookup)?;
    // No password at all is left to `validate`, which allows it only when tokens are
    // the only way in, and says so.
    let mut d = ServerDescriptor::new(password.unwrap_or_default());
    set!(d, file; host, port, name, max_connections, buffer_size, shards,
        max_frame_bytes, max_auth_frame_bytes, recv_buffer_bytes, max_outbound_bytes,
        max_write_batch_bytes, allow_v1, allow_native, max_payload_depth,
        max_payload_values, bus_capacity, max_refusals_in_flight, listen_backlog,
        max_rooms, max_rooms_per_connection, max_room_name_bytes, max_pending,
        max_pending_per_source, max_auth_failures_per_source);
    set!(d, file, durations; auth_timeout, heartbeat_interval, heartbeat_timeout,
        drain_timeout, auth_failure_delay, v1_post_auth_delay, preempt_timer,
        tls_handshake_timeout, auth_backoff_base, auth_backoff_max, proxy_header_timeout);
    d.max_inbound_frames_per_s = file.max_inbound_frames_per_s;
    d.max_inbound_bytes_per_s = file.max_inbound_bytes_per_s;
    if let Some(p) = file.slow_consumer {
        d.slow_consumer = match p {
            SlowConsumer::Disconnect => SlowConsumerPolicy::Disconnect,
            SlowConsumer::DropNewest => SlowConsumerPolicy::DropNewest,
        };
    }
    if let Some(p) = file.inbound_rate_policy {
        d.inbound_rate_policy = match p {
            RatePolicy::Reject => RateLimitPolicy::Reject,
            RatePolicy::Close => RateLimitPolicy::Close,
        };
    }
    if let Some(r) = file.runtime {
        d.runtime = match r {
            RuntimeChoice::Auto => Runtime::Auto,
            RuntimeChoice::Glommio => Runtime::Glommio,
            RuntimeChoice::Tokio => Runtime::Tokio,
        };
    }
    if let Some(nets) = file.trusted_proxies {
        d.trusted_proxies = nets.0;
    }
    d.metrics_addr = file.metrics_addr.map(|a| a.0);
    d.tls = file.tls.map(tls).transpose()?;
    d.websocket = file.websocket.map(websocket);
    d.tokens = file.tokens.map(|t| tokens(t, lookup)).transpose()?;
    d.cluster = file.cluster.map(|c| cluster(c, lookup)).transpose()?;
    d.validate().map_err(ConfigError::from_descriptor)?;

    let mut log = LogSettings::default();
    if let Some(l) = file.log {
        if let Some(format) = l.format {
            log.format = format;
        }
        if let Some(filter) = l.filter {
            super::log::parse_filter(&filter).map_err(|problem| ConfigError::Invalid {
                field: "log.filter".into(),
                problem,
            })?;
            log.filter = filter;
        }
    }
    Ok((d, log))
}

/// `[tls]`. The files are read by the server when it starts (and on each
/// `reload_tls`); here they must at least be readable, so a wrong path is named by its
/// setting rather than found at start.
fn tls(t: TlsFile) -> Result<TlsSettings, ConfigError> {
    readable("tls.cert_file", &t.cert_file)?;
    readable("tls.key_file", &t.key_file)?;
    let mut s = TlsSettings::from_pem_files(t.cert_file, t.key_file);
    match (t.client_ca_file, t.client_auth) {
        (Some(ca), auth) => {
            readable("tls.client_ca_file", &ca)?;
            let auth = match auth.unwrap_or(ClientAuthChoice::Required) {
                ClientAuthChoice::Required => ClientAuth::Required,
                ClientAuthChoice::Optional => ClientAuth::Optional,
            };
            s = s.client_ca(ca, auth);
        }
        (None, Some(_)) => {
            return Err(ConfigError::Conflict {
                field: "tls.client_auth".into(),
                problem: "needs `client_ca_file`, the CA client certificates are checked against"
                    .into(),
            })
        }
        (None, None) => {}
    }
    Ok(s)
}

/// Whether `path` opens for reading; the error names `field` and the path.
fn readable(field: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|source| ConfigError::File {
            field: field.to_owned(),
            path: path.to_owned(),
            source,
        })
}

/// `[websocket]`.
fn websocket(w: WebSocketFile) -> WebSocketSettings {
    let mut s = WebSocketSettings::new(w.port);
    if let Some(path) = w.path {
        s = s.path(path);
    }
    if let Some(origins) = w.allowed_origins {
        s = s.allowed_origins(origins.0);
    }
    if let Some(n) = w.max_upgrade_request_bytes {
        s.max_upgrade_request_bytes = n;
    }
    if let Some(t) = w.upgrade_timeout {
        s = s.upgrade_timeout(t.0);
    }
    s
}

/// `[tokens]` and its `[[tokens.keys]]`.
fn tokens(t: TokensFile, lookup: Lookup<'_>) -> Result<TokenAuth, ConfigError> {
    let mut keys = Vec::with_capacity(t.keys.len());
    for (i, k) in t.keys.into_iter().enumerate() {
        let table = format!("tokens.keys[{i}].");
        let field = format!("{table}key");
        let material = Sources {
            table: &table,
            name: "key",
            inline: k.key,
            env: k.key_env,
            file: k.key_file,
        }
        .resolve(lookup)?
        .ok_or_else(|| ConfigError::Conflict {
            field: field.clone(),
            problem: "give one of `key`, `key_env` and `key_file`".into(),
        })?;
        let kid = k.kid.as_deref();
        let key = match k.algorithm {
            TokenAlgorithmChoice::Hs256 => TokenKey::hs256(kid, material.as_bytes()),
            TokenAlgorithmChoice::Eddsa => TokenKey::ed25519_pem(kid, material.as_bytes()),
            TokenAlgorithmChoice::Rs256 => TokenKey::rs256_pem(kid, material.as_bytes()),
        };
        keys.push(key.map_err(|e| match e {
            crate::Error::Config { problem, .. } => ConfigError::Invalid { field, problem },
            other => ConfigError::Invalid {
                field,
                problem: other.to_string(),
            },
        })?);
    }
    let mut auth = TokenAuth::new(keys);
    if let Some(l) = t.leeway {
        auth = auth.leeway(l.0);
    }
    if let Some(i) = t.issuer {
        auth = auth.issuer(i);
    }
    if let Some(a) = t.audience {
        auth = auth.audience(a);
    }
    if let Some(a) = t.allow_password {
        auth = auth.allow_password(a);
    }
    if let Some(r) = t.refresh {
        auth = auth.refresh(r);
    }
    Ok(auth)
}

/// `[cluster]`.
fn cluster(c: ClusterFile, lookup: Lookup<'_>) -> Result<ClusterDescriptor, ConfigError> {
    let broker = match c.broker {
        BrokerChoice::Redis => Broker::redis(c.url),
        BrokerChoice::Nats => Broker::nats(c.url),
    };
    let mut d = ClusterDescriptor::new(broker, c.node);
    let secret = |name, inline, env, file: Option<PathBuf>| {
        Sources {
            table: "cluster.",
            name,
            inline,
            env,
            file,
        }
        .resolve(lookup)
    };
    let auth = BrokerAuth {
        user: c.user,
        password: secret("password", c.password, c.password_env, c.password_file)?,
        token: secret("token", c.token, c.token_env, c.token_file)?,
        tls_required: c.tls_required.unwrap_or(false),
        tls_root_ca: c.tls_root_ca,
    };
    d = d.auth(auth);
    if let Some(name) = c.cluster_name {
        d = d.cluster_name(name);
    }
    if let Some(u) = c.if_unreachable {
        d = d.if_unreachable(match u {
            UnreachableChoice::Fail => Unreachable::Fail,
            UnreachableChoice::LocalOnly => Unreachable::LocalOnly,
        });
    }
    let set = |slot: &mut std::time::Duration, v: Option<super::file::Human>| {
        if let Some(v) = v {
            *slot = v.0;
        }
    };
    set(&mut d.connect_timeout, c.connect_timeout);
    set(&mut d.reconnect_min, c.reconnect_min);
    set(&mut d.reconnect_max, c.reconnect_max);
    set(&mut d.node_heartbeat, c.node_heartbeat);
    set(&mut d.node_timeout, c.node_timeout);
    set(&mut d.claim_wait, c.claim_wait);
    if let Some(n) = c.max_payload_bytes {
        d.max_payload_bytes = n;
    }
    if let Some(n) = c.max_outbox_messages {
        d.max_outbox_messages = n;
    }
    Ok(d)
}
