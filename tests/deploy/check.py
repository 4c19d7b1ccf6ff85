#!/usr/bin/env python3
"""Offline checks of the deployment files in runtime-mio/deploy/.

  check.py --turnpike BIN [--tools DIR]

- the image recipe: hadolint (any finding fails) and our own rules (multi-stage, pinned
  base images, a numeric non-root user, no ADD, no secret in ENV/ARG), and that the files
  it copies are enough for `cargo tree --locked --offline`;
- the Kubernetes manifests: kubernetes-validate --strict against the schemas of the oldest
  and newest Kubernetes we claim, and the cross-file facts the schemas cannot see (probes
  on the API port, grace period longer than the drain, selectors, the image's user...);
- render.sh of configmap.yaml, run with throwaway secrets: the configuration it writes
  passes `turnpike --check-config`, and it refuses what it must refuse.

Each check is also run on a copy with an error planted in it, and must fail there.
Tools (hadolint, kubernetes-validate, a python with PyYAML) come from DIR or PATH.
Exit 0 when everything holds; the last line reads `deploy checks: N passed, M failed`.
"""

import argparse
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "runtime-mio" / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
MANIFESTS = DEPLOY / "kubernetes"
# Oldest (the preStop sleep action is there from 1.30) and newest schemas we validate.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
# Keys render.sh writes; the shared template must leave them to it.
RENDERED_KEYS = ["listen_address", "ipv4_address", "api_listen", "static_auth_secret",
                 "node_secret", "issuance_secret"]
SECRET_KEYS = ["static-auth-secret", "node-secret", "issuance-secret", "api-token"]

results = []


def record(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")


def expect_fail(name, problems):
    """A planted error: the check must report at least one problem."""
    record(f"planted: {name} (caught)", bool(problems),
           "the check did not notice the planted error")


def tool(tools, name):
    for d in ([tools] if tools else []) + os.environ.get("PATH", "").split(os.pathsep):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    sys.exit(f"check.py: `{name}` not found (in --tools or PATH)")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# --- the image recipe -------------------------------------------------------------------

def hadolint(hadolint_bin, path):
    r = run([hadolint_bin, "--no-color", "--failure-threshold", "info", str(path)])
    return [] if r.returncode == 0 else [(r.stdout + r.stderr).strip()]


def dockerfile_rules(text):
    """Our own rules; hadolint's do not cover all of them."""
    problems = []
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines()]
    lines = [l for l in lines if l and not l.startswith("#")]
    froms = [l.split()[1] for l in lines if l.upper().startswith("FROM ")]
    if len(froms) < 2:
        problems.append("not multi-stage")
    for image in froms:
        name, _, tag = image.partition(":")
        if "@sha256:" not in image and tag in ("", "latest"):
            problems.append(f"base image {image} is not pinned to a release")
    last_from = max(i for i, l in enumerate(lines) if l.upper().startswith("FROM "))
    users = [l.split()[1] for l in lines[last_from:] if l.upper().startswith("USER ")]
    uid = users[-1].split(":")[0] if users else None
    if uid is None or not uid.isdigit() or int(uid) == 0:
        problems.append(f"the runtime stage's user is {uid!r}, not a numeric non-root one")
    for l in lines:
        word = l.split()[0].upper()
        if word == "ADD":
            problems.append(f"ADD (use COPY): {l}")
        if word in ("ENV", "ARG") and re.search(r"SECRET|TOKEN|PASSWORD|KEY", l, re.I):
            problems.append(f"a secret in the image: {l}")
    return problems, uid


def copied_sources(text):
    """Repository paths the build stage copies (COPY without --from)."""
    out = []
    for l in text.splitlines():
        parts = l.split()
        if parts and parts[0] == "COPY" and not any(p.startswith("--from") for p in parts):
            out += parts[1:-1]
    return out


