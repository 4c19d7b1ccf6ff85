//! The `turnpike` binary: parse the command line, load the configuration, run the relay
//! in the foreground until SIGINT, or SIGTERM and the drain that follows; SIGHUP reloads
//! the configuration file.

use rand_core::{OsRng, RngCore};
use std::process::ExitCode;
use turnpike::cli::{self, Command, USAGE};
use turnpike::clock::Clock;
use turnpike::config::FileConfig;
use turnpike::seed::{hex, parse_seed};
use turnpike::settings::Settings;
use turnpike::workers::Workers;
use turnpike::{connect_info, fdlimit};

/// Exit code for a bad configuration or command line.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let opts = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("turnpike {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(o)) => o,
        Err(e) => {
            eprintln!("turnpike: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let bad_config = if opts.check_config {
        ExitCode::FAILURE
    } else {
        ExitCode::from(EXIT_CONFIG)
    };

    let (file_config, source, started_text) = match &opts.config {
        Some(path) => match FileConfig::load_text(path) {
            Ok((c, text)) => (c, path.display().to_string(), text),
            Err(e) => {
                eprintln!("turnpike: {e}");
                return bad_config;
            }
        },
        None => (
            FileConfig::builtin_default(random_secret()),
            "<built-in>".to_string(),
            String::new(),
        ),
    };
    let mut settings = match Settings::from_file(&file_config, &source) {
        Ok(mut s) => {
            if opts.config.is_none() {
                if let Some(api) = s.api.as_mut() {
                    api.optional = true;
                }
            }
            s
        }
        Err(e) => {
            eprintln!("turnpike: {e}");
            return bad_config;
        }
    };
    if let Some(path) = &opts.record_trace {
        settings.trace = Some(turnpike::trace_recorder::TraceSettings::new(
            path.clone(),
            file_config.trace_payloads,
            file_config.trace_max_bytes,
        ));
    }
    if opts.check_config {
        println!("{source}: configuration is valid");
        return ExitCode::SUCCESS;
    }

    // RUST_LOG, when set, decides; otherwise `log_level`, which a reload may change:
    // everything passes the logger's filter and the process-wide maximum decides.
    if std::env::var_os("RUST_LOG").is_some() {
        env_logger::Builder::from_env(env_logger::Env::default()).init();
    } else {
        env_logger::Builder::new()
            .filter_level(log::LevelFilter::Trace)
            .init();
        log::set_max_level(file_config.log_filter());
    }

    let seed = match opts.seed.as_deref().map(parse_seed) {
        Some(Some(s)) => s,
        Some(None) => {
            eprintln!("turnpike: --seed needs 64 hex digits");
            return ExitCode::from(EXIT_CONFIG);
        }
        None => {
            let mut s = [0u8; 32];
            OsRng.fill_bytes(&mut s);
            s
        }
    };
    // The seed is not a secret (no secret is derived from it): with the same
    // `node_secret` it reproduces a run's choices, and a trace holds it anyway.
    log::info!(
        "turnpike {} starting from {source}; seed {}",
        env!("CARGO_PKG_VERSION"),
        hex(&seed)
    );
    fdlimit::check_at_start(settings.total_quota);

    let builtin = opts.config.is_none();
    let banner_settings = builtin.then(|| settings.clone());
    let urls = settings.urls.clone();
    // Every loop is started before the banner, which is printed once.
    let mut runtime = match Workers::start(settings, seed) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("turnpike: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &opts.config {
        runtime.watch_config(turnpike::reload::ConfigFile::new(
            path,
            file_config,
            &started_text,
        ));
    }
    let listening = runtime.local_addrs();
    for (t, a) in &listening {
        log::info!("listening on {} {a}", t.as_str());
    }
    // Warnings about the URLs (more than 5 for Firefox, verification modes) come from
    // the runtime, which knows the rules of issued configurations.
    log::info!("TURN URLs: {}", urls.join(" "));
    if let Some(s) = banner_settings {
        if let Some(text) = connect_info::banner(&s, &listening, Clock::unix_ms() / 1000) {
            print!("{text}");
        }
        if let Some(api) = runtime.api_addr() {
            println!();
            println!("One-time credentials and ICE configurations from the HTTP API:");
            println!("  curl -s -X POST http://{api}/v1/ice-servers -d '{{\"label\":\"alice\"}}'");
            println!("  metrics: http://{api}/metrics   allocations: http://{api}/v1/allocations");
        }
    }
    match runtime.run() {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A random REST secret for the built-in default: 32 bytes from the OS, base64.
fn random_secret() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(b)
}
