#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on the first unexpected error"
)]
use super::*;
use crate::{DecoderLimits, FrameDecoder};

fn creds() -> ServerCredentials {
    ServerCredentials::new("pw", "S", "9")
}

/// Runs a whole login between the two machines, frame by frame, through a decoder.
fn login(codec: Codec, client_pw: &str) -> Result<LoginInfo, HandshakeError> {
    let limits = V1Limits::default();
    let mut server = ServerHandshake::new([5; 32], "ab".repeat(64), 77);
    let mut client = ClientHandshake::new(codec, client_pw, [1; 32], "c", "1");
    let mut to_server = client.start(0)?;
    loop {
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&to_server);
        let f = d.next_frame()?.expect("whole frame");
        let to_client = match server.on_frame(&f, &creds(), &limits, 0)? {
            ServerStep::Send(b) | ServerStep::Accepted { reply: b, .. } => b,
            ServerStep::Rejected => crate::encode::Encoder::new(codec, 0).auth_failure("no")?,
            ServerStep::Token { .. } => panic!("no token sent"),
        };
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&to_client);
        let f = d.next_frame()?.expect("whole frame");
        match client.on_frame(&f, &limits, 0)? {
            ClientStep::Send(b) => to_server = b,
            ClientStep::Done(info) => return Ok(info),
        }
    }
}

#[test]
fn both_codecs_log_in_and_refuse_a_wrong_password() {
    let info = login(Codec::Native, "pw").unwrap();
    assert_eq!(info.connection_id, Some(77));
    assert_eq!(info.server_name, "S");
    let info = login(Codec::V1, "pw").unwrap();
    assert_eq!(info.connection_id, None);
    assert_eq!(info.server_version, "9");
    for codec in [Codec::V1, Codec::Native] {
        assert_eq!(
            login(codec, "wrong"),
            Err(HandshakeError::Rejected("no".into()))
        );
    }
}

/// A token login: the server hands the token out for checking; `good` decides.
fn token_login(
    codec: Codec,
    good: bool,
    creds: &ServerCredentials,
) -> Result<LoginInfo, HandshakeError> {
    let limits = V1Limits::default();
    let mut server = ServerHandshake::new([5; 32], "ab".repeat(64), 77);
    let mut client = ClientHandshake::with_token(codec, "t.o.k", "c", "1");
    let first = client.start(0)?;
    let mut d = FrameDecoder::new(DecoderLimits::default());
    d.feed(&first);
    let f = d.next_frame()?.expect("whole frame");
    assert_eq!(token_in(&f, &limits)?.as_deref(), Some("t.o.k"));
    let reply = match server.on_frame(&f, creds, &limits, 0)? {
        ServerStep::Token { token, client_name } => {
            assert_eq!(
                (token.as_str(), client_name.as_deref()),
                ("t.o.k", Some("c"))
            );
            if good {
                server.accept_token(creds, 0)?
            } else {
                crate::encode::Encoder::new(codec, 0).auth_failure("no")?
            }
        }
        other => panic!("{other:?}"),
    };
    assert!(server.is_finished() || !good);
    let mut d = FrameDecoder::new(DecoderLimits::default());
    d.feed(&reply);
    let f = d.next_frame()?.expect("whole frame");
    match client.on_frame(&f, &limits, 0)? {
        ClientStep::Done(info) => Ok(info),
        ClientStep::Send(_) => panic!("a token login has one round"),
    }
}

#[test]
fn tokens_log_in_in_both_codecs_and_a_password_can_be_turned_off() {
    let mut creds = creds();
    for codec in [Codec::V1, Codec::Native] {
        let info = token_login(codec, true, &creds).unwrap();
        assert_eq!(info.server_name, "S");
        assert_eq!(
            token_login(codec, false, &creds),
            Err(HandshakeError::Rejected("no".into()))
        );
    }
    creds.allow_password = false;
    for codec in [Codec::V1, Codec::Native] {
        assert!(token_login(codec, true, &creds).is_ok());
        let mut server = ServerHandshake::new([5; 32], String::new(), 1);
        let first = ClientHandshake::new(codec, "pw", [1; 32], "c", "1")
            .start(0)
            .unwrap();
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&first);
        let f = d.next_frame().unwrap().unwrap();
        assert!(matches!(
            server.on_frame(&f, &creds, &V1Limits::default(), 0),
            Ok(ServerStep::Rejected)
        ));
    }
}

#[test]
fn a_replayed_proof_and_a_forged_server_are_refused() {
    let limits = V1Limits::default();
    // A proof computed for another server nonce (captured elsewhere) fails.
    let mut server = ServerHandshake::new([5; 32], String::new(), 1);
    let enc = native::Encoder::new(0);
    let hello = enc
        .auth_step(&native::AuthStep::Hello(native::Hello {
            client_nonce: [1; 32],
            client_name: "c".into(),
            client_version: "1".into(),
        }))
        .unwrap();
    let feed = |s: &mut ServerHandshake, b: &[u8]| {
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(b);
        let f = d.next_frame().unwrap().unwrap();
        s.on_frame(&f, &creds(), &limits, 0)
    };
    assert!(matches!(feed(&mut server, &hello), Ok(ServerStep::Send(_))));
    let replayed = auth::client_proof(b"pw", &[6; 32], &[1; 32]);
    let proof = enc.auth_step(&native::AuthStep::Proof(replayed)).unwrap();
    assert!(matches!(
        feed(&mut server, &proof),
        Ok(ServerStep::Rejected)
    ));
    // Nothing more is taken once finished.
    assert!(feed(&mut server, &hello).is_err());

    // A server that does not know the password cannot fake its proof.
    let mut client = ClientHandshake::new(Codec::Native, "pw", [1; 32], "c", "1");
    client.start(0).unwrap();
    let challenge = enc
        .auth_step(&native::AuthStep::Challenge([5; 32]))
        .unwrap();
    let mut d = FrameDecoder::new(DecoderLimits::default());
    d.feed(&challenge);
    let f = d.next_frame().unwrap().unwrap();
    assert!(matches!(
        client.on_frame(&f, &limits, 0),
        Ok(ClientStep::Send(_))
    ));
    let forged = enc
        .auth_accepted(&native::AuthAccepted {
            server_proof: [0; 32],
            connection_id: 1,
            server_name: "S".into(),
            server_version: "1".into(),
        })
        .unwrap();
    let mut d = FrameDecoder::new(DecoderLimits::default());
    d.feed(&forged);
    let f = d.next_frame().unwrap().unwrap();
    assert_eq!(
        client.on_frame(&f, &limits, 0).unwrap_err(),
        HandshakeError::ServerProofInvalid
    );
}

#[test]
fn steps_out_of_order_are_errors_not_panics() {
    let limits = V1Limits::default();
    let mut server = ServerHandshake::new([5; 32], String::new(), 1);
    let proof = native::Encoder::new(0)
        .auth_step(&native::AuthStep::Proof([0; 32]))
        .unwrap();
    let mut d = FrameDecoder::new(DecoderLimits::default());
    d.feed(&proof);
    let f = d.next_frame().unwrap().unwrap();
    assert!(server.on_frame(&f, &creds(), &limits, 0).is_err());
}
