//! The link to a loop from another thread: a command channel and a [`mio::Waker`] on the
//! loop's poll.

use crate::api::metrics::LoopStats;
use core::time::Duration;
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use turnpike_core::server::AllocationInfo;
use turnpike_core::AllocationId;

/// How long loop 0 waits for another loop's answer to an API request.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// A request to a loop, served when its waker fires.
pub enum Command {
    /// Its core's counters and the runtime's.
    Stats(SyncSender<LoopStats>),
    /// Its allocations.
    Allocations(SyncSender<Vec<AllocationInfo>>),
    /// End one of its allocations (true if it had it).
    Delete(AllocationId, SyncSender<bool>),
    /// Stop, as on SIGTERM (another loop stopped).
    Stop,
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

    /// Queues `cmd` and wakes the loop. False if the loop is gone.
    pub fn send(&self, cmd: Command) -> bool {
        self.tx.send(cmd).is_ok() && self.waker.wake().is_ok()
    }

    /// Sends the command `make` builds around a reply channel and waits for the answer,
    /// at most [`ASK_TIMEOUT`]. None if the loop is gone or too slow.
    pub fn ask<T>(&self, make: impl FnOnce(SyncSender<T>) -> Command) -> Option<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        if !self.send(make(tx)) {
            return None;
        }
        match rx.recv_timeout(ASK_TIMEOUT) {
            Ok(v) => Some(v),
            Err(_) => {
                log::warn!(
                    "event loop {} did not answer within {ASK_TIMEOUT:?}",
                    self.index
                );
                None
            }
        }
    }
}
