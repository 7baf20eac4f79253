//! In-process RPC dispatch for `add(a, b)`: decode the request frame → validate the
//! arguments → call the handler → encode the reply frame, per codec. No sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use conduit::{rpc, RpcCall, RpcError, RpcInfo, RpcMethod, Server, ServerDescriptor, Value};
use conduit_protocol::native::{self, ArchivedValueTree, ValueTree};
use conduit_protocol::v1::{self, V1Limits, V1Payload};
use conduit_protocol::{DecoderLimits, FrameDecoder, ValueLimits};
use criterion::{criterion_group, criterion_main, Criterion};

/// Add two numbers.
#[rpc]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// `add`'s arguments for the in-place variant.
#[derive(serde::Deserialize, rkyv::Archive, rkyv::Serialize)]
struct AddArgs {
    a: i64,
    b: i64,
}

fn add_archived() -> RpcMethod {
    RpcMethod::archived::<AddArgs, _, _, _>(
        RpcInfo::new("add_archived")
            .param("a", "int")
            .param("b", "int"),
        |_c, args: &ArchivedAddArgs| Ok::<_, RpcError>(args.a.to_native() + args.b.to_native()),
    )
}

fn dispatch(c: &mut Criterion) {
    let server = Server::new(ServerDescriptor::new("pw")).unwrap();
    let method = add();
    let archived = add_archived();
    let params = Value::map().with("a", 2).with("b", 3);
    let v1_frame = v1::Encoder::new(0).rpc_request(1, "add", &params);
    let native_frame = native::Encoder::new(0)
        .rpc_request(1, "add", &ValueTree::from_value(&params))
        .unwrap();
    let archived_frame = native::Encoder::new(0)
        .rpc_request(1, "add_archived", &AddArgs { a: 2, b: 3 })
        .unwrap();
    // One decoder per codec: a decoder fixes its codec at the first frame.
    let mut dec = FrameDecoder::new(DecoderLimits::default());
    let mut g = c.benchmark_group("dispatch_add");

    g.bench_function("v1", |b| {
        b.iter(|| {
            dec.feed(black_box(&v1_frame));
            let f = dec.next_frame().unwrap().unwrap();
            let V1Payload::RpcRequest {
                method: Some(m),
                params,
            } = v1::decode(&f.header, f.payload, &V1Limits::default()).unwrap()
            else {
                unreachable!()
            };
            let call = RpcCall::standalone(&server, m, params);
            let out = futures_lite::future::block_on(method.call(call)).unwrap();
            black_box(v1::Encoder::new(0).rpc_success(1, &out))
        })
    });

    let mut dec = FrameDecoder::new(DecoderLimits::default());
    g.bench_function("native", |b| {
        b.iter(|| {
            dec.feed(black_box(&native_frame));
            let f = dec.next_frame().unwrap().unwrap();
            let (m, body) = native::split_route(f.payload).unwrap();
            let params = native::access::<ArchivedValueTree>(body)
                .unwrap()
                .to_value(ValueLimits::default())
                .unwrap();
            let call = RpcCall::standalone(&server, m, params);
            let out = futures_lite::future::block_on(method.call(call)).unwrap();
            black_box(
                native::Encoder::new(0)
                    .rpc_response(1, &ValueTree::from_value(&out))
                    .unwrap(),
            )
        })
    });

    let mut dec = FrameDecoder::new(DecoderLimits::default());
    g.bench_function("native_archived", |b| {
        b.iter(|| {
            dec.feed(black_box(&archived_frame));
            let f = dec.next_frame().unwrap().unwrap();
            let (m, body) = native::split_route(f.payload).unwrap();
            let call = RpcCall::standalone(&server, m, Value::Nil);
            let out = archived.call_archived(&call, body).unwrap();
            black_box(
                native::Encoder::new(0)
                    .rpc_response(1, &ValueTree::from_value(&out))
                    .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
