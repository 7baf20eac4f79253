//! Property tests: encode→decode is the identity for random frames under random stream
//! splits; the decoder never panics and never grows past its bound on arbitrary bytes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use conduit_protocol::native::{self, ArchivedValueTree, ValueTree};
use conduit_protocol::v1::{self, V1Limits, V1Payload};
use conduit_protocol::{msgpack, DecoderLimits, FrameDecoder, FrameKind, Value, ValueLimits};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::UInt),
        any::<f64>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(Value::Float),
        ".{0,40}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bin),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec(("[a-z_]{0,12}", inner), 0..8).prop_map(|entries| {
                // Keys are unique in a map built from a dict.
                let mut out: Vec<(String, Value)> = Vec::new();
                for (k, v) in entries {
                    if !out.iter().any(|(e, _)| *e == k) {
                        out.push((k, v));
                    }
                }
                Value::Map(out)
            }),
        ]
    })
}

/// A frame to send: (kind, route, correlation id, data).
#[derive(Debug, Clone)]
struct Spec {
    native: bool,
    message: bool,
    route: String,
    corr: u64,
    data: Value,
}

fn spec(native: bool) -> impl Strategy<Value = Spec> {
    (any::<bool>(), "[a-z_]{1,20}", any::<u64>(), value()).prop_map(
        move |(message, route, corr, data)| Spec {
            native,
            message,
            route,
            corr,
            data,
        },
    )
}

fn encode(s: &Spec) -> Vec<u8> {
    if s.native {
        let enc = native::Encoder::new(s.corr ^ 0x55);
        let tree = ValueTree::from_value(&s.data);
        let frame = if s.message {
            enc.message(&s.route, &tree)
        } else {
            enc.rpc_request(s.corr, &s.route, &tree)
        };
        frame.unwrap().to_vec()
    } else {
        let enc = v1::Encoder::new(s.corr ^ 0x55);
        if s.message {
            enc.message(&s.route, &s.data).to_vec()
        } else {
            enc.rpc_request(s.corr, &s.route, &s.data).to_vec()
        }
    }
}

/// Checks the next decoded frame against `s`.
fn check(s: &Spec, f: &conduit_protocol::Frame<'_>) {
    assert_eq!(f.header.timestamp_ms, s.corr ^ 0x55);
    let want_kind = if s.message {
        FrameKind::Message
    } else {
        FrameKind::RpcRequest
    };
    assert_eq!(f.header.kind, want_kind);
    if s.native {
        assert_eq!(f.payload.as_ptr() as usize % 8, 0, "native payload aligned");
        let (route, body) = native::split_route(f.payload).unwrap();
        assert_eq!(route, s.route);
        let tree = native::access::<ArchivedValueTree>(body).unwrap();
        assert_eq!(tree.to_value(ValueLimits::default()).unwrap(), s.data);
    } else {
        let got = v1::decode(&f.header, f.payload, &V1Limits::default()).unwrap();
        let want = if s.message {
            V1Payload::Message {
                name: s.route.clone(),
                data: s.data.clone(),
            }
        } else {
            V1Payload::RpcRequest {
                method: Some(s.route.clone()),
                params: s.data.clone(),
            }
        };
        assert_eq!(got, want);
    }
    if !s.message {
        assert_eq!(f.header.correlation_id, s.corr);
    }
}

fn frames_and_cuts() -> impl Strategy<Value = (Vec<Spec>, Vec<usize>)> {
    any::<bool>()
        .prop_flat_map(|native| proptest::collection::vec(spec(native), 1..12))
        .prop_flat_map(|specs| {
            let total: usize = specs.iter().map(|s| encode(s).len()).sum();
            (Just(specs), proptest::collection::vec(0..=total, 0..20))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_split_yields_the_same_frames((specs, mut cuts) in frames_and_cuts()) {
        let stream: Vec<u8> = specs.iter().flat_map(encode).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut d = FrameDecoder::new(DecoderLimits::default());
        let mut seen = 0;
        for w in cuts.windows(2) {
            let chunk = &stream[w[0]..w[1]];
            prop_assert_eq!(d.feed(chunk), chunk.len());
            while let Some(f) = d.next_frame().unwrap() {
                check(&specs[seen], &f);
                seen += 1;
            }
        }
        prop_assert_eq!(seen, specs.len());
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn msgpack_round_trip(v in value()) {
        let bytes = msgpack::to_vec(&v);
        prop_assert_eq!(msgpack::from_slice(&bytes, ValueLimits::default()).unwrap(), v);
    }

    #[test]
    fn decoder_survives_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        chunk in 1usize..300,
        max in 0u32..2048,
    ) {
        let limits = DecoderLimits { max_payload_bytes: max, ..DecoderLimits::default() };
        let mut d = FrameDecoder::new(limits);
        let bound = d.max_buffer_bytes().max(limits.initial_buffer_bytes.next_multiple_of(8));
        'outer: for c in bytes.chunks(chunk) {
            d.feed(c);
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => {
                        let _ = v1::decode(&f.header, f.payload, &V1Limits::default());
                        if let Ok((_, body)) = native::split_route(f.payload) {
                            if let Ok(t) = native::access::<ArchivedValueTree>(body) {
                                let _ = t.to_value(ValueLimits::default());
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
            prop_assert!(d.buffer().capacity() <= bound);
        }
    }

    #[test]
    fn msgpack_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = msgpack::from_slice(&bytes, ValueLimits::default());
    }

    #[test]
    fn garbage_with_valid_header_is_an_error_not_a_panic(
        kind in 1u16..=16,
        body in proptest::collection::vec(any::<u8>(), 0..256),
        native_codec in any::<bool>(),
    ) {
        let mut h = conduit_protocol::Header::new(
            if native_codec { conduit_protocol::Codec::Native } else { conduit_protocol::Codec::V1 },
            FrameKind::from_code(kind).unwrap(),
        );
        let mut body = body;
        if native_codec {
            body.resize(body.len().next_multiple_of(8), 0);
        }
        h.length = body.len() as u32;
        let mut bytes = h.encode().to_vec();
        bytes.extend_from_slice(&body);
        let mut d = FrameDecoder::new(DecoderLimits::default());
        d.feed(&bytes);
        let f = d.next_frame().unwrap().unwrap();
        let _ = v1::decode(&f.header, f.payload, &V1Limits::default());
        let _ = native::access::<native::ArchivedRpcFailure>(f.payload);
        let _ = native::access::<native::ArchivedAuthStep>(f.payload);
    }
}
