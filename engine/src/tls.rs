//! TLS on the server's listeners (rustls with the `ring` provider): the TCP listener
//! and, when set, the WebSocket one (`wss://`) both speak TLS once
//! [`ServerDescriptor::tls`](crate::ServerDescriptor::tls) is set.
//!
//! The handshake comes first, before anything else is read (a WebSocket upgrade
//! happens inside TLS). During it the connection holds a `max_connections` slot and
//! counts as logging in (`max_pending`, `max_pending_per_source`), so handshakes in
//! flight are bounded by the login budget; it must finish within
//! `tls_handshake_timeout` (and `auth_timeout`). A connection refused for a budget is
//! closed without a word: it cannot be told in plain text.
//!
//! The certificate can be replaced while the server runs:
//! [`Router::reload_tls`](crate::Router::reload_tls) reads the files again; new
//! connections get the new certificate, existing ones keep theirs. A file that does
//! not load is refused and the certificate in use stays.
//!
//! With [`TlsSettings::client_ca`], clients present a certificate signed by that CA
//! (required, or optional); a handler sees it with
//! [`Connection::peer_certificate`](crate::Connection::peer_certificate).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// Whether clients must present a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// A client without a valid certificate is refused during the handshake.
    Required,
    /// A client may present one (then it must be valid) or none.
    Optional,
}

/// The server's TLS settings ([`ServerDescriptor::tls`](crate::ServerDescriptor::tls)):
/// PEM files read at [`Server::new`](crate::Server::new) and again at each
/// [`Router::reload_tls`](crate::Router::reload_tls).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsSettings {
    /// The certificate chain, leaf first (PEM `CERTIFICATE` blocks).
    pub cert_chain: PathBuf,
    /// The leaf's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// CA certificates (PEM) client certificates must be signed by; `None`: clients
    /// are not asked for one. Default `None`.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required when `client_ca` is set. Default
    /// [`ClientAuth::Required`].
    pub client_auth: ClientAuth,
}

impl TlsSettings {
    /// TLS with the chain in `cert_chain` and the key in `private_key` (PEM files),
    /// no client certificates.
    pub fn from_pem_files(
        cert_chain: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
    ) -> TlsSettings {
        TlsSettings {
            cert_chain: cert_chain.into(),
            private_key: private_key.into(),
            client_ca: None,
            client_auth: ClientAuth::Required,
        }
    }

    /// Asks clients for a certificate signed by a CA in `ca` (PEM), required or not.
    pub fn client_ca(mut self, ca: impl Into<PathBuf>, auth: ClientAuth) -> TlsSettings {
        self.client_ca = Some(ca.into());
        self.client_auth = auth;
        self
    }

    /// Reads the files and builds the rustls configuration.
    pub(crate) fn load(&self) -> Result<Arc<ServerConfig>, Error> {
        let bad = |problem: String| Error::Config {
            field: "tls",
            problem,
        };
        let chain = read_certs(&self.cert_chain).map_err(bad)?;
        let key = PrivateKeyDer::from_pem_file(&self.private_key)
            .map_err(|e| bad(format!("{}: {e}", self.private_key.display())))?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in read_certs(ca).map_err(bad)? {
                    roots
                        .add(c)
                        .map_err(|e| bad(format!("{}: {e}", ca.display())))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
                let verifier = match self.client_auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| bad(format!("{}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(chain, key)
            .map_err(|e| bad(format!("{}: {e}", self.cert_chain.display())))?;
        Ok(Arc::new(config))
    }
}

/// The crypto provider: ring (no C toolchain or cmake needed to build it). rustls
/// marks it deprecated because ring has no post-quantum key exchange; the classical
/// groups (X25519, P-256, P-384) are what it offers.
#[allow(
    deprecated,
    reason = "ring, without post-quantum key exchange, is the choice"
)]
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in the PEM file at `path` (at least one).
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

/// The server's TLS configuration in force, replaced by a reload.
pub(crate) struct TlsState {
    settings: TlsSettings,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsState {
    /// Loads `settings`.
    pub fn new(settings: TlsSettings) -> Result<TlsState, Error> {
        let config = settings.load()?;
        Ok(TlsState {
            settings,
            current: RwLock::new(config),
        })
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the files again; on success new connections use them.
    pub fn reload(&self) -> Result<(), Error> {
        let config = self.settings.load()?;
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }
}

/// The certificate a client presented and the server verified (see
/// [`TlsSettings::client_ca`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    chain: Vec<CertificateDer<'static>>,
}

impl PeerCertificate {
    pub(crate) fn new(chain: Vec<CertificateDer<'static>>) -> Option<PeerCertificate> {
        (!chain.is_empty()).then_some(PeerCertificate { chain })
    }

    /// The client's own certificate (DER).
    pub fn der(&self) -> &[u8] {
        &self.chain[0]
    }

    /// The chain as the client sent it, its own certificate first (DER each).
    pub fn chain(&self) -> impl Iterator<Item = &[u8]> {
        self.chain.iter().map(|c| c.as_ref())
    }

    /// The subject's common name (the first `CN` of its subject), if it has one.
    pub fn common_name(&self) -> Option<String> {
        der::common_name(self.der())
    }

    /// The DNS names among its subject alternative names.
    pub fn dns_names(&self) -> Vec<String> {
        der::dns_names(self.der())
    }
}

/// Just enough DER to read a certificate's subject common name and DNS names (the
/// certificate was verified already; anything unexpected gives nothing).
mod der {
    /// One element: (tag, contents, rest).
    fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        Some((tag, &rest[..len], &rest[len..]))
    }

    /// The elements of a constructed value's contents.
    fn elements(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
        std::iter::from_fn(move || {
            let (tag, body, rest) = element(input)?;
            input = rest;
            Some((tag, body))
        })
    }

    /// TBSCertificate's fields.
    fn tbs(cert: &[u8]) -> Option<Vec<(u8, &[u8])>> {
        let (_, cert, _) = element(cert)?;
        let (_, tbs, _) = element(cert)?;
        Some(elements(tbs).collect())
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const SAN: &[u8] = &[0x55, 0x1d, 0x11];

    pub fn common_name(cert: &[u8]) -> Option<String> {
        let fields = tbs(cert)?;
        // [0] version is optional: the subject is the sixth field, counted from serial.
        let skip = usize::from(fields.first()?.0 == 0xa0);
        let (_, subject) = *fields.get(skip + 4)?;
        for (_, set) in elements(subject) {
            for (_, atv) in elements(set) {
                let mut parts = elements(atv);
                let (_, oid) = parts.next()?;
                let (_, value) = parts.next()?;
                if oid == CN {
                    return String::from_utf8(value.to_vec()).ok();
                }
            }
        }
        None
    }

    pub fn dns_names(cert: &[u8]) -> Vec<String> {
        let mut names = Vec::new();
        let Some(fields) = tbs(cert) else {
            return names;
        };
        let Some((_, exts)) = fields.iter().find(|(tag, _)| *tag == 0xa3) else {
            return names;
        };
        let Some((_, exts, _)) = element(exts) else {
            return names;
        };
        for (_, ext) in elements(exts) {
            let parts: Vec<_> = elements(ext).collect();
            if parts.first().map(|p| p.1) != Some(SAN) {
                continue;
            }
            let Some((_, value)) = parts.last() else {
                continue;
            };
            let Some((_, general_names, _)) = element(value) else {
                continue;
            };
            for (tag, name) in elements(general_names) {
                // [2] dNSName
                if tag == 0x82 {
                    if let Ok(s) = std::str::from_utf8(name) {
                        names.push(s.to_owned());
                    }
                }
            }
        }
        names
    }
}
