//! The thread that reloads the configuration file on SIGHUP.
//!
//! One place reads and checks the file ([`crate::reload`]), so the event loops never touch
//! the disk for it: on success every loop is sent the result over its inbox
//! ([`crate::link::Command::Reload`]), the HTTP API its new issuance secret, and the log
//! level is set here (it is process-wide). On failure nothing changes: the error is
//! logged with its key and line (or the certificate's file and what is wrong with it).

use crate::api::thread::ApiUpdates;
use crate::link::{Command, LoopHandle};
use crate::reload::ConfigFile;
use signal_hook::consts::SIGHUP;
use signal_hook::iterator::{Handle, Signals};
use std::io;
use std::sync::Arc;

/// Catches SIGHUP from the start (its default action would end the process), and reloads
/// once run.
pub struct Reloader {
    signals: Signals,
    file: Option<ConfigFile>,
    /// The HTTP API's issuance secret now, when the API is served.
    api_secret: Option<Vec<u8>>,
    /// `RUST_LOG` decides the log level instead of `log_level`.
    rust_log: bool,
}

/// Stops a running [`Reloader`] from another thread.
pub struct ReloadStop(Handle);

impl ReloadStop {
    /// Ends the thread's wait for signals.
    pub fn stop(&self) {
        self.0.close();
    }
}

impl Reloader {
    /// Catches SIGHUP from now on.
    pub fn new() -> io::Result<Self> {
        Ok(Reloader {
            signals: Signals::new([SIGHUP])?,
            file: None,
            api_secret: None,
            rust_log: std::env::var_os("RUST_LOG").is_some(),
        })
    }

    /// Reloads `file` on SIGHUP (without one, a SIGHUP is logged and ignored).
    pub fn watch(&mut self, file: ConfigFile) {
        self.file = Some(file);
    }

    /// The HTTP API's issuance secret at start (kept when a reloaded file sets none).
    pub fn set_api_secret(&mut self, secret: Vec<u8>) {
        self.api_secret = Some(secret);
    }

    /// A way to stop the thread once it runs.
    pub fn stopper(&self) -> ReloadStop {
        ReloadStop(self.signals.handle())
    }

    /// Waits for SIGHUP and reloads, until stopped.
    pub fn run(mut self, loops: Vec<LoopHandle>, api: Option<ApiUpdates>) {
        while let Some(_sig) = self.signals.forever().next() {
            self.reload(&loops, api.as_ref());
        }
    }

    /// Reads the file again and hands the result to everyone who takes a part of it.
    fn reload(&mut self, loops: &[LoopHandle], api: Option<&ApiUpdates>) {
        let Some(file) = &mut self.file else {
            log::info!("SIGHUP: started without a configuration file: nothing to reload");
            return;
        };
        let prepared = match file.prepare(self.api_secret.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                log::error!("SIGHUP: reload failed, keeping the running configuration: {e}");
                if let Some(first) = loops.first() {
                    first.send(Command::ReloadFailed(Arc::from(e.to_string())));
                }
                if let Some(api) = api {
                    api.reloaded(false, None);
                }
                return;
            }
        };
        for k in &prepared.restart_keys {
            log::warn!(
                "SIGHUP: `{k}` changed in {}: it needs a restart; the running value stays",
                file.path().display()
            );
        }
        if self.rust_log {
            log::info!("SIGHUP: RUST_LOG is set: it decides the log level, not `log_level`");
        } else {
            log::set_max_level(prepared.log_level);
        }
        let shared = Arc::new(prepared.loops);
        for h in loops {
            if !h.send(Command::Reload(shared.clone())) {
                log::warn!("SIGHUP: loop {} is gone", h.index);
            }
        }
        if let Some(api) = api {
            api.reloaded(true, prepared.issuance_secret.clone());
        }
        if prepared.issuance_secret.is_some() {
            self.api_secret = prepared.issuance_secret;
        }
        log::info!(
            "SIGHUP: reloaded {}: {}",
            file.path().display(),
            prepared.summary
        );
        file.applied(prepared.running);
    }
}
