//! tiw-push-exporter: a Prometheus exporter for Tencent Cloud Interactive Whiteboard (TIW)
//! whiteboard-push tasks. ARCHITECTURE.md has the layers, the path of a callback and of a poll, and
//! where each invariant lives.
//!
//! From the bottom up:
//! - [`task`]: plain domain types (status, finish reason, Facts, task-id rule, bounds, clock).
//! - [`census`]: the running-task census of every task type DescribeRunningTasks lists.
//! - [`instruments`]: the exporter's own metrics, one group per subsystem with a method per thing
//!   counted, each handed only to the subsystem that counts with it.
//! - [`config`]: YAML → validated configuration, the only YAML parser.
//! - [`tencentcloud`]: TC3 signing, the per-account budgets, the HTTP client with Tencent's
//!   envelope and retries, and the typed TIW actions (wire → domain).
//! - [`registry`]: the single source of truth — what the API confirmed, what callbacks claim, the
//!   counters, the poll schedule and the store journal.
//! - [`store`]: the embedded redb store, group commit, checksums.
//! - [`metrics`]: `/metrics`: every instrument group and the exposition of the registry.
//! - [`poller`] (discovery and polling) and [`callback`] (verified TIW events): the two ways in.
//! - [`reload`], [`http`] (the route table and basic auth), [`webconfig`] (reads the web config
//!   file), [`server`] (accept loop, limits, TLS).
//! - [`logfmt`]: the log line format of `--log.format=logfmt` (`msg=`, as the ecosystem writes it).
//! - [`exporter`]: the composition root for `serve`; [`demo`] runs it against [`simulator`], an
//!   embedded stand-in for Tencent; [`admin`] and [`cli`]: the one-shot commands and the flags.

pub mod admin;
pub mod callback;
pub mod census;
pub mod cli;
pub mod config;
pub mod demo;
pub mod exporter;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod instruments;
pub mod logfmt;
pub mod metrics;
pub mod poller;
pub mod recent;
pub mod recording;
pub mod recordings;
pub mod registry;
pub mod relay;
pub mod reload;
pub mod server;
pub mod simulator;
pub mod store;
pub mod task;
pub mod tencentcloud;
pub mod webconfig;

pub use config::Config;
pub use exporter::{Exporter, ServeOptions};
pub use registry::TaskRegistry;
pub use simulator::Simulator;
