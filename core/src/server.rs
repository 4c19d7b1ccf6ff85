//! The TURN server state machine (RFC 8656) — skeleton, implementation in progress.

use crate::auth::Credentials;
use crate::config::Config;
use crate::event::Output;
use crate::ids::{AllocationId, ConnId, ListenerId, RelayId};
use crate::time::Instant;
use core::ops::Range;
use std::net::SocketAddr;

/// Bytes the caller leaves free before a relayed payload, so the core can write a
/// ChannelData header (4) or a Data indication header (20 + XOR-PEER-ADDRESS up to 24 +
/// DATA header 4) in place.
pub const HEADROOM: usize = 48;
/// Bytes the caller leaves free after a relayed payload, for padding to 4 bytes.
pub const TAILROOM: usize = 4;

/// Where to send a relayed packet: a range of the caller's own buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Send `buf[range]` from relay socket `relay` to `peer`.
    ToPeer {
        /// The relay socket.
        relay: RelayId,
        /// The peer.
        peer: SocketAddr,
        /// The payload within the caller's buffer.
        range: Range<usize>,
    },
    /// Send `buf[range]` from UDP listener `listener` to `client`.
    ToClient {
        /// The listener the client uses.
        listener: ListenerId,
        /// The client.
        client: SocketAddr,
        /// ChannelData or Data indication within the caller's buffer.
        range: Range<usize>,
    },
    /// Write `buf[range]` on stream `conn`.
    ToStream {
        /// The stream.
        conn: ConnId,
        /// ChannelData (padded) or Data indication within the caller's buffer.
        range: Range<usize>,
    },
}

/// Why the runtime could not bind a relay socket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BindError {
    /// The port is in use by someone else (EADDRINUSE): try another.
    AddrInUse,
    /// Any other failure (e.g. out of file descriptors).
    Other,
}

/// A configuration the core cannot run with.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConfigError(pub String);

/// A snapshot of one allocation, for the runtime's API.
#[derive(Clone, Debug)]
pub struct AllocationInfo {
    /// Its id.
    pub id: AllocationId,
    /// The client.
    pub client: crate::event::ClientInfo,
    /// The username.
    pub username: String,
    /// Relayed addresses.
    pub relayed: Vec<SocketAddr>,
    /// Age, milliseconds.
    pub age_ms: u64,
    /// Time left, milliseconds.
    pub expires_in_ms: u64,
    /// Permissions installed.
    pub permissions: usize,
    /// Channels bound.
    pub channels: usize,
    /// Traffic so far.
    pub traffic: crate::event::TrafficCounters,
}

/// Counters for metrics and oracles.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Allocations now.
    pub allocations: u64,
}

/// The TURN server.
#[derive(Debug)]
pub struct Server {}

impl Server {
    /// A server with `config`, drawing all randomness from `seed`, born at `now`.
    pub fn new(config: Config, seed: [u8; 32], now: Instant) -> Result<Self, ConfigError> {
        let _ = (config, seed, now);
        todo!()
    }
    /// Sets the wall clock: at monotonic `now` it is `unix_ms` ms since 1970.
    pub fn set_wall_clock(&mut self, now: Instant, unix_ms: u64) {
        let _ = (now, unix_ms);
        todo!()
    }
    /// A UDP datagram `buf[payload]` from `from` arrived on `listener`.
    pub fn handle_datagram(&mut self, now: Instant, listener: ListenerId, from: SocketAddr, buf: &mut [u8], payload: Range<usize>) -> Option<Forward> {
        let _ = (now, listener, from, buf, payload);
        todo!()
    }
    /// A stream was accepted on `listener`.
    pub fn handle_stream_open(&mut self, now: Instant, conn: ConnId, listener: ListenerId, local: SocketAddr, remote: SocketAddr) {
        let _ = (now, conn, listener, local, remote);
        todo!()
    }
    /// Bytes arrived on a stream (split anywhere). Relayed payloads for peers are passed to
    /// `to_peer(relay, peer, payload)` straight away.
    pub fn handle_stream_data(&mut self, now: Instant, conn: ConnId, data: &[u8], to_peer: &mut dyn FnMut(RelayId, SocketAddr, &[u8])) {
        let _ = (now, conn, data, to_peer);
        todo!()
    }
    /// The stream closed (by the client, or an error).
    pub fn handle_stream_closed(&mut self, now: Instant, conn: ConnId) {
        let _ = (now, conn);
        todo!()
    }
    /// The runtime's answer to `Output::BindRelay`.
    pub fn handle_relay_bound(&mut self, now: Instant, relay: RelayId, result: Result<(), BindError>) {
        let _ = (now, relay, result);
        todo!()
    }
    /// A peer sent `buf[payload]` to relay socket `relay`. `payload.start >= HEADROOM` and
    /// `buf.len() >= payload.end + TAILROOM`.
    pub fn handle_relay_datagram(&mut self, now: Instant, relay: RelayId, from: SocketAddr, buf: &mut [u8], payload: Range<usize>) -> Option<Forward> {
        let _ = (now, relay, from, buf, payload);
        todo!()
    }
    /// Time passed: expire what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }
    /// The next thing for the driver to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        todo!()
    }
    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
    /// Ends an allocation now (operator request).
    pub fn delete_allocation(&mut self, now: Instant, id: AllocationId) -> bool {
        let _ = (now, id);
        todo!()
    }
    /// The credential store, to add one-time credentials.
    pub fn credentials_mut(&mut self) -> &mut Credentials {
        todo!()
    }
    /// Counters.
    pub fn stats(&self) -> &Stats {
        todo!()
    }
    /// A snapshot of every allocation, in id order.
    pub fn allocations(&self, now: Instant) -> Vec<AllocationInfo> {
        let _ = now;
        todo!()
    }
}
