//! The login exchange of both codecs as two state machines with no I/O, no clock and no
//! randomness: the caller passes each frame received, the time stamp to write and the
//! nonces, and sends what comes back. The server, the Rust client, the load generator
//! and the tests all log in through these two types, so there is one implementation of
//! each side.
//!
//! * netconduit-v1: the client sends `sha256(password)` in an AUTH_REQUEST; the server
//!   answers AUTH_SUCCESS or AUTH_FAILURE (netconduit 5.0.0's scheme, kept for its
//!   clients).
//! * native: challenge–response. Client `Hello{client_nonce}` → server
//!   `Challenge(server_nonce)` → client `Proof(HMAC(password, both nonces))` → server
//!   `AuthAccepted{server_proof, ..}`. The password never crosses the wire, a captured
//!   exchange cannot be replayed (a new server nonce every connection), and the client
//!   checks that the server knows the password too.

use bytes::Bytes;

use crate::header::{Codec, FrameKind};
use crate::native::{self, ArchivedAuthAccepted, ArchivedAuthStep, ArchivedReason};
use crate::v1::{self, V1Limits, V1Payload};
use crate::{auth, Frame, Value, WireError};

/// Why a login did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The server refused the login (AUTH_FAILURE), with its reason.
    #[error("login refused: {0}")]
    Rejected(String),
    /// The server accepted a native proof but could not prove it knows the password
    /// itself: it is not the server the client meant to reach.
    #[error("the server could not prove it knows the password")]
    ServerProofInvalid,
    /// A frame out of order for the exchange (a proof before a hello, a message before
    /// login…).
    #[error("unexpected frame during login: {0}")]
    Unexpected(&'static str),
    /// A frame of the exchange could not be decoded or encoded.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// What the server said at the end of a successful login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginInfo {
    /// The connection id the server assigned (native logins only).
    pub connection_id: Option<u64>,
    /// The server's name.
    pub server_name: String,
    /// The server's version.
    pub server_version: String,
}

/// What the client does after a handshake frame.
#[derive(Debug)]
pub enum ClientStep {
    /// Send this frame and wait for the server's next one.
    Send(Bytes),
    /// Logged in.
    Done(LoginInfo),
}

#[derive(Debug)]
enum ClientState {
    Start,
    /// v1: AUTH_REQUEST sent.
    SentHash,
    /// Native: Hello sent.
    SentHello,
    /// Native: proof sent for this server nonce.
    SentProof {
        server_nonce: auth::Nonce,
    },
    /// Either codec: a token sent; AUTH_SUCCESS or AUTH_FAILURE comes next.
    SentToken,
    Finished,
}

/// The client's side of one login attempt.
#[derive(Debug)]
pub struct ClientHandshake {
    /// The codec the connection will speak (fixed by the first frame).
    codec: Codec,
    /// Kept to compute the native proof and check the server's.
    password: String,
    /// A signed token to log in with instead of the password.
    token: Option<String>,
    /// Fresh CSPRNG output from the caller; binds the proofs to this attempt.
    client_nonce: auth::Nonce,
    /// Reported to the server in the first frame.
    client_name: String,
    /// Reported to the server in the first frame.
    client_version: String,
    /// Where the exchange stands.
    state: ClientState,
}

impl ClientHandshake {
    /// A handshake; `client_nonce` must be fresh CSPRNG output (native logins).
    pub fn new(
        codec: Codec,
        password: &str,
        client_nonce: auth::Nonce,
        client_name: &str,
        client_version: &str,
    ) -> ClientHandshake {
        ClientHandshake {
            codec,
            password: password.to_owned(),
            token: None,
            client_nonce,
            client_name: client_name.to_owned(),
            client_version: client_version.to_owned(),
            state: ClientState::Start,
        }
    }

