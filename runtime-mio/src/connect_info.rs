//! What the relay prints on start with the built-in default: where it listens, an ICE
//! configuration a browser can use (TURN REST credentials valid for 24 hours), and a
//! ready-to-paste command line for coturn's test client.

use crate::settings::Settings;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::net::SocketAddr;
use turnpike_core::auth::rest_password;
use turnpike_core::Transport;

/// How long the printed example credentials are valid, seconds.
pub const EXAMPLE_VALIDITY_S: u64 = 24 * 3600;
/// The user part of the printed REST username.
pub const EXAMPLE_USER: &str = "demo";

/// A TURN REST username valid until `now_unix_s + valid_s` (draft-uberti-behave-turn-rest
/// §2.2: `<expiry>:<user>`).
pub fn rest_username(now_unix_s: u64, valid_s: u64, user: &str) -> String {
    format!("{}:{user}", now_unix_s.saturating_add(valid_s))
}

/// The ICE configuration (RTCConfiguration) a browser is given: relay only.
pub fn ice_config(urls: &[String], username: &str, credential: &str) -> Value {
    json!({
        "iceServers": [{"urls": urls, "username": username, "credential": credential}],
        "iceTransportPolicy": "relay",
    })
}

/// The start banner: listeners, the ICE configuration, and test commands. `None` when
/// the configuration has no REST secret to issue credentials with.
pub fn banner(
    settings: &Settings,
    listening: &[(Transport, SocketAddr)],
    now_unix_s: u64,
) -> Option<String> {
    let secret = settings.rest_secret.as_ref()?;
    let username = rest_username(now_unix_s, EXAMPLE_VALIDITY_S, EXAMPLE_USER);
    let credential = rest_password(secret.as_bytes(), &username);
    Some(banner_with(settings, listening, &username, &credential))
}

/// The banner for given credentials.
pub fn banner_with(
    settings: &Settings,
    listening: &[(Transport, SocketAddr)],
    username: &str,
    credential: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "turnpike {} is running on its built-in default (loopback only).",
        env!("CARGO_PKG_VERSION")
    );
    for (t, a) in listening {
        let _ = writeln!(s, "  listening: {} {a}", t.as_str());
    }
    let (min, max) = (settings.core.relay_port_min, settings.core.relay_port_max);
    let _ = writeln!(s, "  relay ports: {min}-{max}");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "ICE configuration for a browser (credentials valid for 24 hours):"
    );
    let _ = writeln!(s, "{}", ice_config(&settings.urls, username, credential));
    let server = listening
        .iter()
        .find(|(t, _)| *t == Transport::Udp)
        .or(listening.first())
        .map(|(_, a)| *a);
    if let Some(server) = server {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Try it with coturn's test client (two clients relaying to each other):"
        );
        let _ = writeln!(
            s,
            "  turnutils_uclient -u '{username}' -w '{credential}' -p {} -e {} -n 10 -m 1 -y {}",
            server.port(),
            server.ip(),
            server.ip()
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "For a real deployment, write a configuration file and start with --config FILE."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;
    use crate::settings::turn_urls;
    use crate::sockets::SocketBuffers;
    use std::net::{IpAddr, Ipv4Addr};
    use turnpike_core::Config;

    #[test]
    fn rest_username_carries_the_expiry() {
        assert_eq!(
            rest_username(1_700_000_000, EXAMPLE_VALIDITY_S, "demo"),
            "1700086400:demo"
        );
    }

    #[test]
    fn ice_config_is_relay_only() {
        let urls = Settings::from_file(&FileConfig::builtin_default("s".into()), "t")
            .unwrap()
            .urls;
        let v = ice_config(&urls, "1:demo", "pw");
        assert_eq!(
            v.to_string(),
            r#"{"iceServers":[{"credential":"pw","urls":["turn:127.0.0.1:3478?transport=udp","turn:127.0.0.1:3478?transport=tcp"],"username":"1:demo"}],"iceTransportPolicy":"relay"}"#
        );
    }

    #[test]
    fn banner_names_listeners_and_a_client_command() {
        let fc = FileConfig::builtin_default("s".into());
        let ice = crate::settings::ice_settings(&fc, Vec::new());
        // A hand-made Settings: building one needs the core's credential store.
        let settings = Settings {
            core: Config::new(Default::default(), IpAddr::V4(Ipv4Addr::LOCALHOST)),
            listeners: crate::settings::listener_specs(&fc),
            buffers: SocketBuffers {
                receive: 0,
                send: 0,
            },
            event_log: None,
            urls: turn_urls(&ice, fc.turn_udp_port),
            rest_secret: Some("s".into()),
            total_quota: 10,
            ice,
            api: None,
            trace: None,
            workers: 1,
            coalesce: None,
            io_uring: crate::config::IoUringMode::Off,
            pack_loops: false,
            tls: None,
            drain_timeout: core::time::Duration::ZERO,
        };
        let listening = [
            (Transport::Udp, "127.0.0.1:3478".parse().unwrap()),
            (Transport::Tcp, "127.0.0.1:3478".parse().unwrap()),
        ];
        let b = banner_with(&settings, &listening, "99:demo", "pw");
        assert!(b.contains("listening: udp 127.0.0.1:3478"), "{b}");
        assert!(b.contains("listening: tcp 127.0.0.1:3478"), "{b}");
        assert!(b.contains("\"iceTransportPolicy\":\"relay\""), "{b}");
        assert!(b.contains("turnutils_uclient -u '99:demo' -w 'pw' -p 3478 -e 127.0.0.1 -n 10 -m 1 -y 127.0.0.1"), "{b}");
    }
}
