//! # turnpike-core: a sans-IO TURN server
//!
//! The protocol core of the turnpike relay. It implements TURN (RFC 8656) on top of
//! STUN (RFC 8489), the stream framing of RFC 8656 §11.5 / RFC 6062, the PROXY
//! protocol (v1 and v2) that a TLS-terminating proxy prepends, long-term and TURN REST
//! credentials, and the relay's port pool and peer policy.
//!
//! It performs no I/O. It never reads a clock, opens a socket, spawns a thread or asks
//! the OS for randomness: time arrives as an argument ([`Instant`]), randomness comes from
//! the seed given to [`Server::new`], and secret material (nonce key, budget hash key,
//! relay-port and token streams) from the [`secret::NodeSecret`] in its [`Config`], never
//! from the seed. The same core therefore runs under the production
//! runtime (mio) and under the deterministic simulator, and a recorded trace of inputs
//! replays exactly.
//!
//! ## The run loop
//!
//! ```text
//! let mut server = Server::new(config, seed, now)?;
//! loop {
//!     // feed one input: handle_datagram / handle_stream_* / handle_relay_* / handle_timeout
//!     // then drain: while let Some(out) = server.poll_output() { ... }
//!     // then arm a timer for server.poll_timeout()
//! }
//! ```
//!
//! Relayed data (ChannelData, Send and Data indications) takes a fast path that allocates
//! nothing: the datagram calls return a [`Forward`] that names a range of the caller's own
//! buffer and where to send it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod channel;
pub mod cidr;
pub mod client;
pub mod config;
pub mod event;
pub mod framing;
pub mod ids;
pub mod node;
pub mod policy;
pub mod ports;
pub mod proxy_protocol;
pub mod secret;
pub mod server;
pub mod stun;
pub mod time;
pub mod trace;

mod allocation;
mod ratelimit;

pub use config::{AlternateServer, Config};
pub use event::{Event, Output};
pub use ids::{AllocationId, ConnId, ListenerId, RelayId, Transport};
pub use server::{Forward, Server, HEADROOM, TAILROOM};
pub use time::Instant;
