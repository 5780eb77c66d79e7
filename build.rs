//! Bakes the build context into the binary: the git revision and branch (for
//! `tiw_exporter_build_info` and `--version`; `unknown` outside a checkout), the build date
//! (`SOURCE_DATE_EPOCH` when set, for reproducible builds), the compiler and the target platform.
use std::process::Command;

/// What `program args` prints, trimmed, if it runs and succeeds with some output.
fn output<S: AsRef<std::ffi::OsStr>>(program: &str, args: impl IntoIterator<Item = S>) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    let revision = std::env::var("TIW_BUILD_REVISION")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| output("git", ["rev-parse", "--short=12", "HEAD"]));
    println!(
        "cargo:rustc-env=TIW_BUILD_REVISION={}",
        revision.unwrap_or_else(|| "unknown".into())
    );
    let branch = std::env::var("TIW_BUILD_BRANCH")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| output("git", ["rev-parse", "--abbrev-ref", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TIW_BUILD_BRANCH={branch}");
    let mut date_args = vec!["-u".to_string(), "+%Y%m%d-%H:%M:%S".to_string()];
    date_args.extend(
        std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .map(|epoch| format!("--date=@{epoch}")),
    );
    let date = output("date", date_args).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TIW_BUILD_DATE={date}");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = output(&rustc, ["--version"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TIW_BUILD_RUSTC={rustc_version}");
    // Cargo tells build scripts the target triple.
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=TIW_BUILD_TARGET={target}");
    println!("cargo:rerun-if-env-changed=TIW_BUILD_REVISION");
    println!("cargo:rerun-if-env-changed=TIW_BUILD_BRANCH");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
