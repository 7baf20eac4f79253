//! Token logins in the core: a token sent to log in is checked before AUTH_SUCCESS, and
//! a logged-in peer's new token replaces the old one (and its expiry) when it names the
//! same subject.

use std::sync::Arc;

use conduit_protocol::handshake::{token_accepted, token_in, HandshakeError};
use conduit_protocol::{Frame, WireError};

use super::{ConnCore, Event};
use crate::tokens::{TokenClaims, TokenRefused};

impl ConnCore {
    /// Verifies a token sent to log in: the AUTH_SUCCESS to send and the claims, or
    /// `Rejected` (logged with the reason; the peer hears only that login failed).
    pub(super) fn check_token(
        &mut self,
        token: &str,
        timestamp_ms: u64,
    ) -> Result<(bytes::Bytes, Arc<TokenClaims>), HandshakeError> {
        let claims = match self.config.tokens.as_ref().map(|v| v.verify(token)) {
            Some(Ok(c)) => c,
            Some(Err(why)) => {
                tracing::info!(conn = %self.id, "token refused: {why}");
                return Err(HandshakeError::Rejected(String::new()));
            }
            None => {
                tracing::info!(conn = %self.id, "token refused: this server takes no tokens");
                return Err(HandshakeError::Rejected(String::new()));
            }
        };
        let reply = self
            .handshake
            .as_mut()
            .ok_or(HandshakeError::Unexpected("no login in progress"))?
            .accept_token(&self.config.creds, timestamp_ms)?;
        Ok((reply, Arc::new(claims)))
    }

    /// A logged-in peer's new token: with the same subject it replaces the old one
    /// (and its expiry) and is answered AUTH_SUCCESS; otherwise it is answered
    /// AUTH_FAILURE and the old token stays (and still expires).
    pub(super) fn refresh<'d>(
        &mut self,
        frame: &Frame<'d>,
        timestamp_ms: u64,
    ) -> Option<Event<'d>> {
        let codec = frame.header.codec;
        let verifier = self.config.tokens.clone()?;
        if !verifier.refresh {
            // Answered, so a client waiting for the verdict is not left hanging.
            let failure = self
                .encoder(timestamp_ms)
                .auth_failure("token refresh not accepted");
            return self.transmit(failure).map(Event::Close);
        }
        let token = match token_in(frame, &self.config.v1_limits) {
            Ok(Some(t)) => t,
            Ok(None) => return None,
            Err(HandshakeError::Wire(e)) => {
                return Some(Event::Close(self.misbehaved((&e).into(), timestamp_ms)))
            }
            Err(_) => return None,
        };
        let subject = self.token.as_ref().map(|t| t.subject().to_owned());
        let checked = verifier.verify(&token).and_then(|c| {
            if Some(c.subject()) == subject.as_deref() {
                Ok(c)
            } else {
                Err(TokenRefused::OtherSubject)
            }
        });
        match checked {
            Ok(claims) => {
                let claims = Arc::new(claims);
                self.token = Some(claims.clone());
                let reply = token_accepted(
                    codec,
                    &self.config.creds,
                    "",
                    self.id.as_u64(),
                    timestamp_ms,
                )
                .map_err(|_| WireError::Msgpack("cannot encode AUTH_SUCCESS"));
                if let Some(close) = self.transmit(reply) {
                    return Some(Event::Close(close));
                }
                Some(Event::TokenRefreshed(claims))
            }
            Err(why) => {
                tracing::info!(conn = %self.id, "token refresh refused: {why}");
                let failure = self.encoder(timestamp_ms).auth_failure("token refused");
                self.transmit(failure).map(Event::Close)
            }
        }
    }
}
