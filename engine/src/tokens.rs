//! Token logins: signed, expiring JWTs as an alternative to the one shared password —
//! what a browser page or a game client downloaded by players can carry safely (each
//! player its own token, from your login service; nothing to extract that opens the
//! server to everyone).
//!
//! The algorithm is pinned per key by configuration: a token is checked only with a key
//! whose algorithm equals the token's `alg`, so `none` and the HS/RS confusion (a token
//! "signed" with an RSA public key used as an HMAC secret) are refused. Several keys
//! may be active at once for rotation, chosen by the token's `kid`. `exp` and `sub` are
//! required; `iss` and `aud` are checked when configured; `nbf` is honoured; a small
//! leeway absorbs clock differences. A connection is closed when its token expires
//! (checked by the shard's heartbeat tick), unless the client refreshed it first with a
//! new token for the same subject.
//!
//! ```no_run
//! use conduit::tokens::{TokenAuth, TokenKey};
//! use conduit::{Server, ServerDescriptor, Value};
//!
//! # fn main() -> conduit::Result<()> {
//! # let pem: &[u8] = b"";
//! let keys = vec![
//!     TokenKey::ed25519_pem(Some("2026-12"), pem)?,
//!     TokenKey::hs256(Some("2026-11"), b"the previous key, rotated out next month")?,
//! ];
//! let tokens = TokenAuth::new(keys).issuer("login.example").allow_password(false);
//! let server = Server::new(ServerDescriptor::new("").tokens(tokens))?;
//! server.on("whoami", |conn, _data| async move {
//!     let sub = conn.token().map(|t| t.subject().to_owned()); // the verified `sub`
//!     let _ = conn.send_message("whoami", Value::from(sub.unwrap_or_default())).await;
//! });
//! server.run()
//! # }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::error::Error;

/// The signature algorithm a key verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenAlgorithm {
    /// HMAC-SHA256 with a shared secret (the login service and the server both hold it).
    Hs256,
    /// Ed25519 (`alg: EdDSA`): the server holds only the public key.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256: the server holds only the public key.
    Rs256,
}

impl TokenAlgorithm {
    fn jwt(self) -> Algorithm {
        match self {
            TokenAlgorithm::Hs256 => Algorithm::HS256,
            TokenAlgorithm::EdDsa => Algorithm::EdDSA,
            TokenAlgorithm::Rs256 => Algorithm::RS256,
        }
    }
}

/// One key tokens may be signed with.
#[derive(Clone)]
pub struct TokenKey {
    /// The `kid` tokens signed with it carry (`None`: tokens without a `kid`).
    kid: Option<String>,
    /// The only algorithm it verifies.
    algorithm: TokenAlgorithm,
    /// The key, parsed once.
    key: DecodingKey,
}

impl std::fmt::Debug for TokenKey {
    /// Never prints the key (an HMAC secret is a password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// An HS256 shared secret (at least 32 bytes, as RFC 7518 asks).
    pub fn hs256(kid: Option<&str>, secret: &[u8]) -> Result<TokenKey, Error> {
        if secret.len() < 32 {
            return Err(bad_key(format!(
                "an HS256 secret needs at least 32 bytes, this one has {}",
                secret.len()
            )));
        }
        let key = DecodingKey::from_secret(secret).map_err(|e| bad_key(e.to_string()))?;
        Ok(TokenKey::with(kid, TokenAlgorithm::Hs256, key))
    }

