//! The chat in a browser: the chat example's server — TCP for netconduit and Rust
//! clients (password `chat_secret`), plus a WebSocket listener for pages, where logins
//! are tokens, never the password — and a small HTTP server that serves the page
//! (`clients/js/`) and stands in for your login service: `GET /token?name=alice`
//! answers a token signed for `alice` (HS256, one hour).
//!
//! `cargo run --release -p conduit --example chat_web`, then open the URL it prints
//! (two tabs to chat with yourself). `PORT` (TCP, default 8080), `WS_PORT` (8081) and
//! `HTTP_PORT` (8000) override the ports.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use conduit::tokens::{TokenAuth, TokenKey};
use conduit::ws::WebSocketSettings;
use conduit::{Running, ServerDescriptor};

#[path = "chat_server.rs"]
mod chat_server;

/// Most bytes of a request head the page server reads.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// A running chat for browsers.
pub struct ChatWeb {
    /// The chat server.
    pub running: Running,
    /// Its TCP address (netconduit and Rust clients).
    pub tcp: SocketAddr,
    /// Its WebSocket address (pages).
    pub ws: SocketAddr,
    /// The page server's address.
    pub http: SocketAddr,
}

/// Starts the chat server and the page server; tokens are signed with `secret`.
pub fn start(
    secret: &[u8],
    tcp_port: u16,
    ws_port: u16,
    http_port: u16,
) -> Result<ChatWeb, Box<dyn std::error::Error>> {
    let tokens = TokenAuth::new(vec![TokenKey::hs256(Some("chat"), secret)?]);
    let desc = ServerDescriptor::new("chat_secret")
        .host("127.0.0.1")
        .port(tcp_port)
        .name("ChatServer")
        .tokens(tokens)
        .websocket(WebSocketSettings::new(ws_port));
    let server = chat_server::build(desc)?;
    let running = server.start()?;
    let tcp = server.router().local_addr().ok_or("no TCP address")?;
    let ws = server
        .router()
        .websocket_addr()
        .ok_or("no WebSocket address")?;
    let listener = TcpListener::bind(("127.0.0.1", http_port))?;
    let http = listener.local_addr()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js");
    let secret = secret.to_vec();
    std::thread::Builder::new()
        .name("chat-pages".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let (root, secret) = (root.clone(), secret.clone());
                // One short-lived thread per request: a demo's page server.
                let _ = std::thread::spawn(move || {
                    if let Err(e) = serve_page(stream, &root, &secret, ws) {
                        tracing::debug!("page request: {e}");
                    }
                });
            }
        })?;
    Ok(ChatWeb {
        running,
        tcp,
        ws,
        http,
    })
}

/// A token for `name`, as a login service would issue it.
pub fn token(secret: &[u8], name: &str) -> Result<String, Box<dyn std::error::Error>> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("chat".into());
    let claims = serde_json::json!({"sub": name, "exp": exp});
    let key = jsonwebtoken::EncodingKey::from_secret(secret)?;
    Ok(jsonwebtoken::encode(&header, &claims, &key)?)
}

/// Answers one GET: `/token?name=…`, `/config` (the WebSocket URL), or a file under
/// `root`.
fn serve_page(
    stream: TcpStream,
    root: &Path,
    secret: &[u8],
    ws: SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.take(MAX_REQUEST_BYTES as u64));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut stream = reader.into_inner().into_inner();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let param = |k: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(key, _)| *key == k)
            .map(|(_, v)| v.to_owned())
    };
    let (status, kind, body) = match path {
        "/" => ("302 Found\r\nLocation: /chat/", "text/plain", b"".to_vec()),
        "/token" => {
            let name = param("name").unwrap_or_else(|| "guest".into());
            let name: String = name
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .take(32)
                .collect();
            let body = serde_json::json!({"token": token(secret, &name)?, "name": name});
            ("200 OK", "application/json", body.to_string().into_bytes())
        }
        "/config" => {
            let body = serde_json::json!({"url": format!("ws://{ws}/conduit")});
            ("200 OK", "application/json", body.to_string().into_bytes())
        }
        _ => match file_under(root, path) {
            Some(file) => match std::fs::read(&file) {
                Ok(bytes) => ("200 OK", content_type(&file), bytes),
                Err(_) => ("404 Not Found", "text/plain", b"not found".to_vec()),
            },
            None => ("404 Not Found", "text/plain", b"not found".to_vec()),
        },
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    Ok(())
}

/// The file `path` names under `root` (a directory: its `index.html`), never outside it.
fn file_under(root: &Path, path: &str) -> Option<PathBuf> {
    if path
        .split('/')
        .any(|part| part == ".." || part.contains('\\'))
    {
        return None;
    }
    let mut file = root.join(path.trim_start_matches('/'));
    if path.ends_with('/') {
        file.push("index.html");
    }
    Some(file)
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css",
        _ => "application/octet-stream",
    }
}

fn env_port(name: &str, default: u16) -> u16 {
    std::env::var(name)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default)
}

#[allow(
    dead_code,
    reason = "tests/browser.rs includes this file as a module and calls `start`, not `main`"
)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    conduit::config::init_logging(&conduit::config::LogSettings::default())?;
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| format!("no random source: {e}"))?;
    let web = start(
        &secret,
        env_port("PORT", 8080),
        env_port("WS_PORT", 8081),
        env_port("HTTP_PORT", 8000),
    )?;
    println!("chat page: http://{}/chat/?name=alice", web.http);
    println!(
        "netconduit and Rust clients: {} (password chat_secret)",
        web.tcp
    );
    web.running.wait()?;
    Ok(())
}
