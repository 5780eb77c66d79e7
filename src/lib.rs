//! tiw-push-exporter: a Prometheus exporter for Tencent Cloud Interactive Whiteboard (TIW)
//! whiteboard-push tasks.
//!
//! Data flows one way: Tencent → [`tencentcloud`] (signed API 3.0 client) → [`poller`] (discovery
//! and polling within the rate limit) and [`callback`] (verified TIW events) → [`registry`] (the
//! single source of truth) → [`metrics`] (the collector behind `/metrics`) → [`http`] (router,
//! landing page, health), served by [`server`] under connection and timeout limits. [`config`] turns
//! YAML into a validated configuration; [`exporter`] wires everything for `serve`; [`simulator`]
//! is an embedded stand-in for Tencent that tests and `demo` run against.

pub mod admin;
pub mod callback;
pub mod cli;
pub mod config;
pub mod demo;
pub mod exporter;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod poller;
pub mod registry;
pub mod reload;
pub mod server;
pub mod simulator;
pub mod store;
pub mod task;
pub mod tencentcloud;
pub mod webconfig;
