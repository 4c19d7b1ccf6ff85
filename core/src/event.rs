//! What the core asks of its driver ([`Output`]) and tells it ([`Event`]).

use crate::ids::{AllocationId, ConnId, ListenerId, RelayId, Transport};
use crate::policy::DenyReason;
use std::net::SocketAddr;

/// One thing for the driver to do, drained with `Server::poll_output` after every input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `data` from UDP listener `listener` to `to` (a STUN answer).
    Transmit {
        /// The listener to send from.
        listener: ListenerId,
        /// The client.
        to: SocketAddr,
        /// The datagram.
        data: Vec<u8>,
    },
    /// Write `data` on stream `conn`.
    StreamWrite {
        /// The stream.
        conn: ConnId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Close stream `conn` once what was written is flushed. The core has forgotten it;
    /// the driver does not call `handle_stream_closed` for it.
    CloseStream {
        /// The stream.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Open a UDP relay socket bound to `addr`, then call `Server::handle_relay_bound`
    /// with `relay` and the outcome.
    BindRelay {
        /// The core's name for the socket.
        relay: RelayId,
        /// Local address and port to bind.
        addr: SocketAddr,
    },
    /// Close relay socket `relay`.
    CloseRelay {
        /// The socket.
        relay: RelayId,
    },
    /// Deliver `msg` to the core of loop `to` (its `Server::handle_loop_message`, with this
    /// loop as `from`). Only nodes of several loops emit it; see [`crate::node`].
    ToLoop {
        /// The addressed loop.
        to: crate::node::LoopId,
        /// The message.
        msg: crate::node::LoopMsg,
    },
    /// Something worth logging, counting or checking happened.
    Event(Event),
}

/// Why the core closes a stream.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CloseReason {
    /// The bytes are not STUN or ChannelData (e.g. TLS or HTTP sent to the TCP port).
    NotTurn,
    /// A frame was larger than the limit.
    FrameTooLarge,
    /// PROXY header required but missing or malformed.
    BadProxyHeader,
    /// PROXY header from a source that is not trusted.
    UntrustedProxy,
    /// PROXY header not complete in time.
    ProxyHeaderTimeout,
    /// No allocation and no valid request for too long.
    Idle,
    /// The allocation on this stream ended.
    AllocationEnded,
    /// Too many streams.
    TooManyStreams,
    /// Too many requests in a row failed authentication (`stream_max_auth_failures`).
    TooManyAuthFailures,
    /// A stream without an allocation would have grown the bytes buffered by such streams
    /// past `unauth_stream_buffer_bytes`.
    UnauthBufferFull,
}

impl CloseReason {
    /// Short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::NotTurn => "not_turn",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::BadProxyHeader => "bad_proxy_header",
            CloseReason::UntrustedProxy => "untrusted_proxy",
            CloseReason::ProxyHeaderTimeout => "proxy_header_timeout",
            CloseReason::Idle => "idle",
            CloseReason::AllocationEnded => "allocation_ended",
            CloseReason::TooManyStreams => "too_many_streams",
            CloseReason::TooManyAuthFailures => "too_many_auth_failures",
            CloseReason::UnauthBufferFull => "unauth_buffer_full",
        }
    }
}

/// Where a client is: its transport, its real address (from the PROXY header when there is
/// one), and the listener or stream it came through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ClientInfo {
    /// UDP or TCP.
    pub transport: Transport,
    /// The client's address as the relay reports it (XOR-MAPPED-ADDRESS).
    pub addr: SocketAddr,
    /// The listener it reached.
    pub listener: ListenerId,
    /// The stream, for TCP.
    pub conn: Option<ConnId>,
}

/// Traffic counters of one allocation (each way).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct TrafficCounters {
    /// Packets relayed from the client to peers.
    pub to_peer_packets: u64,
    /// Payload bytes relayed from the client to peers.
    pub to_peer_bytes: u64,
    /// Packets relayed from peers to the client.
    pub from_peer_packets: u64,
    /// Payload bytes relayed from peers to the client.
    pub from_peer_bytes: u64,
    /// Packets dropped (no permission, unbound channel, denied peer).
    pub dropped_packets: u64,
}

