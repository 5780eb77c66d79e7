//! Random faults on the simulator's API, each kind with its own probability, the way a remote,
//! rate-limited API fails in practice: 5xx from a gateway, connections reset, replies that never
//! come or come late or broken, `InternalError`, `RequestLimitExceeded` beyond the real window,
//! and `AuthFailure.SignatureExpire` from a clock that drifted.
//!
//! A reset needs the socket itself: every connection is accepted through [`ResetListener`],
//! whose streams carry a flag the handler raises; the stream then fails its next write with
//! `SO_LINGER` 0, so the client sees a TCP RST instead of a reply.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How late a `slow` reply comes.
pub const SLOW_REPLY: Duration = Duration::from_secs(3);

/// Probabilities (0 to 1) that an API request meets each fault; at most one fault per request,
/// so the sum is the share of requests faulted and may not exceed 1.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultRates {
    /// HTTP 502 or 503 with a gateway's HTML page.
    pub http_5xx: f64,
    /// The connection reset (TCP RST) with no reply.
    pub connection_reset: f64,
    /// No byte until the client gives up.
    pub hang: f64,
    /// HTTP 200 with a reply cut off halfway through its JSON.
    pub truncated: f64,
    /// HTTP 200 with a body that is not JSON at all.
    pub not_json: f64,
    /// Tencent's `InternalError`.
    pub internal_error: f64,
    /// `RequestLimitExceeded`, whatever the real window says.
    pub rate_limited: f64,
    /// The true reply, [`SLOW_REPLY`] late.
    pub slow: f64,
    /// `AuthFailure.SignatureExpire`, as if the clocks had drifted apart.
    pub clock_skew: f64,
}

/// One drawn fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RandomFault {
    Http5xx,
    ConnectionReset,
    Hang,
    Truncated,
    NotJson,
    InternalError,
    RateLimited,
    Slow,
    ClockSkew,
}

impl RandomFault {
    pub fn label(self) -> &'static str {
        match self {
            RandomFault::Http5xx => "http_5xx",
            RandomFault::ConnectionReset => "connection_reset",
            RandomFault::Hang => "hang",
            RandomFault::Truncated => "truncated",
            RandomFault::NotJson => "not_json",
            RandomFault::InternalError => "internal_error",
            RandomFault::RateLimited => "rate_limited",
            RandomFault::Slow => "slow",
            RandomFault::ClockSkew => "clock_skew",
        }
    }
}

impl FaultRates {
    /// Every kind at `share / 9`: `share` of all requests faulted, evenly.
    pub fn uniform(share: f64) -> FaultRates {
        let p = share / 9.0;
        FaultRates {
            http_5xx: p,
            connection_reset: p,
            hang: p,
            truncated: p,
            not_json: p,
            internal_error: p,
            rate_limited: p,
            slow: p,
            clock_skew: p,
        }
    }

    fn table(&self) -> [(RandomFault, f64); 9] {
        [
            (RandomFault::Http5xx, self.http_5xx),
            (RandomFault::ConnectionReset, self.connection_reset),
            (RandomFault::Hang, self.hang),
            (RandomFault::Truncated, self.truncated),
            (RandomFault::NotJson, self.not_json),
            (RandomFault::InternalError, self.internal_error),
            (RandomFault::RateLimited, self.rate_limited),
            (RandomFault::Slow, self.slow),
            (RandomFault::ClockSkew, self.clock_skew),
        ]
    }

    /// The share of requests faulted.
    pub fn total(&self) -> f64 {
        self.table().iter().map(|(_, p)| p).sum()
    }

    /// Each probability within 0..=1 and their sum at most 1; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (fault, p) in self.table() {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{}: {p} is not a probability between 0 and 1", fault.label()));
            }
        }
        let total = self.total();
        if total > 1.0 + 1e-9 {
            return Err(format!("the probabilities add up to {total}, more than 1"));
        }
        Ok(())
    }

    /// Draws the fault for one request, if any.
    pub fn draw(&self, rng: &mut impl Rng) -> Option<RandomFault> {
        if self.total() <= 0.0 {
            return None;
        }
        let mut x: f64 = rng.random();
        for (fault, p) in self.table() {
            if x < p {
                return Some(fault);
            }
            x -= p;
        }
        None
    }
}

/// Raised by a handler to reset the connection its request came on.
#[derive(Clone, Default)]
pub struct ResetFlag(Arc<AtomicBool>);

impl ResetFlag {
    pub fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A TCP stream that fails its writes once its [`ResetFlag`] is raised.
pub struct ResettableStream {
    inner: TcpStream,
    reset: ResetFlag,
}

impl ResettableStream {
    fn check(&self) -> std::io::Result<()> {
        if self.reset.0.load(Ordering::Acquire) {
            // Linger 0: closing sends RST, not FIN.
            let _ = self.inner.set_zero_linger();
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        Ok(())
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts TCP connections as [`ResettableStream`]s.
pub struct ResetListener(pub TcpListener);

impl axum::serve::Listener for ResetListener {
    type Io = ResettableStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let _ = tcp.set_nodelay(true);
        (
            ResettableStream {
                inner: tcp,
                reset: ResetFlag::default(),
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, ResetListener>> for ResetFlag {
    fn connect_info(stream: IncomingStream<'_, ResetListener>) -> Self {
        stream.io().reset.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_follow_the_rates() {
        let rates = FaultRates {
            http_5xx: 0.1,
            slow: 0.2,
            ..Default::default()
        };
        rates.validate().unwrap();
        let mut rng = rand::rng();
        let n = 100_000;
        let mut counts = std::collections::HashMap::new();
        for _ in 0..n {
            *counts.entry(rates.draw(&mut rng)).or_insert(0usize) += 1;
        }
        let share = |f| counts.get(&f).copied().unwrap_or(0) as f64 / n as f64;
        assert!((share(Some(RandomFault::Http5xx)) - 0.1).abs() < 0.01);
        assert!((share(Some(RandomFault::Slow)) - 0.2).abs() < 0.01);
        assert!((share(None) - 0.7).abs() < 0.01);
        assert_eq!(FaultRates::default().draw(&mut rng), None);
    }

    #[test]
    fn bad_rates_name_the_field() {
        let e = FaultRates {
            hang: 1.5,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.starts_with("hang:"), "{e}");
        let e = FaultRates::uniform(1.8).validate().unwrap_err();
        assert!(e.contains("more than 1"), "{e}");
        assert!((FaultRates::uniform(0.3).total() - 0.3).abs() < 1e-9);
    }
}
