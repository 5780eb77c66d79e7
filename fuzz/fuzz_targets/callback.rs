//! Raw callback bytes → verify → parse → apply to a registry → /metrics.
//! The invariants live in `tiw_push_exporter::fuzzing::callback`, which CI also runs on the corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tiw_push_exporter::fuzzing::callback(data));
