//! The server's connections: accepting them under a cap, reading each request under time
//! limits, and shutting down without waiting on idle or stalled clients.
//!
//! * At most `max_connections` are served at once; one more is answered 503 (with
//!   `Retry-After`) and closed at once, so that half-open sockets cannot exhaust the process's
//!   file descriptors.
//! * A request's head must arrive within [`Limits::header_timeout`]: a client that stalls
//!   before its first request is answered 408 and closed; an idle kept-alive connection is
//!   simply closed. (Bodies have their own limit, applied by the handlers.)
//! * On shutdown no new connection is accepted, idle ones close at once, requests in flight
//!   get up to [`Limits::drain`] to finish.

use crate::apps::openai::request::ApiError;
use anyhow::{Context, Result};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The address a request's connection came from (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Time and size limits of the connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// How long requests in flight may take to finish once shutdown starts.
    pub drain: Duration,
    /// Largest request head hyper buffers (beyond it hyper answers 431 itself, without a
    /// body); the handlers refuse smaller excesses with JSON errors.
    pub max_head_bytes: usize,
}

/// Serves `app` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let Ok((stream, spare)) = with_spare(stream) else { continue };
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut r: hyper::Request<hyper::body::Incoming>| {
                counter.fetch_add(1, Ordering::Relaxed);
                r.extensions_mut().insert(ClientAddr(peer));
                r
            })
            .service(app.clone());
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_head_bytes.max(8192));
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // A client that stalled before its first request hears why it is cut off;
                // a kept-alive connection that went idle is just closed.
                if e.is_timeout() && served.load(Ordering::Relaxed) == 0 {
                    if let Some(spare) = spare {
                        let message = "the request head did not arrive in time";
                        answer(spare, 408, message, false).await;
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain) => {}
    }
    Ok(())
}

/// The stream, and a second handle on the same socket for a last answer once hyper is done
/// with it.
fn with_spare(stream: TcpStream) -> Result<(TcpStream, Option<TcpStream>)> {
    let std_stream = stream.into_std().context("a connection")?;
    let spare = std_stream.try_clone().ok().and_then(|s| TcpStream::from_std(s).ok());
    Ok((TcpStream::from_std(std_stream).context("a connection")?, spare))
}

/// Answers a connection over the cap with 503 and closes it.
async fn refuse(stream: TcpStream) {
    answer(stream, 503, "the server is at its connection limit; retry shortly", true).await;
}

/// Writes one OpenAI-style error response and closes the connection, giving a slow reader
/// one second.
async fn answer(mut stream: TcpStream, status: u16, message: &str, retry: bool) {
    let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
    let error = ApiError { status, message: message.into(), kind, param: None };
    let body = error.body().to_string();
    let reason = match status {
        408 => "Request Timeout",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let retry = if retry { "Retry-After: 1\r\n" } else { "" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{retry}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
