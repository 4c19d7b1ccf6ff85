//! The deterministic simulator (issue: simulator). Nothing here yet.
pub mod trace;
