//! The command line of `turnpike-sim`, run as a user would.

use std::os::unix::ffi::OsStrExt;
use std::process::Command;

#[test]
fn an_argument_that_is_not_utf8_exits_two_naming_it() {
    // `std::env::args()` panicked on these (exit 101 and a backtrace hint).
    let run = |args: &[&[u8]]| {
        let out = Command::new(env!("CARGO_BIN_EXE_turnpike-sim"))
            .args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)))
            .output()
            .expect("run turnpike-sim");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        (out.status.code(), err)
    };
    let (code, err) = run(&[b"run", b"s.toml", b"--seed", b"\xff"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--seed: `\u{fffd}` is not valid UTF-8"),
        "{err}"
    );
    // A scenario path that is not UTF-8 is a path: here, one that does not exist.
    let (code, err) = run(&[b"run", b"/nonexistent/sc\xe9nario.toml"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sc\u{fffd}nario.toml"), "{err}");
}

#[test]
fn an_unknown_option_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_turnpike-sim"))
        .args(["replay", "t.bin", "--frob", "x"])
        .output()
        .expect("run turnpike-sim");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --frob"));
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
