//! RPC methods with validated arguments, the built-in `listall`, and message handlers
//! with replies, over real sockets in both codecs (the Server Guide's examples).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on the first unexpected error"
)]

use conduit::{rpc, Connection, RpcError, RpcInfo, RpcMethod, Server, Value};
use conduit_protocol::{Codec, FrameKind};
use conduit_tests::{matrix, start, test_descriptor, TestClient};
use serde::{Deserialize, Serialize};

const PW: &str = "secret";

/// Echo back the message.
#[rpc]
async fn echo(message: String) -> String {
    message
}

/// Add two numbers.
#[rpc]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Create a new user.
#[rpc]
async fn create_user(
    username: String,
    email: String,
    age: i64,
    #[default(true)] active: bool,
) -> Value {
    Value::map()
        .with("id", 1)
        .with("username", username)
        .with("email", email)
        .with("age", age)
        .with("active", active)
}

#[derive(Deserialize, garde::Validate)]
struct CreateUserRequest {
    #[garde(length(min = 3, max = 30))]
    username: String,
    #[garde(email)]
    email: String,
    #[garde(range(min = 0, max = 150))]
    age: i64,
    #[serde(default)]
    #[garde(skip)]
    roles: Vec<String>,
}

#[derive(Serialize)]
struct UserResponse {
    id: i64,
    username: String,
    email: String,
    roles: Vec<String>,
}

/// Pydantic-style: the whole parameter map is one validated struct.
#[rpc]
async fn create_user_model(#[validate] request: CreateUserRequest) -> UserResponse {
    UserResponse {
        id: 7,
        username: request.username,
        email: request.email,
        roles: request.roles,
    }
}

/// Divide a by b.
#[rpc]
async fn divide(a: f64, b: f64) -> Result<f64, RpcError> {
    if b == 0.0 {
        return Err("Cannot divide by zero".into());
    }
    Ok(a / b)
}

#[rpc]
async fn get_user(user_id: i64) -> Result<Value, RpcError> {
    Err(RpcError::failed(format!("'User {user_id} not found'")))
}

#[rpc]
async fn percent(p: u8) -> u8 {
    p
}

#[rpc]
async fn boom() -> i64 {
    panic!("handler bug")
}

/// Needs the caller.
#[rpc]
async fn whoami(conn: Connection, #[default(String::from("anon"))] label: String) -> Value {
    Value::map()
        .with("id", conn.id().to_string())
        .with("label", label)
}

/// A request read in place by native callers.
#[derive(Deserialize, rkyv::Archive, rkyv::Serialize)]
struct Move {
    x: i32,
    y: i32,
    name: String,
}

fn move_method() -> RpcMethod {
    RpcMethod::archived::<Move, _, _, _>(
        RpcInfo::new("move")
            .param("x", "int")
            .param("y", "int")
            .param("name", "str")
            .returns("dict"),
        |_call, m: &ArchivedMove| {
            if m.name.as_str().is_empty() {
                return Err(RpcError::failed("name must not be empty"));
            }
            Ok(Value::map()
                .with("sum", m.x.to_native() + m.y.to_native())
                .with("name", m.name.as_str()))
        },
    )
}

#[rpc("renamed.method")]
async fn renamed() {}

fn server() -> Server {
    let server = Server::new(test_descriptor(PW)).unwrap();
    server.rpc(echo);
    server.rpc(add);
    server.rpc(create_user);
    server.rpc(create_user_model);
    server.rpc(divide);
    server.rpc(get_user);
    server.rpc(percent);
    server.rpc(boom);
    server.rpc(whoami);
    server.rpc(renamed);
    server.rpc(move_method());
    server.on("chat", |_client, data: Value| async move {
        assert!(data.get("message").is_some());
        Value::map().with("sent", true)
    });
    server.on("quiet", |_client, _data| async move {});
    server
}

fn ok(reply: &Value) -> &Value {
    assert_eq!(reply.get("success"), Some(&Value::Bool(true)), "{reply}");
    reply.get("data").unwrap()
}

