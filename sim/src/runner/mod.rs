//! The runner: builds a world from a scenario and a seed, runs it event by event under
//! virtual time, checks the oracles after every step, and judges the end.
//!
//! Phases (as TigerBeetle's VOPR): a safety phase with faults on, a liveness phase with
//! faults off and the network healed (every well-behaved client must get through), and a
//! drain phase where clients leave and everything they held must be released.
//!
//! Files: `outcome` (options, figures, outcome), `world` (the world's state and shared
//! helpers), `build` (scenario to world), `step` (the event loop), `finish` (the end and
//! what expectations read).

mod build;
mod finish;
mod outcome;
mod step;
mod world;

pub use finish::Finished;
pub use outcome::{
    FleetFigures, Outcome, RunOptions, Summary, MAX_EVENTS, QUEUE_CAPACITY, START, TRACE_LINES,
    WALL_START_MS,
};
pub use world::via_named;

use crate::scenario::Scenario;
use world::World;

/// Runs `scenario` with `opts`.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> Result<Outcome, String> {
    let mut w = World::build(scenario, opts)?;
    w.run();
    Ok(w.finish(scenario))
}
