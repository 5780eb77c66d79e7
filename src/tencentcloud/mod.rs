//! Tencent Cloud API 3.0 for TIW: [`sign`] (TC3-HMAC-SHA256), [`ratelimit`] (the per-action budget),
//! [`client`] (HTTP, envelope, retries) and [`tiw`] (typed actions).

pub mod client;
pub mod online_record;
pub mod ratelimit;
pub mod sign;
pub mod tiw;

pub use client::{ApiError, Client, ErrorKind, RetryPolicy};
pub use ratelimit::Limiters;

/// Regions TIW's API serves: `ap-guangzhou` on the China site, `ap-singapore` for international
/// accounts (Tencent's international API page lists only that region).
pub const TIW_REGIONS: [&str; 2] = ["ap-guangzhou", "ap-singapore"];
pub use tiw::TiwClient;
