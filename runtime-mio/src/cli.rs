//! The command line: `turnpike [--config FILE] [--check-config] [--seed HEX] [--version]
//! [--help]`.

use std::ffi::OsString;
use std::path::PathBuf;

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Print the usage and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
    /// Check the configuration, or run the relay.
    Run(Options),
}

/// Options of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The configuration file; None: the built-in loopback default.
    pub config: Option<PathBuf>,
    /// Only check the configuration, exit 0 if good and 1 if not.
    pub check_config: bool,
    /// Seed of the core (64 hex digits), to reproduce a run; None: from the OS.
    pub seed: Option<String>,
    /// Record a trace to this file (overrides `trace_file`).
    pub record_trace: Option<PathBuf>,
}

/// The usage text.
pub const USAGE: &str = "\
usage: turnpike [--config FILE] [--check-config] [--seed HEX] [--record-trace FILE]
                [--version] [--help]

A TURN relay (RFC 8656) for WebRTC.

  -c, --config FILE   configuration file (TOML); without it, start on a built-in
                      default bound to 127.0.0.1 (UDP and TCP 3478, a random TURN REST
                      secret) and print how to connect
      --check-config  check the configuration and exit: 0 if good, 1 if not
      --seed HEX      the core's random seed (64 hex digits, as logged at start),
                      to reproduce a run
      --record-trace FILE
                      record every input of the protocol core to FILE, for
                      `turnpike-sim replay` (same as `trace_file` in the config)
  -V, --version       print the version
  -h, --help          print this help

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.
Exit codes: 0 stopped by SIGTERM/SIGINT, 1 runtime failure, 2 bad configuration or usage.
";

/// The arguments as strings, or which one is not UTF-8. `std::env::args()` panics on
/// such an argument (a file name in another encoding, a stray byte from a script); this
/// is an error the user can act on instead.
pub fn utf8_args(args: impl IntoIterator<Item = OsString>) -> Result<Vec<String>, String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            a.into_string().map_err(|a| {
                format!(
                    "argument {} is not valid UTF-8: `{}`",
                    i + 1,
                    a.to_string_lossy()
                )
            })
        })
        .collect()
}

/// Parses the arguments (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut opts = Options::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            match inline.clone().or_else(|| it.next()) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(format!("{name} needs {what}")),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-c" | "--config" => opts.config = Some(PathBuf::from(value("a file")?)),
            "--check-config" => opts.check_config = true,
            "--seed" => opts.seed = Some(value("64 hex digits")?),
            "--record-trace" => opts.record_trace = Some(PathBuf::from(value("a file")?)),
            _ => return Err(format!("unknown argument `{arg}` (see --help)")),
        }
    }
    Ok(Command::Run(opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_the_options() {
        assert_eq!(p(&[]), Ok(Command::Run(Options::default())));
        assert_eq!(p(&["--help"]), Ok(Command::Help));
        assert_eq!(p(&["-V"]), Ok(Command::Version));
        let want = Options {
            config: Some("/etc/t.toml".into()),
            check_config: true,
            seed: None,
            record_trace: None,
        };
        assert_eq!(
            p(&["--config", "/etc/t.toml", "--check-config"]),
            Ok(Command::Run(want.clone()))
        );
        assert_eq!(
            p(&["--check-config", "--config=/etc/t.toml"]),
            Ok(Command::Run(want))
        );
        assert_eq!(
            p(&["-c", "a.toml", "--seed", "00ff"]),
            Ok(Command::Run(Options {
                config: Some("a.toml".into()),
                check_config: false,
                seed: Some("00ff".into()),
                record_trace: None,
            }))
        );
        assert_eq!(
            p(&["--record-trace", "t.bin"]),
            Ok(Command::Run(Options {
                record_trace: Some("t.bin".into()),
                ..Options::default()
            }))
        );
    }

    #[test]
    fn names_an_argument_that_is_not_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let args = vec![
            OsString::from("--config"),
            OsString::from_vec(b"caf\xe9.toml".to_vec()),
        ];
        let e = utf8_args(args).unwrap_err();
        assert!(
            e.contains("argument 2") && e.contains("caf\u{fffd}.toml"),
            "{e}"
        );
        assert_eq!(
            utf8_args([OsString::from("-h")]),
            Ok(vec!["-h".to_string()])
        );
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert!(p(&["--config"]).unwrap_err().contains("needs a file"));
        assert!(p(&["--frobnicate"]).unwrap_err().contains("--frobnicate"));
        assert!(p(&["extra"]).is_err());
    }
}
