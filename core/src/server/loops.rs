//! The other loops of the node: answering their questions, and their answers to ours
//! (see [`crate::node`] for who decides what).

use super::Server;
use crate::node::{LoopId, LoopMsg};
use crate::time::Instant;

impl Server {
    /// Handles a message from loop `from`.
    pub(super) fn loop_message(&mut self, now: Instant, from: LoopId, msg: LoopMsg) {
        let _ = (now, from, msg);
    }
}
