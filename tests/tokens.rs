//! Token logins over real sockets, on both backends: HS256, EdDSA and RS256 tokens in
//! both codecs; the claims reach handlers; forged, expired, `alg: none`, HS/RS-confused
//! and unknown-`kid` tokens are refused; the password can be turned off; a connection
//! is closed when its token expires unless the client refreshed it (same subject).
//!
//! The RSA and Ed25519 test keys in `tests/keys/` were made with `openssl genpkey`;
//! they sign nothing outside these tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use conduit::client::{Client, ClientDescriptor};
use conduit::tokens::{TokenAuth, TokenKey};
use conduit::{Codec, RpcError, RpcInfo, Server, Value};
use conduit_protocol::handshake::token_frame;
use conduit_protocol::FrameKind;
use conduit_tests::{matrix, spawn_client, start, test_descriptor, TestClient};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const PW: &str = "pw";
const SECRET: &[u8] = b"an HS256 secret of at least 32 bytes";
const ED_PRIVATE: &[u8] = include_bytes!("keys/ed25519.pem");
const ED_PUBLIC: &[u8] = include_bytes!("keys/ed25519.pub.pem");
const RSA_PRIVATE: &[u8] = include_bytes!("keys/rsa.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("keys/rsa.pub.pem");

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A token for `sub` expiring at `exp` (seconds since the epoch), signed with the key `kid` names.
fn token(kid: &str, sub: &str, exp: u64) -> String {
    let claims = json!({"sub": sub, "exp": exp, "role": "player", "iss": "login"});
    let (alg, key) = match kid {
        "h" => (
            Algorithm::HS256,
            EncodingKey::from_secret(SECRET).expect("secret"),
        ),
        "e" => (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED_PRIVATE).expect("ed25519 key"),
        ),
        "r" => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("rsa key"),
        ),
        other => panic!("no key {other}"),
    };
    let mut h = Header::new(alg);
    h.kid = Some(kid.to_owned());
    encode(&h, &claims, &key).expect("sign")
}

fn auth() -> TokenAuth {
    TokenAuth::new(vec![
        TokenKey::hs256(Some("h"), SECRET).expect("hs256"),
        TokenKey::ed25519_pem(Some("e"), ED_PUBLIC).expect("ed25519"),
        TokenKey::rs256_pem(Some("r"), RSA_PUBLIC).expect("rs256"),
    ])
    .issuer("login")
    .leeway(Duration::ZERO)
}

/// A server taking `auth`, with `whoami` answering the caller's token claims.
fn server(auth: TokenAuth) -> (conduit::Running, std::net::SocketAddr) {
    let desc = test_descriptor(PW)
        .tokens(auth)
        .heartbeat(Duration::from_millis(200), Duration::from_secs(30));
    let server = Server::new(desc).expect("server");
    server.rpc_with(RpcInfo::new("whoami"), |call| async move {
        let token = call.connection.token();
        Ok::<_, RpcError>(match token {
            Some(t) => Value::map()
                .with("sub", t.subject())
                .with("role", t.get("role").and_then(|r| r.as_str()).unwrap_or("")),
            None => Value::map().with("sub", Value::Nil),
        })
    });
    start(&server)
}

/// The next AUTH_SUCCESS or AUTH_FAILURE, answering the server's pings meanwhile.
fn next_auth_frame(c: &mut TestClient) -> conduit_tests::OwnedFrame {
    loop {
        let f = c.next_frame().expect("a frame");
        match f.header.kind {
            FrameKind::Ping => c.pong().expect("pong"),
            _ => return f,
        }
    }
}

/// `whoami`'s answer (the data inside the RPC envelope).
fn whoami(c: &mut TestClient) -> Value {
    let reply = c.rpc("whoami", &Value::map()).expect("whoami");
    assert_eq!(reply.get("success"), Some(&Value::Bool(true)), "{reply:?}");
    reply.get("data").cloned().unwrap_or_default()
}

fn login(addr: std::net::SocketAddr, codec: Codec, token: &str) -> (TestClient, FrameKind) {
    let mut c = TestClient::connect(addr, codec).expect("connect");
    let f = c.authenticate_token(token).expect("login exchange");
    (c, f.header.kind)
}

#[matrix]
fn every_algorithm_logs_in_in_both_codecs_and_handlers_see_the_claims() {
    let (running, addr) = server(auth());
    let exp = now_s() + 600;
    for codec in [Codec::V1, Codec::Native] {
        for kid in ["h", "e", "r"] {
            let sub = format!("player-{kid}");
            let (mut c, kind) = login(addr, codec, &token(kid, &sub, exp));
            assert_eq!(kind, FrameKind::AuthSuccess, "{kid} in {codec:?}");
            let me = whoami(&mut c);
            assert_eq!(me.get("sub").and_then(Value::as_str), Some(sub.as_str()));
            assert_eq!(me.get("role").and_then(Value::as_str), Some("player"));
        }
        // The password still works by default, and its connections have no token.
        let mut c = TestClient::login(addr, codec, PW);
        let me = whoami(&mut c);
        assert_eq!(me.get("sub"), Some(&Value::Nil));
    }
    running.stop().expect("stop");
}