fn failed(reply: &Value) -> (i64, String, Value) {
    assert_eq!(reply.get("success"), Some(&Value::Bool(false)), "{reply}");
    (
        reply.get("code").and_then(Value::as_i64).unwrap(),
        reply
            .get("error")
            .and_then(Value::as_str)
            .unwrap()
            .to_owned(),
        reply.get("details").cloned().unwrap_or(Value::Nil),
    )
}

fn error_fields(details: &Value) -> Vec<(String, String)> {
    details
        .get("errors")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.get("field").and_then(Value::as_str).unwrap().to_owned(),
                e.get("type").and_then(Value::as_str).unwrap().to_owned(),
            )
        })
        .collect()
}

#[matrix]
fn calls_validation_and_errors_in_both_codecs() {
    let server = server();
    let (running, addr) = start(&server);
    for codec in [Codec::V1, Codec::Native] {
        let mut c = TestClient::login(addr, codec, PW);
        let args = |pairs: &[(&str, Value)]| Value::from_pairs(pairs.iter().cloned());

        assert_eq!(
            ok(&c
                .rpc("add", &args(&[("a", 2.into()), ("b", 3.into())]))
                .unwrap()),
            &Value::Int(5)
        );
        assert_eq!(
            ok(&c.rpc("echo", &args(&[("message", "hi".into())])).unwrap()),
            &Value::from("hi")
        );

        // Wrong type, missing and unexpected arguments: all reported, connection stays.
        let (code, msg, details) = failed(
            &c.rpc("add", &args(&[("a", "x".into()), ("c", 1.into())]))
                .unwrap(),
        );
        assert_eq!(code, 2000);
        assert!(msg.starts_with("Validation error in add"), "{msg}");
        let fields = error_fields(&details);
        assert!(
            fields.contains(&("a".into(), "type_error".into())),
            "{fields:?}"
        );
        assert!(
            fields.contains(&("b".into(), "missing".into())),
            "{fields:?}"
        );
        assert!(
            fields.contains(&("c".into(), "unexpected".into())),
            "{fields:?}"
        );
        // Out of range for the declared type.
        let (code, _, details) = failed(&c.rpc("percent", &args(&[("p", 300.into())])).unwrap());
        assert_eq!(code, 2000);
        assert_eq!(error_fields(&details), [("p".into(), "value_error".into())]);

        // Defaults.
        let user = c
            .rpc(
                "create_user",
                &args(&[
                    ("username", "ann".into()),
                    ("email", "a@b.io".into()),
                    ("age", 30.into()),
                ]),
            )
            .unwrap();
        assert_eq!(ok(&user).get("active"), Some(&Value::Bool(true)));

        // Every constraint of the validated struct violated at once.
        let (code, msg, details) = failed(
            &c.rpc(
                "create_user_model",
                &args(&[
                    ("username", "ab".into()),
                    ("email", "nope".into()),
                    ("age", 200.into()),
                ]),
            )
            .unwrap(),
        );
        assert_eq!(code, 2000);
        assert!(msg.starts_with("Validation error in create_user_model"));
        let mut fields: Vec<String> = error_fields(&details).into_iter().map(|f| f.0).collect();
        fields.sort();
        assert_eq!(fields, ["age", "email", "username"]);
        let good = c
            .rpc(
                "create_user_model",
                &args(&[
                    ("username", "alice".into()),
                    ("email", "alice@example.com".into()),
                    ("age", 30.into()),
                    ("roles", Value::from_iter(["admin"])),
                ]),
            )
            .unwrap();
        assert_eq!(ok(&good).get("roles"), Some(&Value::from_iter(["admin"])));

        // Handler errors, as netconduit words them.
        let (code, msg, _) = failed(
            &c.rpc("divide", &args(&[("a", 1.0.into()), ("b", 0.0.into())]))
                .unwrap(),
        );
        assert_eq!(
            (code, msg.as_str()),
            (1001, "Error in divide: Cannot divide by zero")
        );
        assert_eq!(
            ok(&c
                .rpc("divide", &args(&[("a", 1.0.into()), ("b", 4.0.into())]))
                .unwrap()),
            &Value::Float(0.25)
        );
        let (code, msg, _) = failed(
            &c.rpc("get_user", &args(&[("user_id", 999.into())]))
                .unwrap(),
        );
        assert_eq!(
            (code, msg.as_str()),
            (1001, "Error in get_user: 'User 999 not found'")
        );

        // Unknown method.
        let (code, msg, _) = failed(&c.rpc("nope", &Value::map()).unwrap());
        assert_eq!((code, msg.as_str()), (4000, "RPC method not found: nope"));

        // Caller context and renamed methods.
        let me = c.rpc("whoami", &Value::map()).unwrap();
        assert_eq!(ok(&me).get("label"), Some(&Value::from("anon")));
        assert_eq!(
            ok(&c.rpc("renamed.method", &Value::map()).unwrap()),
            &Value::Nil
        );
    }
    running.stop().unwrap();
}

