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

use mio::net::UdpSocket;
use std::io;
use std::net::SocketAddr;
use turnpike_core::{RelayId, HEADROOM, TAILROOM};

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

/// The receive slots and what the last receives put in them.
pub struct RecvBatch {
    buf: Vec<u8>,
    got: Vec<Option<Received>>,
    used: usize,
    sys: sys::RecvSys,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    /// [`RECV_SLOTS`] empty slots. The memory is reserved once; pages never written cost
    /// no resident memory.
    pub fn new() -> Self {
        RecvBatch {
            buf: vec![0; RECV_SLOTS * SLOT_LEN],
            got: vec![None; RECV_SLOTS],
            used: 0,
            sys: sys::RecvSys::new(),
        }
    }

    /// Slots not yet filled since the last [`RecvBatch::reset`].
    pub fn free(&self) -> usize {
        RECV_SLOTS - self.used
    }

    /// Forgets every received datagram: the slots may be filled again. Only once nothing
    /// queued for sending points into them.
    pub fn reset(&mut self) {
        self.used = 0;
    }

    /// Receives up to `max` datagrams (at most the free slots) from non-blocking `sock`
    /// into the next free slots. Returns the slot numbers filled; fewer than asked means
    /// the socket's queue is empty. `WouldBlock` when nothing was waiting.
    pub fn recv(&mut self, sock: &UdpSocket, max: usize) -> io::Result<core::ops::Range<usize>> {
        let first = self.used;
        let want = max.min(self.free());
        if want == 0 {
            return Ok(first..first);
        }
        let n = self
            .sys
            .recv(sock, &mut self.buf, &mut self.got, first, want)?;
        self.used = first + n;
        Ok(first..first + n)
    }

    /// From now on, [`RecvBatch::recv_many`] reads several sockets with one io_uring
    /// call ([`crate::uring_recv`]). An error if this kernel or process cannot.
    #[cfg(target_os = "linux")]
    pub fn use_uring(&mut self) -> io::Result<()> {
        self.sys.start_uring()
    }

    /// True if [`RecvBatch::recv_many`] can be used (it turns off for good if the ring
    /// fails).
    pub fn uring(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.sys.uring_on();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Receives from several non-blocking sockets with one io_uring call: up to
    /// `wants[i].k` datagrams from each, into the next free slots (socket by socket, in
    /// arrival order). `out` says, per socket served (a prefix of `wants`: those whose
    /// receives fit the free slots), which slots it was given and what to do next with it
    /// (see [`crate::uring_recv::Next`]). Empty when nothing can be served (no free slot,
    /// or io_uring off).
    #[cfg(target_os = "linux")]
    pub fn recv_many(
        &mut self,
        wants: &[crate::uring_recv::Want],
        out: &mut Vec<crate::uring_recv::Got>,
    ) {
        out.clear();
        let first = self.used;
        self.used = self
            .sys
            .recv_many(&mut self.buf, &mut self.got, first, wants, out);
    }

    /// What slot `i` holds.
    pub fn received(&self, i: usize) -> Option<Received> {
        self.got.get(i).copied().flatten()
    }

    /// Slot `i`, headroom and tailroom included (the received bytes are at
    /// `HEADROOM..HEADROOM + len`).
    pub fn slot_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        self.buf.get_mut(i * SLOT_LEN..(i + 1) * SLOT_LEN)
    }

    /// Where slot `i` starts in [`RecvBatch::bytes`].
    pub fn slot_start(i: usize) -> usize {
        i * SLOT_LEN
    }

    /// All slots, for [`SendQueue::flush`].
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Where a queued datagram's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    /// In the receive slots ([`RecvBatch::bytes`]).
    Recv,
    /// Copied into the queue's own arena.
    Arena,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    via: Via,
    to: SocketAddr,
    store: Store,
    start: usize,
    len: usize,
}

/// Datagrams waiting to be sent at the end of a batch.
pub struct SendQueue {
    entries: Vec<Entry>,
    /// Sort keys: flow key above, entry index in the low 32 bits.
    order: Vec<u128>,
    arena: Vec<u8>,
    mode: SendMode,
    sys: sys::SendSys,
    /// Calls that handed the kernel more than one datagram (sendmmsg or GSO).
    pub batched_calls: u64,
}

impl SendQueue {
    /// An empty queue sending as `mode` says (GSO only where the kernel has it).
    pub fn new(mode: SendMode) -> Self {
        let mode = SendMode {
            mmsg: mode.mmsg,
            gso: mode.gso && sys::gso_supported(),
        };
        SendQueue {
            entries: Vec::with_capacity(SEND_ENTRIES),
            order: Vec::with_capacity(SEND_ENTRIES),
            arena: Vec::with_capacity(SEND_ARENA),
            mode,
            sys: sys::SendSys::new(),
            batched_calls: 0,
        }
    }

    /// The mode in effect (GSO turns off for good if the kernel refuses it).
    pub fn mode(&self) -> SendMode {
        self.mode
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Queues the datagram at `range` of the receive slots ([`RecvBatch::bytes`]). False
    /// (and nothing queued) when the queue is full: flush, then queue again.
    pub fn push_received(
        &mut self,
        via: Via,
        to: SocketAddr,
        range: core::ops::Range<usize>,
    ) -> bool {
        if self.entries.len() >= SEND_ENTRIES {
            return false;
        }
        self.entries.push(Entry {
            via,
            to,
            store: Store::Recv,
            start: range.start,
            len: range.len(),
        });
        true
    }

    /// Queues a copy of `data`. False (and nothing queued) when the queue or its arena is
    /// full: flush, then queue again.
    pub fn push_copy(&mut self, via: Via, to: SocketAddr, data: &[u8]) -> bool {
        let start = self.arena.len();
        if self.entries.len() >= SEND_ENTRIES || start + data.len() > SEND_ARENA {
            return false;
        }
        self.arena.extend_from_slice(data);
        self.entries.push(Entry {
            via,
            to,
            store: Store::Arena,
            start,
            len: data.len(),
        });
        true
    }

    /// Sends everything queued and empties the queue. `recv` is the receive slots the
    /// queued ranges point into; `socket` names the socket of a [`Via`] (None: it closed,
    /// and its datagrams are dropped). Datagrams of one socket go out together, in order
    /// per destination.
    pub fn flush<'s>(
        &mut self,
        recv: &[u8],
        socket: &mut dyn FnMut(Via) -> Option<&'s UdpSocket>,
        tally: &mut Tally<'_>,
    ) {
        if self.entries.is_empty() {
            return;
        }
        self.sort();
        #[cfg(target_os = "linux")]
        if self.sys.uring_on() {
            self.flush_uring(recv, socket, tally);
            self.entries.clear();
            self.arena.clear();
            return;
        }
        let mut a = 0;
        while let Some((via, b)) = self.group_at(a) {
            if let Some(sock) = socket(via) {
                self.send_group(sock, a..b, recv, tally);
            }
            a = b;
        }
        self.entries.clear();
        self.arena.clear();
    }

