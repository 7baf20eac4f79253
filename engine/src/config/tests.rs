#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test that cannot set up should fail on the spot"
)]

use std::env::VarError;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::tls::ClientAuth;
use crate::{RateLimitPolicy, Runtime, SlowConsumerPolicy};

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("conduit-config-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Writes `text` to `name` inside; its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// No variables for `*_env` secrets.
fn no_vars(_: &str) -> Result<String, VarError> {
    Err(VarError::NotPresent)
}

/// `toml` alone: no overrides, no variables.
fn load(toml: &str) -> Result<Config, ConfigError> {
    load_with(Source::Toml(toml), None, &no_vars)
}

/// `toml` with these `CONDUIT_*` overrides.
fn load_env(toml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    load_with(Source::Toml(toml), Some((ENV_PREFIX, vars)), &no_vars)
}

fn error(toml: &str) -> ConfigError {
    match load(toml) {
        Ok(c) => panic!("loaded: {c:?}"),
        Err(e) => e,
    }
}

#[test]
fn a_file_sets_every_kind_of_setting() {
    let dir = Scratch::new("valid");
    let cert = dir.write("cert.pem", "");
    let key = dir.write("key.pem", "");
    let ca = dir.write("ca.pem", "");
    let toml = format!(
        r#"
        host = "127.0.0.1"
        port = 9000
        name = "chat"
        password = "s3cret"
        max_connections = 5000
        heartbeat_interval = "10s"
        heartbeat_timeout = "45s"
        auth_failure_delay = "250ms"
        auth_backoff_max = "1h 30m"
        shards = 2
        runtime = "tokio"
        slow_consumer = "drop_newest"
        inbound_rate_policy = "close"
        max_inbound_frames_per_s = 100
        recv_buffer_bytes = 8192
        allow_v1 = false
        trusted_proxies = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]

        [tls]
        cert_file = {cert:?}
        key_file = {key:?}
        client_ca_file = {ca:?}
        client_auth = "optional"

        [websocket]
        port = 9001
        path = "/ws"
        allowed_origins = ["https://game.example"]
        upgrade_timeout = "2s"

        [log]
        format = "json"
        filter = "info,conduit=debug"
        "#
    );
    let config = load(&toml).unwrap();
    let d = config.descriptor();
    assert_eq!(
        (d.host.as_str(), d.port, d.name.as_str()),
        ("127.0.0.1", 9000, "chat")
    );
    assert_eq!(d.password.expose(), "s3cret");
    assert_eq!(d.max_connections, 5000);
    assert_eq!(d.heartbeat_interval, Duration::from_secs(10));
    assert_eq!(d.heartbeat_timeout, Duration::from_secs(45));
    assert_eq!(d.auth_failure_delay, Duration::from_millis(250));
    assert_eq!(d.auth_backoff_max, Duration::from_secs(5400));
    assert_eq!((d.shards, d.runtime), (2, Runtime::Tokio));
    assert_eq!(d.slow_consumer, SlowConsumerPolicy::DropNewest);
    assert_eq!(d.inbound_rate_policy, RateLimitPolicy::Close);
    assert_eq!(d.max_inbound_frames_per_s, Some(100));
    assert_eq!(d.max_inbound_bytes_per_s, None);
    assert_eq!(d.recv_buffer_bytes, 8192);
    assert!(!d.allow_v1 && d.allow_native);
    let nets: Vec<String> = d.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
    assert_eq!(d.metrics_addr, None, "unset: the default");
    let tls = d.tls.as_ref().unwrap();
    assert_eq!((&tls.cert_chain, &tls.private_key), (&cert, &key));
    assert_eq!(tls.client_ca.as_ref(), Some(&ca));
    assert_eq!(tls.client_auth, ClientAuth::Optional);
    let ws = d.websocket.as_ref().unwrap();
    assert_eq!((ws.port, ws.path.as_str()), (9001, "/ws"));
    assert_eq!(
        ws.allowed_origins,
        Some(vec!["https://game.example".to_owned()])
    );
    assert_eq!(ws.upgrade_timeout, Duration::from_secs(2));
    assert_eq!(ws.max_upgrade_request_bytes, 8 * 1024, "unset: the default");
    assert_eq!(
        config.log(),
        &LogSettings::default()
            .format(LogFormat::Json)
            .filter("info,conduit=debug")
    );
}

