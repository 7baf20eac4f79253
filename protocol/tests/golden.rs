//! Golden frames captured from netconduit 5.0.0 on 127.0.0.1 (netconduit-v1.md §12):
//! each decodes to the expected fields and re-encodes byte for byte.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use conduit_protocol::v1::{self, V1Limits, V1Payload};
use conduit_protocol::{auth, Codec, DecoderLimits, FrameDecoder, FrameKind, Header, Value};

/// Bytes from a dump line: hex pairs and "quoted strings" (written as their UTF-8 bytes).
fn dump(spec: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = spec.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').expect("closing quote");
            out.extend_from_slice(&r.as_bytes()[..end]);
            rest = r[end + 1..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let tok = &rest[..end];
            if tok != "|" {
                out.push(u8::from_str_radix(tok, 16).expect("hex byte"));
            }
            rest = rest[end..].trim_start();
        }
    }
    out
}

fn one_frame(bytes: &[u8]) -> (Header, Vec<u8>) {
    let mut d = FrameDecoder::new(DecoderLimits::default());
    assert_eq!(d.feed(bytes), bytes.len());
    let f = d.next_frame().unwrap().expect("a whole frame");
    let out = (f.header, f.payload.to_vec());
    assert!(d.next_frame().unwrap().is_none(), "exactly one frame");
    out
}

fn decode(bytes: &[u8]) -> (Header, V1Payload) {
    let (h, p) = one_frame(bytes);
    assert_eq!(h.codec, Codec::V1);
    (h, v1::decode(&h, &p, &V1Limits::default()).unwrap())
}

const SECRET_HASH: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

fn auth_request() -> Vec<u8> {
    dump(&format!(
        r#"43 4e 44 54 | 01 00 | 00 07 | 00 00 | 00 00 | 00 00 00 7a | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 c5 a2 ae
        82 ad "password_hash" d9 40 "{SECRET_HASH}"
           ab "client_info" 82 a4 "name" a8 "client_A" a7 "version" a5 "1.0.0""#
    ))
}

#[test]
fn auth_request_golden() {
    let bytes = auth_request();
    let (h, p) = decode(&bytes);
    assert_eq!(h.kind, FrameKind::AuthRequest);
    assert_eq!(
        p,
        V1Payload::AuthRequest {
            password_hash: Some(auth::v1_password_hash("secret")),
            token: None,
            client_name: Some("client_A".into()),
            client_version: Some("1.0.0".into()),
        }
    );
    let again = v1::Encoder::new(h.timestamp_ms).auth_request(SECRET_HASH, "client_A", "1.0.0");
    assert_eq!(&again[..], &bytes[..]);
}

#[test]
fn auth_success_golden() {
    // The token is elided in the capture; any 128 hex characters give the same layout.
    let token = format!("767f06f0{}42f39f06", "ab".repeat(56));
    let bytes = dump(&format!(
        r#"43 4e 44 54 | 01 00 | 00 08 | 00 00 | 00 00 | 00 00 00 c5 | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 c5 a2 af
        82 ad "session_token" d9 80 "{token}"
           ab "server_info" 82 a4 "name" b3 "py_reference_server" a7 "version" a5 "1.0.0""#
    ));
    let (h, p) = decode(&bytes);
    assert_eq!(
        p,
        V1Payload::AuthSuccess {
            session_token: token.clone(),
            server_name: "py_reference_server".into(),
            server_version: "1.0.0".into(),
        }
    );
    let again =
        v1::Encoder::new(h.timestamp_ms).auth_success(&token, "py_reference_server", "1.0.0");
    assert_eq!(&again[..], &bytes[..]);
}

#[test]
fn auth_failure_golden() {
    let bytes = dump(
        r#"43 4e 44 54 | 01 00 | 00 09 | 00 00 | 00 00 | 00 00 00 19 | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 e0 60 24
        81 a6 "reason" b0 "Invalid password""#,
    );
    let (h, p) = decode(&bytes);
    assert_eq!(
        p,
        V1Payload::AuthFailure {
            reason: "Invalid password".into()
        }
    );
    let again = v1::Encoder::new(h.timestamp_ms).auth_failure("Invalid password");
    assert_eq!(&again[..], &bytes[..]);
}

