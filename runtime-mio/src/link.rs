//! The link to an event loop from another thread (another loop, the HTTP API, the thread
//! that started them): a command channel and a [`mio::Waker`] on the loop's poll.
//!
//! A loop only ever receives over its inbox and answers over the reply channel a command
//! brings, with `try_send` on a channel of one slot kept for it: it never waits on anyone.
//! Whoever asks may wait for the answer (the HTTP API does, bounded); no loop does.

use crate::api::metrics::LoopStats;
use mio::net::UdpSocket;
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use turnpike_core::node::{LoopId, LoopMsg};
use turnpike_core::server::AllocationInfo;
use turnpike_core::AllocationId;

/// A request to a loop, served when its waker fires.
pub enum Command {
    /// Its core's counters and the runtime's.
    Stats(SyncSender<LoopStats>),
    /// Its allocations.
    Allocations(SyncSender<Vec<AllocationInfo>>),
    /// End one of its allocations (true if it had it).
    Delete(AllocationId, SyncSender<bool>),
    /// A message from the core of loop `from` to this loop's core
    /// ([`turnpike_core::event::Output::ToLoop`]).
    Loop {
        /// The sending loop.
        from: LoopId,
        /// The message.
        msg: LoopMsg,
    },
    /// Serve a dynamic UDP port the HTTP API opened for one issued configuration.
    DynamicPort(DynamicPort),
    /// Take a reloaded configuration file (SIGHUP; [`crate::reload`]).
    Reload(Arc<crate::reload::LoopReload>),
    /// A reload failed and changed nothing: loop 0 records it in the event log.
    ReloadFailed(Arc<str>),
    /// Stop at once (another loop stopped).
    Stop,
    /// Loops wait to run on this loop's thread (hosting).
    Hosting,
    /// Start draining, as on SIGTERM (`POST /v1/drain`).
    Drain,
}

/// A UDP port opened for one issuance (`turn_udp_port = "dynamic"`): bound by the HTTP
/// API, which must know its number at once, and handed to the loop that serves it.
#[derive(Debug)]
pub struct DynamicPort {
    /// The port's sockets, one per bind address, bound and non-blocking.
    pub sockets: Vec<UdpSocket>,
    /// The only username the port accepts.
    pub username: String,
    /// When the username's credential expires, unix seconds: the port closes after it,
    /// once no allocation uses it.
    pub expires_unix_s: u64,
}

/// How to reach a loop from another thread.
#[derive(Clone)]
pub struct LoopHandle {
    /// The loop's index.
    pub index: usize,
    tx: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
}

impl LoopHandle {
    /// A handle sending on `tx` and waking the loop with `waker`.
    pub fn new(index: usize, tx: mpsc::Sender<Command>, waker: Arc<mio::Waker>) -> Self {
        LoopHandle { index, tx, waker }
    }

    /// Queues `cmd` and wakes the loop; never blocks. False if the loop is gone.
    pub fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).is_ok() && self.waker.wake().is_ok()
    }
}
