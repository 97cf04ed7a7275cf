//! Stamps the binary with the git commit it is built from (`gateway_build_info`, the
//! dashboard, `--version`). Outside a checkout (a Docker build without `.git`), the
//! `GATEWAY_COMMIT` environment variable is used, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=GATEWAY_COMMIT");
    if std::env::var_os("GATEWAY_COMMIT").is_some() {
        return;
    }
    // Rebuild when HEAD moves (a commit or a checkout), not on every build.
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit()));
    if let Some(commit) = commit {
        println!("cargo:rustc-env=GATEWAY_COMMIT={commit}");
    }
}
