//! Helpers shared by the simulator's integration tests.

use std::path::PathBuf;
use turnpike_sim::cli::scenario_files;
use turnpike_sim::scenario::Scenario;
use turnpike_sim::trace::to_scenario::is_trace_script_file;

/// Every world scenario file of the repository, sorted, with its parsed content (trace
/// scripts left out: see [`trace_scripts`]).
pub fn scenarios() -> Vec<(PathBuf, Scenario)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let files = scenario_files(&[dir]).expect("scenarios directory");
    assert!(files.len() >= 9, "scenario files missing: {files:?}");
    files
        .into_iter()
        .filter(|f| !is_trace_script_file(f))
        .map(|f| {
            let s = Scenario::load(&f).unwrap_or_else(|e| panic!("{e}"));
            (f, s)
        })
        .collect()
}

/// Every trace script (`kind = "trace-script"`) of the repository's scenarios, sorted.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn trace_scripts() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    scenario_files(&[dir])
        .expect("scenarios directory")
        .into_iter()
        .filter(|f| is_trace_script_file(f))
        .collect()
}