    /// From now on, sends each round's datagrams, whatever their sockets, with one
    /// io_uring submission ([`crate::uring_send`]). An error if this kernel or process
    /// cannot: the portable path stays.
    #[cfg(target_os = "linux")]
    pub fn use_uring(&mut self) -> io::Result<()> {
        self.sys.start_uring()
    }

    /// True if sends go through io_uring.
    pub fn uring(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.sys.uring_on();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// The socket of the group starting at sorted position `a`, and where the group ends.
    fn group_at(&self, a: usize) -> Option<(Via, usize)> {
        let via = self.entry_at(a)?.via;
        let mut b = a + 1;
        while self.entry_at(b).is_some_and(|e| e.via == via) {
            b += 1;
        }
        Some((via, b))
    }

    /// Every socket's messages of the round built first, then handed to the kernel in one
    /// io_uring submission.
    #[cfg(target_os = "linux")]
    fn flush_uring<'s>(
        &mut self,
        recv: &[u8],
        socket: &mut dyn FnMut(Via) -> Option<&'s UdpSocket>,
        tally: &mut Tally<'_>,
    ) {
        let mut sys = std::mem::take(&mut self.sys);
        sys.begin_round();
        let mut a = 0;
        while let Some((via, b)) = self.group_at(a) {
            if let Some(sock) = socket(via) {
                sys.build(self, a..b, recv, sock, tally);
            }
            a = b;
        }
        let (batched, gso_refused) = sys.submit_round(tally);
        self.batched_calls += batched;
        self.sys = sys;
        if gso_refused {
            // The kernel or the route will not segment: resend the refused runs one
            // datagram per message (as the portable path does), and never try again.
            log::warn!("UDP segmentation offload refused by the kernel: sending datagrams one by one from now on");
            self.mode.gso = false;
            let mut r = 0;
            while let Some((start, count)) = self.sys.refused(r) {
                let sock = match self.entry_at(start) {
                    Some(e) => socket(e.via),
                    None => None,
                };
                if let Some(sock) = sock {
                    self.send_group(sock, start..start + count, recv, tally);
                }
                r += 1;
            }
        }
    }

    /// Orders the entries by socket, then destination (a flow), keeping arrival order
    /// inside a flow: one integer sort on a packed key. Two destinations whose hashes
    /// collide interleave, which only shortens a GSO run.
    fn sort(&mut self) {
        self.order.clear();
        for (i, e) in self.entries.iter().enumerate() {
            let key = (u128::from(via_key(e.via)) << 64) | (u128::from(addr_hash(e.to)) << 32);
            self.order.push(key | i as u128);
        }
        self.order.sort_unstable();
    }

    fn entry_at(&self, pos: usize) -> Option<&Entry> {
        self.entries.get(*self.order.get(pos)? as u32 as usize)
    }

    /// The bytes of the entry at `pos` of the sorted order.
    fn data<'a>(&'a self, recv: &'a [u8], pos: usize) -> &'a [u8] {
        let Some(e) = self.entry_at(pos) else {
            return &[];
        };
        let src = match e.store {
            Store::Recv => recv,
            Store::Arena => &self.arena,
        };
        src.get(e.start..e.start + e.len).unwrap_or_default()
    }

    /// Splits the entries at `group` (sorted positions, one socket) into messages: GSO
    /// runs where allowed, single datagrams otherwise. Calls `msg(first, end, segment)`
    /// per message (`segment` is Some for a GSO run of two or more).
    fn messages(
        &self,
        group: core::ops::Range<usize>,
        gso: bool,
        mut msg: impl FnMut(usize, usize, Option<usize>),
    ) {
        let mut j = group.start;
        while j < group.end {
            let Some(head) = self.entry_at(j) else {
                return;
            };
            let (to, seg) = (head.to, head.len);
            let mut k = j + 1;
            if gso && seg > 0 && seg <= GSO_MAX_SEGMENT {
                let mut total = seg;
                while k < group.end && k - j < GSO_MAX_SEGMENTS {
                    let Some(e) = self.entry_at(k) else {
                        break;
                    };
                    // Equal sizes; a shorter one may end the run; an empty one cannot be a
                    // segment.
                    if e.to != to || e.len > seg || e.len == 0 || total + e.len > GSO_MAX_BYTES {
                        break;
                    }
                    total += e.len;
                    k += 1;
                    if e.len < seg {
                        break;
                    }
                }
            }
            msg(j, k, (k - j > 1).then_some(seg));
            j = k;
        }
    }

    fn send_group(
        &mut self,
        sock: &UdpSocket,
        group: core::ops::Range<usize>,
        recv: &[u8],
        tally: &mut Tally<'_>,
    ) {
        let mut start = group.start;
        loop {
            // Moving the buffers out and back costs nothing: the placeholder is empty.
            let mut sys = std::mem::take(&mut self.sys);
            let outcome = sys.send(self, sock, start..group.end, recv, tally);
            self.sys = sys;
            self.batched_calls += outcome.batched_calls;
            match outcome.gso_refused_at {
                Some(pos) => {
                    // The kernel or the route will not segment: resend the rest one
                    // datagram per message, and never try again.
                    log::warn!("UDP segmentation offload refused by the kernel: sending datagrams one by one from now on");
                    self.mode.gso = false;
                    start = pos;
                }
                None => return,
            }
        }
    }
}

/// A socket as a number: sockets sort apart, relays after listeners.
fn via_key(v: Via) -> u64 {
    match v {
        Via::Listener(n) => u64::from(n),
        Via::Relay(r) => (1 << 32) | u64::from(r.0),
    }
}