#[matrix]
fn a_panicking_handler_is_isolated() {
    let server = server();
    let (running, addr) = start(&server);
    let mut a = TestClient::login(addr, Codec::V1, PW);
    let mut b = TestClient::login(addr, Codec::Native, PW);
    let (code, msg, _) = failed(&a.rpc("boom", &Value::map()).unwrap());
    assert_eq!(code, 1001);
    assert!(msg.starts_with("Error in boom"), "{msg}");
    let (code, _, _) = failed(&b.rpc("boom", &Value::map()).unwrap());
    assert_eq!(code, 1001);
    let two = Value::map().with("a", 1).with("b", 1);
    assert_eq!(ok(&a.rpc("add", &two).unwrap()), &Value::Int(2));
    assert_eq!(ok(&b.rpc("add", &two).unwrap()), &Value::Int(2));
    let mut c = TestClient::login(addr, Codec::V1, PW);
    assert_eq!(ok(&c.rpc("add", &two).unwrap()), &Value::Int(2));
    running.stop().unwrap();
}

#[matrix]
fn listall_describes_every_method_in_registration_order() {
    let server = server();
    let (running, addr) = start(&server);
    for codec in [Codec::V1, Codec::Native] {
        let mut c = TestClient::login(addr, codec, PW);
        let data = ok(&c.rpc("listall", &Value::map()).unwrap()).clone();
        let methods = data.get("methods").and_then(Value::as_array).unwrap();
        assert_eq!(data.get("count"), Some(&Value::Int(methods.len() as i64)));
        let names: Vec<&str> = methods
            .iter()
            .map(|m| m.get("name").and_then(Value::as_str).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "echo",
                "add",
                "create_user",
                "create_user_model",
                "divide",
                "get_user",
                "percent",
                "boom",
                "whoami",
                "renamed.method",
                "move"
            ]
        );
        let echo = &methods[0];
        assert_eq!(
            echo.get("description"),
            Some(&Value::from("Echo back the message."))
        );
        assert_eq!(
            echo.get("parameters"),
            Some(&Value::map().with("message", "str"))
        );
        assert_eq!(echo.get("return_type"), Some(&Value::from("str")));
        assert_eq!(echo.get("requires_auth"), Some(&Value::Bool(true)));
        let add = &methods[1];
        assert_eq!(
            add.get("parameters"),
            Some(&Value::map().with("a", "int").with("b", "int"))
        );
        assert_eq!(add.get("return_type"), Some(&Value::from("int")));
        let create = &methods[2];
        let params = create.get("params").and_then(Value::as_array).unwrap();
        let active = &params[3];
        assert_eq!(active.get("name"), Some(&Value::from("active")));
        assert_eq!(active.get("required"), Some(&Value::Bool(false)));
        assert_eq!(active.get("default"), Some(&Value::Bool(true)));
        assert_eq!(methods[4].get("return_type"), Some(&Value::from("float")));
        assert_eq!(
            methods[3].get("return_type"),
            Some(&Value::from("UserResponse"))
        );
        // The caller-context parameter is not an argument.
        assert_eq!(
            methods[8].get("parameters"),
            Some(&Value::map().with("label", "str"))
        );
    }
    running.stop().unwrap();
}