    /// A handshake that logs in with a signed `token` instead of a password.
    pub fn with_token(
        codec: Codec,
        token: &str,
        client_name: &str,
        client_version: &str,
    ) -> ClientHandshake {
        ClientHandshake {
            token: Some(token.to_owned()),
            ..ClientHandshake::new(codec, "", [0; 32], client_name, client_version)
        }
    }

    /// The first frame to send, stamped `timestamp_ms`.
    pub fn start(&mut self, timestamp_ms: u64) -> Result<Bytes, HandshakeError> {
        if let Some(token) = &self.token {
            self.state = ClientState::SentToken;
            return token_frame(
                self.codec,
                token,
                &self.client_name,
                &self.client_version,
                timestamp_ms,
            );
        }
        match self.codec {
            Codec::V1 => {
                self.state = ClientState::SentHash;
                Ok(v1::Encoder::new(timestamp_ms).auth_request(
                    &auth::v1_password_hash(&self.password),
                    &self.client_name,
                    &self.client_version,
                ))
            }
            Codec::Native => {
                self.state = ClientState::SentHello;
                let hello = native::AuthStep::Hello(native::Hello {
                    client_nonce: self.client_nonce,
                    client_name: self.client_name.clone(),
                    client_version: self.client_version.clone(),
                });
                Ok(native::Encoder::new(timestamp_ms).auth_step(&hello)?)
            }
        }
    }

    /// Takes the server's next login frame.
    pub fn on_frame(
        &mut self,
        frame: &Frame<'_>,
        limits: &V1Limits,
        timestamp_ms: u64,
    ) -> Result<ClientStep, HandshakeError> {
        let kind = frame.header.kind;
        if kind == FrameKind::AuthFailure {
            self.state = ClientState::Finished;
            return Err(HandshakeError::Rejected(failure_reason(frame, limits)));
        }
        match (&self.state, frame.header.codec) {
            (ClientState::SentHash | ClientState::SentToken, Codec::V1) => {
                match v1::decode(&frame.header, frame.payload, limits)? {
                    V1Payload::AuthSuccess {
                        server_name,
                        server_version,
                        ..
                    } => {
                        self.state = ClientState::Finished;
                        Ok(ClientStep::Done(LoginInfo {
                            connection_id: None,
                            server_name,
                            server_version,
                        }))
                    }
                    _ => Err(HandshakeError::Unexpected(
                        "expected AUTH_SUCCESS or AUTH_FAILURE",
                    )),
                }
            }
            (ClientState::SentHello, Codec::Native) if kind == FrameKind::AuthRequest => {
                let server_nonce = match native::access::<ArchivedAuthStep>(frame.payload)? {
                    ArchivedAuthStep::Challenge(n) => *n,
                    _ => {
                        return Err(HandshakeError::Unexpected(
                            "expected the server's challenge",
                        ))
                    }
                };
                let proof =
                    auth::client_proof(self.password.as_bytes(), &server_nonce, &self.client_nonce);
                self.state = ClientState::SentProof { server_nonce };
                Ok(ClientStep::Send(
                    native::Encoder::new(timestamp_ms)
                        .auth_step(&native::AuthStep::Proof(proof))?,
                ))
            }
            (ClientState::SentProof { server_nonce }, Codec::Native)
                if kind == FrameKind::AuthSuccess =>
            {
                let accepted = native::access::<ArchivedAuthAccepted>(frame.payload)?;
                let genuine = auth::verify_server_proof(
                    self.password.as_bytes(),
                    server_nonce,
                    &self.client_nonce,
                    &accepted.server_proof,
                );
                self.state = ClientState::Finished;
                if !genuine {
                    return Err(HandshakeError::ServerProofInvalid);
                }
                Ok(ClientStep::Done(LoginInfo {
                    connection_id: Some(accepted.connection_id.to_native()),
                    server_name: accepted.server_name.as_str().to_owned(),
                    server_version: accepted.server_version.as_str().to_owned(),
                }))
            }
            (ClientState::SentToken, Codec::Native) if kind == FrameKind::AuthSuccess => {
                // No server proof without a shared password: TLS proves the server.
                let accepted = native::access::<ArchivedAuthAccepted>(frame.payload)?;
                self.state = ClientState::Finished;
                Ok(ClientStep::Done(LoginInfo {
                    connection_id: Some(accepted.connection_id.to_native()),
                    server_name: accepted.server_name.as_str().to_owned(),
                    server_version: accepted.server_version.as_str().to_owned(),
                }))
            }
            _ => Err(HandshakeError::Unexpected("unexpected frame during login")),
        }
    }
}

