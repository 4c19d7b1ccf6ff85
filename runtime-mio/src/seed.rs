//! Seeds: the main seed in hex (logs, `--seed`), and each loop's seed drawn from it.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// The seed of loop `index`: the main seed for loop 0 (a single loop runs exactly as
/// before), for the others a ChaCha20 stream of the main seed, one per index.
pub fn loop_seed(seed: [u8; 32], index: usize) -> [u8; 32] {
    if index == 0 {
        return seed;
    }
    let mut r = ChaCha20Rng::from_seed(seed);
    r.set_stream(0x6c6f_6f70_0000_0000 | index as u64);
    let mut out = [0u8; 32];
    r.fill_bytes(&mut out);
    out
}

/// Lower-case hex of `bytes` (the seed in logs).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits into a seed.
pub fn parse_seed(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use turnpike_core::{Server, Transport};

    #[test]
    fn seeds_round_trip_through_hex() {
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        let h = hex(&seed);
        assert_eq!(h.len(), 64);
        assert_eq!(parse_seed(&h), Some(seed));
        assert_eq!(parse_seed("00"), None);
        assert_eq!(parse_seed(&"zz".repeat(32)), None);
        assert_eq!(parse_seed(&"é".repeat(32)), None);
    }

    #[test]
    fn loop_seeds_are_distinct_and_stable() {
        let seed = [7u8; 32];
        assert_eq!(loop_seed(seed, 0), seed);
        let a = loop_seed(seed, 1);
        assert_ne!(a, seed);
        assert_ne!(a, loop_seed(seed, 2));
        assert_eq!(a, loop_seed(seed, 1));
    }

    /// Sends the client's Allocate to `first` (learning realm and nonce from its 401),
    /// then its authenticated Allocate to `second`: true if `second` accepted the nonce
    /// and went on to bind a relay socket.
    fn nonce_carries_over(first: &mut Server, second: &mut Server) -> bool {
        use turnpike_core::client::{Client, ClientConfig};
        use turnpike_core::event::Output;
        use turnpike_core::{Instant, ListenerId};
        let now = Instant::from_secs(1);
        let relay: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let cfg = ClientConfig::new(relay, Transport::Udp, "u", "pw");
        let mut client = Client::new(cfg, [9; 32], now);
        client.allocate(now);
        let feed = |server: &mut Server, client: &mut Client| -> Vec<Output> {
            let mut bytes = client.poll_transmit().expect("a request");
            let len = bytes.len();
            let _ = server.handle_datagram(now, ListenerId(0), from, &mut bytes, 0..len);
            let mut outs = Vec::new();
            while let Some(o) = server.poll_output() {
                if let Output::Transmit { data, .. } = &o {
                    client.handle_input(now, data);
                }
                outs.push(o);
            }
            outs
        };
        feed(first, &mut client);
        feed(second, &mut client)
            .iter()
            .any(|o| matches!(o, Output::BindRelay { .. }))
    }

    #[test]
    fn a_nonce_from_one_loop_is_good_on_another() {
        use turnpike_core::auth::Credentials;
        use turnpike_core::config::ListenerConfig;
        use turnpike_core::{Config, Instant, ListenerId};
        let mut credentials = Credentials::new("loops.test");
        credentials.add_user("u", "pw");
        let mut cfg = Config::new(credentials, "127.0.0.1".parse().unwrap());
        cfg.listeners = vec![ListenerConfig {
            id: ListenerId(0),
            transport: Transport::Udp,
            local: "127.0.0.1:3478".parse().unwrap(),
            proxy_protocol: false,
        }];
        let seed = [5u8; 32];
        let now = Instant::from_secs(1);
        let mut loop0 = Server::new(cfg.clone(), seed, now).unwrap();
        let mut shared = cfg.clone();
        shared.nonce_key = Some(Server::nonce_key_of_seed(seed));
        let mut loop1 = Server::new(shared, loop_seed(seed, 1), now).unwrap();
        assert!(nonce_carries_over(&mut loop0, &mut loop1));
        // Control: a loop with a key of its own would answer 438 instead.
        let mut loop0 = Server::new(cfg.clone(), seed, now).unwrap();
        let mut alone = Server::new(cfg, loop_seed(seed, 1), now).unwrap();
        assert!(!nonce_carries_over(&mut loop0, &mut alone));
    }
}
