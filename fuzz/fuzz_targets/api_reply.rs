//! Bytes as Tencent's API might answer → the reply decoder → the registry → /metrics.
//! The invariants live in `tiw_push_exporter::fuzzing::api_reply`, which CI also runs on the corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tiw_push_exporter::fuzzing::api_reply(data));