#[matrix]
fn message_handlers_reply_as_type_response() {
    let server = server();
    let (running, addr) = start(&server);
    for codec in [Codec::V1, Codec::Native] {
        let mut c = TestClient::login(addr, codec, PW);
        c.send_message("chat", &Value::map().with("message", "hi"))
            .unwrap();
        let (name, data) = c.next_message().unwrap();
        assert_eq!(name, "chat_response");
        assert_eq!(data, Value::map().with("sent", true));
        // No reply from a handler returning (), nor for an unknown type: the PONG to a
        // PING sent after them is the next frame.
        c.send_message("quiet", &Value::map()).unwrap();
        c.send_message("no_such_type", &Value::map()).unwrap();
        c.ping().unwrap();
        assert_eq!(c.next_frame().unwrap().header.kind, FrameKind::Pong);
    }
    running.stop().unwrap();
}

#[matrix]
fn archived_handlers_read_native_arguments_in_place_and_serve_v1_too() {
    let server = server();
    let (running, addr) = start(&server);
    let mut n = TestClient::login(addr, Codec::Native, PW);
    let reply = n
        .rpc_native_body(
            "move",
            &Move {
                x: 2,
                y: 40,
                name: "p1".into(),
            },
        )
        .unwrap();
    assert_eq!(ok(&reply), &Value::map().with("sum", 42).with("name", "p1"));
    let (code, msg, _) = failed(
        &n.rpc_native_body(
            "move",
            &Move {
                x: 0,
                y: 0,
                name: String::new(),
            },
        )
        .unwrap(),
    );
    assert_eq!(
        (code, msg.as_str()),
        (1001, "Error in move: name must not be empty")
    );
    // Bytes that are not a Move archive are a validation error, not a crash.
    let (code, _, _) = failed(&n.rpc_native_body("move", &7u64).unwrap());
    assert_eq!(code, 2000);
    // netconduit-v1 callers pass a map; it is converted once.
    let mut v = TestClient::login(addr, Codec::V1, PW);
    let reply = v
        .rpc(
            "move",
            &Value::map().with("x", 1).with("y", 2).with("name", "p2"),
        )
        .unwrap();
    assert_eq!(ok(&reply), &Value::map().with("sum", 3).with("name", "p2"));
    let (code, _, _) = failed(&v.rpc("move", &Value::map().with("x", "bad")).unwrap());
    assert_eq!(code, 2000);
    running.stop().unwrap();
}