    /// An Ed25519 public key in PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn ed25519_pem(kid: Option<&str>, public_pem: &[u8]) -> Result<TokenKey, Error> {
        let key = DecodingKey::from_ed_pem(public_pem).map_err(|e| bad_key(e.to_string()))?;
        Ok(TokenKey::with(kid, TokenAlgorithm::EdDsa, key))
    }

    /// An RSA public key in PEM, for RS256.
    pub fn rs256_pem(kid: Option<&str>, public_pem: &[u8]) -> Result<TokenKey, Error> {
        let key = DecodingKey::from_rsa_pem(public_pem).map_err(|e| bad_key(e.to_string()))?;
        Ok(TokenKey::with(kid, TokenAlgorithm::Rs256, key))
    }

    fn with(kid: Option<&str>, algorithm: TokenAlgorithm, key: DecodingKey) -> TokenKey {
        TokenKey {
            kid: kid.map(str::to_owned),
            algorithm,
            key,
        }
    }

    /// Its `kid`.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> TokenAlgorithm {
        self.algorithm
    }
}

fn bad_key(problem: String) -> Error {
    Error::Config {
        field: "tokens",
        problem: format!("bad key: {problem}"),
    }
}

/// Token logins for a server ([`ServerDescriptor::tokens`](crate::ServerDescriptor::tokens)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TokenAuth {
    /// The keys tokens may be signed with (at least one; several for rotation, told
    /// apart by `kid`).
    pub keys: Vec<TokenKey>,
    /// Clock difference tolerated on `exp` and `nbf`. Default 5 s.
    pub leeway: Duration,
    /// When set, the `iss` a token must carry.
    pub issuer: Option<String>,
    /// When set, an `aud` a token must carry.
    pub audience: Option<String>,
    /// Whether the shared password still logs in. Default `true`; `false` makes tokens
    /// the only way in (what a server reached from browsers wants).
    pub allow_password: bool,
    /// Whether a logged-in client may send a new token (same `sub`) to push its
    /// connection's expiry back. Default `true`; either way a connection is closed
    /// once its current token expires.
    pub refresh: bool,
}

impl TokenAuth {
    /// Token logins with `keys` and default settings.
    pub fn new(keys: Vec<TokenKey>) -> TokenAuth {
        TokenAuth {
            keys,
            leeway: Duration::from_secs(5),
            issuer: None,
            audience: None,
            allow_password: true,
            refresh: true,
        }
    }

    /// Sets the required issuer.
    pub fn issuer(mut self, issuer: impl Into<String>) -> TokenAuth {
        self.issuer = Some(issuer.into());
        self
    }

    /// Sets the required audience.
    pub fn audience(mut self, audience: impl Into<String>) -> TokenAuth {
        self.audience = Some(audience.into());
        self
    }

    /// Sets the leeway.
    pub fn leeway(mut self, leeway: Duration) -> TokenAuth {
        self.leeway = leeway;
        self
    }

    /// Sets whether the password still logs in.
    pub fn allow_password(mut self, allow: bool) -> TokenAuth {
        self.allow_password = allow;
        self
    }

    /// Sets whether logged-in clients may refresh their token.
    pub fn refresh(mut self, refresh: bool) -> TokenAuth {
        self.refresh = refresh;
        self
    }

    /// Checks the settings; the error names what is wrong.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |problem: String| {
            Err(Error::Config {
                field: "tokens",
                problem,
            })
        };
        if self.keys.is_empty() {
            return bad("needs at least one key".into());
        }
        let mut kids: Vec<Option<&str>> = self.keys.iter().map(TokenKey::kid).collect();
        kids.sort_unstable();
        if kids.windows(2).any(|w| w[0] == w[1]) {
            return bad("two keys have the same kid (or both have none)".into());
        }
        if self.leeway > Duration::from_secs(300) {
            return bad("leeway above 5 minutes".into());
        }
        Ok(())
    }
}

/// What a verified token said: available to every handler of its connection
/// ([`Connection::token`](crate::Connection::token)).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenClaims {
    /// `sub`: who the token is for.
    subject: String,
    /// `exp`, seconds since the Unix epoch.
    expires_at_s: u64,
    /// Every claim as sent, `sub` and `exp` included.
    claims: serde_json::Map<String, serde_json::Value>,
}

