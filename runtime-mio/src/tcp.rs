//! One accepted TCP connection: its socket, its bounded write buffer, and whether the
//! core has already closed it.

use crate::write_buf::{WriteBuf, DEFAULT_LIMIT};
use mio::net::TcpStream;
use std::net::SocketAddr;
use turnpike_core::{Instant, ListenerId};

/// An accepted stream.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// The listener it was accepted on.
    pub listener: ListenerId,
    /// The TCP peer (nginx when a PROXY header follows).
    pub remote: SocketAddr,
    /// Bytes the socket has not taken yet, bounded.
    pub out: WriteBuf,
    /// Set once the core closed the stream (`Output::CloseStream`): the time by which the
    /// pending bytes must be flushed, after which the socket is closed anyway.
    pub closing: Option<Instant>,
    /// On the runtime's list of streams to write at the end of the batch.
    pub queued: bool,
    /// The peer closed its side or the socket failed: read until the end, even after a
    /// short read.
    pub hup: bool,
}

impl Conn {
    /// A fresh connection with the default write bound.
    pub fn new(stream: TcpStream, listener: ListenerId, remote: SocketAddr) -> Self {
        Conn {
            stream,
            listener,
            remote,
            out: WriteBuf::new(DEFAULT_LIMIT),
            closing: None,
            queued: false,
            hup: false,
        }
    }
}
