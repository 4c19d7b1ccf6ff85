//! Hosting: a loop run on another loop's thread while the node is lightly loaded.
//!
//! Each loop of a node owns its core, its sockets and its `mio::Poll`; the thread that
//! runs it is only a carrier. At paced loads every loop wakes for every few datagrams,
//! and each wake-up (a sleep, an `epoll_wait`, a receive and a send submission, the
//! receivers woken) costs about as much for three datagrams as for thirty: two loops at
//! 40k packets/s cost half again as much CPU per packet as one (README, "Media shapes").
//! So while one thread can carry the node, the other loops hand themselves to it: their
//! poll is registered in the host's poll (an epoll file descriptor is itself pollable),
//! and the host runs their rounds in the same wake-up as its own, then pauses once for
//! all of them. Nothing of a loop moves but the thread it runs on: 4-tuples stay with the
//! loop the kernel gave them to, and no lock is taken per packet.
//!
//! The way there is a slot per host (a mutex taken once per hand-off) and a command that
//! wakes the host; the way back is a channel per hand-off, on which the host returns the
//! loop when the node spreads again or when the host itself stops.

use super::{Ended, Runtime, EVENTS};
use crate::packing::placement::Placement;
use crate::token::Source;
use core::time::Duration;
use mio::unix::SourceFd;
use mio::{Events, Interest};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc, Mutex};

/// A loop on its way back to its own thread.
pub struct Returned {
    /// The loop.
    pub rt: Box<Runtime>,
    /// None: run on. Some: it ended while hosted (stopped, or its poll failed).
    pub outcome: Option<io::Result<()>>,
}

/// A loop handed to a host, and the way back.
struct Arrival {
    rt: Box<Runtime>,
    back: mpsc::Sender<Returned>,
}

#[derive(Default)]
struct Slot {
    arrivals: Vec<Arrival>,
    /// The host stopped: it takes no more loops.
    closed: bool,
}

/// The node's hosting: which loop each loop should run on (packing writes it), and the
/// hand-off slots.
pub struct Hosting {
    placement: Arc<Placement>,
    /// Per loop as host: loops handed to it, not yet taken.
    slots: Vec<Mutex<Slot>>,
}

impl Hosting {
    /// Hosting for the loops of `placement`.
    pub fn new(placement: Arc<Placement>, loops: usize) -> Arc<Hosting> {
        Arc::new(Hosting {
            placement,
            slots: (0..loops).map(|_| Mutex::default()).collect(),
        })
    }

    /// The loop whose thread loop `index` should run on, if not its own.
    fn wanted(&self, index: usize) -> Option<usize> {
        self.placement.host_of(index)
    }

    /// Loop `index` runs on its own thread from now on.
    fn release(&self, index: usize) {
        self.placement.release(index);
    }

    /// Hands `rt` to loop `host`; the loop comes back on `back`. Refused (the loop
    /// returned) when the host has stopped: the loop then stays on its own thread.
    pub fn offer(
        &self,
        host: usize,
        rt: Box<Runtime>,
        back: mpsc::Sender<Returned>,
    ) -> Result<(), Box<Runtime>> {
        let index = rt.place.index;
        let Some(Ok(mut slot)) = self.slots.get(host).map(Mutex::lock) else {
            self.release(index);
            return Err(rt);
        };
        if slot.closed {
            drop(slot);
            self.release(index);
            return Err(rt);
        }
        slot.arrivals.push(Arrival { rt, back });
        Ok(())
    }

    /// What waits for `host`; with `close`, it takes no more.
    fn take(&self, host: usize, close: bool) -> Vec<Arrival> {
        match self.slots.get(host).map(Mutex::lock) {
            Some(Ok(mut slot)) => {
                slot.closed |= close;
                std::mem::take(&mut slot.arrivals)
            }
            _ => Vec::new(),
        }
    }
}

/// A loop this loop's thread runs.
struct Hosted {
    rt: Box<Runtime>,
    back: mpsc::Sender<Returned>,
    events: Events,
    /// Its poll was reported readable, or its last round left work: run it.
    ready: bool,
}

