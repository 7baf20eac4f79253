//! `serve --config FILE`: the real binary takes its server's settings from a TOML
//! file and the environment, a client logs in with the configured password, and the
//! log is JSON lines when the file asks for it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test that cannot set up or read its run should fail on the spot"
)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};

use conduit::client::blocking::Client;
use conduit::{ClientDescriptor, Runtime, Value};
use conduit_loadgen::serve::{parse_ready, Ready};

#[allow(
    dead_code,
    reason = "the shared fixture has helpers these tests do not need"
)]
mod common;

use common::{exe, Scratch};

/// A `serve --config` child; killed if the test fails before it stopped it.
struct Server(Child);

impl Server {
    /// Starts `serve --config <config>` with `env` added, returns it once READY.
    fn start(config: &Path, env: &[(&str, &OsStr)]) -> (Server, Ready) {
        let mut cmd = exe();
        cmd.args(["serve", "--stop-on-stdin-eof", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("CONDUIT_LOG_FORMAT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut server = Server(cmd.spawn().expect("start conduit-loadgen serve"));
        let mut stdout = BufReader::new(server.0.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let ready = parse_ready(&line).unwrap_or_else(|| panic!("no READY line: {line:?}"));
        (server, ready)
    }

    /// Closes its stdin, which stops it; its whole log once it has exited.
    fn stop(mut self) -> Vec<u8> {
        drop(self.0.stdin.take());
        let status = self.0.wait().unwrap();
        assert!(status.success(), "{status}");
        let mut log = Vec::new();
        self.0.stderr.take().unwrap().read_to_end(&mut log).unwrap();
        log
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A blocking client for the server on `port`, logging in with `password`.
fn client(port: u16, password: &str) -> conduit::client::ClientResult<Client> {
    Client::connect(
        ClientDescriptor::new(password)
            .host("127.0.0.1")
            .port(port)
            .runtime(Runtime::Tokio)
            .reconnect(false),
    )
}

/// A loopback server on tokio, one shard, logging JSON (the engine's connections at
/// `debug`), whose password is to come from `password_env` or an override.
const CONFIG: &str = r#"
host = "127.0.0.1"
port = 0
name = "configured"
shards = 1
runtime = "tokio"
auth_failure_delay = "1ms"
drain_timeout = "1s"
# Unset: the environment's CONDUIT_PASSWORD_FILE replaces this source.
password_env = "CONDUIT_TEST_SURELY_UNSET"

[log]
format = "json"
filter = "info,conduit=debug"
"#;

#[test]
fn serve_takes_its_settings_from_a_file_and_the_environment() {
    let scratch = Scratch::new("config", "serve");
    let secret = scratch.file("password");
    std::fs::write(&secret, "from-a-file\n").unwrap();
    let config = scratch.file("conduit.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let (server, ready) = Server::start(&config, &[("CONDUIT_PASSWORD_FILE", secret.as_os_str())]);
    assert_eq!(ready.runtime, Some(Runtime::Tokio));

    let c = client(ready.port, "from-a-file").expect("log in with the configured password");
    let sum = c
        .call("add", Value::map().with("a", 2).with("b", 3))
        .unwrap();
    assert_eq!(sum.as_i64(), Some(5));
    c.close();
    assert!(
        client(ready.port, "wrong").is_err(),
        "a wrong password is refused"
    );

    let log = server.stop();
    assert!(!log.contains(&0x1b), "no ANSI escape codes in a pipe");
    let log = String::from_utf8(log).unwrap();
    assert!(!log.contains("from-a-file"), "the password is not logged");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let running = lines
        .iter()
        .find(|l| l["fields"]["message"] == "server running")
        .unwrap_or_else(|| panic!("no `server running` line in {log}"));
    assert_eq!(running["level"], "INFO");
    assert_eq!(running["fields"]["name"], "configured");
    // A connection's lines carry its span's fields.
    assert!(
        lines.iter().any(|l| l["span"]["peer"].is_string()
            && l["spans"].as_array().is_some_and(|s| !s.is_empty())),
        "no line with a connection's span in {log}"
    );
}

/// `CONDUIT_LOG_FORMAT=text` overrides the file's `json`; text into a pipe has no
/// colour codes.
#[test]
fn text_logs_into_a_pipe_have_no_colour_codes() {
    let scratch = Scratch::new("config", "text");
    let config = scratch.file("conduit.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let (server, _) = Server::start(
        &config,
        &[
            ("CONDUIT_PASSWORD", "pw".as_ref()),
            ("CONDUIT_LOG_FORMAT", "text".as_ref()),
        ],
    );
    let log = server.stop();
    assert!(!log.contains(&0x1b), "no ANSI escape codes in a pipe");
    let log = String::from_utf8(log).unwrap();
    let running = log
        .lines()
        .find(|l| l.contains("server running"))
        .unwrap_or_else(|| panic!("no `server running` line in {log}"));
    assert!(
        running.contains(" INFO ") && running.contains("name=configured"),
        "{running}"
    );
    assert!(serde_json::from_str::<serde_json::Value>(running).is_err());
}

#[test]
fn a_bad_file_is_refused_with_the_setting_named() {
    let scratch = Scratch::new("config", "bad");
    let config = scratch.file("conduit.toml");
    std::fs::write(
        &config,
        "password = \"hunter2\"\nheartbeat_interval = \"30 parsecs\"\n",
    )
    .unwrap();
    let out = exe()
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("heartbeat_interval") && err.contains("bad duration"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert!(out.stdout.is_empty());

    // Descriptor flags beside --config are a usage error.
    let out = exe()
        .args(["serve", "--port", "9", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}
