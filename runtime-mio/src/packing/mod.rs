//! Packing: a node's event loops run on as few threads as their load needs.
//!
//! Every loop measures, once a second, how long its thread ran and how long it waited for
//! a CPU ([`meter`]), and publishes it here. Loop 0 adds them up, asks the rule
//! ([`decider`]) how many threads the node needs, and writes in the [`placement`] which
//! loop runs on which loop's thread; the loops move themselves (`event_loop::hosting`). A
//! loop that cannot keep up (a socket left with its read budget spent) spreads the loops
//! at once. Nothing here runs per packet: once a second one file read per loop; per round
//! at most one atomic load.
//!
//! Why: at paced loads each loop wakes for every few datagrams, and a wake-up costs about
//! as much for three datagrams as for thirty. Two loops at 40k packets/s spent half again
//! as much CPU per packet as one; run on one thread, their rounds share each wake-up and
//! they cost what one loop costs (README, "Media shapes"). Confining the loops' threads to
//! fewer CPUs instead (sched_setaffinity) saved only 8 %.

mod decider;
mod meter;
pub mod placement;

pub use decider::Decider;

use meter::Meter;
use placement::Placement;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What one loop published: its thread's last second.
#[derive(Default)]
struct Slot {
    /// Fraction of the last second it ran (`f64` bits).
    busy: AtomicU64,
    /// Fraction of the last second it waited, runnable, for a CPU (`f64` bits).
    wait: AtomicU64,
}

/// The node's packing, shared by its loops.
pub struct Packing {
    slots: Vec<Slot>,
    /// Loop 0 decides once a second; a loop that cannot keep up takes it to spread the
    /// loops. Decisions are applied under it, in the order they were made.
    decider: Mutex<Decider>,
    /// Which thread each loop runs on.
    placement: Arc<Placement>,
    /// Threads the loops run on now (0: packing is off).
    threads_now: AtomicUsize,
    /// A loop's thread could not be measured: packing is off for good.
    failed: AtomicBool,
}

impl Packing {
    /// Packing for `loops` loops, if it can pay: several loops.
    pub fn new(loops: usize) -> Option<Arc<Packing>> {
        if loops < 2 {
            return None;
        }
        let decider = Decider::new(loops);
        let threads_now = AtomicUsize::new(loops);
        Some(Arc::new(Packing {
            slots: (0..loops).map(|_| Slot::default()).collect(),
            decider: Mutex::new(decider),
            placement: Arc::new(Placement::new(loops)),
            threads_now,
            failed: AtomicBool::new(false),
        }))
    }

    /// Which thread each loop runs on (the loops read it every round).
    pub fn placement(&self) -> Arc<Placement> {
        self.placement.clone()
    }

    /// Threads the loops run on now (0: packing is off).
    pub fn threads_now(&self) -> usize {
        self.threads_now.load(Ordering::Relaxed)
    }

    /// Packing is off for good: every loop back on its own thread, and the gauge says 0.
    /// Called with the decider's lock held.
    fn turn_off(&self) {
        self.failed.store(true, Ordering::Relaxed);
        self.placement.gather(self.slots.len());
        self.threads_now.store(0, Ordering::Relaxed);
    }
}

/// One loop's part in the packing.
pub struct LoopPacking {
    node: Arc<Packing>,
    index: usize,
    /// Its thread's schedstat, once started on that thread (None: unavailable).
    meter: Option<Meter>,
    /// When it last measured.
    last: Option<std::time::Instant>,
}

impl LoopPacking {
    /// Loop `index`'s part in `node`.
    pub fn new(node: Arc<Packing>, index: usize) -> LoopPacking {
        LoopPacking {
            node,
            index,
            meter: None,
            last: None,
        }
    }

    /// Threads the node's loops run on now.
    pub fn threads_now(&self) -> usize {
        self.node.threads_now()
    }