impl TokenClaims {
    /// `sub`: who the token is for (your user id).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When the token expires (`exp`).
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.expires_at_s)
    }

    /// One claim by name (`"role"`, `"iss"`, …).
    pub fn get(&self, claim: &str) -> Option<&serde_json::Value> {
        self.claims.get(claim)
    }

    /// Every claim.
    pub fn claims(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.claims
    }

    /// `exp` in milliseconds since the epoch.
    pub(crate) fn expires_at_ms(&self) -> u64 {
        self.expires_at_s.saturating_mul(1000)
    }
}

/// Why a token was refused (logged; the peer only hears "authentication failed").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRefused {
    /// Not a JWT, or claims that are not a JSON object.
    #[error("not a well-formed token")]
    Malformed,
    /// No key for its `kid` (or it has none and the keys all do).
    #[error("no key for this token's kid")]
    UnknownKey,
    /// Its `alg` is not the one configured for its key (`none`, HS/RS confusion).
    #[error("algorithm not allowed for this key")]
    Algorithm,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `exp` has passed (beyond the leeway).
    #[error("expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("not valid yet")]
    NotYetValid,
    /// `iss` or `aud` does not match the configuration.
    #[error("wrong issuer or audience")]
    WrongParty,
    /// `exp` or `sub` is missing or not of its type.
    #[error("a required claim (exp, sub) is missing or malformed")]
    MissingClaim,
    /// A refreshed token names another subject than the connection's.
    #[error("a refreshed token must keep its subject")]
    OtherSubject,
}

/// The keys of a run, ready to verify.
pub(crate) struct Verifier {
    /// Each key with the validation pinned to its algorithm.
    keys: Vec<(TokenKey, Validation)>,
    /// Whether logged-in clients may refresh.
    pub refresh: bool,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier for `auth` (validated first).
    pub fn new(auth: &TokenAuth) -> Result<Arc<Verifier>, Error> {
        auth.validate()?;
        let keys = auth
            .keys
            .iter()
            .map(|k| {
                let mut v = Validation::new(k.algorithm.jwt());
                v.algorithms = vec![k.algorithm.jwt()];
                v.leeway = auth.leeway.as_secs();
                v.validate_nbf = true;
                v.set_required_spec_claims(&["exp", "sub"]);
                match &auth.issuer {
                    Some(iss) => v.set_issuer(&[iss]),
                    None => v.iss = None,
                }
                match &auth.audience {
                    Some(aud) => v.set_audience(&[aud]),
                    None => v.validate_aud = false,
                }
                (k.clone(), v)
            })
            .collect();
        Ok(Arc::new(Verifier {
            keys,
            refresh: auth.refresh,
        }))
    }

    /// Verifies `token`; its claims, or why not.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, TokenRefused> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRefused::Malformed)?;
        let (key, validation) = self
            .keys
            .iter()
            .find(|(k, _)| k.kid.as_deref() == header.kid.as_deref())
            .ok_or(TokenRefused::UnknownKey)?;
        if header.alg != key.algorithm.jwt() {
            return Err(TokenRefused::Algorithm);
        }
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token, &key.key, validation,
        )
        .map_err(|e| refused(e.kind()))?;
        let claims = data.claims;
        let subject = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .ok_or(TokenRefused::MissingClaim)?
            .to_owned();
        let expires_at_s = claims
            .get("exp")
            .and_then(serde_json::Value::as_u64)
            .ok_or(TokenRefused::MissingClaim)?;
        Ok(TokenClaims {
            subject,
            expires_at_s,
            claims,
        })
    }
}