/// The loops a loop's thread runs besides its own, and the node's hosting.
#[derive(Default)]
pub struct HostedLoops {
    node: Option<Arc<Hosting>>,
    /// The loop these belong to.
    index: usize,
    loops: Vec<Hosted>,
}

impl HostedLoops {
    /// Loop `n`'s poll is readable.
    pub(super) fn ready(&mut self, n: usize) {
        if let Some(h) = self.loops.iter_mut().find(|h| h.rt.place.index == n) {
            h.ready = true;
        }
    }

    /// Whether a hosted loop has work waiting (the thread must not pause).
    pub(super) fn busy(&self) -> bool {
        self.loops.iter().any(|h| h.ready)
    }
}

impl Drop for HostedLoops {
    /// A host that ends without returning its loops (its poll failed, or it panicked)
    /// still returns them, and takes no more: no loop waits for it forever.
    fn drop(&mut self) {
        // A host that panicked may have done so in a hosted loop's round: that loop ends
        // with an error (its thread reports it and the node stops) rather than run on
        // half-served.
        let panicking = std::thread::panicking();
        let outcome = || panicking.then(|| Err(io::Error::other("the thread running it panicked")));
        if let Some(node) = &self.node {
            for a in node.take(self.index, true) {
                node.release(a.rt.place.index);
                let _ = a.back.send(Returned {
                    rt: a.rt,
                    outcome: None,
                });
            }
        }
        for h in self.loops.drain(..) {
            if let Some(node) = &self.node {
                node.release(h.rt.place.index);
            }
            let _ = h.back.send(Returned {
                rt: h.rt,
                outcome: outcome(),
            });
        }
    }
}

impl Runtime {
    /// Takes part in the node's hosting.
    pub fn set_hosting(&mut self, node: Arc<Hosting>) {
        self.hosted.node = Some(node);
        self.hosted.index = self.place.index;
    }

    /// The loop whose thread this loop should move to, if any. A loop that hosts others
    /// stays where it is.
    pub(super) fn hand_off_to(&self) -> Option<usize> {
        if !self.hosted.loops.is_empty() {
            return None;
        }
        self.hosted.node.as_ref()?.wanted(self.place.index)
    }

