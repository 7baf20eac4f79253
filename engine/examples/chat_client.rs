//! An interactive client for `chat_server`: join, chat, see everyone else's messages.
//!
//! `cargo run --example chat_client -- [host] [port] [name]` (defaults 127.0.0.1, 8080).
//! Type a line to chat; `/name NEW` renames you, `/users` lists who is online,
//! `/join #room` joins a channel and sends your lines there (`/all TEXT` still talks to
//! everyone), `/leave` leaves it, `/channels` lists them, `/quit` leaves. Set `CODEC=v1` to speak netconduit's MessagePack codec.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use conduit::client::blocking::Client;
use conduit::{ClientDescriptor, Codec, Value};

#[path = "common/mod.rs"]
mod common;

/// Where the client writes what it shows; shared with its message callbacks.
pub type Screen = Arc<Mutex<dyn Write + Send>>;

fn show(screen: &Screen, line: &str) {
    if let Ok(mut s) = screen.lock() {
        let _ = writeln!(s, "{line}");
        let _ = s.flush();
    }
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::Str(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Runs a chat session: connects with `desc`, optionally renames to `name`, then reads
/// commands from `input` until it ends or `/quit`, writing everything to `screen`.
pub fn run(
    desc: ClientDescriptor,
    name: Option<&str>,
    input: impl BufRead,
    screen: Screen,
) -> Result<(), conduit::ClientError> {
    // Handlers first, then connect: the server greets at login, before any later
    // registration could see it.
    let client = Client::new(desc)?;
    let s = screen.clone();
    client.on("welcome", move |d| {
        show(
            &s,
            &format!(
                "* welcome, you are {} ({} online)",
                text(&d, "username"),
                text(&d, "clients")
            ),
        )
    });
    let s = screen.clone();
    client.on("chat", move |d| {
        show(
            &s,
            &format!("<{}> {}", text(&d, "from"), text(&d, "message")),
        )
    });
    let s = screen.clone();
    client.on("user_joined", move |d| {
        show(
            &s,
            &format!(
                "* {} joined ({} online)",
                text(&d, "username"),
                text(&d, "count")
            ),
        )
    });
    let s = screen.clone();
    client.on("user_left", move |d| {
        show(
            &s,
            &format!(
                "* {} left ({} online)",
                text(&d, "username"),
                text(&d, "count")
            ),
        )
    });
    let s = screen.clone();
    client.on("name_change", move |d| {
        show(
            &s,
            &format!("* {} is now {}", text(&d, "old"), text(&d, "new")),
        )
    });
    let s = screen.clone();
    client.on("channel_chat", move |d| {
        show(
            &s,
            &format!(
                "[{}] <{}> {}",
                text(&d, "channel"),
                text(&d, "from"),
                text(&d, "message")
            ),
        )
    });
    for (event, verb) in [("channel_joined", "joined"), ("channel_left", "left")] {
        let s = screen.clone();
        client.on(event, move |d| {
            show(
                &s,
                &format!(
                    "[{}] * {} {verb} ({} here)",
                    text(&d, "channel"),
                    text(&d, "username"),
                    text(&d, "count")
                ),
            )
        });
    }
    client.open()?;
    if let Some(n) = name {
        client.request("set_name", Value::map().with("username", n))?;
    }
    // The channel plain lines go to, once joined.
    let mut channel: Option<String> = None;
    for line in input.lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/quit" {
            break;
        } else if line == "/users" {
            let users = client.call("get_users", Value::map())?;
            show(&screen, &format!("* online: {users}"));
        } else if let Some(new) = line.strip_prefix("/name ") {
            let r = client.request("set_name", Value::map().with("username", new.trim()))?;
            show(&screen, &format!("* you are now {}", text(&r, "username")));
        } else if let Some(room) = line.strip_prefix("/join ") {
            let room = room.trim();
            let r = client.call("join_channel", Value::map().with("channel", room))?;
            show(
                &screen,
                &format!("[{room}] * you joined ({} here)", text(&r, "members")),
            );
            channel = Some(room.to_owned());
        } else if line == "/leave" {
            if let Some(room) = channel.take() {
                client.call("leave_channel", Value::map().with("channel", room.as_str()))?;
                show(&screen, &format!("[{room}] * you left"));
            }
        } else if line == "/channels" {
            let r = client.call("list_channels", Value::map())?;
            show(&screen, &format!("* channels: {}", r));
        } else if let (Some(room), false) = (&channel, line.starts_with("/all ")) {
            let data = Value::map()
                .with("channel", room.as_str())
                .with("message", line);
            client.request("channel_chat", data)?;
        } else {
            let message = line.strip_prefix("/all ").unwrap_or(line);
            client.request("chat", Value::map().with("message", message))?;
        }
    }
    client.close();
    Ok(())
}

#[allow(
    dead_code,
    reason = "tests/examples.rs includes this file as a module and calls `build`, not `main`"
)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_logging()?;
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port = args
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| common::port(8080));
    let name = args.next();
    let codec = match std::env::var("CODEC").as_deref() {
        Ok("v1") => Codec::V1,
        _ => Codec::Native,
    };
    let desc = ClientDescriptor::new("chat_secret")
        .host(host)
        .port(port)
        .codec(codec);
    let screen: Screen = Arc::new(Mutex::new(std::io::stdout()));
    run(desc, name.as_deref(), std::io::stdin().lock(), screen)?;
    Ok(())
}
