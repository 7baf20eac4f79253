//! The in-memory pair: a client (the protocol crate's handshake and encoder) and a
//! server core wired back to back in virtual time, with a scripted "application".

use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit_protocol::handshake::{ClientHandshake, ClientStep};
use conduit_protocol::native::{self, ArchivedReason};
use conduit_protocol::v1::{self, V1Limits, V1Payload};
use conduit_protocol::{Codec, DecoderLimits, Encoder, FrameDecoder, FrameKind, Header, Value};

use super::super::*;

pub(super) const MS: Duration = Duration::from_millis(1);

/// The pair's settings (see `small_config`), with no v1 hold and a 1 MiB queue unless
/// `tweak` says otherwise.
pub(super) fn config(tweak: impl FnOnce(&mut CoreConfig)) -> Arc<CoreConfig> {
    let mut c = CoreConfig {
        v1_post_auth_delay: Duration::ZERO,
        max_outbound_bytes: 1 << 20,
        ..super::super::fuzz::small_config(RouteTable::new(
            [
                ("add".to_owned(), ArgForm::Value),
                ("fail".to_owned(), ArgForm::Value),
                ("never".to_owned(), ArgForm::Value),
                ("typed".to_owned(), ArgForm::Typed),
            ],
            ["chat".to_owned()],
            Value::map().with("count", 3),
        ))
    };
    tweak(&mut c);
    Arc::new(c)
}

/// A frame the client received.
#[derive(Debug)]
pub(super) struct Got {
    pub(super) header: Header,
    pub(super) payload: Vec<u8>,
}

impl Got {
    pub(super) fn v1(&self) -> V1Payload {
        v1::decode(&self.header, &self.payload, &V1Limits::default()).unwrap()
    }

    /// The result value of an RPC reply, or `Err((code, message))`, in either codec.
    pub(super) fn rpc(&self) -> Result<Value, (i64, String)> {
        match self.header.codec {
            Codec::V1 => match self.v1() {
                V1Payload::RpcResponse { result, .. } => {
                    if result.get("success").and_then(Value::as_bool) == Some(true) {
                        Ok(result.get("data").cloned().unwrap_or_default())
                    } else {
                        Err((
                            result.get("code").and_then(Value::as_i64).unwrap(),
                            result
                                .get("error")
                                .and_then(Value::as_str)
                                .unwrap()
                                .to_owned(),
                        ))
                    }
                }
                other => panic!("not a reply: {other:?}"),
            },
            Codec::Native => {
                let body = aligned(&self.payload);
                if self.header.kind == FrameKind::RpcError {
                    let f = native::access::<native::ArchivedRpcFailure>(&body).unwrap();
                    Err((f.code.to_native().into(), f.message.as_str().to_owned()))
                } else {
                    let t = native::access::<native::ArchivedValueTree>(&body).unwrap();
                    Ok(t.to_value(ValueLimits::default()).unwrap())
                }
            }
        }
    }

    pub(super) fn reason(&self) -> String {
        match self.header.codec {
            Codec::V1 => match self.v1() {
                V1Payload::AuthFailure { reason } => reason,
                other => panic!("no reason in {other:?}"),
            },
            Codec::Native => native::access::<ArchivedReason>(&aligned(&self.payload))
                .unwrap()
                .reason
                .as_str()
                .to_owned(),
        }
    }

    pub(super) fn message_name(&self) -> String {
        match self.header.codec {
            Codec::V1 => match self.v1() {
                V1Payload::Message { name, .. } => name,
                other => panic!("not a message: {other:?}"),
            },
            Codec::Native => {
                let body = aligned(&self.payload);
                native::split_route(&body).unwrap().0.to_owned()
            }
        }
    }
}

pub(super) fn aligned(bytes: &[u8]) -> rkyv::util::AlignedVec<8> {
    let mut v = rkyv::util::AlignedVec::<8>::new();
    v.extend_from_slice(bytes);
    v
}

/// What the server core reported, for assertions.
#[derive(Debug, PartialEq)]
pub(super) enum Seen {
    LoggedIn(Codec),
    Call(CallKind, String),
    Closed(CloseReason),
}

/// A client and a server core back to back in virtual time.
pub(super) struct Pair {
    pub(super) codec: Codec,
    pub(super) server: ConnCore,
    /// The counters of the server's shard.
    pub(super) metrics: Arc<crate::metrics::ShardMetrics>,
    /// The server's receive side, as the glue would hold it.
    pub(super) server_rx: FrameDecoder,
    /// The client's receive side.
    pub(super) client_rx: FrameDecoder,
    /// What the server did.
    pub(super) seen: Vec<Seen>,
    /// The close the core decided, with its last frame still to deliver.
    pub(super) close: Option<Close>,
    /// Calls the "application" leaves unanswered (a handler that never completes).
    pub(super) parked: Vec<CallId>,
    pub(super) now: Instant,
    pub(super) t0: Instant,
}