    /// Takes the loops handed to this one: their polls join this loop's poll, and each
    /// runs a round at once (what arrived during the hand-off waits in its poll).
    pub(super) fn take_hosted(&mut self) {
        let Some(node) = self.hosted.node.clone() else {
            return;
        };
        for a in node.take(self.place.index, false) {
            let index = a.rt.place.index;
            // A loop that is to run elsewhere itself, or that the placement no longer
            // sends here (it changed while the loop was on its way), hosts nothing: the
            // loop goes back and its thread reads the placement again. In a placement that
            // has settled a host is never hosted (`Placement::gather`).
            if node.wanted(self.place.index).is_some()
                || node.wanted(index) != Some(self.place.index)
            {
                let _ = a.back.send(Returned {
                    rt: a.rt,
                    outcome: None,
                });
                continue;
            }
            let fd = a.rt.poll.as_raw_fd();
            let token = Source::Hosted(u32::try_from(index).unwrap_or(u32::MAX)).token();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut SourceFd(&fd), token, Interest::READABLE)
            {
                log::warn!("loop {index} runs on its own thread: cannot watch its poll ({e})");
                node.release(index);
                let _ = a.back.send(Returned {
                    rt: a.rt,
                    outcome: None,
                });
                continue;
            }
            log::debug!("loop {index} runs on loop {}'s thread", self.place.index);
            self.hosted.loops.push(Hosted {
                rt: a.rt,
                back: a.back,
                events: Events::with_capacity(EVENTS),
                ready: true,
            });
        }
    }

    /// The poll timeout `own`, shortened to the hosted loops' timers; zero when one of
    /// them has work.
    pub(super) fn hosted_timeout(&mut self, own: Duration) -> Duration {
        let mut t = own;
        for h in &mut self.hosted.loops {
            t = if h.ready {
                Duration::ZERO
            } else {
                t.min(h.rt.timeout())
            };
        }
        t
    }

    /// One round of each hosted loop that has work (its poll readable, a timer due, reads
    /// left over); loops asked back, or that ended, go back to their threads.
    pub(super) fn run_hosted(&mut self) {
        let mut i = 0;
        while i < self.hosted.loops.len() {
            let index = self.hosted.loops[i].rt.place.index;
            let wanted_here = self
                .hosted
                .node
                .as_ref()
                .and_then(|n| n.wanted(index))
                .is_some_and(|h| h == self.place.index);
            if !wanted_here {
                self.give_back(i, None);
                continue;
            }
            let h = &mut self.hosted.loops[i];
            if h.ready || h.rt.timeout().is_zero() {
                h.ready = false;
                match h.rt.round(&mut h.events, Duration::ZERO) {
                    Ok(false) => {
                        // The round's inputs count in this thread's pause.
                        self.round_inputs += std::mem::take(&mut h.rt.round_inputs);
                        // A full batch of events, or sockets left with reads: more waits.
                        h.ready = h.events.iter().count() >= EVENTS || !h.rt.again.is_empty();
                    }
                    Ok(true) => {
                        self.give_back(i, Some(Ok(())));
                        continue;
                    }
                    Err(e) => {
                        self.give_back(i, Some(Err(e)));
                        continue;
                    }
                }
            }
            i += 1;
        }
    }

    /// Every hosted loop back to its own thread, and no more taken: this loop stops.
    pub(super) fn return_hosted(&mut self) {
        if let Some(node) = self.hosted.node.clone() {
            for a in node.take(self.place.index, true) {
                node.release(a.rt.place.index);
                let _ = a.back.send(Returned {
                    rt: a.rt,
                    outcome: None,
                });
            }
        }
        while !self.hosted.loops.is_empty() {
            self.give_back(0, None);
        }
    }

    /// Hosted loop `i` back to its thread.
    fn give_back(&mut self, i: usize, outcome: Option<io::Result<()>>) {
        let h = self.hosted.loops.swap_remove(i);
        let fd = h.rt.poll.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        if outcome.is_none() {
            if let Some(node) = &self.hosted.node {
                // Asked back, or this host stops: it runs on its own thread from now on.
                if node.wanted(h.rt.place.index) == Some(self.place.index) {
                    node.release(h.rt.place.index);
                }
            }
        }
        log::debug!("loop {} back on its own thread", h.rt.place.index);
        let _ = h.back.send(Returned { rt: h.rt, outcome });
    }
}