/// Typed messages in and out: a validated handler gets its struct or, for data that
/// does not fit or breaks a rule, its sender gets `<type>_error` with the RPC error's
/// shape (code 2000, one entry per field); replies and broadcasts take any
/// `Serialize` value.
#[matrix]
fn typed_message_handlers() {
    #[derive(Deserialize, garde::Validate)]
    struct Chat {
        #[garde(length(min = 1, max = 10))]
        message: String,
        #[garde(range(min = 0, max = 5))]
        #[serde(default)]
        mood: i64,
    }
    #[derive(Serialize)]
    struct Echo {
        echo: String,
        mood: i64,
    }
    let server = Server::new(test_descriptor(PW)).unwrap();
    server.on_validated("chat", |c, chat: Chat| async move {
        c.server()
            .broadcast(
                "heard",
                Echo {
                    echo: chat.message.clone(),
                    mood: chat.mood,
                },
            )
            .exclude([c.id()])
            .await;
        conduit::Reply(Echo {
            echo: chat.message.to_uppercase(),
            mood: chat.mood,
        })
    });
    server.on_typed("count", |_c, n: i64| async move { Value::from(n + 1) });
    let (running, addr) = start(&server);
    let mut listener = TestClient::login(addr, Codec::V1, PW);
    for codec in [Codec::V1, Codec::Native] {
        let mut c = TestClient::login(addr, codec, PW);
        c.send_message("chat", &Value::map().with("message", "yo").with("mood", 2))
            .unwrap();
        assert_eq!(
            c.next_message().unwrap(),
            (
                "chat_response".to_owned(),
                Value::map().with("echo", "YO").with("mood", 2)
            )
        );
        assert_eq!(
            listener.next_message().unwrap(),
            (
                "heard".to_owned(),
                Value::map().with("echo", "yo").with("mood", 2)
            )
        );
        // Broken rules: both listed, and the handler never ran (nothing was heard).
        c.send_message(
            "chat",
            &Value::map()
                .with("message", "far too long a message")
                .with("mood", 9),
        )
        .unwrap();
        let (name, err) = c.next_message().unwrap();
        assert_eq!(name, "chat_error");
        assert_eq!(err.get("code"), Some(&Value::Int(2000)));
        let fields: Vec<&str> = match err.get("details").and_then(|d| d.get("errors")) {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|e| e.get("field").and_then(Value::as_str))
                .collect(),
            other => panic!("no error list: {other:?}"),
        };
        assert_eq!(fields, vec!["message", "mood"]);
        // Data of the wrong shape: a missing field, then a value that is no map.
        c.send_message("chat", &Value::map().with("nope", 1))
            .unwrap();
        let (name, err) = c.next_message().unwrap();
        assert_eq!(name, "chat_error");
        assert!(
            err.get("error")
                .and_then(Value::as_str)
                .unwrap()
                .contains("message"),
            "{err}"
        );
        c.send_message("count", &Value::from("seven")).unwrap();
        let (name, err) = c.next_message().unwrap();
        assert_eq!(name, "count_error");
        assert_eq!(err.get("code"), Some(&Value::Int(2000)));
        c.send_message("count", &Value::from(7)).unwrap();
        assert_eq!(
            c.next_message().unwrap(),
            ("count_response".to_owned(), Value::Int(8))
        );
        // The connection stays.
        c.ping().unwrap();
        assert_eq!(c.next_frame().unwrap().header.kind, FrameKind::Pong);
    }
    running.stop().unwrap();
}

/// A handler on either backend hands tokio-based work to the service thread and
/// replies with its result; a failing job is an error reply, never a hang.
#[matrix]
fn handlers_reach_tokio_services_through_the_service_thread() {
    let server = Server::new(test_descriptor(PW)).unwrap();
    // A tokio service the application runs: a listener on the service thread's runtime
    // that answers each connection with one byte.
    let service_addr = conduit::block_on(conduit::rt::service::call(|| async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = s.write_all(&[42]).await;
            }
        });
        addr
    }))
    .unwrap();
    server.on("ask", move |_c, data: Value| async move {
        let fail = data.get("fail").and_then(Value::as_bool).unwrap_or(false);
        let answer = conduit::rt::service::call(move || async move {
            use tokio::io::AsyncReadExt;
            assert!(!fail, "the job fails");
            let mut s = tokio::net::TcpStream::connect(service_addr).await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            i64::from(b[0])
        })
        .await;
        match answer {
            Ok(v) => Value::map().with("answer", v),
            Err(e) => Value::map().with("error", e.to_string()),
        }
    });
    let (running, addr) = start(&server);
    let mut c = TestClient::login(addr, Codec::Native, PW);
    c.send_message("ask", &Value::map()).unwrap();
    assert_eq!(
        c.next_message().unwrap(),
        ("ask_response".to_owned(), Value::map().with("answer", 42))
    );
    c.send_message("ask", &Value::map().with("fail", true))
        .unwrap();
    let (_, reply) = c.next_message().unwrap();
    assert_eq!(
        reply.get("error").and_then(Value::as_str),
        Some("the service job panicked")
    );
    running.stop().unwrap();
}

/// Totals per connection, for `tally`.
#[derive(Default)]
struct Tallies(std::sync::Mutex<std::collections::HashMap<conduit::ConnectionId, i64>>);