fn add_request() -> Vec<u8> {
    dump(
        r#"43 4e 44 54 | 01 00 | 00 02 | 00 00 | 00 00 | 00 00 00 1a | 00 00 00 00 00 00 00 01 | 00 00 01 a2 13 c5 a5 0e
        82 a6 "method" a3 "add" a6 "params" 82 a1 "a" 02 a1 "b" 03"#,
    )
}

#[test]
fn rpc_add_golden() {
    let bytes = add_request();
    let (h, p) = decode(&bytes);
    assert_eq!(h.correlation_id, 1);
    let params = Value::map().with("a", 2).with("b", 3);
    assert_eq!(
        p,
        V1Payload::RpcRequest {
            method: Some("add".into()),
            params: params.clone()
        }
    );
    let again = v1::Encoder::new(h.timestamp_ms).rpc_request(1, "add", &params);
    assert_eq!(&again[..], &bytes[..]);

    let reply = dump(
        r#"43 4e 44 54 | 01 00 | 00 03 | 00 00 | 00 00 | 00 00 00 21 | 00 00 00 00 00 00 00 01 | 00 00 01 a2 13 c5 a5 13
        82 a7 "success" c3 a6 "result" 82 a7 "success" c3 a4 "data" 05"#,
    );
    let (h, p) = decode(&reply);
    assert_eq!(
        p,
        V1Payload::RpcResponse {
            success: true,
            result: Value::map().with("success", true).with("data", 5)
        }
    );
    let again = v1::Encoder::new(h.timestamp_ms).rpc_success(1, &Value::Int(5));
    assert_eq!(&again[..], &reply[..]);
}

#[test]
fn rpc_error_golden() {
    // The capture gives the payload; the header is rebuilt around it (length 81, corr 3).
    let bytes = dump(
        r#"43 4e 44 54 | 01 00 | 00 03 | 00 00 | 00 00 | 00 00 00 51 | 00 00 00 00 00 00 00 03 | 00 00 00 00 00 00 00 00
        82 a7 "success" c3 a6 "result" 83 a7 "success" c2
           a5 "error" d9 26 "Error in divide: Cannot divide by zero" a4 "code" cd 03 e9"#,
    );
    let (_, p) = decode(&bytes);
    let V1Payload::RpcResponse { success, result } = p else {
        panic!("not a response: {p:?}");
    };
    assert!(success);
    assert_eq!(result.get("success"), Some(&Value::Bool(false)));
    assert_eq!(result.get("code"), Some(&Value::Int(1001)));
    let again = v1::Encoder::new(0).rpc_failure(
        3,
        "Error in divide: Cannot divide by zero",
        v1::codes::INTERNAL,
        None,
    );
    assert_eq!(&again[..], &bytes[..]);
}

#[test]
fn listall_request_golden() {
    let bytes = dump(
        r#"43 4e 44 54 | 01 00 | 00 02 | 00 00 | 00 00 | 00 00 00 18 | 00 00 00 00 00 00 00 02 | 00 00 00 00 00 00 00 00
        82 a6 "method" a7 "listall" a6 "params" 80"#,
    );
    let (_, p) = decode(&bytes);
    assert_eq!(
        p,
        V1Payload::RpcRequest {
            method: Some("listall".into()),
            params: Value::map()
        }
    );
    let again = v1::Encoder::new(0).rpc_request(2, "listall", &Value::map());
    assert_eq!(&again[..], &bytes[..]);
}

