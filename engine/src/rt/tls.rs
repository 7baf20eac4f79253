//! A connection's TLS layer, on either backend: rustls does no I/O itself, so the
//! reader feeds it the ciphertext it reads from the socket and takes the plaintext
//! out, and the writer encrypts what it would have written and writes the records.
//! Only the writer writes to the socket once it runs; the reader wakes it when the TLS
//! layer has records of its own to send (an alert; rustls sends the answer to a key
//! update ahead of the next data records). Shared by server connections and the
//! client.

use std::cell::RefCell;
use std::io::{self, Read, Write};

use bytes::Bytes;

use super::net::SharedStream;
use crate::core::LocalNotify;

/// The TLS state of one connection.
pub(crate) struct TlsLayer {
    conn: RefCell<rustls::Connection>,
    /// Ciphertext read but not yet taken by rustls (its plaintext buffer was full);
    /// empty but for bursts larger than that buffer.
    backlog: RefCell<Vec<u8>>,
}

/// Largest ciphertext read at once while handshaking.
const HANDSHAKE_READ: usize = 8 * 1024;

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsLayer {
    /// The layer over a fresh rustls connection.
    pub fn new(conn: impl Into<rustls::Connection>) -> TlsLayer {
        let mut conn = conn.into();
        // The writer bounds what it encrypts at once (`max_write_batch_bytes`).
        conn.set_buffer_limit(None);
        TlsLayer {
            conn: RefCell::new(conn),
            backlog: RefCell::new(Vec::new()),
        }
    }

    /// Whether rustls has records to send.
    pub fn wants_write(&self) -> bool {
        self.conn.borrow().wants_write()
    }

    /// The peer's certificate chain (leaf first), once the handshake verified one.
    pub fn peer_certificates(&self) -> Option<Vec<rustls_pki_types::CertificateDer<'static>>> {
        let conn = self.conn.borrow();
        conn.peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
    }

    /// Hands `cipher` to rustls and processes it; what its buffers cannot take yet is
    /// kept for later. An error is the peer's: bad records, a failed handshake.
    fn feed(&self, mut cipher: &[u8]) -> io::Result<()> {
        let mut conn = self.conn.borrow_mut();
        while !cipher.is_empty() {
            match conn.read_tls(&mut cipher) {
                // After the peer's close_notify: the rest is ignored.
                Ok(0) => break,
                Ok(_) => {}
                // The plaintext buffer is full (`Other`): the rest waits for the
                // reader to take plaintext out.
                Err(e) if e.kind() == io::ErrorKind::Other => {
                    self.backlog.borrow_mut().extend_from_slice(cipher);
                    break;
                }
                Err(e) => return Err(e),
            }
            conn.process_new_packets().map_err(invalid)?;
        }
        Ok(())
    }

    /// Feeds what was kept back, now that plaintext was taken out.
    fn feed_backlog(&self) -> io::Result<bool> {
        let backlog = std::mem::take(&mut *self.backlog.borrow_mut());
        if backlog.is_empty() {
            return Ok(false);
        }
        self.feed(&backlog)?;
        Ok(true)
    }

    /// Reads plaintext into `buf`, reading ciphertext from `stream` as needed; 0 means
    /// the peer closed (with or without a close_notify). `wake` is notified when the
    /// TLS layer has records for the peer (the writer sends them). `buf` also serves
    /// as room for the ciphertext read.
    pub async fn read(
        &self,
        stream: &SharedStream,
        buf: &mut [u8],
        wake: &LocalNotify,
    ) -> io::Result<usize> {
        loop {
            match self.conn.borrow_mut().reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.feed_backlog()? {
                continue;
            }
            let n = stream.read(buf).await?;
            if n == 0 {
                return Ok(0);
            }
            let fed = self.feed(&buf[..n]);
            if self.wants_write() {
                wake.notify();
            }
            fed?;
        }
    }

    /// Takes `early` (ciphertext read already) and completes the handshake, writing
    /// its records directly: only before the writer runs. Errors: the handshake
    /// failed, or the peer left.
    pub async fn handshake(&self, stream: &SharedStream, early: &[u8]) -> io::Result<()> {
        let fed = self.feed(early);
        self.flush_direct(stream).await?;
        fed?;
        let mut buf = vec![0u8; HANDSHAKE_READ];
        while self.conn.borrow().is_handshaking() {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let fed = self.feed(&buf[..n]);
            // An alert, when it failed.
            self.flush_direct(stream).await?;
            fed?;
        }
        self.flush_direct(stream).await
    }

    /// Encrypts `plain` and writes the records directly: only before the writer runs
    /// (the WebSocket upgrade's answer).
    pub async fn write_direct(&self, stream: &SharedStream, plain: &[u8]) -> io::Result<()> {
        self.conn.borrow_mut().writer().write_all(plain)?;
        self.flush_direct(stream).await
    }

    /// Writes every record rustls has to send: only before the writer runs.
    pub async fn take_direct(&self, stream: &SharedStream) -> io::Result<()> {
        self.flush_direct(stream).await
    }

    /// Writes every record rustls has to send.
    async fn flush_direct(&self, stream: &SharedStream) -> io::Result<()> {
        let mut records = Vec::new();
        self.take_records(&mut records)?;
        if records.is_empty() {
            return Ok(());
        }
        stream.write_all(&records).await
    }

    /// Appends the records rustls has to send to `records`.
    pub fn take_records(&self, records: &mut Vec<u8>) -> io::Result<()> {
        let mut conn = self.conn.borrow_mut();
        while conn.wants_write() {
            conn.write_tls(records)?;
        }
        Ok(())
    }

    /// Encrypts `frames` (in order) and appends the records to `records`.
    pub fn seal(&self, frames: &[Bytes], records: &mut Vec<u8>) -> io::Result<()> {
        {
            let mut conn = self.conn.borrow_mut();
            let mut w = conn.writer();
            for f in frames {
                w.write_all(f)?;
            }
        }
        self.take_records(records)
    }

    /// Queues a close_notify (sent with the next records).
    pub fn close_notify(&self) {
        self.conn.borrow_mut().send_close_notify();
    }
}

/// Why a handshake's error is the peer's fault rather than the socket's, for logs.
pub(crate) fn is_protocol_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn feeding_garbage_is_the_peers_error() {
        let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let client = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let layer = TlsLayer::new(client);
        assert!(layer.wants_write(), "a client starts with its hello");
        let mut hello = Vec::new();
        layer.take_records(&mut hello).unwrap();
        assert_eq!(hello[0], 0x16, "a handshake record");
        let e = layer.feed(b"GET / HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(is_protocol_error(&e), "{e}");
    }
}