/// Adds `add × times` to the caller's total (a message handler with injected state).
#[rpc]
async fn tally(
    conn: Connection,
    tallies: conduit::State<Tallies>,
    add: i64,
    #[default(1)] times: i64,
) -> Result<i64, RpcError> {
    if add < 0 {
        return Err(RpcError::failed("negative"));
    }
    let mut t = tallies.0.lock().unwrap();
    let total = t.entry(conn.id()).or_default();
    *total += add * times;
    Ok(*total)
}

/// An `#[rpc]` function as a message handler: arguments from the data map, injected
/// `Connection` and `State`, errors sent back as `<name>_error` — and it is no RPC.
#[matrix]
fn rpc_style_message_handlers() {
    let server = Server::new(test_descriptor(PW)).unwrap();
    server.manage(Tallies::default());
    server.on_message(tally);
    let (running, addr) = start(&server);
    for codec in [Codec::V1, Codec::Native] {
        let mut c = TestClient::login(addr, codec, PW);
        let mut send = |data: Value| {
            c.send_message("tally", &data).unwrap();
            c.next_message().unwrap()
        };
        assert_eq!(
            send(Value::map().with("add", 2)),
            ("tally_response".to_owned(), Value::Int(2))
        );
        assert_eq!(
            send(Value::map().with("add", 2).with("times", 3)),
            ("tally_response".to_owned(), Value::Int(8))
        );
        let (name, err) = send(Value::map());
        assert_eq!(name, "tally_error");
        assert_eq!(err.get("code"), Some(&Value::Int(2000)));
        let (name, err) = send(Value::map().with("add", -1));
        assert_eq!(name, "tally_error");
        assert_eq!(
            (err.get("code"), err.get("error").and_then(Value::as_str)),
            (Some(&Value::Int(1001)), Some("Error in tally: negative"))
        );
        let (code, _, _) = failed(&c.rpc("tally", &Value::map().with("add", 1)).unwrap());
        assert_eq!(code, 4000, "a message handler is not an RPC method");
    }
    running.stop().unwrap();
}

/// A move read in place as a message handler.
fn move_message() -> RpcMethod {
    RpcMethod::archived::<Move, _, _, _>(RpcInfo::new("moved"), |call, m: &ArchivedMove| {
        if m.name.as_str().is_empty() {
            return Err(RpcError::failed("name must not be empty"));
        }
        Ok(Value::map()
            .with("sum", m.x.to_native() + m.y.to_native())
            // In place, the call carries no decoded params.
            .with("in_place", call.params.is_nil()))
    })
}

/// A message whose native data its handler reads in place (`on_message` of an archived
/// method), and the same handler for a netconduit-v1 sender's map; errors come back as
/// `<name>_error` before anything sent after them.
#[matrix]
fn archived_message_handlers_read_native_data_in_place() {
    let server = Server::new(test_descriptor(PW)).unwrap();
    server.on_message(move_message());
    let (running, addr) = start(&server);
    let mut n = TestClient::login(addr, Codec::Native, PW);
    let body = Move {
        x: 40,
        y: 2,
        name: "p1".into(),
    };
    let frame = conduit_protocol::native::Encoder::new(0)
        .message("moved", &body)
        .unwrap();
    n.send_raw(&frame).unwrap();
    let (name, reply) = n.next_message().unwrap();
    assert_eq!(name, "moved_response");
    assert_eq!(reply.get("sum"), Some(&Value::Int(42)));
    assert_eq!(reply.get("in_place"), Some(&Value::Bool(true)));
    // A failure, then a ping: the error is queued before the pong.
    let bad = Move {
        x: 0,
        y: 0,
        name: String::new(),
    };
    let frame = conduit_protocol::native::Encoder::new(0)
        .message("moved", &bad)
        .unwrap();
    n.send_raw(&frame).unwrap();
    n.ping().unwrap();
    let (name, err) = n.next_message().unwrap();
    assert_eq!(name, "moved_error");
    assert_eq!(
        err.get("error").and_then(Value::as_str),
        Some("Error in moved: name must not be empty")
    );
    assert_eq!(n.next_frame().unwrap().header.kind, FrameKind::Pong);
    // netconduit-v1 senders send a map; the same handler reads it.
    let mut v = TestClient::login(addr, Codec::V1, PW);
    v.send_message(
        "moved",
        &Value::map().with("x", 1).with("y", 2).with("name", "p2"),
    )
    .unwrap();
    let (name, reply) = v.next_message().unwrap();
    assert_eq!(name, "moved_response");
    assert_eq!(reply.get("sum"), Some(&Value::Int(3)));
    assert_eq!(reply.get("in_place"), Some(&Value::Bool(false)));
    running.stop().unwrap();

    // A type read in place takes no other handler: refused at start, saying why.
    let server = Server::new(test_descriptor(PW)).unwrap();
    server.on_message(move_message());
    server.on("moved", |_c, _d: Value| async move {});
    let err = server.start().unwrap_err().to_string();
    assert!(err.contains("reads its data in place"), "{err}");
}