def copy_is_enough(sources):
    """The build context the recipe copies resolves as a workspace, with the lock file."""
    ignore = shutil.ignore_patterns("target", ".git", "corpus", "artifacts")
    with tempfile.TemporaryDirectory() as tmp:
        for s in sources:
            src = ROOT / s
            if src.is_dir():
                shutil.copytree(src, Path(tmp) / s, ignore=ignore)
            elif src.is_file():
                shutil.copy(src, Path(tmp) / s)
            else:
                return [f"COPY {s}: no such path in the repository"]
        host = re.search(r"^host: (\S+)", run(["rustc", "-vV"]).stdout, re.M)
        r = run(["cargo", "tree", "--locked", "--offline", "-p", "turnpike", "-e", "normal,build",
                 "--target", host.group(1) if host else "x86_64-unknown-linux-gnu"], cwd=tmp)
        return [] if r.returncode == 0 else [r.stderr.strip()[-2000:]]


# --- the manifests ----------------------------------------------------------------------

def validate(kv_bin, directory):
    problems = []
    files = sorted(str(p) for p in Path(directory).glob("*.yaml"))
    for v in K8S_VERSIONS:
        r = run([kv_bin, "--strict", "--quiet", "-k", v] + files)
        if r.returncode != 0:
            problems.append((r.stdout + r.stderr).strip())
    return problems


def load(directory):
    docs = {}
    for p in sorted(Path(directory).glob("*.yaml")):
        for d in yaml.safe_load_all(p.read_text()):
            if d:
                docs[(d["kind"], d["metadata"]["name"])] = d
    return docs


def toml_int(text, key):
    m = re.search(rf"^{key}\s*=\s*(\d+)", text, re.M)
    return int(m.group(1)) if m else None


def consistency(docs, image_uid):
    """What the schemas cannot see: the files must agree with each other and the relay."""
    p = []
    dep = docs.get(("Deployment", "turnpike"))
    cm = docs.get(("ConfigMap", "turnpike-config"))
    if not dep or not cm:
        return ["Deployment turnpike or ConfigMap turnpike-config is missing"]
    template = cm["data"]["turnpike.toml"]
    spec = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    notes = dep["spec"]["template"]["metadata"].get("annotations", {})
    relay = next(c for c in spec["containers"] if c["name"] == "turnpike")
    init = next(c for c in spec["initContainers"] if c["name"] == "config")
    ports = {q["name"]: q["containerPort"] for q in relay["ports"]}
    api_port = int(next(e["value"] for e in init["env"] if e["name"] == "API_PORT"))

    if spec.get("hostNetwork") is not True:
        p.append("hostNetwork is not true: the relay range would not reach the pod")
    if dep["spec"]["selector"]["matchLabels"].items() - labels.items():
        p.append("the Deployment's selector does not match its pods")
    for kind, name in (("Service", "turnpike-api"), ("PodDisruptionBudget", "turnpike")):
        d = docs.get((kind, name))
        sel = (d or {}).get("spec", {}).get("selector", {})
        sel = sel.get("matchLabels", sel)
        if not d or not sel or sel.items() - labels.items():
            p.append(f"{kind} {name} is missing or does not select the relays")
    if ports.get("api") != api_port:
        p.append(f"container port api {ports.get('api')} != API_PORT {api_port}")
    ready = relay.get("readinessProbe", {}).get("httpGet", {})
    if ready.get("path") != "/health" or ready.get("port") not in ("api", api_port):
        p.append("readinessProbe is not GET /health on the API port")
    if relay.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/health":
        p.append("livenessProbe on /health would kill a draining relay (503)")
    if (notes.get("prometheus.io/scrape") != "true" or notes.get("prometheus.io/path") != "/metrics"
            or notes.get("prometheus.io/port") != str(api_port)):
        p.append("Prometheus annotations do not point at /metrics on the API port")
    drain = toml_int(template, "drain_timeout_s")
    pause = relay.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if drain is None or grace <= drain + pause:
        p.append(f"terminationGracePeriodSeconds {grace} <= preStop {pause} s + "
                 f"drain_timeout_s {drain}")
    for key in RENDERED_KEYS:
        if re.search(rf"^{key}\s*=", template, re.M):
            p.append(f"turnpike.toml sets {key}, which render.sh writes")
    if not re.search(r"^api_token_file\s*=", template, re.M):
        p.append("turnpike.toml has no api_token_file: the API would mint credentials for anyone")
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or str(psc.get("runAsUser")) != str(image_uid):
        p.append(f"pod runAsUser {psc.get('runAsUser')} is not the image's user {image_uid}")
    for c in spec["containers"] + spec["initContainers"]:
        sc = c.get("securityContext", {})
        if (sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation")
                is not False or sc.get("capabilities", {}).get("drop") != ["ALL"]):
            p.append(f"container {c['name']}: not read-only, no-escalation, drop ALL")
        if "memory" not in c.get("resources", {}).get("limits", {}):
            p.append(f"container {c['name']}: no memory limit")
    vols = {v["name"]: v for v in spec["volumes"]}
    if vols.get("secrets", {}).get("secret", {}).get("secretName") != "turnpike-secrets":
        p.append("the secrets volume is not the Secret turnpike-secrets")
    if vols.get("run", {}).get("emptyDir", {}).get("medium") != "Memory":
        p.append("the rendered configuration (with secrets) is not on a memory volume")
    return p


