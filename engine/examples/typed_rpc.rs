//! The Server Guide's "With Type Validation", "With Pydantic Models" and "Error Handling
//! in RPC": typed arguments with defaults, a validated request struct, and errors that
//! reach the client with a code and a message.
//!
//! `cargo run --example typed_rpc` (port 8080, password `secret`; `PORT` overrides).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use conduit::{rpc, RpcError, Server, ServerDescriptor, State, Value};
use serde::{Deserialize, Serialize};

#[path = "common/mod.rs"]
mod common;

/// The example's user store.
#[derive(Default)]
pub struct Db {
    next_id: AtomicI64,
    users: Mutex<HashMap<i64, Value>>,
}

impl Db {
    fn insert(&self, user: Value) -> i64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut users) = self.users.lock() {
            users.insert(id, user.with("id", id));
        }
        id
    }
}

/// Create a new user.
///
/// Arguments are validated automatically: username, email and age must be given with
/// the right types; active defaults to true.
#[rpc]
async fn create_user(
    db: State<Db>,
    username: String,
    email: String,
    age: i64,
    #[default(true)] active: bool,
) -> Value {
    let user = Value::map()
        .with("username", username)
        .with("email", email)
        .with("age", age)
        .with("active", active);
    let id = db.insert(user.clone());
    user.with("id", id)
}

/// The validated request of `create_user_model` (the guide's pydantic model).
#[derive(Deserialize, garde::Validate)]
pub struct CreateUserRequest {
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

/// What `create_user_model` returns.
#[derive(Serialize)]
pub struct UserResponse {
    id: i64,
    username: String,
    email: String,
    roles: Vec<String>,
    created_at: String,
}

/// Validates: username 3-30 characters, email valid, age 0-150, roles a list of strings.
#[rpc]
async fn create_user_model(db: State<Db>, #[validate] request: CreateUserRequest) -> UserResponse {
    let id = db.insert(
        Value::map()
            .with("username", request.username.as_str())
            .with("email", request.email.as_str())
            .with("age", request.age),
    );
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UserResponse {
        id,
        username: request.username,
        email: request.email,
        roles: request.roles,
        created_at: format!("{secs}"),
    }
}

/// Divide a by b.
#[rpc]
async fn divide(a: f64, b: f64) -> Result<f64, RpcError> {
    if b == 0.0 {
        // Sent to the client as code 1001, "Error in divide: Cannot divide by zero".
        return Err("Cannot divide by zero".into());
    }
    Ok(a / b)
}

/// Look a user up by id.
#[rpc]
async fn get_user(db: State<Db>, user_id: i64) -> Result<Value, RpcError> {
    let users = db
        .users
        .lock()
        .map_err(|_| RpcError::failed("user store unavailable"))?;
    users
        .get(&user_id)
        .cloned()
        .ok_or_else(|| RpcError::failed(format!("'User {user_id} not found'")))
}

/// Builds the server (used by `main` and by the tests).
pub fn build(desc: ServerDescriptor) -> conduit::Result<Server> {
    let server = Server::new(desc)?;
    server.manage(Db::default());
    server.rpc(create_user);
    server.rpc(create_user_model);
    server.rpc(divide);
    server.rpc(get_user);
    Ok(server)
}

#[allow(
    dead_code,
    reason = "tests/examples.rs includes this file as a module and calls `build`, not `main`"
)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_logging()?;
    let server = build(ServerDescriptor::new("secret").port(common::port(8080)))?;
    server.run()?;
    Ok(())
}