#[test]
fn chat_message_broadcast_and_reply_golden() {
    let chat = dump(
        r#"43 4e 44 54 | 01 00 | 00 01 | 00 00 | 00 00 | 00 00 00 1c | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 c5 a6 ab
        82 a4 "type" a4 "chat" a4 "data" 81 a7 "message" a2 "hi""#,
    );
    let (h, p) = decode(&chat);
    let data = Value::map().with("message", "hi");
    assert_eq!(
        p,
        V1Payload::Message {
            name: "chat".into(),
            data: data.clone()
        }
    );
    assert_eq!(
        &v1::Encoder::new(h.timestamp_ms).message("chat", &data)[..],
        &chat[..]
    );

    let broadcast = dump(
        r#"43 4e 44 54 | 01 00 | 00 01 | 00 00 | 00 00 | 00 00 00 55 | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 c5 a6 ac
        82 a4 "type" a4 "chat" a4 "data"
           83 a4 "from" d9 24 "4173d997-9e07-4dff-bc9e-93592523cf04"
              a7 "message" a2 "hi"
              a4 "time" cb 41 da c1 c7 04 85 e8 8e"#,
    );
    let (h, p) = decode(&broadcast);
    let V1Payload::Message { name, data } = p else {
        panic!("not a message");
    };
    assert_eq!(name, "chat");
    assert_eq!(
        data.get("from").and_then(Value::as_str),
        Some("4173d997-9e07-4dff-bc9e-93592523cf04")
    );
    assert!(matches!(data.get("time"), Some(Value::Float(t)) if *t > 1.7e9));
    assert_eq!(
        &v1::Encoder::new(h.timestamp_ms).message("chat", &data)[..],
        &broadcast[..]
    );

    let reply = dump(
        r#"43 4e 44 54 | 01 00 | 00 01 | 00 00 | 00 00 | 00 00 00 20 | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 c5 a6 ac
        82 a4 "type" ad "chat_response" a4 "data" 81 a4 "sent" c3"#,
    );
    let (h, _) = decode(&reply);
    assert_eq!(
        &v1::Encoder::new(h.timestamp_ms)
            .message("chat_response", &Value::map().with("sent", true))[..],
        &reply[..]
    );
}

#[test]
fn heartbeat_golden() {
    let ping = dump(
        "43 4e 44 54 | 01 00 | 00 05 | 00 00 | 00 00 | 00 00 00 00 | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 c5 a6 98",
    );
    let pong = dump(
        "43 4e 44 54 | 01 00 | 00 06 | 00 00 | 00 00 | 00 00 00 00 | 00 00 00 00 00 00 00 00 | 00 00 01 a2 13 e0 65 3d",
    );
    for (bytes, kind) in [(ping, FrameKind::Ping), (pong, FrameKind::Pong)] {
        let (h, p) = decode(&bytes);
        assert_eq!(
            p,
            V1Payload::Other {
                kind,
                payload: Value::Nil
            }
        );
        assert_eq!(
            &v1::Encoder::new(h.timestamp_ms).empty(kind)[..],
            &bytes[..]
        );
    }
}

#[test]
fn golden_stream_one_byte_at_a_time() {
    let mut stream = auth_request();
    stream.extend(add_request());
    stream.extend(auth_request());
    let mut d = FrameDecoder::new(DecoderLimits::default());
    let mut kinds = Vec::new();
    for b in &stream {
        d.feed(std::slice::from_ref(b));
        while let Some(f) = d.next_frame().unwrap() {
            kinds.push(f.header.kind);
        }
    }
    assert_eq!(
        kinds,
        [
            FrameKind::AuthRequest,
            FrameKind::RpcRequest,
            FrameKind::AuthRequest
        ]
    );
}

#[test]
fn compressed_payloads_are_honoured_and_bounded() {
    let big = Value::map().with("text", "z".repeat(5000));
    let enc = v1::Encoder {
        timestamp_ms: 0,
        compress: true,
    };
    let frame = enc.message("note", &big);
    let (h, payload) = one_frame(&frame);
    assert!(h.flags.compressed());
    assert!(payload.len() < 1000, "compressed to {}", payload.len());
    assert_eq!(
        v1::decode(&h, &payload, &V1Limits::default()).unwrap(),
        V1Payload::Message {
            name: "note".into(),
            data: big
        }
    );
    let tight = V1Limits {
        max_decompressed_bytes: 1000,
        ..V1Limits::default()
    };
    assert_eq!(
        v1::decode(&h, &payload, &tight),
        Err(conduit_protocol::WireError::DecompressedTooLarge { max: 1000 })
    );
    // Small payloads stay plain even when compression is on.
    let (h, _) = one_frame(&enc.message("x", &Value::Nil));
    assert!(!h.flags.compressed());
}