# --- render.sh --------------------------------------------------------------------------

def render(docs, turnpike, node="node-a", addresses=None, secret_values=None, extra=""):
    """Runs render.sh in a scratch directory; returns (exit code, output, config text)."""
    cm = dict(docs[("ConfigMap", "turnpike-config")]["data"])
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for d in ("template", "secrets", "addresses", "run"):
            (t / d).mkdir()
        (t / "template" / "render.sh").write_text(cm["render.sh"])
        values = secret_values or {k: secrets.token_hex(24) for k in SECRET_KEYS}
        for k, v in values.items():
            (t / "secrets" / k).write_text(v + "\n")
        # The kubelet's atomic-writer entries, there even for an absent optional ConfigMap.
        (t / "addresses" / "..data").mkdir()
        for n, a in (addresses or {}).items():
            (t / "addresses" / n).write_text(a)
        toml = cm["turnpike.toml"].replace("/etc/turnpike/secrets", str(t / "secrets"))
        (t / "template" / "turnpike.toml").write_text(toml + extra)
        env = dict(os.environ, NODE_NAME=node, NODE_IP="192.0.2.10", API_PORT="9478",
                   TURNPIKE_TEMPLATE=str(t / "template" / "turnpike.toml"),
                   TURNPIKE_SECRETS=str(t / "secrets"),
                   TURNPIKE_PUBLIC_ADDRESSES=str(t / "addresses"),
                   TURNPIKE_OUT=str(t / "run" / "turnpike.toml"), TURNPIKE=turnpike)
        r = run(["/bin/sh", str(t / "template" / "render.sh")], env=env)
        out = t / "run" / "turnpike.toml"
        text = out.read_text() if out.exists() else ""
        if text and stat.S_IMODE(out.stat().st_mode) & 0o077:
            text += "\n# MODE-TOO-OPEN\n"
        output = r.stdout + r.stderr
        leaked = [k for k, v in values.items() if v and v in output]
        if leaked:
            output += f"\nLEAKED {leaked}"
        return r.returncode, output, text


