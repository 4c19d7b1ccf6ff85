// Two RTCPeerConnections in one page, connected through the TURN servers of `cfg.rtc`
// (a test gives iceTransportPolicy "relay"): offer, answer and candidates are exchanged
// in the page; a data channel carries `cfg.messages` messages each way; then getStats()
// tells which candidate pair carried them. Evaluated as `(this function)(cfg)`; returns
// a verdict for the Rust test to assert. Every wait is bounded.
async (cfg) => {
  const t0 = performance.now();
  const ms = () => Math.round(performance.now() - t0);
  const sleep = (t) => new Promise((r) => setTimeout(r, t));
  const v = { events: [], candidates: [[], []], candidateErrors: [], gatheredAtMs: [null, null] };
  const note = (s) => v.events.push(ms() + " " + s);
  const pcs = [0, 1].map(() => new RTCPeerConnection(cfg.rtc));
  const gathered = pcs.map((pc, i) => new Promise((done) => {
    pc.onicecandidate = (e) => {
      if (!e.candidate) { v.gatheredAtMs[i] = ms(); done(); return; }
      v.candidates[i].push(e.candidate.candidate);
      pcs[1 - i].addIceCandidate(e.candidate).catch((err) => note("addIceCandidate: " + err));
    };
  }));
  pcs.forEach((pc, i) => {
    pc.onicecandidateerror = (e) =>
      v.candidateErrors.push({ pc: i, url: e.url, code: e.errorCode, text: e.errorText });
    pc.onconnectionstatechange = () => note("pc" + i + " " + pc.connectionState);
    pc.oniceconnectionstatechange = () => note("pc" + i + " ice " + pc.iceConnectionState);
  });
  const dcs = [pcs[0].createDataChannel("e2e")];
  const remote = new Promise((r) => (pcs[1].ondatachannel = (e) => r(e.channel)));
  await pcs[0].setLocalDescription();
  await pcs[1].setRemoteDescription(pcs[0].localDescription);
  await pcs[1].setLocalDescription();
  await pcs[0].setRemoteDescription(pcs[1].localDescription);
  const open = (dc) => new Promise((r) => (dc.readyState === "open" ? r() : (dc.onopen = r)));
  v.outcome = await Promise.race([
    Promise.all([open(dcs[0]), remote.then((dc) => open((dcs[1] = dc)))]).then(() => "open"),
    new Promise((r) => pcs.forEach((pc) => pc.addEventListener("connectionstatechange",
      () => pc.connectionState === "failed" && r("failed")))),
    sleep(cfg.connectMs).then(() => "timeout"),
  ]);
  v.settledAtMs = ms();
  await Promise.race([Promise.all(gathered), sleep(2000)]);
  // Message k from side i is "i>k:" padded with "x" to cfg.messageBytes.
  v.received = [[], []];
  v.receivedBytes = [0, 0];
  if (v.outcome === "open") {
    const all = dcs.map((dc, i) => new Promise((r) => {
      dc.onmessage = (e) => {
        v.received[i].push(e.data.split(":")[0]);
        v.receivedBytes[i] += e.data.length;
        if (v.received[i].length === cfg.messages) r();
      };
    }));
    for (let k = 0; k < cfg.messages; k++) {
      for (const i of [0, 1]) {
        const head = i + ">" + k + ":";
        dcs[i].send(head + "x".repeat(Math.max(0, cfg.messageBytes - head.length)));
      }
    }
    await Promise.race([Promise.all(all), sleep(cfg.messagesMs)]);
    v.messagesAtMs = ms();
  }
  // The selected pairs, from getStats(). While ICE settles each side may still send on a
  // pair of its own (Chromium gathers two relay candidates per turns: URL, for one), so
  // wait, boundedly, until both sides report one succeeded pair, the same from either end.
  const selected = async () => {
    const out = [];
    for (const pc of pcs) {
      const stats = await pc.getStats();
      let pair = null;
      stats.forEach((s) => {
        if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
      });
      const pick = (c) => c && { candidateType: c.candidateType, relayProtocol: c.relayProtocol,
        protocol: c.protocol, address: c.address, port: c.port, url: c.url };
      out.push(pair && { state: pair.state, bytesSent: pair.bytesSent,
        bytesReceived: pair.bytesReceived, local: pick(stats.get(pair.localCandidateId)),
        remote: pick(stats.get(pair.remoteCandidateId)) });
    }
    return out;
  };
  const settledPairs = (s) => s.every((p) => p && p.state === "succeeded") &&
    s[0].local.port === s[1].remote.port && s[1].local.port === s[0].remote.port;
  v.selected = await selected();
  for (let n = 0; v.outcome === "open" && !settledPairs(v.selected) && n < 30; n++) {
    await sleep(100);
    v.selected = await selected();
  }
  v.statsAtMs = ms();
  v.states = pcs.map((pc) => pc.connectionState);
  pcs.forEach((pc) => pc.close());
  v.elapsedMs = ms();
  return v;
}