/// 32 bits standing for a destination address (Fibonacci hashing of its parts).
fn addr_hash(a: SocketAddr) -> u32 {
    const PHI: u64 = 0x9E37_79B9_7F4A_7C15;
    let mix = |h: u64, x: u64| (h.rotate_left(5) ^ x).wrapping_mul(PHI);
    let h = match a {
        SocketAddr::V4(v4) => mix(u64::from(v4.port()), u64::from(u32::from(*v4.ip()))),
        SocketAddr::V6(v6) => {
            let ip = u128::from(*v6.ip());
            let h = mix(u64::from(v6.port()) | 1 << 16, ip as u64);
            mix(mix(h, (ip >> 64) as u64), u64::from(v6.scope_id()))
        }
    };
    (h >> 32) as u32
}

/// What one group's send did.
#[derive(Default)]
struct SendOutcome {
    batched_calls: u64,
    /// A GSO message was refused; the sorted position of its first datagram.
    gso_refused_at: Option<usize>,
}

#[cfg(target_os = "linux")]
mod sys {
    //! recvmmsg(2), sendmmsg(2), sendmsg(2) with UDP_SEGMENT (udp(7)).

    use super::{
        Received, SendOutcome, SendQueue, Tally, MAX_DATAGRAM, RECV_SLOTS, SEND_ENTRIES, SLOT_LEN,
    };
    use crate::uring_recv::{Got, UringRecv, Want};
    use crate::uring_send::UringSend;
    use std::io;
    use std::mem;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::{AsRawFd, RawFd};
    use turnpike_core::HEADROOM;

    /// `UDP_SEGMENT` from linux/udp.h: the segment size of a GSO send (a u16).
    const UDP_SEGMENT: libc::c_int = 103;
    /// Room for one control message carrying a u16, 8-byte aligned.
    type CmsgBuf = [u64; 4];

    /// True if this kernel knows UDP_SEGMENT (getsockopt on a fresh UDP socket succeeds).
    pub fn gso_supported() -> bool {
        // SAFETY: plain socket(2) call; the descriptor is closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        if fd < 0 {
            return false;
        }
        let mut val: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `val` and `len` are valid for writes of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_UDP,
                UDP_SEGMENT,
                (&mut val as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        // SAFETY: `fd` is ours and open.
        unsafe { libc::close(fd) };
        rc == 0
    }

    fn zeroed_storage() -> libc::sockaddr_storage {
        // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
        unsafe { mem::zeroed() }
    }

    fn zeroed_mmsghdr() -> libc::mmsghdr {
        // SAFETY: mmsghdr is plain old data (integers and null pointers when zeroed).
        unsafe { mem::zeroed() }
    }