def render_checks(docs, turnpike):
    rc, out, text = render(docs, turnpike)
    problems = [] if rc == 0 else [out.strip()]
    for want in ('listen_address = "192.0.2.10"', 'ipv4_address = "192.0.2.10"',
                 'api_listen = "192.0.2.10:9478"', "node_secret = '"):
        if want not in text:
            problems.append(f"rendered configuration lacks {want}")
    if "MODE-TOO-OPEN" in text or "LEAKED" in out:
        problems.append("the rendered file is readable by others, or a secret was printed")
    record("render.sh: node address, secrets, turnpike --check-config", not problems,
           "; ".join(problems))

    rc, out, text = render(docs, turnpike, addresses={"node-a": "198.51.100.7",
                                                      "node-b": "198.51.100.8"})
    ok = (rc == 0 and 'ipv4_address = "198.51.100.7"' in text
          and '{ address = "198.51.100.8", turn_port = 3478 }' in text
          and '{ address = "198.51.100.7"' not in text)
    record("render.sh: public address and alternates from turnpike-public-addresses", ok, out)

    rc, out, _ = render(docs, turnpike, addresses={"node-b": "198.51.100.8"})
    record("render.sh: refuses a public-address map without this node",
           rc != 0 and "no entry for node node-a" in out, out)

    bad = {k: secrets.token_hex(24) for k in SECRET_KEYS}
    bad["node-secret"] = "it's-a-secret-with-a-quote"
    rc, out, _ = render(docs, turnpike, secret_values=bad)
    record("render.sh: refuses a secret that TOML cannot hold literally",
           rc != 0 and "has a quote" in out and "LEAKED" not in out, out)

    rc, out, _ = render(docs, turnpike, extra="\nturn_udp_prot = 3478\n")
    expect_fail("a misspelled key in turnpike.toml, seen by --check-config",
                [out] if rc != 0 and "turn_udp_prot" in out else [])


# --- main -------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--turnpike", required=True, help="the turnpike binary")
    ap.add_argument("--tools", help="directory of hadolint and kubernetes-validate")
    args = ap.parse_args()
    hadolint_bin = tool(args.tools, "hadolint")
    kv_bin = tool(args.tools, "kubernetes-validate")

    text = DOCKERFILE.read_text()
    found = hadolint(hadolint_bin, DOCKERFILE)
    record("Dockerfile: hadolint", not found, "\n".join(found))
    rules, uid = dockerfile_rules(text)
    record("Dockerfile: multi-stage, pinned bases, numeric non-root user, no ADD, no secret",
           not rules, "; ".join(rules))
    found = copy_is_enough(copied_sources(text))
    record("Dockerfile: the copied sources resolve (cargo tree --locked --offline)",
           not found, "\n".join(found))
    with tempfile.TemporaryDirectory() as tmp:
        planted = Path(tmp) / "Dockerfile"
        planted.write_text(text.replace(f"USER {uid}:{uid}", "USER root"))
        expect_fail("Dockerfile runs as root, seen by hadolint", hadolint(hadolint_bin, planted))
    expect_fail("a build context without sim/, seen by cargo tree",
                copy_is_enough([s for s in copied_sources(text) if s != "sim"]))
    expect_fail("unpinned base image, seen by our rules",
                dockerfile_rules(text.replace("FROM debian:trixie-slim", "FROM debian"))[0])

    found = validate(kv_bin, MANIFESTS)
    record(f"manifests: kubernetes-validate --strict, Kubernetes {', '.join(K8S_VERSIONS)}",
           not found, "\n".join(found))
    docs = load(MANIFESTS)
    found = consistency(docs, uid)
    record("manifests: agree with each other, the image and the relay", not found,
           "; ".join(found))
    with tempfile.TemporaryDirectory() as tmp:
        for p in MANIFESTS.glob("*.yaml"):
            shutil.copy(p, tmp)
        relay = Path(tmp) / "relay.yaml"
        good = relay.read_text()
        relay.write_text(good.replace("terminationGracePeriodSeconds:",
                                      "terminationGracePeriodSecond:"))
        expect_fail("misspelled terminationGracePeriodSeconds, seen by the schema",
                    validate(kv_bin, tmp))
        relay.write_text(good.replace("containerPort: 9478", 'containerPort: "api"', 1))
        expect_fail("a port number that is a string, seen by the schema",
                    validate(kv_bin, tmp))
        relay.write_text(good.replace("terminationGracePeriodSeconds: 90",
                                      "terminationGracePeriodSeconds: 60"))
        expect_fail("grace period not longer than preStop + drain_timeout_s",
                    consistency(load(tmp), uid))

    render_checks(docs, args.turnpike)

    failed = results.count(False)
    print(f"deploy checks: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