impl Pair {
    pub(super) fn new(codec: Codec, config: Arc<CoreConfig>) -> Pair {
        let t0 = Instant::now();
        let server_rx = config.new_decoder();
        let metrics = Arc::new(crate::metrics::ShardMetrics::new(4));
        Pair {
            codec,
            server: ConnCore::new(
                config,
                ConnectionId::new(0, 0, 9),
                [5; 32],
                "ab".repeat(64),
                t0,
                metrics.clone(),
            ),
            metrics,
            server_rx,
            client_rx: FrameDecoder::new(DecoderLimits::default()),
            seen: Vec::new(),
            close: None,
            parked: Vec::new(),
            now: t0,
            t0,
        }
    }

    pub(super) fn logged_in(codec: Codec) -> Pair {
        let mut p = Pair::new(codec, config(|_| {}));
        p.login("pw").unwrap();
        p
    }

    pub(super) fn enc(&self) -> Encoder {
        Encoder::new(self.codec, 0)
    }

    /// Delivers bytes to the server and lets it act on every whole frame, running the
    /// "application": `add` sums, `fail` fails, `never` parks, `chat` echoes.
    pub(super) fn send(&mut self, bytes: &[u8]) {
        self.server_rx.feed(bytes);
        self.drive();
    }

    pub(super) fn drive(&mut self) {
        loop {
            let Some(event) = self.server.poll_event(&mut self.server_rx, self.now, 0) else {
                break;
            };
            match event {
                Event::Handled | Event::TokenRefreshed(_) => {}
                Event::Authenticated { codec, .. } => self.seen.push(Seen::LoggedIn(codec)),
                Event::Close(c) => {
                    self.seen.push(Seen::Closed(c.reason));
                    self.close = Some(c);
                    break;
                }
                Event::Call(call) => {
                    self.seen
                        .push(Seen::Call(call.kind, call.route.clone().into_owned()));
                    let (form, args) = match call.args {
                        Args::Value(v) => ("value", v),
                        Args::Tree(tree) => {
                            ("tree", tree.to_value(ValueLimits::default()).unwrap())
                        }
                        Args::Native(_) => ("native", Value::Nil),
                    };
                    let outcome = match (call.kind, call.route.as_ref()) {
                        (CallKind::Rpc, "add") => {
                            let n = |k| args.get(k).and_then(Value::as_i64).unwrap_or(0);
                            Outcome::Rpc(Ok(Value::from(n("a") + n("b"))))
                        }
                        (CallKind::Rpc, "typed") => {
                            Outcome::Rpc(Ok(Value::map().with("form", form).with("args", args)))
                        }
                        (CallKind::Rpc, "never") => {
                            self.parked.push(call.id);
                            continue;
                        }
                        (CallKind::Rpc, _) => Outcome::Rpc(Err(Failure {
                            code: 1001,
                            message: "Error in fail: boom".into(),
                            details: None,
                        })),
                        (CallKind::Message, _) => Outcome::Message(Some(args)),
                    };
                    if let Some(c) = self.server.complete(call.id, outcome, 0) {
                        self.seen.push(Seen::Closed(c.reason));
                        self.close = Some(c);
                        break;
                    }
                }
            }
        }
    }

    /// Everything the server queued, as the writer would send it (its last frame
    /// included once the core closed), decoded on the client side.
    pub(super) fn received(&mut self) -> Vec<Got> {
        let out = self.server.outbound().clone();
        if let Some(last) = self.close.as_mut().and_then(|c| c.last.take()) {
            out.push_unbounded(last);
        }
        let mut batch = Vec::new();
        out.open_gate();
        out.take_batch(&mut batch, usize::MAX, usize::MAX);
        out.finish_batch();
        let mut got = Vec::new();
        for b in batch {
            self.client_rx.feed(&b);
            while let Some(f) = self.client_rx.next_frame().unwrap() {
                got.push(Got {
                    header: f.header,
                    payload: f.payload.to_vec(),
                });
            }
        }
        got
    }

    /// Runs the whole login through the client's handshake.
    pub(super) fn login(&mut self, password: &str) -> Result<(), String> {
        let mut hs = ClientHandshake::new(self.codec, password, [1; 32], "c", "1");
        let first = hs.start(0).unwrap();
        self.send(&first);
        loop {
            let out = self.server.outbound().clone();
            if let Some(last) = self.close.as_mut().and_then(|c| c.last.take()) {
                out.push_unbounded(last);
            }
            let mut batch = Vec::new();
            out.take_batch(&mut batch, usize::MAX, usize::MAX);
            out.finish_batch();
            let Some(b) = batch.first() else {
                return Err("no answer".into());
            };
            self.client_rx.feed(b);
            let f = self.client_rx.next_frame().unwrap().unwrap();
            match hs.on_frame(&f, &V1Limits::default(), 0) {
                Ok(ClientStep::Send(next)) => self.send(&next),
                Ok(ClientStep::Done(_)) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    pub(super) fn advance(&mut self, d: Duration) -> Option<CloseReason> {
        self.now += d;
        let c = self.server.on_tick(self.now, 0)?;
        self.seen.push(Seen::Closed(c.reason));
        let reason = c.reason;
        self.close = Some(c);
        Some(reason)
    }

    pub(super) fn rpc(
        &mut self,
        corr: u64,
        method: &str,
        params: &Value,
    ) -> Result<Value, (i64, String)> {
        let frame = self.enc().rpc_request(corr, method, params).unwrap();
        self.send(&frame);
        let got = self.received();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].header.correlation_id, corr);
        got[0].rpc()
    }
}