    fn empty_iovec() -> libc::iovec {
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }
    }

    /// Headers for recvmmsg, built over one receive buffer and rebuilt whenever a
    /// different one is passed (their pointers then name live memory).
    pub struct RecvSys {
        hdrs: Vec<libc::mmsghdr>,
        iovs: Vec<libc::iovec>,
        addrs: Vec<libc::sockaddr_storage>,
        /// Start of the buffer the headers point into (None: never built). The buffer is
        /// always [`RECV_BUF_LEN`] bytes long, so its start names all of it.
        linked_to: Option<*const u8>,
        /// The io_uring ring, when a round's sockets are read through one.
        uring: Option<UringRecv>,
    }

    /// The only length of buffer [`RecvSys::recv`] accepts: one slot per header.
    pub const RECV_BUF_LEN: usize = RECV_SLOTS * SLOT_LEN;

    // SAFETY: the raw pointers in the headers point only into heap buffers owned by the
    // same RecvBatch (its slots, and these iovecs and addresses), which move with it and
    // are shared with no one; they are checked before each call and used only during it.
    // So the owner may move to another thread (an event loop per thread).
    unsafe impl Send for RecvSys {}

    impl RecvSys {
        pub fn new() -> Self {
            RecvSys {
                hdrs: (0..RECV_SLOTS).map(|_| zeroed_mmsghdr()).collect(),
                iovs: (0..RECV_SLOTS).map(|_| empty_iovec()).collect(),
                addrs: vec![zeroed_storage(); RECV_SLOTS],
                linked_to: None,
                uring: None,
            }
        }

        /// True if several sockets can be read with one io_uring call.
        pub fn uring_on(&self) -> bool {
            self.uring.is_some()
        }

        /// Sets up the io_uring ring (one entry per slot at most).
        pub fn start_uring(&mut self) -> io::Result<()> {
            self.uring = Some(UringRecv::new(RECV_SLOTS as u32)?);
            Ok(())
        }

        /// Receives from the sockets of `wants` into slots `first..` of `buf` with one
        /// io_uring call (see `RecvBatch::recv_many`). Returns where the slots it used
        /// end. A failure of the ring itself turns it off: the caller reads on with
        /// recvmmsg.
        pub fn recv_many(
            &mut self,
            buf: &mut [u8],
            got: &mut [Option<Received>],
            first: usize,
            wants: &[Want],
            out: &mut Vec<Got>,
        ) -> usize {
            if self.uring.is_none() || first >= RECV_SLOTS || self.link(buf).is_err() {
                return first;
            }
            let Some(ring) = self.uring.as_mut() else {
                return first;
            };
            for h in self.hdrs.iter_mut().skip(first) {
                h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_flags = 0;
            }
            // SAFETY: every header points at its own iovec over its own slot of `buf`
            // (linked over this very buffer just above) and at its own address entry; all
            // of them belong to `self` or `buf`, which stay borrowed (and untouched here)
            // until `recv` returns; the kernel writes within the lengths given
            // (MAX_DATAGRAM, sockaddr_storage).
            let r = unsafe { ring.recv(&mut self.hdrs, first, RECV_SLOTS, wants, out) };
            let results = ring.results();
            for (k, &res) in results.iter().enumerate() {
                let h = first + k;
                let (Some(slot), Some(hdr), Some(addr)) =
                    (got.get_mut(h), self.hdrs.get(h), self.addrs.get(h))
                else {
                    break;
                };
                *slot = match usize::try_from(res) {
                    Ok(len) => to_socket_addr(addr, hdr.msg_hdr.msg_namelen).map(|from| Received {
                        from,
                        len: len.min(MAX_DATAGRAM),
                        truncated: len > MAX_DATAGRAM
                            || hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                    }),
                    Err(_) => None,
                };
            }
            let end = first + results.len();
            if let Err(e) = r {
                log::warn!("io_uring receive failed ({e}): receiving with recvmmsg from now on");
                self.uring = None;
            }
            end
        }

        /// Points the headers at `buf`'s slots, unless they already do. `buf` must be
        /// the batch's own buffer of [`RECV_BUF_LEN`] bytes (anything else is refused with
        /// `InvalidInput`: the headers are built over whole slots of it).
        fn link(&mut self, buf: &mut [u8]) -> io::Result<()> {
            if buf.len() != RECV_BUF_LEN {
                return Err(io::ErrorKind::InvalidInput.into());
            }
            // The headers keep pointing at their slot, iovec and address between calls
            // (none of these buffers is ever resized, and `buf` is the batch's own). They
            // are rebuilt, all of them, when `buf` is not the buffer they were built over:
            // the same start and the same length is the same memory.
            if self.linked_to != Some(buf.as_ptr()) {
                self.linked_to = None;
                for (((h, iov), addr), slot) in self
                    .hdrs
                    .iter_mut()
                    .zip(self.iovs.iter_mut())
                    .zip(self.addrs.iter_mut())
                    .zip(buf.chunks_exact_mut(SLOT_LEN))
                {
                    let rx = slot
                        .get_mut(HEADROOM..HEADROOM + MAX_DATAGRAM)
                        .ok_or(io::ErrorKind::InvalidInput)?;
                    *iov = libc::iovec {
                        iov_base: rx.as_mut_ptr().cast(),
                        iov_len: rx.len(),
                    };
                    *h = zeroed_mmsghdr();
                    h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                    h.msg_hdr.msg_iov = iov;
                    h.msg_hdr.msg_iovlen = 1;
                }
                self.linked_to = Some(buf.as_ptr());
            }
            Ok(())
        }

        /// Receives up to `want` datagrams into slots `first..first + want` of `buf`,
        /// which must be the batch's own buffer of [`RECV_BUF_LEN`] bytes (anything else
        /// is refused with `InvalidInput`: the headers are built over whole slots of it).
        pub fn recv(
            &mut self,
            sock: &impl AsRawFd,
            buf: &mut [u8],
            got: &mut [Option<Received>],
            first: usize,
            want: usize,
        ) -> io::Result<usize> {
            if buf.len() != RECV_BUF_LEN {
                return Err(io::ErrorKind::InvalidInput.into());
            }
            let want = want.min(RECV_SLOTS.saturating_sub(first));
            if want == 0 {
                return Ok(0);
            }
            self.link(buf)?;
            let hdrs = self
                .hdrs
                .get_mut(first..first + want)
                .ok_or(io::ErrorKind::InvalidInput)?;
            for h in hdrs.iter_mut() {
                // The kernel wrote the last sender's length here.
                h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            }
            let n = loop {
                // SAFETY: every header points at its own iovec over its own slot of `buf`
                // (built over this very buffer, of RECV_BUF_LEN bytes: checked above) and
                // at its own address entry; headers `first..first + want` exist (the
                // `get_mut` above), and all of it is alive and borrowed for this call; the
                // kernel writes within the lengths given (MAX_DATAGRAM, sockaddr_storage).
                let rc = unsafe {
                    libc::recvmmsg(
                        sock.as_raw_fd(),
                        hdrs.as_mut_ptr(),
                        want as libc::c_uint,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                if rc >= 0 {
                    break rc as usize;
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            };
            let addrs = self.addrs.iter().skip(first);
            for (k, (h, addr)) in hdrs.iter().zip(addrs).take(n).enumerate() {
                let slot = got.get_mut(first + k).ok_or(io::ErrorKind::InvalidInput)?;
                *slot = to_socket_addr(addr, h.msg_hdr.msg_namelen).map(|from| Received {
                    from,
                    len: (h.msg_len as usize).min(MAX_DATAGRAM),
                    truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                });
            }
            Ok(n)
        }
    }

    /// Headers for sendmmsg / sendmsg, one per message, rebuilt per group.
    pub struct SendSys {
        hdrs: Vec<libc::mmsghdr>,
        iovs: Vec<libc::iovec>,
        addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)>,
        cmsgs: Vec<CmsgBuf>,
        /// Per message: sorted position of its first datagram, and how many it carries.
        spans: Vec<(usize, usize, bool)>,
        /// The io_uring ring, when sends go through one.
        uring: Option<UringSend>,
        /// Per message of a round sent through the ring: its socket.
        fds: Vec<RawFd>,
        /// GSO messages of the last ring round the kernel refused (first sorted
        /// position, datagrams), to resend one by one.
        refused: Vec<(usize, usize)>,
    }

    // SAFETY: as for RecvSys: the pointers are rewritten before each call and only used
    // during it.
    unsafe impl Send for SendSys {}

    /// Empty, allocating nothing: the placeholder while the real buffers are in use.
    impl Default for SendSys {
        fn default() -> Self {
            SendSys {
                hdrs: Vec::new(),
                iovs: Vec::new(),
                addrs: Vec::new(),
                cmsgs: Vec::new(),
                spans: Vec::new(),
                uring: None,
                fds: Vec::new(),
                refused: Vec::new(),
            }
        }
    }

    impl SendSys {
        pub fn new() -> Self {
            SendSys {
                hdrs: (0..SEND_ENTRIES).map(|_| zeroed_mmsghdr()).collect(),
                iovs: (0..SEND_ENTRIES).map(|_| empty_iovec()).collect(),
                addrs: vec![(zeroed_storage(), 0); SEND_ENTRIES],
                cmsgs: vec![[0; 4]; SEND_ENTRIES],
                spans: Vec::with_capacity(SEND_ENTRIES),
                uring: None,
                fds: Vec::new(),
                refused: Vec::new(),
            }
        }

        /// True if a round's sends go through io_uring.
        pub fn uring_on(&self) -> bool {
            self.uring.is_some()
        }

        /// Sets up the io_uring ring (one entry per queued datagram at most).
        pub fn start_uring(&mut self) -> io::Result<()> {
            self.uring = Some(UringSend::new(SEND_ENTRIES as u32)?);
            self.fds = Vec::with_capacity(SEND_ENTRIES);
            self.refused = Vec::with_capacity(SEND_ENTRIES);
            Ok(())
        }

        /// Forgets the messages of the last round.
        pub fn begin_round(&mut self) {
            self.spans.clear();
            self.fds.clear();
        }

        /// Adds the messages of the datagrams at sorted positions `group` of `q`, all
        /// from `sock`, to the round.
        pub fn build(
            &mut self,
            q: &SendQueue,
            group: core::ops::Range<usize>,
            recv: &[u8],
            sock: &impl AsRawFd,
            tally: &mut Tally<'_>,
        ) {
            if !self.build_messages(q, group.clone(), recv) {
                tally.failed(&io::ErrorKind::InvalidInput.into(), group.len());
            }
            self.fds.resize(self.spans.len(), sock.as_raw_fd());
        }

        /// Sends the round's messages with one io_uring submission. Returns the calls
        /// that carried more than one datagram (0 or 1) and whether a GSO message was
        /// refused (its datagrams are not counted: [`SendSys::refused`] names them for a
        /// resend). A failure of the ring itself turns it off: the next rounds take the
        /// portable path.
        pub fn submit_round(&mut self, tally: &mut Tally<'_>) -> (u64, bool) {
            self.refused.clear();
            let Some(ring) = self.uring.as_mut() else {
                return (0, false);
            };
            let m = self.spans.len();
            let spans = &self.spans;
            let refused = &mut self.refused;
            let datagrams: usize = spans.iter().map(|s| s.1).sum();
            let hdrs = self.hdrs.get(..m).unwrap_or_default();
            // SAFETY: headers 0..m were built this round by build_messages and point at
            // self.iovs, self.addrs and self.cmsgs and at payloads in the receive slots
            // and the queue's arena. All of them stay borrowed, unmoved and unwritten
            // until `send` returns (`self.hdrs` through `hdrs`, the rest through the
            // headers: nothing here writes them), and `send` returns only once the kernel
            // is done with every entry it took, also on an error (UringSend::send).
            let r = unsafe {
                ring.send(hdrs, &self.fds, |i, res| {
                    let Some(&(start, count, gso)) = spans.get(i) else {
                        return;
                    };
                    if res >= 0 {
                        return;
                    }
                    if gso && matches!(-res, libc::EINVAL | libc::EIO | libc::ENOPROTOOPT) {
                        // Within capacity: at most one per message (SEND_ENTRIES).
                        if refused.len() < refused.capacity() {
                            refused.push((start, count));
                            return;
                        }
                    }
                    tally.failed(&io::Error::from_raw_os_error(-res), count);
                })
            };
            if let Err(e) = r {
                log::warn!("io_uring send failed ({e}): sending with sendmmsg from now on");
                self.uring = None;
            }
            (u64::from(datagrams > 1), !self.refused.is_empty())
        }

        /// The `r`th GSO message refused in the last round: the sorted position of its
        /// first datagram and how many it carried.
        pub fn refused(&self, r: usize) -> Option<(usize, usize)> {
            self.refused.get(r).copied()
        }

        /// Builds the iovecs of the datagrams at sorted positions `group` of `q` (each at
        /// its position) and the messages over them, appended to the round's. False if the
        /// group does not fit (the queue holds at most SEND_ENTRIES datagrams; a larger
        /// group is refused here rather than trusted).
        fn build_messages(
            &mut self,
            q: &SendQueue,
            group: core::ops::Range<usize>,
            recv: &[u8],
        ) -> bool {
            let Some(iovs) = self.iovs.get_mut(group.clone()) else {
                return false;
            };
            for (iov, pos) in iovs.iter_mut().zip(group.clone()) {
                let data = q.data(recv, pos);
                *iov = libc::iovec {
                    iov_base: data.as_ptr() as *mut libc::c_void,
                    iov_len: data.len(),
                };
            }
            let m0 = self.spans.len();
            let spans = &mut self.spans;
            q.messages(group.clone(), q.mode.gso, |j, k, seg| {
                spans.push((j, k - j, seg.is_some()));
            });
            for m in m0..self.spans.len() {
                let Some(&(j, count, gso)) = self.spans.get(m) else {
                    break;
                };
                // The message's datagrams: a checked sub-slice of the iovecs built above.
                let iov = j
                    .checked_add(count)
                    .and_then(|end| self.iovs.get_mut(j..end))
                    .filter(|iov| !iov.is_empty() && j >= group.start && j + count <= group.end);
                let (Some(h), Some(addr), Some(cmsg), Some(entry), Some(iov)) = (
                    self.hdrs.get_mut(m),
                    self.addrs.get_mut(m),
                    self.cmsgs.get_mut(m),
                    q.entry_at(j),
                    iov,
                ) else {
                    self.spans.truncate(m);
                    break;
                };
                *addr = from_socket_addr(entry.to);
                *h = zeroed_mmsghdr();
                h.msg_hdr.msg_name = (&mut addr.0 as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = addr.1;
                h.msg_hdr.msg_iov = iov.as_mut_ptr();
                h.msg_hdr.msg_iovlen = iov.len() as _;
                if gso {
                    let seg = entry.len as u16;
                    set_segment(&mut h.msg_hdr, cmsg, seg);
                }
            }
            true
        }

        /// Sends the datagrams at sorted positions `group` of `q`, all from `sock`.
        pub fn send(
            &mut self,
            q: &SendQueue,
            sock: &impl AsRawFd,
            group: core::ops::Range<usize>,
            recv: &[u8],
            tally: &mut Tally<'_>,
        ) -> SendOutcome {
            let mut out = SendOutcome::default();
            self.spans.clear();
            if !self.build_messages(q, group.clone(), recv) {
                tally.failed(&io::ErrorKind::InvalidInput.into(), group.len());
                return out;
            }
            let m = self.spans.len();
            let fd = sock.as_raw_fd();
            let mut done = 0;
            while done < m {
                let rc = if q.mode.mmsg && m - done > 1 {
                    // SAFETY: headers `done..m` are built above and point at live iovecs,
                    // addresses, control buffers and payloads, all borrowed for this call.
                    unsafe {
                        libc::sendmmsg(
                            fd,
                            self.hdrs.as_mut_ptr().add(done),
                            (m - done) as libc::c_uint,
                            0,
                        )
                    }
                } else {
                    let (Some(h), Some(&(_, count, gso))) =
                        (self.hdrs.get(done), self.spans.get(done))
                    else {
                        break;
                    };
                    let rc = if count == 1 && !gso {
                        // One plain datagram: sendto(2) spares the kernel copying in a
                        // message header and an iovec array.
                        // SAFETY: msg_iov points at one live iovec over the payload and
                        // msg_name at a live address of msg_namelen bytes.
                        unsafe {
                            let iov = &*h.msg_hdr.msg_iov;
                            libc::sendto(
                                fd,
                                iov.iov_base,
                                iov.iov_len,
                                0,
                                h.msg_hdr.msg_name.cast(),
                                h.msg_hdr.msg_namelen,
                            )
                        }
                    } else {
                        // SAFETY: as for sendmmsg, for the one header `done`.
                        unsafe { libc::sendmsg(fd, &h.msg_hdr, 0) }
                    };
                    if rc >= 0 {
                        1
                    } else {
                        -1
                    }
                };
                if rc > 0 {
                    let sent = rc as usize;
                    let datagrams: usize = self
                        .spans
                        .get(done..done + sent)
                        .map_or(0, |s| s.iter().map(|x| x.1).sum());
                    if datagrams > 1 {
                        out.batched_calls += 1;
                    }
                    done += sent;
                    continue;
                }
                let e = io::Error::last_os_error();
                let Some(&(j, count, gso)) = self.spans.get(done) else {
                    break;
                };
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT) if gso => {
                        out.gso_refused_at = Some(j);
                        return out;
                    }
                    Some(libc::EAGAIN) => {
                        // The socket buffer is full: the rest of this socket's datagrams
                        // are dropped, as one send_to each would have been.
                        let rest: usize = self
                            .spans
                            .get(done..m)
                            .map_or(0, |s| s.iter().map(|x| x.1).sum());
                        tally.failed(&e, rest);
                        return out;
                    }
                    _ => {
                        tally.failed(&e, count);
                        done += 1;
                    }
                }
            }
            out
        }
    }

    /// Attaches a UDP_SEGMENT control message of segment size `seg` to `h`.
    fn set_segment(h: &mut libc::msghdr, buf: &mut CmsgBuf, seg: u16) {
        h.msg_control = buf.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
        h.msg_controllen = space.min(mem::size_of::<CmsgBuf>()) as _;
        // SAFETY: `h` points at `buf`, which is large and aligned enough for one cmsghdr
        // with a u16 of data (CMSG_SPACE(2) = 24 <= 32 bytes, 8-byte aligned).
        unsafe {
            let c = libc::CMSG_FIRSTHDR(h);
            if c.is_null() {
                return;
            }
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
        }
    }

    /// The address the kernel wrote (IPv4 or IPv6), if it is one.
    fn to_socket_addr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
        let len = len as usize;
        match s.ss_family as libc::c_int {
            libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the storage holds a sockaddr_in, which fits in
                // (and is no more aligned than) sockaddr_storage.
                let a =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for sockaddr_in6.
                let a =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// `a` as a socket address for the kernel, with its length.
    fn from_socket_addr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        let mut s = zeroed_storage();
        let len = match a {
            SocketAddr::V4(v4) => {
                // SAFETY: sockaddr_in fits in (and is no more aligned than) the storage.
                let sin = unsafe {
                    &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
                mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe {
                    &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = v6.port().to_be();
                sin6.sin6_addr.s6_addr = v6.ip().octets();
                sin6.sin6_flowinfo = v6.flowinfo();
                sin6.sin6_scope_id = v6.scope_id();
                mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (s, len as libc::socklen_t)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn addresses_round_trip() {
            for a in ["127.0.0.1:3478", "[::1]:9", "[fe80::1%2]:443", "0.0.0.0:0"] {
                let a: SocketAddr = a.parse().unwrap();
                let (s, len) = from_socket_addr(a);
                assert_eq!(to_socket_addr(&s, len), Some(a));
            }
            assert_eq!(to_socket_addr(&zeroed_storage(), 128), None);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    //! One `recv_from` / `send_to` per datagram.

    use super::{Received, SendOutcome, SendQueue, Tally, RECV_SLOTS, SLOT_LEN};
    use mio::net::UdpSocket;
    use std::io;
    use turnpike_core::HEADROOM;

    pub fn gso_supported() -> bool {
        false
    }

    pub struct RecvSys;

    impl RecvSys {
        pub fn new() -> Self {
            RecvSys
        }

        pub fn recv(
            &mut self,
            sock: &UdpSocket,
            buf: &mut [u8],
            got: &mut [Option<Received>],
            first: usize,
            want: usize,
        ) -> io::Result<usize> {
            let want = want.min(RECV_SLOTS.saturating_sub(first));
            let mut n = 0;
            while n < want {
                let i = first + n;
                let Some(rx) = buf
                    .get_mut(i * SLOT_LEN + HEADROOM..(i + 1) * SLOT_LEN - turnpike_core::TAILROOM)
                else {
                    break;
                };
                match sock.recv_from(rx) {
                    Ok((len, from)) => {
                        if let Some(g) = got.get_mut(i) {
                            *g = Some(Received {
                                from,
                                len,
                                truncated: false,
                            });
                        }
                        n += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if n == 0 => return Err(e),
                    Err(_) => break,
                }
            }
            Ok(n)
        }
    }

    #[derive(Default)]
    pub struct SendSys;

    impl SendSys {
        pub fn new() -> Self {
            SendSys
        }

        pub fn send(
            &mut self,
            q: &SendQueue,
            sock: &UdpSocket,
            group: core::ops::Range<usize>,
            recv: &[u8],
            tally: &mut Tally<'_>,
        ) -> SendOutcome {
            for pos in group {
                let Some(to) = q.entry_at(pos).map(|e| e.to) else {
                    continue;
                };
                if let Err(e) = sock.send_to(q.data(recv, pos), to) {
                    tally.failed(&e, 1);
                }
            }
            SendOutcome::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        (a, b)
    }

    /// Receives until `n` datagrams arrived (or a second passed), returning their payloads.
    fn recv_n(batch: &mut RecvBatch, sock: &UdpSocket, n: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while out.len() < n && Instant::now() < deadline {
            if batch.free() == 0 {
                batch.reset();
            }
            match batch.recv(sock, n - out.len()) {
                Ok(slots) => {
                    for i in slots {
                        let r = batch.received(i).unwrap();
                        assert!(!r.truncated);
                        let slot = batch.slot_mut(i).unwrap();
                        out.push((r.from, slot[HEADROOM..HEADROOM + r.len].to_vec()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    fn tally_into<'a>(c: &'a mut (u64, u64, Option<io::ErrorKind>)) -> Tally<'a> {
        Tally {
            would_block: &mut c.0,
            errors: &mut c.1,
            last_error: &mut c.2,
        }
    }

    /// The messages (first position, datagrams, GSO segment) a queue would send.
    fn plan(q: &mut SendQueue, gso: bool) -> Vec<(usize, usize, Option<usize>)> {
        q.order.clear();
        q.order.extend(0..q.entries.len() as u128);
        let mut v = Vec::new();
        q.messages(0..q.entries.len(), gso, |j, k, s| v.push((j, k - j, s)));
        v
    }

    fn arena_queue(sizes: &[(usize, SocketAddr)]) -> SendQueue {
        let mut q = SendQueue::new(SendMode::default());
        for &(len, to) in sizes {
            assert!(q.push_copy(Via::Listener(0), to, &vec![7u8; len]));
        }
        q
    }

    #[test]
    fn a_batch_crosses_between_two_loopback_sockets_in_order() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        for mode in ["single", "mmsg", "gso", "mmsg+gso"] {
            let mut q = SendQueue::new(SendMode::parse(mode).unwrap());
            for k in 0..40u8 {
                let len = if k % 10 == 9 { 50 } else { 100 };
                assert!(q.push_copy(Via::Relay(RelayId(1)), to, &vec![k; len]));
            }
            let mut c = (0, 0, None);
            q.flush(&[], &mut |_| Some(&a), &mut tally_into(&mut c));
            assert_eq!(c, (0, 0, None), "{mode}");
            assert!(q.is_empty());
            let mut batch = RecvBatch::new();
            let got = recv_n(&mut batch, &b, 40);
            assert_eq!(got.len(), 40, "{mode}");
            for (k, (from, data)) in got.iter().enumerate() {
                assert_eq!(*from, a.local_addr().unwrap());
                assert_eq!(
                    data.len(),
                    if k % 10 == 9 { 50 } else { 100 },
                    "{mode} #{k}"
                );
                assert!(data.iter().all(|&x| x == k as u8), "{mode} #{k}");
            }
            // Fewer than asked: the queue is empty.
            assert!(matches!(batch.recv(&b, 8).map(|r| r.len()), Err(_) | Ok(0)));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn one_uring_round_sends_every_sockets_datagrams_in_order() {
        let (a, b) = pair();
        let (c, _) = pair();
        let to = b.local_addr().unwrap();
        let mut q = SendQueue::new(SendMode::default());
        if q.use_uring().is_err() {
            eprintln!("io_uring unavailable here: nothing to test");
            return;
        }
        assert!(q.uring());
        // Two sockets interleaved, a GSO run on one of them, and a socket that closed.
        for k in 0..30u8 {
            let via = Via::Relay(RelayId(u32::from(k % 3)));
            assert!(q.push_copy(via, to, &[k; 100]));
        }
        let mut t = (0, 0, None);
        q.flush(
            &[],
            &mut |v| match v {
                Via::Relay(RelayId(0)) => Some(&a),
                Via::Relay(RelayId(1)) => Some(&c),
                _ => None,
            },
            &mut tally_into(&mut t),
        );
        assert_eq!(t, (0, 0, None));
        assert_eq!(q.batched_calls, 1, "one submission for the round");
        let mut batch = RecvBatch::new();
        let got = recv_n(&mut batch, &b, 20);
        let from_a: Vec<u8> = got
            .iter()
            .filter(|(f, _)| *f == a.local_addr().unwrap())
            .map(|(_, d)| d[0])
            .collect();
        let from_c: Vec<u8> = got
            .iter()
            .filter(|(f, _)| *f == c.local_addr().unwrap())
            .map(|(_, d)| d[0])
            .collect();
        assert_eq!(from_a, (0..30).step_by(3).collect::<Vec<u8>>());
        assert_eq!(from_c, (1..30).step_by(3).collect::<Vec<u8>>());
        assert!(got.iter().all(|(_, d)| d.len() == 100));
        assert!(matches!(batch.recv(&b, 8).map(|r| r.len()), Err(_) | Ok(0)));
    }

    #[test]
    fn small_then_large_receive_calls_fill_every_slot_whole() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        for k in 0..10u8 {
            a.send_to(&[k; 300], to).unwrap();
        }
        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut ask = 2;
        while got.len() < 10 && Instant::now() < deadline {
            if let Ok(slots) = batch.recv(&b, ask) {
                for i in slots {
                    let r = batch.received(i).unwrap();
                    got.push((r.len, batch.slot_mut(i).unwrap()[HEADROOM]));
                }
            }
            ask = 64;
        }
        let want: Vec<(usize, u8)> = (0..10).map(|k| (300, k)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn received_ranges_are_sent_from_the_slots() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        a.send_to(b"hello", to).unwrap();
        a.send_to(b"world!", to).unwrap();
        let mut batch = RecvBatch::new();
        let got = recv_n(&mut batch, &b, 2);
        assert_eq!(got.len(), 2);
        // Echo both back from the slots, without copying.
        let mut q = SendQueue::new(SendMode::default());
        for i in 0..2 {
            let r = batch.received(i).unwrap();
            let s = RecvBatch::slot_start(i) + HEADROOM;
            assert!(q.push_received(Via::Listener(0), r.from, s..s + r.len));
        }
        let mut c = (0, 0, None);
        q.flush(batch.bytes(), &mut |_| Some(&b), &mut tally_into(&mut c));
        let mut back = RecvBatch::new();
        let got = recv_n(&mut back, &a, 2);
        let data: Vec<_> = got.into_iter().map(|(_, d)| d).collect();
        assert_eq!(data, vec![b"hello".to_vec(), b"world!".to_vec()]);
    }

    #[test]
    fn a_closed_socket_drops_its_datagrams_only() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        let mut q = SendQueue::new(SendMode::default());
        assert!(q.push_copy(Via::Relay(RelayId(9)), to, b"gone"));
        assert!(q.push_copy(Via::Relay(RelayId(1)), to, b"kept"));
        let mut c = (0, 0, None);
        q.flush(
            &[],
            &mut |v| (v == Via::Relay(RelayId(1))).then_some(&a),
            &mut tally_into(&mut c),
        );
        let mut batch = RecvBatch::new();
        let got = recv_n(&mut batch, &b, 1);
        assert_eq!(got[0].1, b"kept");
    }

    #[test]
    fn gso_runs_take_equal_sizes_and_a_shorter_last() {
        let p: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let mut q = arena_queue(&[(100, p), (100, p), (100, p), (60, p), (100, p), (100, p)]);
        assert_eq!(
            plan(&mut q, true),
            vec![(0, 4, Some(100)), (4, 2, Some(100))]
        );
        // A longer one starts a new run.
        let mut q = arena_queue(&[(100, p), (120, p), (120, p)]);
        assert_eq!(plan(&mut q, true), vec![(0, 1, None), (1, 2, Some(120))]);
        // Without GSO, one message per datagram.
        assert_eq!(
            plan(&mut q, false),
            vec![(0, 1, None), (1, 1, None), (2, 1, None)]
        );
    }

    #[test]
    fn gso_runs_stop_at_another_destination() {
        let p: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let r: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let mut q = arena_queue(&[(100, p), (100, r), (100, p)]);
        assert_eq!(
            plan(&mut q, true),
            vec![(0, 1, None), (1, 1, None), (2, 1, None)]
        );
    }

    #[test]
    fn flushing_groups_each_destination_keeping_its_order() {
        let p: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let r: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let mut q = SendQueue::new(SendMode::default());
        for (k, to) in [p, r, p, r, p].into_iter().enumerate() {
            assert!(q.push_copy(Via::Listener(0), to, &[k as u8; 10]));
        }
        assert!(q.push_copy(Via::Relay(RelayId(3)), p, &[9; 10]));
        q.sort();
        let order: Vec<u32> = q.order.iter().map(|&k| k as u32).collect();
        let (pp, rr) = (addr_hash(p), addr_hash(r));
        assert_ne!(pp, rr);
        if pp < rr {
            assert_eq!(order, vec![0, 2, 4, 1, 3, 5]);
        } else {
            assert_eq!(order, vec![1, 3, 0, 2, 4, 5]);
        }
    }

    #[test]
    fn gso_runs_are_capped_at_64_segments_and_64_kib() {
        let p: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let mut q = arena_queue(&vec![(10, p); 130]);
        assert_eq!(
            plan(&mut q, true),
            vec![(0, 64, Some(10)), (64, 64, Some(10)), (128, 2, Some(10))]
        );
        // Segments above the MTU-safe size are never segmented.
        let mut q = arena_queue(&[(GSO_MAX_SEGMENT + 1, p); 3]);
        assert!(plan(&mut q, true).iter().all(|m| m.1 == 1));
        // 64 segments of 1452 bytes exceed one datagram's 65,507: the run stops before.
        let mut q = SendQueue::new(SendMode::default());
        q.arena = Vec::with_capacity(0);
        for _ in 0..50 {
            q.entries.push(Entry {
                via: Via::Listener(0),
                to: p,
                store: Store::Arena,
                start: 0,
                len: GSO_MAX_SEGMENT,
            });
        }
        let runs = plan(&mut q, true);
        assert_eq!(runs[0].1, GSO_MAX_BYTES / GSO_MAX_SEGMENT);
        assert_eq!(runs.iter().map(|m| m.1).sum::<usize>(), 50);
    }

    #[test]
    fn full_queues_refuse_instead_of_growing() {
        let p: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let mut q = SendQueue::new(SendMode::default());
        assert!(!q.push_copy(Via::Listener(0), p, &vec![0; SEND_ARENA + 1]));
        for _ in 0..SEND_ENTRIES {
            assert!(q.push_received(Via::Listener(0), p, 0..1));
        }
        assert!(!q.push_received(Via::Listener(0), p, 0..1));
        assert!(!q.push_copy(Via::Listener(0), p, b"x"));
        assert_eq!(q.len(), SEND_ENTRIES);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn recvmmsg_takes_only_a_whole_batch_buffer() {
        let (a, b) = pair();
        let mut got = vec![None; RECV_SLOTS];
        let mut sys = sys::RecvSys::new();
        for len in [
            0,
            SLOT_LEN,
            sys::RECV_BUF_LEN - 1,
            sys::RECV_BUF_LEN + SLOT_LEN,
        ] {
            let mut buf = vec![0u8; len];
            let e = sys.recv(&b, &mut buf, &mut got, 0, 1).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{len}");
        }
        // Another buffer of the right length: the headers are rebuilt over it.
        let mut buf = vec![0u8; sys::RECV_BUF_LEN];
        assert_eq!(
            sys.recv(&b, &mut buf, &mut got, 0, 1).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        a.send_to(b"hello", b.local_addr().unwrap()).unwrap();
        let mut other = vec![0u8; sys::RECV_BUF_LEN];
        let deadline = Instant::now() + Duration::from_secs(2);
        let n = loop {
            match sys.recv(&b, &mut other, &mut got, 3, 2) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(n, 1);
        let r = got[3].unwrap();
        let at = 3 * SLOT_LEN + HEADROOM;
        assert_eq!(&other[at..at + r.len], b"hello");
        assert!(
            buf.iter().all(|&x| x == 0),
            "written into the buffer of an earlier call"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn refused_gso_falls_back_and_is_remembered() {
        refused_gso_falls_back(false);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn refused_gso_through_io_uring_is_resent_one_by_one() {
        refused_gso_falls_back(true);
    }

    #[cfg(target_os = "linux")]
    fn refused_gso_falls_back(uring: bool) {
        use std::os::fd::AsRawFd;
        // Linux refuses segmentation (EINVAL) on a socket sending without UDP checksums
        // (SO_NO_CHECK, socket(7) value 11): the run must go out one by one instead.
        let (a, b) = pair();
        let one: libc::c_int = 1;
        // SAFETY: `one` is a live c_int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                a.as_raw_fd(),
                libc::SOL_SOCKET,
                11,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let to = b.local_addr().unwrap();
        let mut q = SendQueue::new(SendMode::default());
        if !q.mode().gso {
            return; // a kernel without GSO: nothing to fall back from
        }
        if uring && q.use_uring().is_err() {
            eprintln!("io_uring unavailable here: nothing to test");
            return;
        }
        for k in 0..5u8 {
            assert!(q.push_copy(Via::Listener(0), to, &[k; 30]));
        }
        let mut c = (0, 0, None);
        q.flush(&[], &mut |_| Some(&a), &mut tally_into(&mut c));
        assert!(!q.mode().gso, "GSO off for good");
        assert_eq!(c, (0, 0, None));
        let mut batch = RecvBatch::new();
        let got = recv_n(&mut batch, &b, 5);
        let firsts: Vec<u8> = got.iter().map(|(_, d)| d[0]).collect();
        assert_eq!(firsts, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn the_batches_can_move_to_another_thread() {
        fn is_send<T: Send>() {}
        is_send::<RecvBatch>();
        is_send::<SendQueue>();
    }

    #[test]
    fn send_modes_parse() {
        assert_eq!(
            SendMode::parse("single"),
            Some(SendMode {
                mmsg: false,
                gso: false
            })
        );
        assert_eq!(SendMode::parse("mmsg+gso"), Some(SendMode::default()));
        assert_eq!(SendMode::parse("fast"), None);
    }
}