/// Why an allocation ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DeleteReason {
    /// Refresh with LIFETIME 0 (RFC 8656 §8).
    Refreshed0,
    /// Its lifetime ran out.
    Expired,
    /// Its stream closed (RFC 8656 §3.1: a TCP allocation ends with its connection).
    StreamClosed,
    /// The operator asked (`Server::delete_allocation`).
    Admin,
}

impl DeleteReason {
    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::Refreshed0 => "refresh_0",
            DeleteReason::Expired => "expired",
            DeleteReason::StreamClosed => "stream_closed",
            DeleteReason::Admin => "admin",
        }
    }
}

/// Why authentication failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AuthFailure {
    /// Unknown username.
    UnknownUser,
    /// Wrong password (integrity mismatch).
    BadIntegrity,
    /// Stale or invalid nonce.
    BadNonce,
    /// REST or one-time credential past its expiry.
    Expired,
    /// Realm is not ours.
    WrongRealm,
    /// One-time credential used on another listener.
    WrongListener,
    /// A request on an allocation with another username (441).
    WrongCredentials,
}

impl AuthFailure {
    /// Short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::BadIntegrity => "bad_integrity",
            AuthFailure::BadNonce => "bad_nonce",
            AuthFailure::Expired => "expired",
            AuthFailure::WrongRealm => "wrong_realm",
            AuthFailure::WrongListener => "wrong_listener",
            AuthFailure::WrongCredentials => "wrong_credentials",
        }
    }
}

/// An event for logs, metrics and the simulator's oracles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// An allocation was created (RFC 8656 §7.2).
    AllocationCreated {
        /// Its id.
        id: AllocationId,
        /// The client.
        client: ClientInfo,
        /// The username that authenticated it.
        username: String,
        /// Relayed transport addresses (one, or two for a dual-stack allocation).
        relayed: Vec<SocketAddr>,
        /// Granted lifetime, seconds.
        lifetime_s: u32,
    },
    /// An allocation's lifetime was refreshed.
    AllocationRefreshed {
        /// Its id.
        id: AllocationId,
        /// New lifetime, seconds.
        lifetime_s: u32,
    },
    /// An allocation ended.
    AllocationDeleted {
        /// Its id.
        id: AllocationId,
        /// The client.
        client: ClientInfo,
        /// The username.
        username: String,
        /// Why.
        reason: DeleteReason,
        /// What it relayed.
        traffic: TrafficCounters,
        /// How long it lived, milliseconds.
        age_ms: u64,
    },
    /// An allocation request failed (the error code answered).
    AllocationFailed {
        /// The client.
        client: ClientInfo,
        /// The username, when authenticated.
        username: Option<String>,
        /// The error code answered.
        code: u16,
    },
    /// A new Allocate was redirected with 300 (Try Alternate) to `to` (RFC 8489 §10): the
    /// relay drains or is full.
    AllocationRedirected {
        /// The client.
        client: ClientInfo,
        /// The username that authenticated the request.
        username: String,
        /// The ALTERNATE-SERVER offered.
        to: SocketAddr,
    },
    /// The server started draining ([`crate::server::Server::start_drain`]).
    DrainStarted,
    /// A request failed authentication.
    AuthFailed {
        /// The client.
        client: ClientInfo,
        /// The username it gave, if any and valid UTF-8.
        username: Option<String>,
        /// Why.
        reason: AuthFailure,
    },
    /// A permission, channel or Send indication named a denied peer.
    PeerDenied {
        /// The allocation.
        id: AllocationId,
        /// The peer.
        peer: SocketAddr,
        /// Why.
        reason: DenyReason,
    },
    /// The relay port pool had no free port (508 answered).
    PortsExhausted {
        /// The allocation's client.
        client: ClientInfo,
    },
    /// A PROXY protocol header was accepted; the stream's client is now `client`.
    ProxyAccepted {
        /// The stream.
        conn: ConnId,
        /// The proxy's address (the TCP peer).
        proxy: SocketAddr,
        /// The client's address from the header (the proxy's when the header had none).
        client: SocketAddr,
    },
    /// A stream was closed by the core.
    StreamRejected {
        /// The stream.
        conn: ConnId,
        /// Its TCP peer.
        remote: SocketAddr,
        /// Why.
        reason: CloseReason,
    },
}
