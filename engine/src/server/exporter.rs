//! The Prometheus exporter: `GET /metrics` on its own listener, served on the service
//! thread's tokio runtime, never on a shard. Each scrape reads the shards' counters
//! ([`Router::stats`]), writes them into a `metrics-exporter-prometheus` recorder of
//! this server's own (through the `metrics` facade, with a local recorder, so several
//! servers in one process never mix) and renders it; the latency histograms are
//! written in Prometheus's histogram form directly from the shards' buckets.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::error::{Error, Result};
use crate::router::Router;

/// Scrape connections served at once; more wait in the listen queue. Prometheus keeps
/// one per target; the bound keeps a misbehaving client from piling up tasks.
pub const MAX_SCRAPE_CONNECTIONS: usize = 16;

/// Time a scrape client has to send its request headers.
pub const SCRAPE_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A running exporter; dropping it stops the listener (connections mid-scrape finish).
#[derive(Debug)]
pub(crate) struct Exporter {
    /// Dropped to stop: the accept loop waits on its receiver.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Binds the exporter's listener (so a bad address fails the server's start).
pub(crate) fn bind(addr: std::net::SocketAddr) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| Error::Config {
        field: "metrics_addr",
        problem: format!("cannot listen on {addr}: {e}"),
    })?;
    listener.set_nonblocking(true).map_err(Error::Io)?;
    Ok(listener)
}

/// Starts serving `/metrics` for `router` on `listener`, on the service thread.
pub(crate) fn start(router: Router, listener: std::net::TcpListener) -> Result<Exporter> {
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let job = crate::rt::service::call(move || async move {
        tokio::spawn(serve(router, listener, stopped));
    });
    futures_lite::future::block_on(job)
        .map_err(|e| Error::Runtime(format!("the metrics exporter cannot start: {e}")))?;
    Ok(Exporter { _stop: stop })
}

/// The accept loop, until `stopped`.
async fn serve(
    router: Router,
    listener: std::net::TcpListener,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("metrics exporter: {e}");
            return;
        }
    };
    let recorder = Arc::new(PrometheusBuilder::new().build_recorder());
    ::metrics::with_local_recorder(&*recorder, crate::metrics::describe);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPE_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: wait a moment rather than spin.
                tracing::warn!("metrics exporter accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: closed at once.
            continue;
        };
        let (router, recorder) = (router.clone(), recorder.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let answer = respond(&router, &recorder, &req);
                async move { Ok::<_, Infallible>(answer) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(SCRAPE_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("metrics scrape connection: {e}");
            }
        });
    }
}

/// The answer to one request.
fn respond<B>(
    router: &Router,
    recorder: &PrometheusRecorder,
    req: &Request<B>,
) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found; try /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let stats = router.stats();
    ::metrics::with_local_recorder(recorder, || stats.publish_counts());
    let mut text = recorder.handle().render();
    crate::metrics::text::render_latency(&stats, &mut text);
    let mut r = Response::new(Full::new(Bytes::from(text)));
    if let Ok(v) = "text/plain; version=0.0.4; charset=utf-8".parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