/// An AUTH_REQUEST carrying `token`: a token login, or after login a refreshed token
/// (the server answers AUTH_SUCCESS, or closes the connection).
pub fn token_frame(
    codec: Codec,
    token: &str,
    client_name: &str,
    client_version: &str,
    timestamp_ms: u64,
) -> Result<Bytes, HandshakeError> {
    Ok(match codec {
        Codec::V1 => {
            v1::Encoder::new(timestamp_ms).auth_request_token(token, client_name, client_version)
        }
        Codec::Native => native::Encoder::new(timestamp_ms).auth_step(&native::AuthStep::Token(
            native::TokenLogin {
                token: token.to_owned(),
                client_name: client_name.to_owned(),
                client_version: client_version.to_owned(),
            },
        ))?,
    })
}

/// The token an AUTH_REQUEST carries, if it is a token login or refresh.
pub fn token_in(frame: &Frame<'_>, limits: &V1Limits) -> Result<Option<String>, HandshakeError> {
    if frame.header.kind != FrameKind::AuthRequest {
        return Ok(None);
    }
    Ok(match frame.header.codec {
        Codec::V1 => match v1::decode(&frame.header, frame.payload, limits)? {
            V1Payload::AuthRequest { token, .. } => token,
            _ => None,
        },
        Codec::Native => match native::access::<ArchivedAuthStep>(frame.payload)? {
            ArchivedAuthStep::Token(t) => Some(t.token.as_str().to_owned()),
            _ => None,
        },
    })
}

/// The AUTH_SUCCESS for an accepted token (login or refresh), in `codec`.
pub fn token_accepted(
    codec: Codec,
    creds: &ServerCredentials,
    session_token: &str,
    connection_id: u64,
    timestamp_ms: u64,
) -> Result<Bytes, HandshakeError> {
    Ok(match codec {
        Codec::V1 => v1::Encoder::new(timestamp_ms).auth_success(
            session_token,
            &creds.server_name,
            &creds.server_version,
        ),
        Codec::Native => {
            native::Encoder::new(timestamp_ms).auth_accepted(&native::AuthAccepted {
                server_proof: [0; 32],
                connection_id,
                server_name: creds.server_name.clone(),
                server_version: creds.server_version.clone(),
            })?
        }
    })
}

/// The reason text of an AUTH_FAILURE (or CLOSE) frame, best effort: an undecodable
/// reason is an empty one, never a second error.
pub fn failure_reason(frame: &Frame<'_>, limits: &V1Limits) -> String {
    match frame.header.codec {
        Codec::V1 => match v1::decode(&frame.header, frame.payload, limits) {
            Ok(V1Payload::AuthFailure { reason }) => reason,
            Ok(V1Payload::Other { payload, .. }) => payload
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            _ => String::new(),
        },
        Codec::Native => native::access::<ArchivedReason>(frame.payload)
            .map(|r| r.reason.as_str().to_owned())
            .unwrap_or_default(),
    }
}

/// What the server knows to check a login, shared by every connection.
#[derive(Clone)]
pub struct ServerCredentials {
    /// The shared password, for native proofs.
    pub password: String,
    /// `sha256(password)` as lowercase hex, for netconduit-v1 logins (computed once).
    pub v1_password_hash: String,
    /// Sent in AUTH_SUCCESS.
    pub server_name: String,
    /// Sent in AUTH_SUCCESS.
    pub server_version: String,
    /// Whether the password logs in (off: tokens only).
    pub allow_password: bool,
}

