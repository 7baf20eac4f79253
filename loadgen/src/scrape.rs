//! A Prometheus scraper for `suite --with-metrics`: `GET /metrics` on the server's
//! exporter at a fixed interval for as long as a run lasts, as a Prometheus server
//! would (more often: 1 s against the usual 15 s), so the exporter's cost is part of
//! what the run measures. Every scrape must answer 200 with the server's figures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Error, Result};

/// How often the suite scrapes a server that exports metrics.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// A series every scrape of our server must hold.
const EXPECTED: &str = "conduit_frames_received_total";

/// A thread scraping one exporter until stopped.
#[derive(Debug)]
pub struct Scraper {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<u64>>,
}

impl Scraper {
    /// Starts scraping `http://{addr}/metrics` every `interval`, the first at once.
    pub fn start(addr: SocketAddr, interval: Duration) -> Result<Scraper> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let url = format!("http://{addr}/metrics");
        let thread = std::thread::Builder::new()
            .name("scraper".into())
            .spawn(move || {
                let mut scrapes = 0;
                while !flag.load(Ordering::Acquire) {
                    scrape(&url)?;
                    scrapes += 1;
                    // Sleep in short steps so a stop is prompt.
                    let mut left = interval;
                    while !left.is_zero() && !flag.load(Ordering::Acquire) {
                        let step = left.min(Duration::from_millis(50));
                        std::thread::sleep(step);
                        left -= step;
                    }
                }
                Ok(scrapes)
            })?;
        Ok(Scraper { stop, thread })
    }

    /// Stops and returns how many scrapes answered, or the first that failed.
    pub fn stop(self) -> Result<u64> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| Error::Target("the scraper panicked".into()))?
    }
}

/// One scrape: 200 and the server's figures, or why not.
pub fn scrape(url: &str) -> Result<String> {
    let mut response = ureq::get(url)
        .call()
        .map_err(|e| Error::Target(format!("scrape of {url}: {e}")))?;
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| Error::Target(format!("scrape of {url}: {e}")))?;
    if !body.contains(EXPECTED) {
        return Err(Error::Target(format!(
            "scrape of {url}: no {EXPECTED} in the answer"
        )));
    }
    Ok(body)
}
