//! The HTTP server loop: hyper connections under explicit limits, so that a slow, stuck or
//! flooding client cannot take the exporter down.
//!
//! `axum::serve` has no way to set hyper's timeouts or to cap connections, so connections are
//! accepted here and served by hyper directly:
//! - a cap on open connections (`--web.max-connections`): past it, new connections wait in the
//!   kernel's backlog instead of costing memory;
//! - a cap on open connections from one peer address (`--web.max-connections-per-peer`): past it,
//!   a new connection from that address is closed at once, so one client cannot take every slot;
//! - a deadline for each request head (`--web.read-header-timeout`, hyper's
//!   `header_read_timeout`), which also closes connections left idle for as long; a client that
//!   sends its head a byte at a time (slowloris) is cut off;
//! - a cap on the size of a request head (431 beyond it);
//! - TLS handshakes under their own deadline, inside the connection's slot.
//!
//! Body deadlines, body sizes and in-flight caps are per route (see `http.rs` and `callback.rs`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::webconfig::LiveWebConfig;

/// How long a graceful shutdown waits for open connections before it stops them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// The largest request head (request line and headers) read: 431 beyond it.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Server-wide limits, from the `--web.*` flags.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most, per listener.
    pub max_connections: usize,
    /// Open connections at most from one peer address, per listener (0: no such cap).
    pub max_connections_per_peer: usize,
    /// A request head must arrive within this; an idle keep-alive connection is closed after it.
    pub read_header_timeout: Duration,
    /// A request body must arrive within this.
    pub read_timeout: Duration,
    /// Scrapes of the telemetry path answered at once; more get 503. 0: no limit.
    pub max_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            max_connections_per_peer: 128,
            read_header_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            max_requests: 40,
        }
    }
}

/// Serves `router` on `listener`, over TLS when `tls` is set, until `token` is cancelled; then
/// lets open requests finish for at most [`SHUTDOWN_GRACE`]. Each TLS connection gets the
/// certificate in force when it is accepted (the web config is re-read on change).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<LiveWebConfig>>,
    router: axum::Router,
    limits: &Limits,
    token: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_header_timeout)
        .max_header_size(MAX_HEAD_BYTES);
    let http = Arc::new(http);
    let peers = Arc::new(PeerConnections::new(limits.max_connections_per_peer));
    let mut full_logged = false;
    loop {
        // Take a slot first, so that past the cap connections wait in the backlog.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if !full_logged {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached; new connections wait"
                    );
                    full_logged = true;
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    _ = token.cancelled() => break,
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = token.cancelled() => break,
        };
        if slots.available_permits() > 0 {
            full_logged = false;
        }
        let Some(peer_slot) = peers.admit(peer.ip()) else {
            // Closed at once: the slot goes back, and the peer learns nothing but a reset.
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls
            .as_ref()
            .and_then(|live| live.tls())
            .map(tokio_rustls::TlsAcceptor::from);
        let (http, router, watcher) = (http.clone(), router.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            let _peer_slot = peer_slot;
            serve_connection(tcp, peer, tls, &http, router, watcher).await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("open connections did not finish within {SHUTDOWN_GRACE:?}; closing them");
        }
    }
    Ok(())
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    http: &hyper::server::conn::http1::Builder,
    router: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let service = TowerToHyperService::new(router);
    let served = match tls {
        None => watcher.watch(http.serve_connection(TokioIo::new(tcp), service)).await,
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                watcher
                    .watch(http.serve_connection(TokioIo::new(stream), service))
                    .await
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    if let Err(e) = served {
        // Timeouts, resets and malformed requests: the client's problem, not ours.
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Open connections per peer address, under `--web.max-connections-per-peer`.
struct PeerConnections {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    /// When a refusal was last logged, so that a flood logs a line a minute, not a line a connection.
    last_logged: Mutex<Option<std::time::Instant>>,
}

/// One admitted connection of a peer; gives its place back when dropped.
struct PeerSlot {
    peers: Arc<PeerConnections>,
    ip: IpAddr,
}

impl PeerConnections {
    fn new(max: usize) -> PeerConnections {
        PeerConnections {
            max,
            open: Mutex::new(HashMap::new()),
            last_logged: Mutex::new(None),
        }
    }

    /// A place for one more connection from `ip`, or `None` when it has `max` open already.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        if self.max > 0 {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let n = open.entry(ip).or_insert(0);
            if *n >= self.max {
                drop(open);
                let mut last = self.last_logged.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    *last = Some(std::time::Instant::now());
                    tracing::warn!(peer = %ip, max_connections_per_peer = self.max, "a peer holds the most connections allowed; its new connections are closed at once");
                }
                return None;
            }
            *n += 1;
        }
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if self.peers.max == 0 {
            return;
        }
        let mut open = self.peers.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