impl std::fmt::Debug for ServerCredentials {
    /// Never prints the password or its hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCredentials")
            .field("server_name", &self.server_name)
            .field("server_version", &self.server_version)
            .finish_non_exhaustive()
    }
}

impl ServerCredentials {
    /// Credentials for `password`, announcing `server_name` and `server_version`.
    pub fn new(password: &str, server_name: &str, server_version: &str) -> ServerCredentials {
        ServerCredentials {
            password: password.to_owned(),
            v1_password_hash: auth::v1_password_hash(password),
            server_name: server_name.to_owned(),
            server_version: server_version.to_owned(),
            allow_password: true,
        }
    }
}

/// What the server does after a client's login frame.
#[derive(Debug)]
pub enum ServerStep {
    /// Send this frame (the native challenge) and wait for the next.
    Send(Bytes),
    /// Logged in: send `reply` (AUTH_SUCCESS).
    Accepted {
        /// The AUTH_SUCCESS frame.
        reply: Bytes,
        /// The client's self-reported name, if it sent one.
        client_name: Option<String>,
    },
    /// A token login: the caller verifies `token`, then answers with
    /// [`ServerHandshake::accept_token`] or treats it as [`ServerStep::Rejected`].
    Token {
        /// The token as sent.
        token: String,
        /// The client's self-reported name, if it sent one.
        client_name: Option<String>,
    },
    /// Wrong password or proof (or a password where only tokens log in). The caller
    /// decides when to send the AUTH_FAILURE (a brake against guessing) and closes.
    Rejected,
}

#[derive(Debug)]
enum ServerState {
    /// Waiting for the first AUTH_REQUEST.
    Start,
    /// Native: the challenge went out; waiting for the proof.
    Challenged { client_nonce: auth::Nonce },
    /// A token arrived; waiting for the caller's verdict.
    TokenSent { codec: Codec },
    /// Accepted or rejected: no further login frame is taken.
    Finished,
}

/// The server's side of one connection's login.
#[derive(Debug)]
pub struct ServerHandshake {
    /// Fresh CSPRNG output from the caller: makes every native exchange unique, so a
    /// captured proof cannot be replayed.
    server_nonce: auth::Nonce,
    /// 128 hex characters for the v1 AUTH_SUCCESS (netconduit sends one; unused after).
    session_token: String,
    /// The id reported to native clients at login.
    connection_id: u64,
    /// Where the exchange stands.
    state: ServerState,
}

impl ServerHandshake {
    /// The server side of a login; `server_nonce` and `session_token` must come from a
    /// CSPRNG.
    pub fn new(
        server_nonce: auth::Nonce,
        session_token: String,
        connection_id: u64,
    ) -> ServerHandshake {
        ServerHandshake {
            server_nonce,
            session_token,
            connection_id,
            state: ServerState::Start,
        }
    }

    /// Whether the exchange has ended (either way).
    pub fn is_finished(&self) -> bool {
        matches!(self.state, ServerState::Finished)
    }

    /// The AUTH_SUCCESS for the token of the last [`ServerStep::Token`], once the
    /// caller verified it.
    pub fn accept_token(
        &mut self,
        creds: &ServerCredentials,
        timestamp_ms: u64,
    ) -> Result<Bytes, HandshakeError> {
        let ServerState::TokenSent { codec } = self.state else {
            return Err(HandshakeError::Unexpected("no token to accept"));
        };
        self.state = ServerState::Finished;
        token_accepted(
            codec,
            creds,
            &self.session_token,
            self.connection_id,
            timestamp_ms,
        )
    }

