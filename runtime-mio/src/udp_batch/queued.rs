//! What the system calls see of a send queue: its datagrams in sorted order, read-only,
//! and what one group's send reports back. The queue builds the view and hands it to `sys`,
//! so the system calls need not know the queue (imports run one way).

use super::{SendMode, Via, GSO_MAX_BYTES, GSO_MAX_SEGMENT, GSO_MAX_SEGMENTS};
use std::net::SocketAddr;

/// Where a queued datagram's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Store {
    /// In the receive slots ([`RecvBatch::bytes`](super::RecvBatch::bytes)).
    Recv,
    /// Copied into the queue's own arena.
    Arena,
}

/// One queued datagram (the system calls read its destination and length).
#[derive(Clone, Copy, Debug)]
pub(super) struct Entry {
    pub(super) via: Via,
    pub(super) to: SocketAddr,
    pub(super) store: Store,
    pub(super) start: usize,
    pub(super) len: usize,
}

/// A send queue's datagrams as the system calls read them: borrowed slices, nothing
/// copied, built once per group or round.
#[derive(Clone, Copy)]
pub(super) struct Queued<'a> {
    entries: &'a [Entry],
    /// Sort keys: flow key above, entry index in the low 32 bits.
    order: &'a [u128],
    arena: &'a [u8],
    pub(super) mode: SendMode,
}

impl<'a> Queued<'a> {
    pub(super) fn new(
        entries: &'a [Entry],
        order: &'a [u128],
        arena: &'a [u8],
        mode: SendMode,
    ) -> Self {
        Queued {
            entries,
            order,
            arena,
            mode,
        }
    }

    /// The entry at `pos` of the sorted order.
    pub(super) fn entry_at(&self, pos: usize) -> Option<&'a Entry> {
        self.entries.get(*self.order.get(pos)? as u32 as usize)
    }

    /// The bytes of the entry at `pos` of the sorted order.
    pub(super) fn data<'r>(&self, recv: &'r [u8], pos: usize) -> &'r [u8]
    where
        'a: 'r,
    {
        let Some(e) = self.entry_at(pos) else {
            return &[];
        };
        let src = match e.store {
            Store::Recv => recv,
            Store::Arena => self.arena,
        };
        src.get(e.start..e.start + e.len).unwrap_or_default()
    }

    /// Splits the entries at `group` (sorted positions, one socket) into messages: GSO
    /// runs where allowed, single datagrams otherwise. Calls `msg(first, end, segment)`
    /// per message (`segment` is Some for a GSO run of two or more).
    pub(super) fn messages(
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
}

/// What one group's send did.
#[derive(Default)]
pub(super) struct SendOutcome {
    pub(super) batched_calls: u64,
    /// A GSO message was refused; the sorted position of its first datagram.
    pub(super) gso_refused_at: Option<usize>,
}
