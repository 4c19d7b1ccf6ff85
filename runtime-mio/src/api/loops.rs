//! The event loops as the API sees them: asked over their inboxes, answers awaited here,
//! on the API's thread, at most [`ASK_TIMEOUT`]. A loop never waits for the API: it
//! answers when its waker fires, and one that is slow (or gone) is left out of the answer.

use super::metrics::LoopStats;
use super::{DrainState, Host};
use crate::clock::Clock;
use crate::drain::Drain;
use crate::link::{Command, DynamicPort, LoopHandle};
use core::time::Duration;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use turnpike_core::node::loop_of;
use turnpike_core::server::AllocationInfo;
use turnpike_core::{AllocationId, Instant};

/// How long the API waits for the loops' answers to one request (all loops are asked at
/// once, so this bounds the request, not each loop).
pub const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// The loop that serves the dynamic UDP ports.
const DYNAMIC_PORTS_LOOP: usize = 0;

/// Every event loop of the relay, by index.
pub struct Loops {
    handles: Vec<LoopHandle>,
    clock: Clock,
    drain: Arc<Drain>,
}

impl Loops {
    /// The loops reached through `handles`, with a drain of their own that never times
    /// out (tests).
    pub fn new(handles: Vec<LoopHandle>) -> Self {
        let drain = Arc::new(Drain::new(handles.len(), Duration::MAX));
        Loops::with_drain(handles, drain)
    }

    /// The loops reached through `handles`, sharing the node's `drain`.
    pub fn with_drain(handles: Vec<LoopHandle>, drain: Arc<Drain>) -> Self {
        Loops {
            handles,
            clock: Clock::new(),
            drain,
        }
    }

    /// Asks every loop at once, then collects the answers that come within
    /// [`ASK_TIMEOUT`], in loop order.
    fn ask_all<T>(&self, make: impl Fn(SyncSender<T>) -> Command) -> Vec<T> {
        let asked: Vec<(usize, Receiver<T>)> = self
            .handles
            .iter()
            .filter_map(|h| {
                let (tx, rx) = mpsc::sync_channel(1);
                h.send(make(tx)).then_some((h.index, rx))
            })
            .collect();
        let deadline = std::time::Instant::now() + ASK_TIMEOUT;
        asked
            .into_iter()
            .filter_map(|(index, rx)| answer(index, &rx, deadline))
            .collect()
    }

    /// Asks loop `index` and waits for its answer, at most [`ASK_TIMEOUT`].
    fn ask<T>(&self, index: usize, make: impl FnOnce(SyncSender<T>) -> Command) -> Option<T> {
        let h = self.handles.iter().find(|h| h.index == index)?;
        let (tx, rx) = mpsc::sync_channel(1);
        if !h.send(make(tx)) {
            return None;
        }
        answer(index, &rx, std::time::Instant::now() + ASK_TIMEOUT)
    }
}

/// Loop `index`'s answer on `rx`, if it comes before `deadline`.
fn answer<T>(index: usize, rx: &Receiver<T>, deadline: std::time::Instant) -> Option<T> {
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    match rx.recv_timeout(left) {
        Ok(v) => Some(v),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            log::warn!("event loop {index} did not answer the HTTP API within {ASK_TIMEOUT:?}");
            None
        }
        // The loop dropped the command: it is stopping.
        Err(mpsc::RecvTimeoutError::Disconnected) => None,
    }
}

impl Host for Loops {
    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn unix_ms(&self) -> u64 {
        Clock::unix_ms()
    }

    fn delete_allocation(&mut self, id: AllocationId) -> bool {
        self.ask(usize::from(loop_of(id).0), |reply| {
            Command::Delete(id, reply)
        })
        .unwrap_or(false)
    }

    fn serve_dynamic_port(&mut self, port: DynamicPort) -> bool {
        self.handles
            .iter()
            .find(|h| h.index == DYNAMIC_PORTS_LOOP)
            .is_some_and(|h| h.send(Command::DynamicPort(port)))
    }

    fn loop_stats(&mut self) -> Vec<LoopStats> {
        self.ask_all(Command::Stats)
    }

    fn all_allocations(&mut self) -> Vec<AllocationInfo> {
        self.ask_all(Command::Allocations)
            .into_iter()
            .flatten()
            .collect()
    }

    fn start_drain(&mut self) -> bool {
        let first = self.drain.start(self.clock.now(), Clock::unix_ms());
        // Every loop, even when a signal started it: a loop's command is idempotent.
        for h in &self.handles {
            h.send(Command::Drain);
        }
        first
    }

    fn drain_state(&self) -> Option<DrainState> {
        let started_unix_ms = self.drain.started_unix_ms()?;
        let left = self.drain.time_left(self.clock.now())?;
        Some(DrainState {
            started_unix_ms,
            timeout_s: self.drain.timeout().as_secs(),
            left_s: left.as_secs(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Source;
    use mio::{Poll, Waker};

    /// A loop's handle and inbox, on a poll of its own.
    fn fake_loop(index: usize, poll: &Poll) -> (LoopHandle, mpsc::Receiver<Command>) {
        let waker = Arc::new(Waker::new(poll.registry(), Source::Waker.token()).unwrap());
        let (tx, rx) = mpsc::channel();
        (LoopHandle::new(index, tx, waker), rx)
    }

    #[test]
    fn a_silent_loop_is_left_out_within_the_timeout() {
        let (p0, p1) = (Poll::new().unwrap(), Poll::new().unwrap());
        let (h0, inbox0) = fake_loop(0, &p0);
        let (h1, inbox1) = fake_loop(1, &p1);
        // Loop 0 answers as a loop does: try_send on the reply, never waiting.
        let answering = std::thread::spawn(move || {
            if let Ok(Command::Stats(reply)) = inbox0.recv() {
                let _ = reply.try_send(LoopStats::default());
            }
        });
        let mut loops = Loops::new(vec![h0, h1]);
        let start = std::time::Instant::now();
        let stats = loops.loop_stats();
        let took = start.elapsed();
        assert_eq!(stats.len(), 1, "loop 1 never answers");
        assert!(took < ASK_TIMEOUT + Duration::from_millis(500), "{took:?}");
        answering.join().unwrap();
        // Loop 1 got the question; its late answer goes nowhere and blocks nothing.
        match inbox1.try_recv() {
            Ok(Command::Stats(reply)) => assert!(reply.try_send(LoopStats::default()).is_err()),
            _ => panic!("loop 1 was not asked"),
        }
    }

    #[test]
    fn deletes_go_to_the_owning_loop_and_dynamic_ports_to_loop_0() {
        let (p0, p1) = (Poll::new().unwrap(), Poll::new().unwrap());
        let (h0, inbox0) = fake_loop(0, &p0);
        let (h1, inbox1) = fake_loop(1, &p1);
        let owner = std::thread::spawn(move || {
            if let Ok(Command::Delete(id, reply)) = inbox1.recv() {
                let _ = reply.try_send(loop_of(id).0 == 1);
            }
        });
        let mut loops = Loops::new(vec![h0, h1]);
        let id = AllocationId(turnpike_core::node::allocation_id_base(1) + 5);
        assert!(loops.delete_allocation(id));
        owner.join().unwrap();
        assert!(inbox0.try_recv().is_err(), "loop 0 was not asked to delete");
        assert!(loops.serve_dynamic_port(DynamicPort {
            sockets: Vec::new(),
            username: "u".into(),
            expires_unix_s: 1,
        }));
        assert!(matches!(inbox0.try_recv(), Ok(Command::DynamicPort(_))));
    }
}
