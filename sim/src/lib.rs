//! # turnpike-sim: the deterministic simulator
//!
//! Runs the very same core as production under virtual time, over a virtual network,
//! from one seed, and checks invariants at every step.
//!
//! - [`clock`], [`queue`]: virtual time and the one event queue (time, then sequence).
//! - [`net`], [`link`], [`firewall`]: hosts by address, UDP datagrams, TCP-like streams
//!   split anywhere, latency, jitter, loss, duplication, reordering, bandwidth, partitions.
//! - [`nat`]: many hosts behind one public address (office NAT, carrier NAT).
//! - [`host`], [`server`], [`browser`], [`nginx`], [`peer`]: the hosts ([`tls`]: the
//!   modelled TLS handshake of the nginx hops and the native listeners); [`node`]: a
//!   server of several event loops (4-tuples spread as SO_REUSEPORT does, messages
//!   between the loops' cores with virtual latency).
//! - [`uclient`]: scripted UDP clients in the manner of coturn's `turnutils_uclient`
//!   (EVEN-PORT pairs with a RESERVATION-TOKEN, one user racing on many 5-tuples).
//! - [`faults`]: wall-clock jumps, configuration reloads, bind failures, fd exhaustion,
//!   floods.
//! - [`fleet`]: relays drained, killed and revived, DNS names over several of them, and
//!   the fleet oracles (drains cut no call, redirects never loop, calls reconnect).
//! - [`oracle`], [`reflection`], [`rotation`], [`expect`]: the invariants, after every
//!   step and at the end.
//! - [`scenario`], [`runner`], [`digest`], [`cli`]: scenario files, runs, digests, the tool.
//! - [`trace`]: replay of traces recorded by the runtime, dump and cut to a script.
//!
//! Same seed, same run: nothing iterates a hash map, nothing reads a clock, and every
//! random choice comes from sub-streams of one ChaCha seed.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod browser;
pub mod cli;
pub mod clock;
pub mod digest;
pub mod expect;
pub mod faults;
pub mod firewall;
pub mod fleet;
pub mod host;
pub mod link;
pub mod nat;
pub mod net;
pub mod nginx;
pub mod node;
pub mod oracle;
pub mod peer;
pub mod queue;
pub mod reflection;
pub mod rotation;
pub mod runner;
pub mod scenario;
pub mod server;
pub mod tls;
pub mod trace;
pub mod uclient;
