//! How many SIGTERMs arrived: the signal pipe of an event loop says which signals are
//! pending, not how often (two in quick succession read as one), and a second SIGTERM
//! must stop at once (a drain's way out, see [`crate::drain`]).

use signal_hook::consts::SIGTERM;
use signal_hook::SigId;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A counter of SIGTERM deliveries, registered before the signal pipe so that it counts a
/// delivery before the pipe wakes the loop for it.
pub struct TermCount {
    count: Arc<AtomicUsize>,
    id: SigId,
    /// Deliveries already handed to the loop.
    seen: usize,
}

impl TermCount {
    /// Starts counting (until dropped).
    pub fn new() -> io::Result<TermCount> {
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        // SAFETY: the action only adds to an atomic, which is async-signal-safe, and
        // allocates, locks and panics never.
        let id = unsafe {
            signal_hook::low_level::register(SIGTERM, move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
        }?;
        Ok(TermCount { count, id, seen: 0 })
    }

    /// The deliveries since the last call, given that the pipe said SIGTERM is pending
    /// (so at least one).
    pub fn take(&mut self) -> usize {
        let now = self.count.load(Ordering::SeqCst);
        let new = now.saturating_sub(self.seen).max(1);
        self.seen = self.seen.wrapping_add(new);
        new
    }
}

impl TermCount {
    /// Deliveries counted but not yet handed to the loop, without a wake-up of the pipe:
    /// the loop asks once a second, in case the pipe's wake-up for one was merged into an
    /// earlier one read before the counter moved (the two run in the signal handler one
    /// after the other, while the loop may read between them).
    pub fn unseen(&mut self) -> usize {
        let now = self.count.load(Ordering::SeqCst);
        let new = now.saturating_sub(self.seen);
        self.seen = self.seen.wrapping_add(new);
        new
    }
}

impl Drop for TermCount {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.id);
    }
}
