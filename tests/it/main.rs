//! Integration tests: the exporter against the embedded simulator over real HTTP on loopback.

mod alerting;
mod bench_smoke;
mod burst;
mod callbacks;
mod cli;
mod common;
mod durability;
mod faults;
mod firsthour;
mod freshness;
mod ha;
mod hostile;
mod install;
mod integrity;
mod landing;
mod lifecycle;
mod limits;
mod observability;
mod operation;
mod promtool;
mod quickstart;
mod ratelimit;
mod secrets;
mod tls;
mod toolkit;
mod trust;
