//! The chat page in a real browser: headless Chromium (through `chromedriver`) opens
//! `clients/js/chat/` twice, served by the `chat_web` example, and each page logs in
//! over WebSocket with its own token; a real netconduit 5.0.0 client joins the same
//! channel over TCP with the password. Everyone waits until the channel has all three,
//! says one line, and must see the other two's lines. A screenshot of a page is saved
//! as `target/browser/chat.png`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::time::Duration;

use conduit_tests::netconduit::{script, spawn_python};
use conduit_tests::webdriver::Driver;

#[path = "../engine/examples/chat_web.rs"]
mod chat_web;

const SECRET: &[u8] = b"a chat secret of at least 32 bytes!!";
const CHANNEL: &str = "lobby";

/// The page's URL for `name` (its token minted as the login service would).
fn page(web: &chat_web::ChatWeb, name: &str, say: &str) -> String {
    let token = chat_web::token(SECRET, name).unwrap();
    format!(
        "http://{}/chat/?url=ws://{}/conduit&token={token}&name={name}&channel={CHANNEL}\
         &script=1&say={say}&members=3&expect=2",
        web.http, web.ws
    )
}

#[test]
fn two_browser_pages_and_a_netconduit_client_chat_in_one_channel() {
    let driver = Driver::start().unwrap_or_else(|e| panic!("{e}"));
    let web = chat_web::start(SECRET, 0, 0, 0).expect("chat server and pages");
    let python = spawn_python(
        &script("chat_room_client.py"),
        &[
            "--host".into(),
            web.tcp.ip().to_string(),
            "--port".into(),
            web.tcp.port().to_string(),
            "--password".into(),
            "chat_secret".into(),
            "--name".into(),
            "py".into(),
            "--channel".into(),
            CHANNEL.into(),
            "--members".into(),
            "3".into(),
            "--say".into(),
            "hello-from-py".into(),
            "--expect".into(),
            "2".into(),
        ],
    );
    let ann = driver.session().expect("browser ann");
    let bob = driver.session().expect("browser bob");
    ann.goto(&page(&web, "ann", "hello-from-ann")).unwrap();
    bob.goto(&page(&web, "bob", "hello-from-bob")).unwrap();

    let log = |s: &conduit_tests::webdriver::Session| {
        s.run("return document.getElementById('log').textContent")
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    for (who, session, others) in [
        ("ann", &ann, ["bob: hello-from-bob", "py: hello-from-py"]),
        ("bob", &bob, ["ann: hello-from-ann", "py: hello-from-py"]),
    ] {
        let title =
            session.wait_for_title(Duration::from_secs(40), |t| t == "DONE" || t == "TIMEOUT");
        let text = log(session);
        assert_eq!(
            title, "DONE",
            "{who}'s page did not finish; its log:\n{text}"
        );
        for line in others {
            assert!(
                text.contains(line),
                "{who} did not see {line:?}; its log:\n{text}"
            );
        }
    }

    // The screenshot, kept for people to look at.
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(ann.screenshot_base64().unwrap())
        .expect("a base64 screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("chat.png"), &png).unwrap();

    let (status, out, err) = python.finish(Duration::from_secs(40));
    assert!(
        status.is_some_and(|s| s.success()),
        "python client failed: {err}"
    );
    let got = out
        .iter()
        .find(|l| l.starts_with("GOT "))
        .expect("GOT line");
    for line in ["ann: hello-from-ann", "bob: hello-from-bob"] {
        assert!(got.contains(line), "python did not see {line:?}: {got}");
    }
    drop((ann, bob));
    web.running.stop().expect("stop");
}
