//! The command line of `turnpike-sim`, run as a user would.

use std::os::unix::ffi::OsStrExt;
use std::process::Command;

#[test]
fn an_argument_that_is_not_utf8_exits_two_naming_it() {
    // `std::env::args()` panicked here (exit 101 and a backtrace hint).
    let out = Command::new(env!("CARGO_BIN_EXE_turnpike-sim"))
        .arg("run")
        .arg(std::ffi::OsStr::from_bytes(b"sc\xe9nario.toml"))
        .output()
        .expect("run turnpike-sim");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("argument 2 is not valid UTF-8"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_usage_exits_two() {
    let out = Command::new(env!("CARGO_BIN_EXE_turnpike-sim"))
        .arg("frobnicate")
        .output()
        .expect("run turnpike-sim");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}