/// The data of an RPC reply frame in `codec`.
fn reply_data(codec: Codec, f: &conduit_tests::OwnedFrame) -> Value {
    match codec {
        Codec::V1 => match f.v1() {
            conduit_protocol::v1::V1Payload::RpcResponse { result, .. } => ok(&result).clone(),
            other => panic!("not a reply: {other:?}"),
        },
        Codec::Native => {
            assert_eq!(f.header.kind, FrameKind::RpcResponse);
            f.native_value()
        }
    }
}

#[matrix]
fn calls_in_one_write_behind_a_waiting_handler_are_answered_in_order() {
    let server = server();
    server.rpc_with(RpcInfo::new("slow"), |_| async {
        conduit::rt::sleep(std::time::Duration::from_millis(20)).await;
        Ok::<_, RpcError>(Value::from("slow"))
    });
    let (running, addr) = start(&server);
    let add = |a: i64, b: i64| Value::map().with("a", a).with("b", b);
    for codec in [Codec::V1, Codec::Native] {
        let mut c = TestClient::login(addr, codec, PW);
        // A waiting handler, then calls that finish at once, twice over: the ones
        // behind each wait are handled after it, in the order sent.
        let mut write = Vec::new();
        for (corr, method, args) in [
            (1, "slow", Value::map()),
            (2, "add", add(1, 2)),
            (3, "add", add(3, 4)),
            (4, "slow", Value::map()),
            (5, "add", add(5, 6)),
        ] {
            write.extend(conduit_tests::forge::rpc_frame(codec, corr, method, &args));
        }
        c.send_raw(&write).unwrap();
        let want = [
            Value::from("slow"),
            Value::from(3),
            Value::from(7),
            Value::from("slow"),
            Value::from(11),
        ];
        for (corr, want) in (1..).zip(want) {
            let f = c.next_app_frame().unwrap();
            assert_eq!(f.header.correlation_id, corr, "{codec:?}");
            assert_eq!(reply_data(codec, &f), want, "{codec:?} call {corr}");
        }
    }
    running.stop().unwrap();
}

#[matrix]
fn a_call_in_the_login_write_runs_after_connect_hooks_that_wait() {
    let server = server();
    server.on_client_connect(|c| async move {
        conduit::rt::sleep(std::time::Duration::from_millis(20)).await;
        c.send_message("welcome", Value::map()).await.unwrap();
    });
    let (running, addr) = start(&server);
    // v1 logs in with one frame, so a call can ride in the same write.
    let mut c = TestClient::connect(addr, Codec::V1).unwrap();
    let mut write = conduit_tests::forge::auth_frame(Codec::V1, PW, "test", "1");
    let args = Value::map().with("a", 2).with("b", 3);
    write.extend(conduit_tests::forge::rpc_frame(Codec::V1, 9, "add", &args));
    c.send_raw(&write).unwrap();
    assert_eq!(c.next_frame().unwrap().header.kind, FrameKind::AuthSuccess);
    let (name, _) = c.next_message().unwrap();
    assert_eq!(name, "welcome", "the hook ran first");
    let f = c.next_app_frame().unwrap();
    assert_eq!(f.header.correlation_id, 9);
    assert_eq!(reply_data(Codec::V1, &f), Value::from(5));
    running.stop().unwrap();
}