fn refused(kind: &jsonwebtoken::errors::ErrorKind) -> TokenRefused {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => TokenRefused::Signature,
        K::ExpiredSignature => TokenRefused::Expired,
        K::ImmatureSignature => TokenRefused::NotYetValid,
        K::InvalidIssuer | K::InvalidAudience => TokenRefused::WrongParty,
        K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) => TokenRefused::MissingClaim,
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => {
            TokenRefused::Algorithm
        }
        _ => TokenRefused::Malformed,
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests fail loudly on the first unexpected error"
    )]
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now_s() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs(kid: Option<&str>, secret: &[u8], claims: serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = kid.map(str::to_owned);
        encode(&h, &claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
    }

    fn verifier(auth: TokenAuth) -> Arc<Verifier> {
        Verifier::new(&auth).unwrap()
    }

    #[test]
    fn a_good_token_gives_its_claims_and_bad_ones_say_why() {
        let v = verifier(TokenAuth::new(vec![TokenKey::hs256(None, SECRET).unwrap()]));
        let exp = now_s() + 60;
        let good = hs(
            None,
            SECRET,
            json!({"sub": "ann", "exp": exp, "role": "admin"}),
        );
        let c = v.verify(&good).unwrap();
        assert_eq!(c.subject(), "ann");
        assert_eq!(c.get("role"), Some(&json!("admin")));
        assert_eq!(c.expires_at_ms(), exp * 1000);
        let wrong = hs(
            None,
            b"another secret of 32 bytes......",
            json!({"sub": "a", "exp": exp}),
        );
        assert_eq!(v.verify(&wrong), Err(TokenRefused::Signature));
        let old = hs(None, SECRET, json!({"sub": "a", "exp": now_s() - 60}));
        assert_eq!(v.verify(&old), Err(TokenRefused::Expired));
        let soon = hs(None, SECRET, json!({"sub": "a", "exp": now_s() - 2}));
        assert!(v.verify(&soon).is_ok(), "within the 5 s leeway");
        let later = hs(
            None,
            SECRET,
            json!({"sub": "a", "exp": exp, "nbf": now_s() + 60}),
        );
        assert_eq!(v.verify(&later), Err(TokenRefused::NotYetValid));
        let nobody = hs(None, SECRET, json!({"exp": exp}));
        assert_eq!(v.verify(&nobody), Err(TokenRefused::MissingClaim));
        assert_eq!(v.verify("not a token"), Err(TokenRefused::Malformed));
        // `alg: none`, unsigned.
        let none = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", "eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ"
        );
        assert!(v.verify(&none).is_err());
    }

    #[test]
    fn keys_rotate_by_kid_and_issuer_audience_are_checked() {
        let other: &[u8] = b"fedcba9876543210fedcba9876543210";
        let v = verifier(
            TokenAuth::new(vec![
                TokenKey::hs256(Some("k1"), SECRET).unwrap(),
                TokenKey::hs256(Some("k2"), other).unwrap(),
            ])
            .issuer("login")
            .audience("game"),
        );
        let claims = json!({"sub": "a", "exp": now_s() + 60, "iss": "login", "aud": "game"});
        assert!(v.verify(&hs(Some("k1"), SECRET, claims.clone())).is_ok());
        assert!(v.verify(&hs(Some("k2"), other, claims.clone())).is_ok());
        assert_eq!(
            v.verify(&hs(Some("k1"), other, claims.clone())),
            Err(TokenRefused::Signature)
        );
        assert_eq!(
            v.verify(&hs(Some("k3"), SECRET, claims.clone())),
            Err(TokenRefused::UnknownKey)
        );
        assert_eq!(
            v.verify(&hs(None, SECRET, claims)),
            Err(TokenRefused::UnknownKey)
        );
        let elsewhere = json!({"sub": "a", "exp": now_s() + 60, "iss": "evil", "aud": "game"});
        assert_eq!(
            v.verify(&hs(Some("k1"), SECRET, elsewhere)),
            Err(TokenRefused::WrongParty)
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(TokenKey::hs256(None, b"short").is_err());
        assert!(TokenKey::rs256_pem(None, b"not pem").is_err());
        let k = TokenKey::hs256(None, SECRET).unwrap();
        assert!(!format!("{k:?}").contains("0123"));
        assert!(TokenAuth::new(vec![]).validate().is_err());
        assert!(TokenAuth::new(vec![k.clone(), k]).validate().is_err());
    }
}
