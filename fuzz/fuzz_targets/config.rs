//! Config text with ${VAR} expansion → validation; no secret in any message.
//! The invariants live in `tiw_push_exporter::fuzzing::config`, which CI also runs on the corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tiw_push_exporter::fuzzing::config(data));
