//! The HTTP server's own defences, below the routes: every connection is accepted, at
//! most `connections_max` are kept — past it the oldest connection with no request in
//! progress is closed for the new one (so a health check gets in unless every kept
//! connection is busy) —, and a connection with no request in progress for `idle` is
//! closed, whether it is idle between requests or still sending its first request's head
//! one byte at a time. A request is in progress until its response's body is sent; one
//! whose handler runs past `request` is answered 503.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt as _;

/// How long and how many connections the server keeps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connections_max: usize,
    pub idle: Duration,
    pub request: Duration,
}

/// One connection as the server watches it.
struct Conn {
    /// Requests being handled now.
    busy: AtomicUsize,
    /// When the connection last had no request in progress (its start, or its last
    /// response).
    since: Mutex<Instant>,
    /// Told to close (another connection needed its place).
    close: Notify,
}

impl Conn {
    fn idle_for(&self) -> Option<Duration> {
        (self.busy.load(Ordering::Acquire) == 0).then(|| self.since.lock().expect("not poisoned").elapsed())
    }
}

/// The open connections, oldest first.
struct Registry {
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    max: usize,
}

impl Registry {
    /// Admits connection `id`. At the cap the oldest connection with no request in
    /// progress is closed for it; `None` when every one is busy (the new one is dropped).
    fn admit(&self, id: u64) -> Option<Arc<Conn>> {
        let mut conns = self.conns.lock().expect("not poisoned");
        if conns.len() >= self.max {
            let victim = conns.iter().find(|(_, c)| c.busy.load(Ordering::Acquire) == 0).map(|(id, _)| *id)?;
            if let Some(c) = conns.remove(&victim) {
                c.close.notify_one();
            }
        }
        let conn =
            Arc::new(Conn { busy: AtomicUsize::new(0), since: Mutex::new(Instant::now()), close: Notify::new() });
        conns.insert(id, Arc::clone(&conn));
        Some(conn)
    }

    fn remove(&self, id: u64) {
        self.conns.lock().expect("not poisoned").remove(&id);
    }
}

/// Accepts connections on `listener` and serves `router` on each until the process ends.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits) {
    let registry = Arc::new(Registry { conns: Mutex::new(BTreeMap::new()), max: limits.connections_max.max(1) });
    let mut refusals = crate::http::auth::LogLimiter::new();
    for id in 0u64.. {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, mostly: wait for some to close.
                if let Some(suppressed) = refusals.allow() {
                    tracing::warn!(error = %e, suppressed, "Could not accept an HTTP connection.");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(conn) = registry.admit(id) else { continue };
        let (registry, router) = (Arc::clone(&registry), router.clone());
        tokio::spawn(async move {
            connection(stream, peer, router, &conn, limits).await;
            registry.remove(id);
        });
    }
}

/// Serves one connection until it ends, idles past `limits.idle`, or is told to close.
async fn connection(stream: TcpStream, peer: SocketAddr, router: Router, conn: &Arc<Conn>, limits: Limits) {
    let _ = stream.set_nodelay(true);
    let tracked = Arc::clone(conn);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let busy = Busy::start(Arc::clone(&tracked));
        let router = router.clone();
        async move {
            let response = match tokio::time::timeout(limits.request, router.oneshot(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => super::routes::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the request took too long")
                    .into_response(),
            };
            // Busy until hyper has sent the body (a slow reader of a large export is
            // not idle) and drops it.
            Ok::<_, std::convert::Infallible>(response.map(|inner| Sending { inner, _busy: busy }))
        }
    });
    let served = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = served => {}
        () = idle_or_closed(conn, limits.idle) => {}
    }
}

/// Returns when the connection has had no request in progress for `idle`, or is told
/// to close. Wakes when the idle time would run out (or after `idle` while busy).
async fn idle_or_closed(conn: &Conn, idle: Duration) {
    loop {
        let left = match conn.idle_for() {
            Some(for_) if for_ >= idle => return,
            Some(for_) => idle - for_,
            None => idle,
        };
        tokio::select! {
            () = conn.close.notified() => return,
            () = tokio::time::sleep(left) => {}
        }
    }
}

/// A response's body while it is sent, holding its request's `Busy`.
struct Sending {
    inner: axum::body::Body,
    _busy: Busy,
}

impl http_body::Body for Sending {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request in progress on its connection; ending it restarts the idle clock.
struct Busy(Arc<Conn>);

impl Busy {
    fn start(conn: Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.since.lock().expect("not poisoned") = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_way() {
        let registry = Registry { conns: Mutex::new(BTreeMap::new()), max: 2 };
        let first = registry.admit(1).unwrap();
        let second = registry.admit(2).unwrap();
        let busy = Busy::start(Arc::clone(&first));
        assert!(registry.admit(3).is_some(), "the second (idle) made way");
        assert_eq!(registry.conns.lock().unwrap().keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let told =
            runtime.block_on(async { tokio::time::timeout(Duration::from_millis(10), second.close.notified()).await });
        assert!(told.is_ok(), "and was told to close");
        let third_busy = Busy::start(registry.conns.lock().unwrap()[&3].clone());
        assert!(registry.admit(4).is_none(), "every connection busy: the new one is dropped");
        drop((busy, third_busy));
        assert!(registry.admit(5).is_some());
    }
}
