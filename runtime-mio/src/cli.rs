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
      --seed HEX      the core's random seed (64 hex digits, as logged at start; not
                      a secret), to reproduce a run given the same `node_secret`
      --record-trace FILE
                      record every input of the protocol core to FILE, for
                      `turnpike-sim replay` (same as `trace_file` in the config)
  -V, --version       print the version
  -h, --help          print this help

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) for more.
SIGTERM drains (no new allocations; exits when the live ones end or after
drain_timeout_s); a second SIGTERM, or SIGINT, stops at once.
Exit codes: 0 stopped by SIGTERM/SIGINT or drained, 1 runtime failure, 2 bad configuration
or usage.
";

/// Parses the arguments (without the program name), as the OS gave them: a path may be
/// any bytes; any other value must be UTF-8 (an error names the option otherwise).
///
/// Tokenizing is lexopt's (`--opt value`, `--opt=value`, `-c value`, `-cvalue`, `--`);
/// what the options mean, their errors and the usage text are ours.
pub fn parse<I>(args: I) -> Result<Command, String>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut opts = Options::default();
    let mut p = lexopt::Parser::from_args(args);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let name = match arg {
            Long(l) => format!("--{l}"),
            Short(c) => format!("-{c}"),
            Value(v) => return Err(unknown(&v.to_string_lossy())),
        };
        let mut value = |what: &str| -> Result<OsString, String> {
            match p.value() {
                Ok(v) if !v.is_empty() => Ok(v),
                _ => Err(format!("{name} needs {what}")),
            }
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-c" | "--config" => opts.config = Some(value("a file")?.into()),
            "--check-config" => opts.check_config = true,
            "--seed" => {
                let v = value("64 hex digits")?;
                opts.seed = Some(v.into_string().map_err(|v| {
                    format!("{name}: `{}` is not valid UTF-8", v.to_string_lossy())
                })?);
            }
            "--record-trace" => opts.record_trace = Some(value("a file")?.into()),
            _ => return Err(unknown(&name)),
        }
    }
    Ok(Command::Run(opts))
}

fn unknown(arg: &str) -> String {
    format!("unknown argument `{arg}` (see --help)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().copied())
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
    fn takes_paths_as_bytes_and_names_other_values_that_are_not_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let bad = || OsString::from_vec(b"caf\xe9".to_vec());
        // A file name in another encoding is a good file name.
        assert_eq!(
            parse([OsString::from("--config"), bad()]),
            Ok(Command::Run(Options {
                config: Some(bad().into()),
                ..Options::default()
            }))
        );
        let e = parse([OsString::from("--seed"), bad()]).unwrap_err();
        assert!(e.contains("--seed") && e.contains("caf\u{fffd}"), "{e}");
        let e = parse([bad()]).unwrap_err();
        assert!(e.contains("unknown argument `caf\u{fffd}`"), "{e}");
    }

    #[test]
    fn short_and_inline_forms() {
        let want = Ok(Command::Run(Options {
            config: Some("a.toml".into()),
            ..Options::default()
        }));
        assert_eq!(p(&["-ca.toml"]), want);
        assert_eq!(p(&["-c", "a.toml"]), want);
        assert_eq!(p(&["--config=a.toml"]), want);
        assert!(p(&["--config="]).unwrap_err().contains("needs a file"));
        assert!(p(&["--check-config=yes"]).is_err());
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert!(p(&["--config"]).unwrap_err().contains("needs a file"));
        assert!(p(&["--frobnicate"]).unwrap_err().contains("--frobnicate"));
        assert!(p(&["extra"]).is_err());
    }
}
