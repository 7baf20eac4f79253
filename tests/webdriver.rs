//! Just enough of the W3C WebDriver protocol to drive headless Chromium through
//! `chromedriver` from a test: start it, open a page per session, read the title, run a
//! script, take a screenshot. Plain HTTP/1.1 on loopback with `serde_json` bodies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

/// Where Debian's packages put the browser and its driver.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A running `chromedriver`, killed on drop.
pub struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    /// Starts `chromedriver` on a free loopback port; `Err` says what to install.
    pub fn start() -> Result<Driver, String> {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            if !std::path::Path::new(bin).exists() {
                return Err(format!(
                    "{bin} is missing: the browser test needs Debian's `chromium` and \
                     `chromium-driver` packages (.ci/run installs them)"
                ));
            }
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let driver = Driver { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(driver)
    }

    /// A new headless browser session (one window).
    pub fn session(&self) -> Result<Session, String> {
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=900,700"]
        }}}});
        let v = request(self.addr, "POST", "/session", Some(&caps))?;
        let id = v["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {v}"))?
            .to_owned();
        Ok(Session {
            addr: self.addr,
            id,
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser window; closed on drop.
pub struct Session {
    addr: SocketAddr,
    id: String,
}

impl Session {
    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.id)
    }

    /// Opens `url` (returns once the page loaded).
    pub fn goto(&self, url: &str) -> Result<(), String> {
        request(
            self.addr,
            "POST",
            &self.path("/url"),
            Some(&json!({"url": url})),
        )
        .map(|_| ())
    }

    /// The page's title.
    pub fn title(&self) -> Result<String, String> {
        let v = request(self.addr, "GET", &self.path("/title"), None)?;
        Ok(v["value"].as_str().unwrap_or_default().to_owned())
    }

    /// Runs `script` in the page and returns its value.
    pub fn run(&self, script: &str) -> Result<Json, String> {
        let body = json!({"script": script, "args": []});
        let v = request(self.addr, "POST", &self.path("/execute/sync"), Some(&body))?;
        Ok(v["value"].clone())
    }

    /// A PNG screenshot, base64 as WebDriver sends it.
    pub fn screenshot_base64(&self) -> Result<String, String> {
        let v = request(self.addr, "GET", &self.path("/screenshot"), None)?;
        v["value"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no screenshot in {v}"))
    }

    /// Polls the title until `done(title)` or `wait` passes; the last title.
    pub fn wait_for_title(&self, wait: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let t = self.title().unwrap_or_default();
            if done(&t) || Instant::now() > deadline {
                return t;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = request(self.addr, "DELETE", &format!("/session/{}", self.id), None);
    }
}

/// One WebDriver command: the JSON answer, or the error it carried.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Json>,
) -> Result<Json, String> {
    let body = body.map(Json::to_string).unwrap_or_default();
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // Read the head, then exactly Content-Length bytes (the driver may keep the
    // connection open whatever the request says).
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_len, body_len) = loop {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("chromedriver closed the connection".into());
        }
        raw.extend_from_slice(&chunk[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("no Content-Length in the driver's answer")?;
            break (end + 4, len);
        }
    };
    while raw.len() < head_len + body_len {
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&raw[head_len..]);
    let v: Json = serde_json::from_str(&body).map_err(|e| format!("{e} in {body}"))?;
    if v["value"]["error"].is_string() {
        return Err(format!("webdriver {method} {path}: {}", v["value"]));
    }
    Ok(v)
}
