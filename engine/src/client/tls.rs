//! The client's TLS settings ([`ClientDescriptor::tls`](super::ClientDescriptor::tls)):
//! which server name to verify, which roots to trust, and an optional client
//! certificate. rustls with the `ring` provider, as on the server.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, ServerName};

use super::ClientError;

/// The certificates a client trusts to sign the server's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsRoots {
    /// The operating system's trust store (read with `rustls-native-certs`).
    SystemRoots,
    /// The CA certificates in a PEM file (a private CA, a self-signed server).
    CaFile(PathBuf),
}

/// TLS to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientTls {
    /// The name the server's certificate must be valid for (a DNS name, or an IP
    /// address written out).
    pub server_name: String,
    /// What signs the server's certificate.
    pub root: TlsRoots,
    /// A client certificate chain and its key (PEM files), for servers that ask for
    /// one. Default `None`.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientTls {
    /// TLS to a server whose certificate is valid for `server_name`, signed by a CA
    /// in `root`.
    pub fn new(server_name: impl Into<String>, root: TlsRoots) -> ClientTls {
        ClientTls {
            server_name: server_name.into(),
            root,
            identity: None,
        }
    }

    /// Presents the certificate chain in `cert_chain` with the key in `private_key`
    /// (PEM files).
    pub fn identity(
        mut self,
        cert_chain: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
    ) -> ClientTls {
        self.identity = Some((cert_chain.into(), private_key.into()));
        self
    }

    /// The server name to verify.
    pub(crate) fn name(&self) -> Result<ServerName<'static>, ClientError> {
        ServerName::try_from(self.server_name.clone()).map_err(|e| ClientError::Config {
            field: "tls",
            problem: format!("server_name {:?}: {e}", self.server_name),
        })
    }

    /// Reads the files and builds the rustls configuration.
    pub(crate) fn config(&self) -> Result<Arc<ClientConfig>, ClientError> {
        let bad = |problem: String| ClientError::Config {
            field: "tls",
            problem,
        };
        let mut roots = RootCertStore::empty();
        match &self.root {
            TlsRoots::SystemRoots => {
                let found = rustls_native_certs::load_native_certs();
                for e in &found.errors {
                    tracing::debug!("system root certificates: {e}");
                }
                let (_, ignored) = roots.add_parsable_certificates(found.certs);
                if ignored > 0 {
                    tracing::debug!("{ignored} system root certificates could not be used");
                }
                if roots.is_empty() {
                    return Err(bad("no system root certificates found".into()));
                }
            }
            TlsRoots::CaFile(path) => {
                for c in crate::tls::read_certs(path).map_err(bad)? {
                    roots
                        .add(c)
                        .map_err(|e| bad(format!("{}: {e}", path.display())))?;
                }
            }
        }
        let builder = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots);
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                let certs = crate::tls::read_certs(chain).map_err(bad)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| bad(format!("{}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| bad(format!("{}: {e}", chain.display())))?
            }
        };
        Ok(Arc::new(config))
    }
}
