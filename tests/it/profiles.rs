//! The two test profiles stay honest: every test that needs a program beyond the Rust toolchain
//! (it calls `needs`, or wants the static binary) is in the `bare` profile's filter, which `.ci/run`
//! runs with those programs hidden, so a laptop's default `cargo nextest run` is known to skip it.

use std::path::Path;

/// `module::test` of every integration test whose body calls `needs(` or `static_binary()`.
fn tests_needing_programs() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_string_lossy().to_string();
        if module == "common" || module == "profiles" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // Each test: its attribute, its name, and its body up to the next item at column 0.
        let mut rest = text.as_str();
        while let Some(at) = [rest.find("#[test]"), rest.find("#[tokio::test")]
            .into_iter()
            .flatten()
            .min()
        {
            rest = &rest[at..];
            let name_at = rest.find("fn ").unwrap() + 3;
            let name: String = rest[name_at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let body_end = rest[name_at..].find("\n}\n").map_or(rest.len(), |i| name_at + i);
            let body = &rest[name_at..body_end];
            if body.contains("needs(&[") || body.contains("static_binary()") {
                found.push(format!("{module}::{name}"));
            }
            rest = &rest[body_end..];
        }
    }
    found.sort();
    found
}

#[test]
fn every_test_that_needs_a_program_is_in_the_bare_profile() {
    let config = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".config/nextest.toml")).unwrap();
    let bare = &config[config.find("[profile.bare]").expect("a bare profile")..];
    let modules: Vec<&str> = bare
        .split("test(/^")
        .skip(1)
        .filter_map(|s| s.split_once("::/)").map(|(m, _)| m))
        .collect();
    let exact: Vec<&str> = bare
        .split("test(=")
        .skip(1)
        .filter_map(|s| s.split_once(')').map(|(t, _)| t))
        .collect();
    let needing = tests_needing_programs();
    assert!(needing.len() >= 20, "found only {needing:?}");
    for test in &needing {
        let module = test.split("::").next().unwrap();
        assert!(
            modules.contains(&module) || exact.contains(&test.as_str()),
            "{test} needs a program but is not in .config/nextest.toml's bare profile"
        );
    }
}
