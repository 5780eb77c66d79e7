//! The benchmark workloads, one release binary for both scripts (one link of the whole tree, not
//! two): `workloads [--smoke] [--only NAME,...]` is `bench/run`, `workloads soak [flags]` is
//! `bench/soak`. Both measure the exporter's library in process or `TIW_BIN` as a child process.

mod bench;
#[path = "../../../benches/common.rs"]
mod common;
mod process;
mod soak;

#[tokio::main]
async fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("soak") => soak::main().await,
        _ => bench::main().await,
    }
}