/// `metrics_addr` is read as an address; a build without the exporter refuses it, as
/// the descriptor does.
#[test]
fn metrics_addr_is_an_address() {
    let loaded = load("password = \"pw\"\nmetrics_addr = \"127.0.0.1:9464\"");
    match (loaded, cfg!(feature = "prometheus")) {
        (Ok(c), true) => {
            let addr: SocketAddr = "127.0.0.1:9464".parse().unwrap();
            assert_eq!(c.descriptor.metrics_addr, Some(addr));
        }
        (Err(e), false) => {
            assert!(matches!(&e, ConfigError::Invalid { field, .. } if field == "metrics_addr"));
        }
        (other, _) => panic!("{other:?}"),
    }
}

#[test]
fn keys_left_out_keep_the_descriptors_defaults() {
    let config = load("password = \"pw\"").unwrap();
    assert_eq!(
        format!("{:?}", config.descriptor()),
        format!("{:?}", ServerDescriptor::new("pw"))
    );
    assert_eq!(config.log(), &LogSettings::default());
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    let e = error("password = \"pw\"\nprot = 9000");
    assert!(
        matches!(&e, ConfigError::UnknownField { field, .. } if field == "prot"),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains("`prot`") && text.contains("port"), "{text}");
    let e = error("password = \"pw\"\n[tls]\ncert_fle = \"a\"\nkey_file = \"b\"");
    assert_eq!(e.field(), Some("tls.cert_fle"), "{e}");
    assert!(e.to_string().contains("configuration text"), "{e}");
}