#[matrix]
fn forged_expired_unsigned_confused_and_unknown_tokens_are_refused() {
    let (running, addr) = server(auth());
    let exp = now_s() + 600;
    let good = token("h", "ann", exp);
    let mut forged = good.clone();
    forged.pop();
    forged.push(if good.ends_with('A') { 'B' } else { 'A' });
    let expired = token("e", "ann", now_s() - 10);
    // `alg: none`, no signature: {"alg":"none","typ":"JWT","kid":"h"} and
    // {"sub":"ann","exp":4102444800,"iss":"login"} in base64url.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiaCJ9.\
                eyJzdWIiOiJhbm4iLCJleHAiOjQxMDI0NDQ4MDAsImlzcyI6ImxvZ2luIn0."
        .to_owned();
    // HS/RS confusion: HS256 "signed" with the RSA public key as the secret, naming
    // the RSA key.
    let confused = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("r".into());
        let claims = json!({"sub": "ann", "exp": exp, "iss": "login"});
        encode(
            &h,
            &claims,
            &EncodingKey::from_secret(RSA_PUBLIC).expect("secret"),
        )
        .expect("sign")
    };
    let unknown_kid = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("old".into());
        let claims = json!({"sub": "ann", "exp": exp, "iss": "login"});
        encode(
            &h,
            &claims,
            &EncodingKey::from_secret(SECRET).expect("secret"),
        )
        .expect("sign")
    };
    let other_issuer = {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("h".into());
        let claims = json!({"sub": "ann", "exp": exp, "iss": "elsewhere"});
        encode(
            &h,
            &claims,
            &EncodingKey::from_secret(SECRET).expect("secret"),
        )
        .expect("sign")
    };
    for codec in [Codec::V1, Codec::Native] {
        for (what, bad) in [
            ("forged signature", &forged),
            ("expired", &expired),
            ("alg none", &none),
            ("HS/RS confusion", &confused),
            ("unknown kid", &unknown_kid),
            ("other issuer", &other_issuer),
            ("not a token", &"garbage".to_owned()),
        ] {
            let (mut c, kind) = login(addr, codec, bad);
            assert_eq!(kind, FrameKind::AuthFailure, "{what} in {codec:?}");
            c.expect_closed();
        }
        // Nothing above harmed the good path.
        let (_c, kind) = login(addr, codec, &good);
        assert_eq!(kind, FrameKind::AuthSuccess);
    }
    running.stop().expect("stop");
}

#[matrix]
fn the_password_can_be_turned_off() {
    let (running, addr) = server(auth().allow_password(false));
    for codec in [Codec::V1, Codec::Native] {
        let mut c = TestClient::connect(addr, codec).expect("connect");
        let f = c.authenticate(PW).expect("login exchange");
        assert_eq!(f.header.kind, FrameKind::AuthFailure, "{codec:?}");
        let (_c, kind) = login(addr, codec, &token("h", "ann", now_s() + 600));
        assert_eq!(kind, FrameKind::AuthSuccess);
    }
    running.stop().expect("stop");
}

#[matrix]
fn a_connection_closes_when_its_token_expires_unless_refreshed() {
    let (running, addr) = server(auth());
    for codec in [Codec::V1, Codec::Native] {
        let exp = now_s() + 2;
        // Expires: closed with "token expired" (native says so in its CLOSE), not
        // before `exp`.
        let (mut lapsing, kind) = login(addr, codec, &token("h", "ann", exp));
        assert_eq!(kind, FrameKind::AuthSuccess);
        // Refreshed before expiry with the same subject: answered AUTH_SUCCESS, open
        // past the first expiry.
        let (mut kept, _) = login(addr, codec, &token("e", "bob", exp));
        let refresh =
            token_frame(codec, &token("r", "bob", exp + 600), "t", "1", 0).expect("refresh frame");
        kept.send_raw(&refresh).expect("send refresh");
        assert_eq!(
            next_auth_frame(&mut kept).header.kind,
            FrameKind::AuthSuccess
        );
        // A refresh naming someone else is refused; the old token stays and expires.
        let (mut impostor, _) = login(addr, codec, &token("h", "eve", exp));
        let other = token_frame(codec, &token("h", "mallory", exp + 600), "t", "1", 0)
            .expect("refresh frame");
        impostor.send_raw(&other).expect("send refresh");
        assert_eq!(
            next_auth_frame(&mut impostor).header.kind,
            FrameKind::AuthFailure
        );

        let seen = lapsing.expect_closed();
        let closed_at = now_s();
        assert!(closed_at >= exp, "closed at {closed_at}, before exp {exp}");
        if codec == Codec::Native {
            let last = seen.last().expect("a CLOSE frame");
            assert_eq!(last.header.kind, FrameKind::Close);
            assert_eq!(last.reason(), "token expired");
        }
        impostor.expect_closed();
        // The refreshed connection still answers after the first expiry passed.
        let deadline = Instant::now() + Duration::from_secs(10);
        while now_s() <= exp && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let me = whoami(&mut kept);
        assert_eq!(me.get("sub").and_then(Value::as_str), Some("bob"));
    }
    running.stop().expect("stop");
}

#[matrix]
fn the_rust_client_logs_in_with_a_token() {
    let (running, addr) = server(auth().allow_password(false));
    for codec in [Codec::V1, Codec::Native] {
        let tok = token("e", "rusty", now_s() + 600);
        let sub = spawn_client("token-client", move || async move {
            let desc = ClientDescriptor::new("").addr(addr).codec(codec).token(tok);
            let client = Client::connect(desc).await.expect("token login");
            let me = client.call("whoami", Value::map()).await.expect("whoami");
            client.close().await;
            me.get("sub").and_then(Value::as_str).map(str::to_owned)
        })
        .join()
        .expect("client thread");
        assert_eq!(sub.as_deref(), Some("rusty"));
    }
    running.stop().expect("stop");
}
