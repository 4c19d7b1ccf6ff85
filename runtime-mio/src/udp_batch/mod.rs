//! Batched UDP I/O: many datagrams per system call.
//!
//! - [`RecvBatch`] receives up to [`RECV_SLOTS`] datagrams in one `recvmmsg(2)`, each into
//!   its own slot with the core's [`HEADROOM`] in front and [`TAILROOM`] behind, so the core
//!   wraps or unwraps ChannelData in place.
//! - [`SendQueue`] collects the datagrams a batch produces, named by the socket they leave
//!   from ([`Via`]: resolved only at flush time, since a relay socket may close while the
//!   batch is open) and flushes them with one `sendmmsg(2)` per socket. Runs of equal-sized
//!   datagrams to one destination (the last may be shorter) become one message with a
//!   `UDP_SEGMENT` control message: UDP generic segmentation offload (udp(7), Linux ≥ 4.18),
//!   where the kernel cuts one large send into the datagrams.
//!
//! Elsewhere than Linux the same types fall back to one `recv_from` / `send_to` per datagram.
//!
//! Layout: the shared small types are here; [`RecvBatch`] in `recv.rs`, [`SendQueue`] in
//! `send_queue.rs`; the system calls behind them in `sys_linux/` (Linux) or
//! `sys_portable.rs` (elsewhere), which the batches reach as `sys`. The send calls read the
//! queue through the view in `queued.rs`, so imports run one way: batches, then `sys`, then
//! `queued.rs` and this file.

use std::io;
use std::net::SocketAddr;
use turnpike_core::{RelayId, HEADROOM, TAILROOM};

#[cfg(test)]
mod loopback;
mod queued;
mod recv;
mod send_queue;
#[cfg(target_os = "linux")]
mod sys_linux;
#[cfg(not(target_os = "linux"))]
mod sys_portable;
#[cfg(test)]
mod tests;
#[cfg(all(test, target_os = "linux"))]
mod uring_tests;

// One seam for the platform: the batches call `sys::...`, whichever of the two is built.
#[cfg(target_os = "linux")]
use sys_linux as sys;
#[cfg(not(target_os = "linux"))]
use sys_portable as sys;

pub use recv::RecvBatch;
pub use send_queue::SendQueue;

/// Largest UDP payload, and the receive area of a slot.
pub const MAX_DATAGRAM: usize = 65_535;
// A slot holds the largest UDP payload (65,507 bytes over IPv4).
const _: () = assert!(MAX_DATAGRAM >= 65_507);

/// Datagrams received per batch (slots of the receive buffer).
pub const RECV_SLOTS: usize = 64;
/// Bytes of one receive slot: headroom, the largest datagram, tailroom.
pub const SLOT_LEN: usize = HEADROOM + MAX_DATAGRAM + TAILROOM;
/// Datagrams a send queue holds before it must be flushed.
pub const SEND_ENTRIES: usize = 256;
/// Bytes of copied payloads a send queue holds (stream frames, whose bytes do not live in a
/// receive slot).
pub const SEND_ARENA: usize = 128 * 1024;
/// Most segments in one UDP GSO send (the kernel's UDP_MAX_SEGMENTS).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one UDP GSO send: what one IPv4 UDP datagram can carry.
pub const GSO_MAX_BYTES: usize = 65_507;
/// Largest segment sent with GSO. The kernel refuses (EINVAL) a segment that does not fit
/// the route's MTU, where a plain send would be fragmented; 1452 fits an Ethernet MTU over
/// IPv6 and IPv4 alike, and WebRTC media stays well below it.
pub const GSO_MAX_SEGMENT: usize = 1452;

/// The socket a queued datagram leaves from, by name rather than by file descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    /// UDP listener number `n` (its index in the runtime's listener table).
    Listener(u32),
    /// A relay socket.
    Relay(RelayId),
}

/// How queued datagrams are handed to the kernel (for measurement; the default is best).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendMode {
    /// Several messages per call with `sendmmsg(2)` (else one `sendmsg(2)` each).
    pub mmsg: bool,
    /// Runs of equal-sized datagrams as one UDP GSO message.
    pub gso: bool,
}

impl Default for SendMode {
    fn default() -> Self {
        SendMode {
            mmsg: true,
            gso: true,
        }
    }
}

impl SendMode {
    /// Parses `single`, `mmsg`, `gso` or `mmsg+gso`.
    pub fn parse(s: &str) -> Option<SendMode> {
        let (mmsg, gso) = match s.trim() {
            "single" => (false, false),
            "mmsg" => (true, false),
            "gso" => (false, true),
            "mmsg+gso" | "gso+mmsg" => (true, true),
            _ => return None,
        };
        Some(SendMode { mmsg, gso })
    }
}

/// Where the failures of a flush are counted (the runtime's own counters).
pub struct Tally<'a> {
    /// Datagrams dropped because the socket buffer was full.
    pub would_block: &'a mut u64,
    /// Datagrams dropped for another error.
    pub errors: &'a mut u64,
    /// The last such error.
    pub last_error: &'a mut Option<io::ErrorKind>,
}

impl Tally<'_> {
    fn failed(&mut self, e: &io::Error, datagrams: usize) {
        let n = datagrams as u64;
        if e.kind() == io::ErrorKind::WouldBlock {
            *self.would_block += n;
        } else {
            *self.errors += n;
            *self.last_error = Some(e.kind());
        }
    }
}

/// One received datagram's place in its slot.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    /// Who sent it.
    pub from: SocketAddr,
    /// Its length (at [`HEADROOM`] in the slot).
    pub len: usize,
    /// The kernel cut it short (MSG_TRUNC): it did not fit the slot and must be dropped.
    pub truncated: bool,
}
