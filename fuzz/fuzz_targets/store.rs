//! Store file bytes → open → load → registry → /metrics: no panic, every refusal names the file.
//! The invariants live in `tiw_push_exporter::fuzzing::store`, which CI also runs on the corpus.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tiw_push_exporter::fuzzing::store(data));