    /// On the loop's own thread, before it runs (again after a spell on another loop's
    /// thread): its thread's schedstat. Without one the node's load cannot be known:
    /// packing is off for every loop.
    pub fn start(&mut self) {
        if self.meter.is_some() {
            return;
        }
        let node = &self.node;
        let Ok(_d) = node.decider.lock() else {
            return;
        };
        match Meter::open() {
            Ok(m) => self.meter = Some(m),
            Err(e) => {
                log::info!("event loops not packed: no schedstat ({e})");
                node.turn_off();
                return;
            }
        }
        self.last = Some(std::time::Instant::now());
    }

    /// Once a second: publish this loop's thread's second (a loop run by another loop's
    /// thread reads its own, idle, thread: the host's counts the work); on loop 0, decide
    /// and apply.
    pub fn tick(&mut self) {
        let (Some(meter), Some(last)) = (&mut self.meter, self.last) else {
            return;
        };
        let now = std::time::Instant::now();
        let dt = now.saturating_duration_since(last).as_nanos() as f64;
        // `last` moves only with a reading, so that the next one covers the same time.
        let Ok((run, wait)) = meter.since_last() else {
            return;
        };
        self.last = Some(now);
        if let Some(s) = self.node.slots.get(self.index) {
            s.busy
                .store((run as f64 / dt.max(1.0)).to_bits(), Ordering::Relaxed);
            s.wait
                .store((wait as f64 / dt.max(1.0)).to_bits(), Ordering::Relaxed);
        }
        if self.index == 0 && !self.node.failed.load(Ordering::Relaxed) {
            self.decide();
        }
    }

    /// This loop could not keep up: if the loops are packed, spread them now (any loop
    /// may; the check is one atomic load while they are spread).
    pub fn saturated(&self) {
        let node = &self.node;
        if node.failed.load(Ordering::Relaxed) || node.threads_now() >= node.slots.len() {
            return;
        }
        let Ok(mut d) = node.decider.lock() else {
            return;
        };
        let was = d.threads();
        if let Some(k) = d.saturated() {
            // Under the lock: a decision of loop 0 cannot land between these.
            node.apply(k, was, "a loop could not keep up");
        }
    }

    fn decide(&self) {
        let node = &self.node;
        let read = |a: &AtomicU64| f64::from_bits(a.load(Ordering::Relaxed));
        let busy: f64 = node.slots.iter().map(|s| read(&s.busy)).sum();
        // A hosted loop's own thread idles: each slot is about its thread's load.
        let busiest = node.slots.iter().map(|s| read(&s.busy)).fold(0.0, f64::max);
        let wait = node.slots.iter().map(|s| read(&s.wait)).fold(0.0, f64::max);
        log::debug!("event loops together busy {busy:.3} CPU-s/s, most wait {wait:.3}");
        let Ok(mut d) = node.decider.lock() else {
            return;
        };
        let was = d.threads();
        if let Some(k) = d.second(busy, busiest, wait) {
            let why = format!(
                "busy {busy:.2} CPU-s/s on {was} threads (the busiest {busiest:.2}), a loop waited {:.0} % of a second for its CPU",
                wait * 100.0
            );
            // Under the lock, as in `saturated`.
            node.apply(k, was, &why);
        }
    }
}

impl Packing {
    /// Runs the loops on `k` threads (all of them: spread), from `was`. Called with the
    /// decider's lock held, so that two decisions apply in the order they were made.
    fn apply(&self, k: usize, was: usize, why: &str) {
        let spread = k >= self.slots.len();
        self.placement
            .gather(if spread { self.slots.len() } else { k });
        self.threads_now
            .store(if spread { self.slots.len() } else { k }, Ordering::Relaxed);
        if k < was {
            log::info!(
                "event loops gathered onto {k} thread(s): {why} (they spread again above {:.0} % of {k} CPU, or when a loop waits for its CPU or cannot keep up)",
                decider::OVERFULL * 100.0
            );
        } else {
            log::info!("event loops spread, each on its own thread: {why}");
        }
    }
}
