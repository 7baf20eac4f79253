//! One client connection to Redis, the counterpart of [`crate::wire::Conn`]: a TCP
//! stream on the load generator's executor (`TCP_NODELAY`, as every connection of
//! ours) and a [`RespReader`], opened with the same retries and authenticated with
//! `AUTH`.

use std::io;
use std::time::Duration;

use conduit::__rt::{sleep, SharedStream};

use super::resp::{self, Item, Reply, RespReader};
use crate::wire::MAX_CONNECT_ATTEMPTS;
use crate::{Error, Result};

/// One authenticated Redis connection.
pub struct RedisConn {
    stream: SharedStream,
    /// The replies Redis sent, read as they arrive.
    pub reader: RespReader,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConn")
            .field("buffered", &self.reader.buffered())
            .finish()
    }
}

impl RedisConn {
    /// Connects to `addr` (`attempts` tries, each within `timeout`, as
    /// [`crate::wire::Conn::open`] does) and sends `AUTH password`; fails unless Redis
    /// answers `+OK`.
    pub async fn open(
        addr: std::net::SocketAddr,
        password: &str,
        attempts: u32,
        timeout: Duration,
    ) -> Result<RedisConn> {
        let mut attempt = 0;
        let stream = loop {
            attempt += 1;
            match SharedStream::connect(addr, timeout).await {
                Ok(s) => break s,
                Err(e) if attempt < attempts.min(MAX_CONNECT_ATTEMPTS) => {
                    tracing::debug!("connect attempt {attempt} to Redis failed: {e}");
                    sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                }
                Err(e) => return Err(Error::Io(e)),
            }
        };
        let mut conn = RedisConn {
            stream,
            reader: RespReader::new(),
        };
        let mut auth = Vec::new();
        resp::command(&mut auth, &[b"AUTH", password.as_bytes()]);
        conn.send(&auth).await?;
        conn.expect(|r| match r {
            Reply::Item(Item::Simple(b"OK")) => Ok(()),
            Reply::Item(Item::Error(e)) => Err(Error::Refused(format!(
                "Redis refused AUTH: {}",
                String::from_utf8_lossy(e)
            ))),
            other => Err(Error::Protocol(format!("AUTH answered {other:?}"))),
        })
        .await?;
        Ok(conn)
    }

    /// Subscribes to `channel` and waits for Redis to confirm it.
    pub async fn subscribe(&mut self, channel: &[u8]) -> Result<()> {
        let mut cmd = Vec::new();
        resp::command(&mut cmd, &[b"SUBSCRIBE", channel]);
        self.send(&cmd).await?;
        self.expect(|r| match r {
            Reply::Array(items) => match items.as_slice() {
                [Item::Bulk(b"subscribe"), Item::Bulk(ch), Item::Integer(_)] if *ch == channel => {
                    Ok(())
                }
                other => Err(Error::Protocol(format!("SUBSCRIBE answered {other:?}"))),
            },
            other => Err(Error::Protocol(format!("SUBSCRIBE answered {other:?}"))),
        })
        .await
    }

    /// Writes all of `bytes` (whole commands).
    pub async fn send(&self, bytes: &[u8]) -> Result<()> {
        Ok(self.stream.write_all(bytes).await?)
    }

    /// Reads more bytes into the reader; EOF is an error.
    pub async fn fill(&mut self) -> Result<()> {
        let n = self.stream.read(self.reader.spare()?).await?;
        if n == 0 {
            return Err(Error::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        self.reader.commit(n);
        Ok(())
    }

    /// Waits for the next reply and hands it to `check`.
    pub async fn expect(&mut self, check: impl FnOnce(&Reply<'_>) -> Result<()>) -> Result<()> {
        loop {
            if let Some(reply) = self.reader.next_reply()? {
                return check(&reply);
            }
            self.fill().await?;
        }
    }

    /// A second handle on the stream, for a task that writes while another reads.
    pub fn stream(&self) -> SharedStream {
        self.stream.clone()
    }
}
