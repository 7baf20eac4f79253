//! Authentication proofs for both codecs. Nonces are inputs: randomness, like time,
//! belongs to the caller.
//!
//! * netconduit-v1: the client sends `sha256(password)` as 64 lowercase hex characters;
//!   the server compares in constant time. No challenge, so a captured hash can be
//!   replayed — that is netconduit's scheme, kept for compatibility and switchable off.
//! * native: challenge–response. Each side contributes a fresh 32-byte nonce; the client
//!   proves knowledge of the password with `HMAC-SHA256(password, "conduit client" |
//!   server_nonce | client_nonce)`, the server answers with the same over
//!   `"conduit server"`. The password never crosses the wire and a captured proof is
//!   useless against a new server nonce.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::native::NONCE_LEN;

type HmacSha256 = Hmac<Sha256>;

/// A handshake nonce.
pub type Nonce = [u8; NONCE_LEN];

/// A 32-byte HMAC-SHA256 proof.
pub type Proof = [u8; 32];

const CLIENT_LABEL: &[u8] = b"conduit client";
const SERVER_LABEL: &[u8] = b"conduit server";

/// netconduit-v1: the `password_hash` a client sends, `sha256(password)` as lowercase hex.
pub fn v1_password_hash(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

/// netconduit-v1: whether `given` equals `expected`, compared in constant time
/// (the length is not secret: every valid hash has 64 characters).
pub fn v1_verify(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

fn mac(password: &[u8], label: &[u8], first: &Nonce, second: &Nonce) -> HmacSha256 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(password) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(label);
    m.update(first);
    m.update(second);
    m
}

/// Native: the client's proof for this handshake.
pub fn client_proof(password: &[u8], server_nonce: &Nonce, client_nonce: &Nonce) -> Proof {
    mac(password, CLIENT_LABEL, server_nonce, client_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Native: checks a client's proof in constant time.
pub fn verify_client_proof(
    password: &[u8],
    server_nonce: &Nonce,
    client_nonce: &Nonce,
    proof: &Proof,
) -> bool {
    mac(password, CLIENT_LABEL, server_nonce, client_nonce)
        .verify_slice(proof)
        .is_ok()
}

/// Native: the server's proof, which lets the client know it reached a server that
/// holds the password.
pub fn server_proof(password: &[u8], server_nonce: &Nonce, client_nonce: &Nonce) -> Proof {
    mac(password, SERVER_LABEL, client_nonce, server_nonce)
        .finalize()
        .into_bytes()
        .into()
}

/// Native: checks the server's proof in constant time.
pub fn verify_server_proof(
    password: &[u8],
    server_nonce: &Nonce,
    client_nonce: &Nonce,
    proof: &Proof,
) -> bool {
    mac(password, SERVER_LABEL, client_nonce, server_nonce)
        .verify_slice(proof)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_hash_matches_the_capture() {
        // From the netconduit capture: sha256("secret").
        assert_eq!(
            v1_password_hash("secret"),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        let h = v1_password_hash("secret");
        assert!(v1_verify(&h, &h));
        assert!(!v1_verify(&h, &h.to_uppercase()));
        assert!(!v1_verify(&h, "secret"));
    }

    #[test]
    fn native_proofs() {
        let (s, c) = ([1u8; 32], [2u8; 32]);
        let p = client_proof(b"pw", &s, &c);
        assert!(verify_client_proof(b"pw", &s, &c, &p));
        assert!(!verify_client_proof(b"other", &s, &c, &p));
        // A captured proof does not answer a new challenge.
        assert!(!verify_client_proof(b"pw", &[3u8; 32], &c, &p));
        // Client and server proofs differ, so one cannot be reflected as the other.
        let sp = server_proof(b"pw", &s, &c);
        assert_ne!(sp, p);
        assert!(verify_server_proof(b"pw", &s, &c, &sp));
        assert!(!verify_server_proof(b"pw", &s, &c, &p));
    }
}