    /// Takes one AUTH_REQUEST frame from the client.
    pub fn on_frame(
        &mut self,
        frame: &Frame<'_>,
        creds: &ServerCredentials,
        limits: &V1Limits,
        timestamp_ms: u64,
    ) -> Result<ServerStep, HandshakeError> {
        if frame.header.kind != FrameKind::AuthRequest
            || !matches!(
                self.state,
                ServerState::Start | ServerState::Challenged { .. }
            )
        {
            return Err(HandshakeError::Unexpected("only AUTH_REQUEST is accepted"));
        }
        match frame.header.codec {
            Codec::V1 => self.v1(frame, creds, limits, timestamp_ms),
            Codec::Native => self.native(frame, creds, timestamp_ms),
        }
    }

    fn v1(
        &mut self,
        frame: &Frame<'_>,
        creds: &ServerCredentials,
        limits: &V1Limits,
        timestamp_ms: u64,
    ) -> Result<ServerStep, HandshakeError> {
        let (hash, token, client_name) = match v1::decode(&frame.header, frame.payload, limits)? {
            V1Payload::AuthRequest {
                password_hash,
                token,
                client_name,
                ..
            } => (password_hash, token, client_name),
            _ => {
                return Err(HandshakeError::Wire(WireError::Msgpack(
                    "not an auth request",
                )))
            }
        };
        if let Some(token) = token {
            self.state = ServerState::TokenSent { codec: Codec::V1 };
            return Ok(ServerStep::Token { token, client_name });
        }
        self.state = ServerState::Finished;
        let hash = hash.unwrap_or_default();
        if !creds.allow_password || !auth::v1_verify(&creds.v1_password_hash, &hash) {
            return Ok(ServerStep::Rejected);
        }
        let reply = v1::Encoder::new(timestamp_ms).auth_success(
            &self.session_token,
            &creds.server_name,
            &creds.server_version,
        );
        Ok(ServerStep::Accepted { reply, client_name })
    }

    fn native(
        &mut self,
        frame: &Frame<'_>,
        creds: &ServerCredentials,
        timestamp_ms: u64,
    ) -> Result<ServerStep, HandshakeError> {
        let step = native::access::<ArchivedAuthStep>(frame.payload)?;
        let enc = native::Encoder::new(timestamp_ms);
        match (&self.state, step) {
            (ServerState::Start, ArchivedAuthStep::Token(t)) => {
                self.state = ServerState::TokenSent {
                    codec: Codec::Native,
                };
                Ok(ServerStep::Token {
                    token: t.token.as_str().to_owned(),
                    client_name: Some(t.client_name.as_str().to_owned()),
                })
            }
            (ServerState::Start, ArchivedAuthStep::Hello(_)) if !creds.allow_password => {
                self.state = ServerState::Finished;
                Ok(ServerStep::Rejected)
            }
            (ServerState::Start, ArchivedAuthStep::Hello(hello)) => {
                self.state = ServerState::Challenged {
                    client_nonce: hello.client_nonce,
                };
                Ok(ServerStep::Send(enc.auth_step(
                    &native::AuthStep::Challenge(self.server_nonce),
                )?))
            }
            (ServerState::Challenged { client_nonce }, ArchivedAuthStep::Proof(proof)) => {
                let client_nonce = *client_nonce;
                self.state = ServerState::Finished;
                let password = creds.password.as_bytes();
                if !auth::verify_client_proof(password, &self.server_nonce, &client_nonce, proof) {
                    return Ok(ServerStep::Rejected);
                }
                let accepted = native::AuthAccepted {
                    server_proof: auth::server_proof(password, &self.server_nonce, &client_nonce),
                    connection_id: self.connection_id,
                    server_name: creds.server_name.clone(),
                    server_version: creds.server_version.clone(),
                };
                Ok(ServerStep::Accepted {
                    reply: enc.auth_accepted(&accepted)?,
                    client_name: None,
                })
            }
            _ => Err(HandshakeError::Wire(WireError::Shape {
                kind: "AUTH_REQUEST",
                problem: "handshake step out of order",
            })),
        }
    }
}

#[cfg(test)]
mod tests;
