//! DESIGN.md: "the seed is not a secret and secrets are not derived from it". With a node
//! secret, the nonce key and the relay-port stream depend on the secret, and the nonce key
//! on nothing else: knowing the seed (it is logged and traced) gives none of them.

mod support;

use support::*;
use turnpike_core::auth::make_nonce;
use turnpike_core::secret::NodeSecret;
use turnpike_core::stun::attr;
use turnpike_core::Server;

fn with_secret(secret: u8) -> turnpike_core::Config {
    let mut c = config();
    c.node_secret = Some(NodeSecret([secret; 32]));
    c
}

/// The nonce the server of `seed` and config `cfg` issues to client 1 at T0.
fn nonce_of(cfg: turnpike_core::Config, seed: [u8; 32]) -> String {
    let mut h = Harness::with_seed(cfg, seed);
    let (_, out) = h.send_plain(&Client::udp(1), &Req::allocate());
    out.answer().text(attr::NONCE).expect("a 401 with a NONCE")
}

#[test]
fn the_nonce_key_is_not_a_function_of_the_seed() {
    let seed = [7u8; 32];
    let n = nonce_of(with_secret(1), seed);
    // Whoever knows the seed derives today's fallback key from it: it signs another nonce.
    let from_seed = make_nonce(&Server::nonce_key_of_seed(seed), client(1), T0, true);
    assert_ne!(n, from_seed, "the nonce key was derived from the seed");
    // The node secret's key signs it ...
    let from_secret = make_nonce(&NodeSecret([1; 32]).nonce_key(), client(1), T0, true);
    assert_eq!(n, from_secret);
    // ... whatever the seed (loops and relays sharing the secret accept each other's) ...
    assert_eq!(nonce_of(with_secret(1), [8u8; 32]), n);
    // ... and another secret with the same seed signs another nonce.
    assert_ne!(nonce_of(with_secret(2), seed), n);
    // Without a node secret (simulations, old traces) the seed is all there is.
    assert_eq!(nonce_of(config(), seed), from_seed);
}

#[test]
fn relay_ports_depend_on_the_secret_not_only_the_seed() {
    let ports = |cfg: turnpike_core::Config| -> Vec<u16> {
        let mut h = Harness::with_seed(cfg, [7u8; 32]);
        (0..4u8)
            .map(|i| {
                let mut c = Client::new(Via::Udp(client(10 + i)), USER, PASS);
                let (a, _) = h.allocate_ok(&mut c);
                a.xor(attr::XOR_RELAYED_ADDRESS)
                    .expect("a relayed address")
                    .port()
            })
            .collect()
    };
    let a = ports(with_secret(1));
    assert_eq!(a, ports(with_secret(1)), "same secret and seed, same ports");
    assert_ne!(a, ports(with_secret(2)), "another secret, other ports");
    assert_ne!(a, ports(config()), "the seed alone does not give the ports");
}
