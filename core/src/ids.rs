//! Identifiers the core and its driver share.
//!
//! Newtypes keep the roles apart: a listener is never confused with a relay socket, nor a
//! stream with an allocation.

/// A listening socket of the driver (a UDP socket or a TCP listener), named by the driver
/// in [`crate::config::ListenerConfig`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ListenerId(pub u32);

/// An accepted stream (TCP connection, or TLS already decrypted in front), named by the
/// driver when it calls `Server::handle_stream_open`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnId(pub u64);

/// A relay socket (one UDP socket per relayed transport address), named by the core in
/// `Output::BindRelay`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RelayId(pub u32);

/// An allocation (RFC 8656 §2.2), unique for the life of a `Server`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct AllocationId(pub u64);

/// The transport between client and server (RFC 8656 §3.1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Transport {
    /// UDP datagrams.
    Udp,
    /// A byte stream: TCP, or TLS terminated in front of the relay.
    Tcp,
}

impl Transport {
    /// Lower-case name, as written in URLs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}
