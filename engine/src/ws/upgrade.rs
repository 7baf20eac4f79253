//! The WebSocket opening handshake, with no I/O: an HTTP/1.1 upgrade request in, the
//! `101 Switching Protocols` answer (or an HTTP refusal) out. Parsed by `httparse`;
//! the accept key by tungstenite.

use super::WebSocketSettings;

/// Headers a request may carry (more is refused as malformed).
const MAX_HEADERS: usize = 32;

/// Why an upgrade request was refused; each is answered with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UpgradeRefusal {
    /// Not an HTTP/1.1 GET upgrade to WebSocket version 13 with a key.
    #[error("not a websocket upgrade request: {0}")]
    BadRequest(&'static str),
    /// Another path than the configured one.
    #[error("no websocket endpoint at this path")]
    NotFound,
    /// An `Origin` outside `allowed_origins`.
    #[error("origin not allowed")]
    Forbidden,
    /// The request head is larger than `max_upgrade_request_bytes`.
    #[error("upgrade request too large")]
    TooLarge,
}

impl UpgradeRefusal {
    /// The HTTP response sent before closing.
    pub fn response(&self) -> Vec<u8> {
        let (status, text) = match self {
            UpgradeRefusal::BadRequest(_) => (400, "Bad Request"),
            UpgradeRefusal::NotFound => (404, "Not Found"),
            UpgradeRefusal::Forbidden => (403, "Forbidden"),
            UpgradeRefusal::TooLarge => (431, "Request Header Fields Too Large"),
        };
        format!(
            "HTTP/1.1 {status} {text}\r\nConnection: close\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{self}",
            self.to_string().len()
        )
        .into_bytes()
    }
}

/// An accepted upgrade.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Upgraded {
    /// The `101` response to send.
    pub response: Vec<u8>,
    /// Bytes of `buf` the request took; what follows already belongs to the
    /// WebSocket stream.
    pub consumed: usize,
    /// The `Origin` the page came from, if any.
    pub origin: Option<String>,
    /// The client address a proxy in front put last in `X-Forwarded-For` (trusted only
    /// when the connection comes from one of `trusted_proxies`).
    pub forwarded_for: Option<std::net::IpAddr>,
}

/// Reads the request in `buf`: `Ok(None)` while its head is incomplete (read more, up
/// to `max_upgrade_request_bytes`), the upgrade, or why it is refused.
pub(crate) fn answer(
    buf: &[u8],
    settings: &WebSocketSettings,
) -> Result<Option<Upgraded>, UpgradeRefusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= settings.max_upgrade_request_bytes {
                return Err(UpgradeRefusal::TooLarge);
            }
            return Ok(None);
        }
        Err(_) => return Err(UpgradeRefusal::BadRequest("malformed HTTP")),
    };
    if consumed > settings.max_upgrade_request_bytes {
        return Err(UpgradeRefusal::TooLarge);
    }
    if req.method != Some("GET") || req.version != Some(1) {
        return Err(UpgradeRefusal::BadRequest("not an HTTP/1.1 GET"));
    }
    let path = req.path.unwrap_or("").split('?').next().unwrap_or("");
    if path != settings.path {
        return Err(UpgradeRefusal::NotFound);
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("Upgrade", "websocket") || !has_token("Connection", "upgrade") {
        return Err(UpgradeRefusal::BadRequest("missing Upgrade: websocket"));
    }
    if header("Sec-WebSocket-Version") != Some("13") {
        return Err(UpgradeRefusal::BadRequest(
            "Sec-WebSocket-Version must be 13",
        ));
    }
    let key = header("Sec-WebSocket-Key")
        .filter(|k| !k.trim().is_empty())
        .ok_or(UpgradeRefusal::BadRequest("missing Sec-WebSocket-Key"))?;
    let origin = header("Origin").map(str::to_owned);
    if let (Some(allowed), Some(o)) = (&settings.allowed_origins, &origin) {
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(o)) {
            return Err(UpgradeRefusal::Forbidden);
        }
    }
    // The rightmost address is the one the nearest proxy appended.
    let forwarded_for = req
        .headers
        .iter()
        .rev()
        .find(|h| h.name.eq_ignore_ascii_case("X-Forwarded-For"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|a| a.trim().parse().ok());
    let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    Ok(Some(Upgraded {
        response,
        consumed,
        origin,
        forwarded_for,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "tests fail loudly on the first unexpected error"
    )]
    use super::*;

    fn settings() -> WebSocketSettings {
        WebSocketSettings::new(0).allowed_origins(["https://game.example"])
    }

    const REQUEST: &str = "GET /conduit?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nOrigin: https://game.example\r\n\r\n";

    #[test]
    fn a_good_request_is_upgraded_with_the_rfc_accept_key() {
        let mut bytes = REQUEST.as_bytes().to_vec();
        bytes.extend_from_slice(b"\x82\x80");
        let up = answer(&bytes, &settings()).unwrap().unwrap();
        assert_eq!(up.consumed, REQUEST.len(), "what follows is the stream's");
        let text = String::from_utf8(up.response).unwrap();
        // RFC 6455 §1.3's example key and answer.
        assert!(
            text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{text}"
        );
        assert_eq!(up.origin.as_deref(), Some("https://game.example"));
        assert_eq!(up.forwarded_for, None);
        let forwarded = REQUEST.replace(
            "Host: h\r\n",
            "Host: h\r\nX-Forwarded-For: 198.51.100.1, 203.0.113.9\r\n",
        );
        let up = answer(forwarded.as_bytes(), &settings()).unwrap().unwrap();
        assert_eq!(up.forwarded_for, Some("203.0.113.9".parse().unwrap()));
        // Incomplete: read more.
        assert_eq!(answer(&REQUEST.as_bytes()[..40], &settings()), Ok(None));
    }

    #[test]
    fn bad_requests_are_refused_with_a_status() {
        let s = settings();
        let cases = [
            (REQUEST.replace("GET", "POST"), 400),
            (REQUEST.replace("/conduit", "/other"), 404),
            (
                REQUEST.replace("https://game.example", "https://evil.example"),
                403,
            ),
            (REQUEST.replace("Version: 13", "Version: 8"), 400),
            (REQUEST.replace("Upgrade: websocket", "Upgrade: h2c"), 400),
            (
                REQUEST.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                400,
            ),
            ("\x16\x03\x01 not http\r\n\r\n".to_owned(), 400),
        ];
        for (req, status) in cases {
            let refused = answer(req.as_bytes(), &s).unwrap_err();
            let response = String::from_utf8(refused.response()).unwrap();
            assert!(
                response.starts_with(&format!("HTTP/1.1 {status} ")),
                "{req:?}: {response}"
            );
        }
        // Without an Origin (not a browser) the allow-list does not apply.
        let no_origin = REQUEST.replace("Origin: https://game.example\r\n", "");
        assert!(answer(no_origin.as_bytes(), &s).unwrap().is_some());
        // A head that never ends is cut at the limit.
        let endless = format!("GET /conduit HTTP/1.1\r\nX: {}", "a".repeat(9000));
        assert_eq!(
            answer(endless.as_bytes(), &s),
            Err(UpgradeRefusal::TooLarge)
        );
    }
}
