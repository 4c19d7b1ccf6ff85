//! The command line of `turnpike-load`, run as a user would.

use std::os::unix::ffi::OsStrExt;
use std::process::Command;

#[test]
fn an_argument_that_is_not_utf8_exits_two_naming_it() {
    // `std::env::args()` panicked here (exit 101 and a backtrace hint).
    let out = Command::new(env!("CARGO_BIN_EXE_turnpike-load"))
        .arg("run")
        .arg("--server")
        .arg(std::ffi::OsStr::from_bytes(b"127.0.0.1:\xff"))
        .output()
        .expect("run turnpike-load");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--server: `127.0.0.1:\u{fffd}` is not valid UTF-8"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_usage_exits_two() {
    let out = Command::new(env!("CARGO_BIN_EXE_turnpike-load"))
        .args(["run", "stray"])
        .output()
        .expect("run turnpike-load");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument stray"));
}
