//! The binary's command line and configuration errors, run as a user would.

use std::process::Command;

fn turnpike(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_turnpike"))
        .args(args)
        .output()
        .expect("run turnpike");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("turnpike-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn help_and_version_exit_zero() {
    let (code, out, _) = turnpike(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--check-config"));
    let (code, out, _) = turnpike(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("turnpike "));
}

#[test]
fn bad_usage_exits_two() {
    let (code, _, err) = turnpike(&["--bogus"]);
    assert_eq!(code, 2);
    assert!(err.contains("--bogus"));
}

#[test]
fn unknown_key_exits_two_with_one_line_naming_key_and_line() {
    let p = config_file(
        "unknown",
        "realm = \"r\"\nstatic_auth_secret = \"s\"\nturn_udp_prot = 3478\n",
    );
    let (code, _, err) = turnpike(&["--config", p.to_str().unwrap()]);
    let _ = std::fs::remove_file(&p);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(":3: key `turn_udp_prot`: unknown key (did you mean `turn_udp_port`?)"),
        "{err}"
    );
}

#[test]
fn check_config_exits_one_on_a_bad_value() {
    let p = config_file(
        "badvalue",
        "static_auth_secret = \"s\"\nrelay_port_min = \"low\"\n",
    );
    let (code, _, err) = turnpike(&["--check-config", "--config", p.to_str().unwrap()]);
    let _ = std::fs::remove_file(&p);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(":2: key `relay_port_min`"), "{err}");
}

#[test]
fn missing_file_exits_two() {
    let (code, _, err) = turnpike(&["--config", "/nonexistent/turnpike.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent/turnpike.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn an_argument_that_is_not_utf8_exits_two_naming_it() {
    use std::os::unix::ffi::OsStrExt;
    // `std::env::args()` panicked on these (exit 101 and a backtrace hint).
    let run = |args: &[&[u8]]| {
        let out = Command::new(env!("CARGO_BIN_EXE_turnpike"))
            .args(args.iter().map(|a| std::ffi::OsStr::from_bytes(a)))
            .output()
            .expect("run turnpike");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        (out.status.code(), err)
    };
    let (code, err) = run(&[b"--seed", b"\xff"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--seed: `\u{fffd}` is not valid UTF-8"),
        "{err}"
    );
    let (code, err) = run(&[b"caf\xe9"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unknown argument `caf\u{fffd}`"), "{err}");
    // A file name that is not UTF-8 is a file name: here, one that does not exist.
    let (code, err) = run(&[b"--config", b"/nonexistent/caf\xe9.toml"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot read"), "{err}");
}
