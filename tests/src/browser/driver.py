"""Helpers the browser tests run inside their network namespace (Python 3, stdlib only).

  driver.py probe HOST TIMEOUT_S ENDPOINT...
      Waits until every ENDPOINT answers: `tcp:PORT` accepts a connection, `udp:PORT:HEX`
      answers the datagram HEX (a STUN Binding request) with any datagram. Exit 0 when
      all did, 1 (with a message) at the time limit.

  driver.py page CHROMIUM PROFILE_DIR SCRIPT_FILE TIMEOUT_S [CHROMIUM_FLAG...]
      Starts headless Chromium with the DevTools protocol on a pipe (fds 3 and 4,
      NUL-delimited JSON), evaluates SCRIPT_FILE in its blank page (awaiting the promise it
      returns) and prints the value as one JSON line; on any failure it prints
      {"driver_error": "..."} instead. Chromium's own output goes to stderr. Chromium never
      outlives this script: it is closed, or killed, before the script exits.
"""
import fcntl
import json
import os
import select
import socket
import subprocess
import sys
import time


def probe(host, timeout, endpoints):
    deadline = time.monotonic() + timeout
    pending = list(endpoints)
    while pending:
        if time.monotonic() > deadline:
            print("not answering within %ss: %s" % (timeout, " ".join(pending)))
            sys.exit(1)
        still = []
        for ep in pending:
            kind, port, *rest = ep.split(":")
            try:
                if kind == "tcp":
                    socket.create_connection((host, int(port)), timeout=0.2).close()
                else:
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.settimeout(0.2)
                    s.sendto(bytes.fromhex(rest[0]), (host, int(port)))
                    s.recvfrom(2048)
                    s.close()
            except OSError:
                still.append(ep)
        pending = still
        if pending:
            time.sleep(0.05)


def page(chromium, profile, script_file, timeout, flags):
    deadline = time.monotonic() + timeout
    with open(script_file) as f:
        script = f.read()
    cmd_r, cmd_w = os.pipe()  # we write commands; Chromium reads them on fd 3
    res_r, res_w = os.pipe()  # Chromium writes answers on fd 4; we read them
    # Copies above 9, so that placing them on 3 and 4 in the child cannot clobber either.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_r, res_w)]

    def child_fds():
        os.dup2(high[0], 3)
        os.dup2(high[1], 4)

    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-quic", "--disable-extensions",
            "--disable-features=Translate,MediaRouter,OptimizationHints",
            "--user-data-dir=" + profile] + flags + ["about:blank"]
    proc = subprocess.Popen(args, preexec_fn=child_fds, pass_fds=(3, 4),
                            stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)
    for fd in [cmd_r, res_w] + high:
        os.close(fd)
    state = {"buf": b"", "id": 0}

    def finish(value):
        print(json.dumps(value))
        sys.stdout.flush()
        try:
            os.write(cmd_w, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        sys.exit(0)

    def call(method, params=None, session=None):
        state["id"] += 1
        msg = {"id": state["id"], "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" in state["buf"]:
                raw, state["buf"] = state["buf"].split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") != state["id"]:
                    continue  # an event, or an answer to something else
                if "error" in answer:
                    finish({"driver_error": "%s: %s" % (method, answer["error"])})
                return answer["result"]
            left = deadline - time.monotonic()
            if left <= 0:
                finish({"driver_error": "%s: no answer within %ss" % (method, timeout)})
            ready, _, _ = select.select([res_r], [], [], left)
            if ready:
                chunk = os.read(res_r, 1 << 16)
                if not chunk:
                    finish({"driver_error": "Chromium closed its pipe (exit %s)" % proc.poll()})
                state["buf"] += chunk

    targets = call("Target.getTargets")["targetInfos"]
    target = next((t["targetId"] for t in targets if t["type"] == "page"), None)
    if target is None:
        target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    left_ms = max(1000, int((deadline - time.monotonic()) * 1000) - 500)
    result = call("Runtime.evaluate", {"expression": script, "awaitPromise": True,
                                       "returnByValue": True, "timeout": left_ms}, session)
    if "exceptionDetails" in result:
        finish({"driver_error": "the page threw: %s" % json.dumps(result["exceptionDetails"])[:4000]})
    finish(result["result"].get("value"))


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        probe(sys.argv[2], float(sys.argv[3]), sys.argv[4:])
    else:
        page(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6:])
