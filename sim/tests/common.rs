//! Helpers shared by the simulator's integration tests.

use std::path::PathBuf;
use turnpike_sim::cli::scenario_files;
use turnpike_sim::scenario::Scenario;

/// Every scenario file of the repository, sorted, with its parsed content.
pub fn scenarios() -> Vec<(PathBuf, Scenario)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let files = scenario_files(&[dir]).expect("scenarios directory");
    assert!(files.len() >= 9, "scenario files missing: {files:?}");
    files
        .into_iter()
        .map(|f| {
            let s = Scenario::load(&f).unwrap_or_else(|e| panic!("{e}"));
            (f, s)
        })
        .collect()
}
