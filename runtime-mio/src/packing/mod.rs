//! Packing: a node's event loops confined to as few CPUs as their load needs.
//!
//! Every loop measures, once a second on its own thread, how long it ran and how long it
//! waited for a CPU ([`meter`]), and publishes it here. Loop 0 adds them up, asks the rule
//! ([`decider`]) how many CPUs the node needs, and confines every loop's thread to that
//! many of the CPUs the process may use ([`cpuset`]), or spreads them again. A loop that
//! cannot keep up (a socket left with its read budget spent) spreads packed loops at once.
//! Nothing here runs per packet: once a second one file read per loop and, when the answer
//! changes, one `sched_setaffinity(2)` per loop; per round at most one atomic load.
//!
//! Why: at paced loads each loop sleeps between small rounds, and waking an idle CPU for
//! each round costs more than waking one already awake: loops that share a CPU often find
//! it awake, and leave the other CPUs idle for longer (README, "Media shapes": 8 % at
//! audio 20k, nothing measurable elsewhere).

mod cpuset;
mod decider;
mod meter;

pub use cpuset::Cpus;
pub use decider::Decider;

use meter::Meter;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What one loop published: its thread and its last second.
#[derive(Default)]
struct Slot {
    /// The loop thread's id (0: not started).
    tid: AtomicI32,
    /// Fraction of the last second it ran (`f64` bits).
    busy: AtomicU64,
    /// Fraction of the last second it waited, runnable, for a CPU (`f64` bits).
    wait: AtomicU64,
}

/// The node's packing, shared by its loops.
pub struct Packing {
    /// The CPUs the process may run on (spread).
    allowed: Cpus,
    slots: Vec<Slot>,
    /// Loop 0 decides once a second; a loop that cannot keep up takes it to spread the
    /// loops. Decisions and the thread ids they apply to change under it.
    decider: Mutex<Decider>,
    /// CPUs the loops are confined to now (0: packing is off).
    cpus_now: AtomicUsize,
    /// Setting a loop's CPUs failed: packing is off for good (logged once).
    failed: AtomicBool,
}

impl Packing {
    /// Packing for `loops` loops, if it can pay: several loops, several CPUs allowed.
    pub fn new(loops: usize) -> Option<Arc<Packing>> {
        let allowed = match Cpus::of_this_thread() {
            Ok(c) => c,
            Err(e) => {
                log::info!("event loops not packed: cannot read the CPUs allowed ({e})");
                return None;
            }
        };
        if loops < 2 || allowed.len() < 2 {
            return None;
        }
        let decider = Decider::new(allowed.len(), loops);
        let cpus_now = AtomicUsize::new(allowed.len());
        Some(Arc::new(Packing {
            allowed,
            slots: (0..loops).map(|_| Slot::default()).collect(),
            decider: Mutex::new(decider),
            cpus_now,
            failed: AtomicBool::new(false),
        }))
    }

    /// CPUs the loops are confined to now (0: packing is off).
    pub fn cpus_now(&self) -> usize {
        self.cpus_now.load(Ordering::Relaxed)
    }

    /// Packing is off for good: every loop spread again (those still running), and the
    /// gauge says 0. Called with the decider's lock held.
    fn turn_off(&self) {
        self.failed.store(true, Ordering::Relaxed);
        for s in &self.slots {
            let tid = s.tid.load(Ordering::Relaxed);
            if tid != 0 {
                let _ = self.allowed.apply_to(tid);
            }
        }
        self.cpus_now.store(0, Ordering::Relaxed);
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

    /// CPUs the node's loops are confined to now.
    pub fn cpus_now(&self) -> usize {
        self.node.cpus_now()
    }

    /// On the loop's own thread, before it runs: its thread id and schedstat. Without a
    /// schedstat the node's load cannot be known: packing is off for every loop.
    pub fn start(&mut self) {
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
        if let Some(s) = node.slots.get(self.index) {
            s.tid.store(cpuset::this_thread_id(), Ordering::Relaxed);
        }
        self.last = Some(std::time::Instant::now());
    }

    /// Once a second: publish this loop's second; on loop 0, decide and apply.
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
        if node.failed.load(Ordering::Relaxed)
            || node.cpus_now() >= node.allowed.len().min(node.slots.len())
        {
            return;
        }
        let Ok(mut d) = node.decider.lock() else {
            return;
        };
        let was = d.cpus();
        if let Some(k) = d.saturated() {
            // Under the lock: a decision of loop 0 cannot land between these.
            node.apply(k, was, "a loop could not keep up");
        }
    }

    fn decide(&self) {
        let node = &self.node;
        let read = |a: &AtomicU64| f64::from_bits(a.load(Ordering::Relaxed));
        let busy: f64 = node.slots.iter().map(|s| read(&s.busy)).sum();
        let wait = node.slots.iter().map(|s| read(&s.wait)).fold(0.0, f64::max);
        log::debug!("event loops together busy {busy:.3} CPU-s/s, most wait {wait:.3}");
        let Ok(mut d) = node.decider.lock() else {
            return;
        };
        let was = d.cpus();
        if let Some(k) = d.second(busy, wait) {
            let why = format!(
                "busy {busy:.2} CPU-s/s on {was} CPU, a loop waited {:.0} % of a second for its CPU",
                wait * 100.0
            );
            // Under the lock, as in `saturated`.
            node.apply(k, was, &why);
        }
    }
}

impl Drop for LoopPacking {
    /// On the loop's thread as it ends: its thread id is forgotten (under the decider's
    /// lock), so that no decision confines a thread that is gone, or another that took
    /// its id.
    fn drop(&mut self) {
        let Ok(_d) = self.node.decider.lock() else {
            return;
        };
        if let Some(s) = self.node.slots.get(self.index) {
            s.tid.store(0, Ordering::Relaxed);
        }
    }
}

impl Packing {
    /// Confines every loop to `k` CPUs (all of them: spread), from `was`. Called with the
    /// decider's lock held, so that two decisions apply in the order they were made.
    fn apply(&self, k: usize, was: usize, why: &str) {
        let target = if k < self.allowed.len().min(self.slots.len()) {
            self.allowed.pick(k, Cpus::current())
        } else {
            self.allowed.clone()
        };
        for s in &self.slots {
            let tid = s.tid.load(Ordering::Relaxed);
            if tid == 0 {
                continue;
            }
            match target.apply_to(tid) {
                Ok(()) => {}
                // A loop that ended between its last round and now: nothing to confine.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    log::warn!("event loops not packed: cannot set a loop's CPUs ({e})");
                    self.turn_off();
                    return;
                }
            }
        }
        self.cpus_now.store(target.len(), Ordering::Relaxed);
        if k < was {
            log::info!(
                "event loops packed onto CPU {target}: {why} (they spread again above {:.0} % of {k} CPU, or when a loop waits for its CPU or cannot keep up)",
                decider::OVERFULL * 100.0
            );
        } else {
            log::info!("event loops spread over CPUs {target}: {why}");
        }
    }
}