/// Runs `rt` on this thread, handing it to a host while the node's hosting asks for it,
/// until it ends. `wake(host)` tells a host a loop waits for it.
pub fn run_hosted_loop(mut rt: Box<Runtime>, wake: impl Fn(usize) -> bool) -> io::Result<()> {
    loop {
        match rt.run_or_hand_off()? {
            Ended::Stopped => return Ok(()),
            Ended::HandOff(host) => {
                let Some(node) = rt.hosted.node.clone() else {
                    return Err(io::Error::other("hand-off without hosting"));
                };
                let (tx, rx) = mpsc::channel();
                if let Err(back) = node.offer(host, rt, tx) {
                    rt = back;
                    continue;
                }
                // The loop waits in the slot. A host returns its loops and closes its
                // slot before it ends (`return_hosted`, or `Drop for HostedLoops`), so the
                // channel closes without the loop only if that failed.
                wake(host);
                match rx.recv() {
                    Ok(Returned { rt: r, outcome }) => match outcome {
                        None => rt = r,
                        Some(res) => return res,
                    },
                    Err(_) => {
                        return Err(io::Error::other(
                            "the loop was lost by the thread that ran it",
                        ))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::two_loops;
    use super::*;

    /// Two loops of a node whose placement wants loop 1 on loop 0's thread.
    fn gathered_pair() -> (Runtime, Runtime, Arc<Placement>, Arc<Hosting>) {
        let (mut a, mut b) = two_loops();
        let placement = Arc::new(Placement::new(2));
        placement.gather(1);
        let hosting = Hosting::new(placement.clone(), 2);
        a.set_hosting(hosting.clone());
        b.set_hosting(hosting.clone());
        (a, b, placement, hosting)
    }

    #[test]
    fn a_stopped_host_takes_no_loop_and_the_loop_stays_on_its_own_thread() {
        let (a, b, placement, hosting) = gathered_pair();
        assert_eq!(b.hand_off_to(), Some(0));
        // Loop 0 stops: it returns what waits for it and closes its slot.
        let _ = hosting.take(0, true);
        let (tx, rx) = mpsc::channel();
        let back = hosting.offer(0, Box::new(b), tx).expect_err("refused");
        assert_eq!(placement.host_of(1), None);
        assert_eq!(back.hand_off_to(), None);
        assert!(rx.try_recv().is_err());
        drop(a);
    }

    /// One turn of the host's run loop, as `run_or_hand_off` takes it.
    fn host_turn(a: &mut Runtime, events: &mut Events, max_wait: Duration) {
        let own = a.timeout().min(max_wait);
        let t = a.hosted_timeout(own);
        assert!(!a.round(events, t).unwrap());
        a.run_hosted();
    }

    #[test]
    fn a_hosted_loop_is_served_when_its_poll_wakes_and_goes_home_when_asked() {
        let (mut a, b, placement, hosting) = gathered_pair();
        let to_b = a.loops[1].clone();
        let (tx, rx) = mpsc::channel();
        assert_eq!(b.hand_off_to(), Some(0));
        assert!(hosting.offer(0, Box::new(b), tx).is_ok());
        a.take_hosted();
        let mut events = Events::with_capacity(EVENTS);
        // Its first round runs at once; then it waits for its poll.
        host_turn(&mut a, &mut events, Duration::ZERO);
        assert!(!a.hosted.busy());
        // A request to loop 1 wakes loop 1's poll, which wakes the host's; the host's
        // next turn serves it, though it would otherwise have slept a second.
        let (reply, answer) = mpsc::sync_channel(1);
        assert!(to_b.send(crate::link::Command::Stats(reply)));
        let started = std::time::Instant::now();
        host_turn(&mut a, &mut events, Duration::from_secs(1));
        assert!(answer.try_recv().is_ok(), "loop 1 not served");
        assert!(started.elapsed() < Duration::from_millis(500));
        // Spread: the host gives it back at its next turn, asked to run on its own.
        placement.gather(2);
        host_turn(&mut a, &mut events, Duration::ZERO);
        let r = rx.try_recv().expect("returned");
        assert!(r.outcome.is_none());
        assert_eq!(r.rt.place.index, 1);
        assert_eq!(r.rt.hand_off_to(), None);
        assert!(a.hosted.loops.is_empty());
    }

    #[test]
    fn a_loop_the_placement_no_longer_sends_here_is_turned_back() {
        let (mut a, b, placement, hosting) = gathered_pair();
        let (tx, rx) = mpsc::channel();
        assert!(hosting.offer(0, Box::new(b), tx).is_ok());
        // The node spread while the loop was on its way.
        placement.gather(2);
        a.take_hosted();
        assert!(a.hosted.loops.is_empty());
        let r = rx.try_recv().expect("turned back");
        assert!(r.outcome.is_none());
        assert_eq!(r.rt.hand_off_to(), None);
    }

    #[test]
    fn a_host_that_ends_returns_the_loops_it_ran_and_those_waiting_for_it() {
        let (mut a, b, placement, hosting) = gathered_pair();
        let (tx, rx) = mpsc::channel();
        assert!(hosting.offer(0, Box::new(b), tx).is_ok());
        a.take_hosted();
        assert_eq!(a.hosted.loops.len(), 1);
        // Its poll failed, or it panicked: the loop goes home, asked to run on its own.
        drop(a);
        let r = rx.try_recv().expect("returned");
        assert!(r.outcome.is_none());
        assert_eq!(r.rt.place.index, 1);
        assert_eq!(placement.host_of(1), None);
        // And the slot is closed.
        let (tx, _rx) = mpsc::channel();
        assert!(hosting.offer(0, r.rt, tx).is_err());
    }
}
