//! Reloading the configuration file (SIGHUP): which keys change at run time, and what the
//! event loops, the HTTP API and the logger take from a reloaded file.
//!
//! The whole file is read and checked first, exactly as at start (syntax, every key's
//! rules, the certificate and key); on any error nothing changes. Keys that cannot change
//! while the relay runs (listeners, relay addresses and ports, the realm, loops, lifetimes,
//! ...) keep their running values, and each one changed is named in a warning: it needs a
//! restart. The reloadable keys ([`RELOADABLE_KEYS`]) are taken from the new file and the
//! rest from the running configuration, and that merged configuration is checked again
//! (a combination of new and old values must hold too).

use crate::config::{find_key_line, ConfigError, FileConfig};
use crate::settings::Settings;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use turnpike_core::config::Reloadable;

/// The keys a reload takes from the file; every other key needs a restart.
pub const RELOADABLE_KEYS: &[&str] = &[
    "users",
    "static_auth_secret",
    "issuance_secret",
    "allowed_peer_ip",
    "denied_peer_ip",
    "allow_loopback_peers",
    "user_quota",
    "total_quota",
    "max_bps",
    "total_max_bps",
    "tls_cert_file",
    "tls_key_file",
    "log_level",
];

/// What every event loop takes from a reloaded file (shared by the loops).
pub struct LoopReload {
    /// The core's part ([`turnpike_core::Server::reload`]): `total_max_bps` is the node's,
    /// each loop takes its share.
    pub core: Reloadable,
    /// The TLS configuration for new handshakes, when the relay serves TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A reloaded file, checked and ready to apply. Not `Debug`: it holds secrets.
pub struct Prepared {
    /// The configuration now running: reloadable keys from the file, the rest as before.
    pub running: FileConfig,
    /// For the loops.
    pub loops: LoopReload,
    /// The secret of issued credentials for the HTTP API (the configured one, or the
    /// running one when the file sets none).
    pub issuance_secret: Option<Vec<u8>>,
    /// The log level.
    pub log_level: log::LevelFilter,
    /// Keys changed in the file that need a restart (their running values stay).
    pub restart_keys: Vec<String>,
    /// A line for the log: counts and fingerprints, never a secret.
    pub summary: String,
}

/// The configuration file the relay was started from, and what runs now.
pub struct ConfigFile {
    path: PathBuf,
    /// The file's keys as the relay started with them (for keys that need a restart).
    started: toml::Table,
    running: FileConfig,
}

impl ConfigFile {
    /// The file at `path`, whose checked content `running` the relay started with,
    /// parsed from `text` (what was read at start: reading the file again here could
    /// see a later edit).
    pub fn new(path: &Path, running: FileConfig, text: &str) -> Self {
        // `text` already parsed as TOML into `running`: as a table it parses too.
        let started = text.parse::<toml::Table>().unwrap_or_default();
        ConfigFile {
            path: path.to_path_buf(),
            started,
            running,
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and checks the file again. `api_secret` is the issuance secret the HTTP API
    /// uses now (kept when the file sets none).
    pub fn prepare(&self, api_secret: Option<&[u8]>) -> Result<Prepared, ConfigError> {
        let name = self.path.display().to_string();
        let text = std::fs::read_to_string(&self.path).map_err(|e| ConfigError {
            file: name.clone(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        let new = FileConfig::parse(&name, &text)?;
        let table = text.parse::<toml::Table>().unwrap_or_default();
        let restart_keys = changed_keys(&self.started, &table);
        let merged = merge(&self.running, &new);
        merged.check().map_err(|(key, message)| ConfigError {
            file: name.clone(),
            line: find_key_line(&text, key),
            key: Some(key.to_string()),
            message,
        })?;
        let settings = Settings::from_file(&merged, &name)?;
        let issuance_secret = merged
            .issuance_secret
            .as_ref()
            .map(|s| s.0.as_bytes().to_vec())
            .or_else(|| api_secret.map(<[u8]>::to_vec));
        let mut core = Reloadable::from_config(&settings.core);
        // Every core accepts the issuance secret as a REST secret, as at start.
        if let (Some(s), true) = (&issuance_secret, api_secret.is_some()) {
            core.credentials.add_rest_secret(s);
        }
        let rotated = issuance_secret.as_deref() != api_secret;
        let summary = summary(&merged, &core, api_secret.is_some() && rotated);
        Ok(Prepared {
            log_level: merged.log_filter(),
            running: merged,
            loops: LoopReload {
                core,
                tls: settings.tls,
            },
            issuance_secret: api_secret.and(issuance_secret),
            restart_keys,
            summary,
        })
    }

    /// Makes `running` the running configuration (after a reload was applied).
    pub fn applied(&mut self, running: FileConfig) {
        self.running = running;
    }
}

/// `running` with the reloadable keys of `new`. The certificate and key files are taken
/// only when the relay serves TLS (serving it or not needs a restart).
fn merge(running: &FileConfig, new: &FileConfig) -> FileConfig {
    let mut m = running.clone();
    m.users = new.users.clone();
    m.static_auth_secret = new.static_auth_secret.clone();
    m.issuance_secret = new.issuance_secret.clone();
    m.allowed_peer_ip = new.allowed_peer_ip.clone();
    m.denied_peer_ip = new.denied_peer_ip.clone();
    m.allow_loopback_peers = new.allow_loopback_peers;
    m.user_quota = new.user_quota;
    m.total_quota = new.total_quota;
    m.max_bps = new.max_bps;
    m.total_max_bps = new.total_max_bps;
    m.log_level = new.log_level.clone();
    if running.native_tls() && new.native_tls() {
        m.tls_cert_file = new.tls_cert_file.clone();
        m.tls_key_file = new.tls_key_file.clone();
    }
    m
}

/// The top-level keys whose values differ between `old` and `new` (one absent counts as
/// changed), except the reloadable ones, in name order.
pub fn changed_keys(old: &toml::Table, new: &toml::Table) -> Vec<String> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !RELOADABLE_KEYS.contains(&k.as_str()))
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

/// What the reloaded configuration holds, for the log: counts and fingerprints only.
fn summary(c: &FileConfig, core: &Reloadable, new_issuance_secret: bool) -> String {
    let cert = c
        .tls_cert_file
        .as_deref()
        .filter(|_| c.native_tls())
        .and_then(crate::tls::cert_fingerprint)
        .map(|f| format!(", certificate sha256 {f}"))
        .unwrap_or_default();
    format!(
        "{} users, {} REST secrets{}, peers allowed {} denied {}, user_quota {}, total_quota {}, log_level {}{cert}",
        c.users.len(),
        c.static_auth_secret.0.len(),
        if new_issuance_secret {
            " (a new issuance secret)"
        } else {
            ""
        },
        core.peer_policy.allow.len(),
        core.peer_policy.deny.len(),
        core.user_quota,
        core.total_quota,
        c.log_filter(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn only_keys_that_need_a_restart_are_named() {
        let old = table("realm = \"a\"\nusers = { a = \"1\" }\nrelay_port_min = 50000\n");
        let new = table(
            "realm = \"b\"\nusers = { a = \"2\" }\nworkers = 1\nuser_quota = 3\nrelay_port_min = 50000\n",
        );
        assert_eq!(changed_keys(&old, &new), vec!["realm", "workers"]);
        assert!(changed_keys(&old, &old).is_empty());
    }

    #[test]
    fn a_merge_takes_reloadable_keys_and_keeps_the_rest() {
        let running = FileConfig::parse(
            "a",
            "realm = \"r\"\nusers = { a = \"pw\" }\nuser_quota = 2\nturn_udp_port = 4000\n",
        )
        .unwrap();
        let new = FileConfig::parse(
            "b",
            "realm = \"other\"\nusers = { b = \"pw\" }\nuser_quota = 5\nturn_udp_port = 5000\ndenied_peer_ip = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let m = merge(&running, &new);
        assert_eq!(m.realm, "r");
        assert_eq!(m.turn_udp_port, running.turn_udp_port);
        assert_eq!(m.user_quota, 5);
        assert!(m.users.contains_key("b") && !m.users.contains_key("a"));
        assert_eq!(m.denied_peer_ip, vec!["10.0.0.0/8".to_string()]);
    }

    #[test]
    fn the_summary_names_no_secret() {
        let c = FileConfig::parse(
            "a",
            "users = { alice = \"pw-of-alice\" }\nstatic_auth_secret = \"the-rest-secret\"\n",
        )
        .unwrap();
        let s = Settings::from_file(&c, "a").unwrap();
        let line = summary(&c, &Reloadable::from_config(&s.core), true);
        assert!(
            line.contains("1 users, 1 REST secrets (a new issuance secret)"),
            "{line}"
        );
        assert!(!line.contains("pw-of-alice") && !line.contains("the-rest-secret"));
    }

    #[test]
    fn keys_changed_since_start_are_named_even_if_the_file_changed_before_watching() {
        let dir = std::env::temp_dir().join(format!("turnpike-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("turnpike.toml");
        let at_start = "static_auth_secret = \"s\"\nturn_udp_port = 4000\n";
        let running = FileConfig::parse("a", at_start).unwrap();
        // Edited between the start and the watch: the relay still runs port 4000.
        std::fs::write(&path, "static_auth_secret = \"s\"\nturn_udp_port = 5000\n").unwrap();
        let file = ConfigFile::new(&path, running, at_start);
        let p = file.prepare(None).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(p.restart_keys, vec!["turn_udp_port"]);
    }
}
