//! One accepted TCP connection: its socket, its bounded write buffer, its TLS layer (if
//! any), and whether the core has already closed it.

use crate::tls::Layer;
use crate::write_buf::{WriteBuf, WriteError, DEFAULT_LIMIT};
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
    /// What stands between the socket and the core: nothing (plain TURN-TCP), a PROXY
    /// header before TLS, first-byte detection, or a TLS session.
    pub layer: Layer,
    /// While a TLS handshake may still come or is under way: when it must be done.
    pub handshake_deadline: Option<Instant>,
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
            layer: Layer::Plain,
            handshake_deadline: None,
        }
    }

    /// True if the stream speaks TLS (its session exists, handshake done or not).
    pub fn is_tls(&self) -> bool {
        matches!(self.layer, Layer::Tls(_))
    }

    /// Writes `data` from the core: through the TLS session if there is one; queued for the
    /// end of the batch if `queue`, else written at once.
    pub fn send(&mut self, data: &[u8], queue: bool) -> Result<(), WriteError> {
        match &mut self.layer {
            Layer::Tls(t) => t.write(&mut self.out, &mut self.stream, data, !queue),
            _ if queue => self.out.queue(&mut self.stream, data),
            _ => self.out.write(&mut self.stream, data),
        }
    }
}