/// The keys the environment may override are exactly the file's top-level keys.
#[test]
fn the_override_keys_are_the_files_keys() {
    match error("not_a_setting = 1") {
        ConfigError::UnknownField { expected, .. } => {
            assert_eq!(expected, file::TOP_LEVEL_KEYS)
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn wrong_types_and_bad_values_name_the_field_and_reason() {
    let cases: &[(&str, &str, &str)] = &[
        ("port = \"abc\"", "port", "wrong type"),
        ("port = 70000", "port", "u16"),
        (
            "auth_timeout = \"30 parsecs\"",
            "auth_timeout",
            "bad duration",
        ),
        ("auth_timeout = 30", "auth_timeout", "a duration such as"),
        (
            "metrics_addr = \"localhost:9464\"",
            "metrics_addr",
            "bad address",
        ),
        (
            "trusted_proxies = [\"10.0.0.0/33\"]",
            "trusted_proxies",
            "bad network",
        ),
        ("runtime = \"epoll\"", "runtime", "auto, glommio, tokio"),
        ("[websocket]\npath = \"/ws\"", "websocket.port", "required"),
        ("[log]\nfilter = \"info,[[\"", "log.filter", "log.filter"),
    ];
    for (line, field, reason) in cases {
        let e = error(&format!("password = \"pw\"\n{line}"));
        assert_eq!(e.field(), Some(*field), "{line}: {e}");
        let text = e.to_string();
        assert!(
            text.contains(field) && text.contains(reason),
            "{line}: {text}"
        );
    }
}

#[test]
fn what_the_descriptor_refuses_is_named() {
    let e = error("password = \"pw\"\nheartbeat_interval = \"60s\"\nheartbeat_timeout = \"30s\"");
    assert!(matches!(&e, ConfigError::Invalid { field, .. } if field == "heartbeat_timeout"));
    assert!(
        e.to_string().contains("must exceed heartbeat_interval"),
        "{e}"
    );
    let e = error("host = \"0.0.0.0\"");
    assert_eq!(e.field(), Some("password"), "{e}");
    let e = error("password = \"pw\"\ntrusted_proxies = [\"10.0.0.1/8\"]");
    assert_eq!(e.field(), Some("trusted_proxies"), "{e}");
    let cluster = "password = \"pw\"\n[cluster]\nbroker = \"redis\"\nurl = \"redis://h:6379\"";
    let e = error(&format!("{cluster}\nnode = 5000"));
    assert_eq!(e.field(), Some("cluster.node"), "{e}");
    let e = error(&format!("{cluster}\nnode = 1\ncluster_name = \"a b\""));
    assert_eq!(e.field(), Some("cluster.cluster_name"), "{e}");
}

#[test]
fn the_environment_overrides_the_file() {
    let dir = Scratch::new("env");
    let cert = dir.write("cert.pem", "");
    let key = dir.write("key.pem", "");
    let toml = format!(
        "port = 1\npassword = \"pw\"\nname = \"file\"\n[tls]\ncert_file = \"/nowhere\"\nkey_file = {key:?}"
    );
    let config = load_env(
        &toml,
        &[
            ("CONDUIT_PORT", "9000"),
            ("CONDUIT_NAME", "0042"),
            ("CONDUIT_TLS__CERT_FILE", cert.to_str().unwrap()),
            ("CONDUIT_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.0.0/16"),
            ("CONDUIT_HEARTBEAT_TIMEOUT", "2m"),
            ("CONDUIT_WEBSOCKET__PORT", "9001"),
            // Not settings: left alone rather than refused.
            ("CONDUIT_LOG_FORMAT", "json"),
            ("CONDUITPORT", "7"),
            ("OTHER_PORT", "7"),
        ],
    )
    .unwrap();
    let d = config.descriptor();
    assert_eq!(d.port, 9000);
    assert_eq!(d.name, "0042", "an override is taken as written");
    assert_eq!(d.tls.as_ref().unwrap().cert_chain, cert);
    assert_eq!(d.trusted_proxies.len(), 2);
    assert_eq!(d.heartbeat_timeout, Duration::from_secs(120));
    assert_eq!(d.websocket.as_ref().unwrap().port, 9001);
    assert_eq!(config.log().format, LogFormat::Text);

    // A bad override names its variable.
    let e = load_env("password = \"pw\"", &[("CONDUIT_PORT", "abc")]).unwrap_err();
    assert_eq!(e.field(), Some("port"));
    assert!(e.to_string().contains("CONDUIT_PORT"), "{e}");
    let e = load_env("password = \"pw\"", &[("CONDUIT_TLS__CERT_FLE", "x")]).unwrap_err();
    assert_eq!(e.field(), Some("tls.cert_fle"), "{e}");
}

#[test]
fn passwords_come_from_one_source() {
    let dir = Scratch::new("secrets");
    let file = dir.write("password", "from-file\n");
    let vars = |name: &str| match name {
        "CHAT_PASSWORD" => Ok("from-env".to_owned()),
        _ => Err(VarError::NotPresent),
    };
    let load = |toml: &str| load_with(Source::Toml(toml), None, &vars);
    let password = |toml: &str| load(toml).unwrap().descriptor.password.expose().to_owned();
    assert_eq!(password("password_env = \"CHAT_PASSWORD\""), "from-env");
    assert_eq!(password(&format!("password_file = {file:?}")), "from-file");
    assert_eq!(password("password = \"inline\""), "inline");

    let e = load("password_env = \"NOT_SET\"").unwrap_err();
    assert!(
        matches!(&e, ConfigError::EnvVar { var, .. } if var == "NOT_SET"),
        "{e:?}"
    );
    assert!(e.to_string().contains("password_env") && e.to_string().contains("NOT_SET"));
    let missing = dir.0.join("missing");
    let e = load(&format!("password_file = {missing:?}")).unwrap_err();
    assert_eq!(e.field(), Some("password_file"));
    assert!(e.to_string().contains(missing.to_str().unwrap()), "{e}");
    let e = load(&format!("password = \"x\"\npassword_file = {file:?}")).unwrap_err();
    assert!(matches!(e, ConfigError::Conflict { .. }), "{e:?}");

    // An override of the secret replaces the file's source of it.
    let vars = vec![("CONDUIT_PASSWORD".to_owned(), "override".to_owned())];
    let toml = format!("password_file = {file:?}");
    let c = load_with(Source::Toml(&toml), Some((ENV_PREFIX, vars)), &no_vars).unwrap();
    assert_eq!(c.descriptor.password.expose(), "override");
}

#[test]
fn secrets_never_show() {
    let dir = Scratch::new("redact");
    let key_file = dir.write("hs256", "an-hs256-secret-of-at-least-32-bytes!!\n");
    let toml = format!(
        r#"
        password = "hunter2-password"
        [tokens]
        issuer = "login.example"
        [[tokens.keys]]
        algorithm = "hs256"
        kid = "k1"
        key_file = {key_file:?}
        [cluster]
        broker = "redis"
        url = "redis://user:url-secret@127.0.0.1:6379"
        node = 3
        user = "app"
        password = "broker-password"
        "#
    );
    // Without the `redis` feature the cluster is refused — after everything else loaded.
    let shown = match load(&toml) {
        Ok(c) => format!("{c:?}"),
        Err(e) => {
            assert_eq!(e.field(), Some("cluster.broker"), "{e}");
            let c = load(toml.split("[cluster]").next().unwrap()).unwrap();
            let cluster = crate::cluster::ClusterDescriptor::new(
                crate::cluster::Broker::redis("redis://user:url-secret@127.0.0.1:6379"),
                3,
            );
            format!("{c:?} {cluster:?}")
        }
    };
    for secret in [
        "hunter2",
        "an-hs256-secret",
        "broker-password",
        "url-secret",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("***"), "{shown}");

    let errors = [
        error("password = 123456789"),
        error("password = \"hunter2-password"),
        error("password = \"hunter2-password\"\nport = \"hunter2-port\"x"),
        error("[[tokens.keys]]\nalgorithm = \"hs256\"\nkey = \"short-hunter2\""),
    ];
    for e in errors {
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("123456789"),
            "{text}"
        );
    }
    let e = error("[[tokens.keys]]\nalgorithm = \"hs256\"\nkey = \"short-hunter2\"");
    assert_eq!(e.field(), Some("tokens.keys[0].key"), "{e}");
    let e = error("password = \"x\nport = 1");
    assert!(matches!(e, ConfigError::Syntax { line: 1, .. }), "{e:?}");
}

#[test]
fn token_keys_load_from_their_source() {
    let vars = |name: &str| match name {
        "TOKEN_KEY" => Ok("an-hs256-secret-of-at-least-32-bytes!!".to_owned()),
        _ => Err(VarError::NotPresent),
    };
    let toml = r#"
        [tokens]
        allow_password = false
        leeway = "10s"
        [[tokens.keys]]
        algorithm = "hs256"
        kid = "2026-12"
        key_env = "TOKEN_KEY"
    "#;
    let c = load_with(Source::Toml(toml), None, &vars).unwrap();
    let t = c.descriptor.tokens.unwrap();
    assert!(!t.allow_password);
    assert_eq!(t.leeway, Duration::from_secs(10));
    assert_eq!(t.keys[0].kid(), Some("2026-12"));
}

#[test]
fn a_file_that_is_not_there_is_named() {
    let e = Config::load(Source::File("/surely/not/here.toml".as_ref()), None).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("/surely/not/here.toml"), "{e}");
    let dir = Scratch::new("tls-missing");
    let cert = dir.write("cert.pem", "");
    let toml =
        format!("password = \"pw\"\n[tls]\ncert_file = {cert:?}\nkey_file = \"/no/key.pem\"");
    let e = error(&toml);
    assert_eq!(e.field(), Some("tls.key_file"), "{e}");
    assert!(e.to_string().contains("/no/key.pem"), "{e}");
}

#[test]
fn the_example_file_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/conduit.toml");
    let vars = |name: &str| match name {
        "CHAT_PASSWORD" => Ok("chat_secret".to_owned()),
        _ => Err(VarError::NotPresent),
    };
    let c = load_with(Source::File(path.as_ref()), None, &vars).unwrap();
    assert_eq!(c.descriptor.password.expose(), "chat_secret");
    assert_eq!(c.descriptor.port, 8080);
}

#[test]
fn log_formats_parse() {
    assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
    assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
    assert!("yaml".parse::<LogFormat>().is_err());
    assert!(log::parse_filter("info,conduit=debug").is_ok());
    assert!(log::parse_filter("info,[[").is_err());
}
