//! Tencent Cloud API 3.0 for TIW: [`sign`] (TC3-HMAC-SHA256), [`ratelimit`] (the per-action budget),
//! [`client`] (HTTP, envelope, retries) and [`tiw`] (typed actions).

pub mod client;
pub mod ratelimit;
pub mod sign;
pub mod tiw;

pub use client::{ApiError, Client, Limiters, RetryPolicy};
pub use tiw::TiwClient;
