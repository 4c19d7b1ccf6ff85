//! Reloading the configuration without a restart (SIGHUP), against the real binary.
//!
//! A call relayed by coturn's `turnutils_uclient -S` over native TLS keeps relaying, with no
//! loss, while the certificate files are replaced and SIGHUP sent, and its allocations are
//! still listed afterwards; every new handshake (several, so that the kernel spreads them
//! over the loops) is served the new certificate (`openssl s_client`). A file with an error
//! (a bad value, a certificate that is no certificate) changes nothing and the log names
//! the key and the line (or the certificate's file). A rotated REST secret refuses new
//! Allocates signed with the old one (401) while a live allocation made with it still
//! refreshes; a removed static user cannot refresh; a peer added to `denied_peer_ip`
//! gets no new permission (403). Each case runs on the default loop count (one per core),
//! so the reload must reach every loop; the certificate case runs with `workers = 1` too.

use serde_json::Value;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use turnpike_tests::nginx::{self, Cert};
use turnpike_tests::server::{turnpike_config, Peer, TlsSpec};
use turnpike_tests::turn::{Failure, TurnClient};
use turnpike_tests::uclient::Uclient;
use turnpike_tests::{
    find_tool, free_tcp_port, http, require_tools, rest_password, rest_username, run_on,
    run_with_timeout, unix_now_s, RunningServer, ServerKind, ServerSpec, TempDir,
};

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse";

/// Rewrites the server's configuration file as `spec` says (its ports unchanged), sends
/// SIGHUP, and waits for every loop's `reload` record of this reload. Panics, with the log, if they do not come within 5 s.
fn reload(server: &RunningServer, spec: &ServerSpec) {
    let before = reload_records(server, "ok");
    rewrite(server, spec);
    hup(server);
    let want = before + server.loops;
    let got = turnpike_tests::wait_until(Duration::from_secs(5), || {
        (reload_records(server, "ok") >= want).then_some(())
    });
    assert!(
        got.is_some(),
        "{} of {} loops recorded the reload; the log:\n{}",
        reload_records(server, "ok") - before,
        server.loops,
        server.log_text()
    );
}

/// Writes the configuration file of `spec` in place of the server's.
fn rewrite(server: &RunningServer, spec: &ServerSpec) {
    let events = server.dir().join("events.jsonl");
    let text = turnpike_config(spec, server.addr.port(), server.relay_ports, &events);
    turnpike_tests::write_file(&server.dir().join("turnpike.toml"), &text);
}

fn hup(server: &RunningServer) {
    let pid = libc::pid_t::try_from(server.pid()).expect("a pid fits");
    // SAFETY: kill(2) with a pid of a child this test started and a valid signal number;
    // no memory is passed.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP failed");
}

/// `reload` records of the event log with `result`.
fn reload_records(server: &RunningServer, result: &str) -> usize {
    server
        .events()
        .iter()
        .filter(|e| e["event"] == "reload" && e["result"] == result)
        .count()
}

/// The HTTP API's address, from the event log.
fn api_addr(server: &RunningServer) -> SocketAddr {
    server
        .wait_event(Duration::from_secs(3), |e| e["event"] == "api")
        .and_then(|e| e["listen"].as_str()?.parse().ok())
        .expect("the event log names the API's address")
}

fn api_get(server: &RunningServer, path: &str) -> String {
    let mut s = TcpStream::connect(api_addr(server)).expect("the API accepts");
    let (status, body) = http::exchange(&mut s, "GET", path, "").expect("the API answers");
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The base64 body of the first PEM certificate in `text`, without line breaks.
fn pem_body(text: &str) -> Option<String> {
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + text[start..].find("-----END CERTIFICATE-----")?;
    Some(text[start..end].split_whitespace().collect())
}

/// The certificate a new TLS handshake with `addr` is served (`openssl s_client`).
fn served_cert(addr: SocketAddr) -> String {
    let openssl = find_tool("openssl").expect("openssl (checked by the test)");
    let mut cmd = Command::new(openssl);
    cmd.arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .stdin(Stdio::null());
    let out = run_with_timeout(cmd, Duration::from_secs(20));
    pem_body(&out.combined())
        .unwrap_or_else(|| panic!("no certificate from {addr}:\n{}", out.report()))
}

fn cert_body(c: &Cert) -> String {
    let text = std::fs::read_to_string(&c.cert).expect("the certificate is readable");
    pem_body(&text).expect("a PEM certificate")
}

/// A server with the static user and native TLS on a port of its own, serving the
/// certificate in `live` (files the test replaces).
fn tls_spec(live: &Cert, workers: Option<u32>) -> ServerSpec {
    let mut spec = ServerSpec::static_user(USER, PASSWORD);
    spec.workers = workers;
    spec.tls = Some(TlsSpec {
        cert: live.cert.clone(),
        key: live.key.clone(),
        port: Some(free_tcp_port()),
    });
    spec
}

/// Two certificates, and the files the server reads (a copy of the first).
fn certificates(dir: &TempDir) -> (Cert, Cert, Cert) {
    let mk = |name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("a scratch directory");
        nginx::self_signed_cert(&d)
    };
    let (old, new, live) = (mk("old"), mk("new"), mk("live"));
    copy_cert(&old, &live);
    (old, new, live)
}

fn copy_cert(from: &Cert, to: &Cert) {
    std::fs::copy(&from.cert, &to.cert).expect("copy the certificate");
    std::fs::copy(&from.key, &to.key).expect("copy the key");
}

/// (a) and (b): a call keeps relaying across a certificate reload; new handshakes, on
/// whichever loop they land, see the new certificate.
/// Returns false, before asserting, when uclient lost the call to its own random TLS
/// versions (`UclientRun::lost_to_an_old_tls_version`) and this was not the `last` try.
fn certificate_reload_during_a_call(workers: Option<u32>, last: bool) -> bool {
    if !require_tools(&["openssl"]) {
        return true;
    }
    let dir = TempDir::new("reload-cert");
    let (old, new, live) = certificates(&dir);
    let peer = Peer::start();
    let spec = tls_spec(&live, workers);
    let server = RunningServer::start(ServerKind::Turnpike, spec.clone());
    let tls = server.tls_addr().expect("the server serves TLS");
    assert!(
        served_cert(tls) == cert_body(&old),
        "the first certificate is served"
    );

    // A call of about 5 s (uclient paces its messages), reloaded 1.5 s in.
    let mut u = Uclient::tcp_static(tls, peer.addr, USER, PASSWORD);
    u.tls = true;
    u.messages = 150;
    let call = std::thread::spawn(move || (u.run(), u));
    std::thread::sleep(Duration::from_millis(1500));
    copy_cert(&new, &live);
    let reloaded_at = Instant::now();
    reload(&server, &spec);
    assert!(
        !call.is_finished(),
        "the call ended before the reload took effect ({:?} after SIGHUP): lengthen it",
        reloaded_at.elapsed()
    );
    // Its allocations are still there.
    let list: Value =
        serde_json::from_str(&api_get(&server, "/v1/allocations")).expect("JSON allocations");
    let tcp = list["allocations"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|x| x["transport"] == "tcp").count());
    assert!(tcp > 0, "no TLS allocation listed after the reload: {list}");
    // New handshakes see the new certificate; the kernel spreads them over the loops.
    for _ in 0..2 * server.loops {
        let served = served_cert(tls);
        assert!(
            served == cert_body(&new),
            "a handshake after SIGHUP was served {} certificate",
            if served == cert_body(&old) {
                "the old"
            } else {
                "an unknown"
            }
        );
    }
    let (run, u) = call.join().expect("the uclient thread");
    if !last && run.lost_to_an_old_tls_version() {
        println!(
            "uclient {}: a client gave up after its random TLS 1.0/1.1 contexts were \
             refused; the whole reload is run once more",
            u.args().join(" ")
        );
        return false;
    }
    let s = run.summary().unwrap_or_else(|e| panic!("{e}"));
    println!("uclient {} across the reload: {s}", u.args().join(" "));
    run.assert_zero_loss(&s);
    // The metric counts it, and the log names the new certificate by fingerprint only.
    let metrics = api_get(&server, "/metrics");
    assert_eq!(
        http::sample(&metrics, "turnpike_reloads_total{result=\"ok\"}"),
        Some(1.0),
        "{metrics}"
    );
    let log = server.log_text();
    assert!(log.contains("SIGHUP: reloaded"), "{log}");
    assert!(!log.contains(PASSWORD), "a password is in the log");
    true
}

#[test]
fn a_tls_call_survives_a_certificate_reload_and_new_handshakes_see_the_new_one() {
    run_on(ServerKind::Turnpike, |_| {
        if !certificate_reload_during_a_call(None, false) {
            certificate_reload_during_a_call(None, true);
        }
    });
}

#[test]
fn a_certificate_reload_with_one_loop() {
    run_on(ServerKind::Turnpike, |_| {
        if !certificate_reload_during_a_call(Some(1), false) {
            certificate_reload_during_a_call(Some(1), true);
        }
    });
}

/// (c): a file with an error changes nothing; the log names the key and the line, or the
/// certificate's key and file.
#[test]
fn a_bad_file_keeps_the_running_configuration() {
    run_on(ServerKind::Turnpike, |_| {
        if !require_tools(&["openssl"]) {
            return;
        }
        let dir = TempDir::new("reload-bad");
        let (old, _new, live) = certificates(&dir);
        let spec = tls_spec(&live, None);
        let server = RunningServer::start(ServerKind::Turnpike, spec.clone());
        let tls = server.tls_addr().expect("the server serves TLS");

        // A value of the wrong type, and the user renamed: nothing of it may apply.
        let mut bad = spec.clone();
        bad.users = vec![("mallory".into(), "pw".into())];
        bad.extra.push(("user_quota".into(), "\"ten\"".into()));
        rewrite(&server, &bad);
        let text = std::fs::read_to_string(server.dir().join("turnpike.toml")).unwrap();
        let line = text
            .lines()
            .position(|l| l.starts_with("user_quota"))
            .map(|i| i + 1)
            .unwrap();
        hup(&server);
        let want = format!("turnpike.toml:{line}: key `user_quota`");
        let logged = turnpike_tests::wait_until(Duration::from_secs(5), || {
            server.log_text().contains(&want).then_some(())
        });
        assert!(
            logged.is_some(),
            "no `{want}` in the log:\n{}",
            server.log_text()
        );
        let mut c = TurnClient::udp(server.addr, USER, PASSWORD).unwrap();
        c.allocate().expect("the running user still allocates");
        let mut m = TurnClient::udp(server.addr, "mallory", "pw").unwrap();
        assert_eq!(m.allocate().unwrap_err().code(), Some(401));

        // A certificate file that holds no certificate.
        std::fs::write(&live.cert, "not a certificate\n").unwrap();
        rewrite(&server, &spec);
        hup(&server);
        let want = format!("key `tls_cert_file`: {}", live.cert.display());
        let logged = turnpike_tests::wait_until(Duration::from_secs(5), || {
            server.log_text().contains(&want).then_some(())
        });
        assert!(
            logged.is_some(),
            "no `{want}` in the log:\n{}",
            server.log_text()
        );
        assert!(
            served_cert(tls) == cert_body(&old),
            "the old certificate stays"
        );

        assert_eq!(reload_records(&server, "ok"), 0);
        assert_eq!(reload_records(&server, "error"), 2);
        let metrics = api_get(&server, "/metrics");
        assert_eq!(
            http::sample(&metrics, "turnpike_reloads_total{result=\"error\"}"),
            Some(2.0),
            "{metrics}"
        );
    });
}

/// A reload whose `users` holds a password of the wrong type (`alice = 918273645`): the
/// error names the key, its line and the type wanted, and neither the log nor the event
/// log shows the value (serde's message quotes it).
#[test]
fn a_failed_reload_does_not_echo_a_password() {
    run_on(ServerKind::Turnpike, |_| {
        let spec = ServerSpec::static_user(USER, PASSWORD);
        let server = RunningServer::start(ServerKind::Turnpike, spec.clone());
        let path = server.dir().join("turnpike.toml");
        rewrite(&server, &spec);
        let text = std::fs::read_to_string(&path).unwrap();
        let quoted = format!("\"{PASSWORD}\"");
        assert!(text.contains(&quoted), "{text}");
        turnpike_tests::write_file(&path, &text.replace(&quoted, "918273645"));
        hup(&server);
        // One record of the failure (the first loop writes it).
        let logged = turnpike_tests::wait_until(Duration::from_secs(5), || {
            (reload_records(&server, "error") >= 1).then_some(())
        });
        assert!(logged.is_some(), "no failed reload:\n{}", server.log_text());
        let log = server.log_text();
        assert!(log.contains("key `users"), "{log}");
        assert!(log.contains("expected a string"), "{log}");
        let events = std::fs::read_to_string(server.dir().join("events.jsonl")).unwrap();
        assert!(
            !log.contains("918273645"),
            "the log shows the value:\n{log}"
        );
        assert!(
            !events.contains("918273645"),
            "the event log shows the value:\n{events}"
        );
        let mut c = TurnClient::udp(server.addr, USER, PASSWORD).unwrap();
        c.allocate().expect("the running user still allocates");
    });
}

/// (d): rotated REST secret and a removed static user.
#[test]
fn rotated_credentials_refuse_new_allocations_and_keep_live_ones() {
    run_on(ServerKind::Turnpike, |_| {
        let mut spec = ServerSpec::rest("old-secret-of-the-node");
        spec.users = vec![(USER.into(), PASSWORD.into())];
        let server = RunningServer::start(ServerKind::Turnpike, spec.clone());
        let rest = |secret: &str| {
            let user = rest_username("carol", unix_now_s() + 3600);
            let pw = rest_password(secret, &user);
            TurnClient::udp(server.addr, &user, &pw).unwrap()
        };
        // Live allocations: one per loop at least (the kernel spreads the sources).
        let mut live: Vec<TurnClient> = (0..2 * server.loops)
            .map(|_| rest("old-secret-of-the-node"))
            .collect();
        for c in &mut live {
            c.allocate().expect("allocates with the old secret");
        }
        let mut alice = TurnClient::udp(server.addr, USER, PASSWORD).unwrap();
        alice.allocate().expect("alice allocates");

        let mut rotated = spec.clone();
        rotated.rest_secret = Some("new-secret-of-the-node".into());
        rotated.users = vec![("bob".into(), "bobs-password".into())];
        reload(&server, &rotated);

        for _ in 0..2 * server.loops {
            let mut late = rest("old-secret-of-the-node");
            assert_eq!(
                late.allocate().unwrap_err().code(),
                Some(401),
                "a new Allocate with the old secret"
            );
            rest("new-secret-of-the-node")
                .allocate()
                .expect("the new secret allocates");
        }
        let peer = Peer::start();
        for c in &mut live {
            c.refresh(600).expect("a live allocation still refreshes");
            c.create_permission(peer.addr)
                .expect("and installs permissions");
        }
        assert!(matches!(alice.refresh(600), Err(Failure::Refused(401, _))));
        TurnClient::udp(server.addr, "bob", "bobs-password")
            .unwrap()
            .allocate()
            .expect("the new user allocates");
        let log = server.log_text();
        for secret in ["old-secret-of-the-node", "new-secret-of-the-node", PASSWORD] {
            assert!(!log.contains(secret), "a secret is in the log");
        }
    });
}

/// (e): a peer denied by a reload gets no new permission; other peers still do.
#[test]
fn a_denied_peer_gets_no_new_permission_after_a_reload() {
    run_on(ServerKind::Turnpike, |_| {
        let spec = ServerSpec::static_user(USER, PASSWORD);
        let server = RunningServer::start(ServerKind::Turnpike, spec.clone());
        let denied: SocketAddr = "127.0.0.2:40000".parse().unwrap();
        let other: SocketAddr = "127.0.0.3:40000".parse().unwrap();
        let mut clients: Vec<TurnClient> = (0..2 * server.loops)
            .map(|_| TurnClient::udp(server.addr, USER, PASSWORD).unwrap())
            .collect();
        for c in &mut clients {
            c.allocate().expect("allocates");
            c.create_permission(denied)
                .expect("allowed before the reload");
        }
        let mut deny = spec.clone();
        deny.extra
            .push(("denied_peer_ip".into(), "[\"127.0.0.2/32\"]".into()));
        reload(&server, &deny);
        for c in &mut clients {
            assert_eq!(
                c.create_permission(denied).unwrap_err().code(),
                Some(403),
                "a denied peer after the reload"
            );
            c.create_permission(other)
                .expect("another peer still allowed");
        }
        let removed: u64 = server
            .events()
            .iter()
            .filter(|e| e["event"] == "reload")
            .filter_map(|e| e["permissions_removed"].as_u64())
            .sum();
        assert_eq!(
            removed,
            clients.len() as u64,
            "the live permissions to it were removed"
        );
    });
}

/// The HTTP API signs with a reloaded `issuance_secret`, and every loop accepts it.
#[test]
fn a_reloaded_issuance_secret_signs_new_credentials() {
    run_on(ServerKind::Turnpike, |_| {
        let mut spec = ServerSpec::static_user(USER, PASSWORD);
        spec.extra
            .push(("issuance_secret".into(), "\"issuance-secret-one\"".into()));
        let server = RunningServer::start(ServerKind::Turnpike, spec.clone());
        let issue = || {
            let mut s = TcpStream::connect(api_addr(&server)).expect("the API accepts");
            let (status, body) =
                http::exchange(&mut s, "POST", "/v1/ice-servers", "{\"ttl\": 600}").unwrap();
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).expect("JSON");
            let s = &v["iceServers"][0];
            (
                s["username"].as_str().expect("username").to_string(),
                s["credential"].as_str().expect("credential").to_string(),
            )
        };
        let allocate = |(user, pw): &(String, String)| {
            TurnClient::udp(server.addr, user, pw)
                .unwrap()
                .allocate()
                .map(|_| ())
        };
        let before = issue();
        allocate(&before).expect("issued before the reload: allocates");

        let mut rotated = spec.clone();
        rotated.extra = vec![("issuance_secret".into(), "\"issuance-secret-two\"".into())];
        reload(&server, &rotated);
        for _ in 0..2 * server.loops {
            allocate(&issue()).expect("issued after the reload: allocates on every loop");
            assert_eq!(
                allocate(&before).unwrap_err().code(),
                Some(401),
                "issued with the old secret: a new Allocate"
            );
        }
        assert!(server.log_text().contains("(a new issuance secret)"));
        assert!(!server.log_text().contains("issuance-secret-"));
    });
}

/// A trace recorded across a reload (rotated REST secret, a user removed, a peer denied,
/// quotas changed) replays identically on every loop, given a file with the secrets of
/// both configurations.
#[test]
fn a_trace_across_a_reload_replays_identically() {
    use turnpike_sim::trace::replay::replay_node;
    run_on(ServerKind::Turnpike, |_| {
        let dir = TempDir::new("reload-trace");
        let trace = dir.join("trace.bin");
        let mut spec = ServerSpec::rest("old-secret-of-the-node");
        spec.users = vec![(USER.into(), PASSWORD.into())];
        // No API: its issuance secret is drawn at random, which a replay cannot supply.
        spec.api = false;
        spec.extra = vec![
            ("node_secret".into(), "\"reload-trace-node-secret\"".into()),
            (
                "trace_file".into(),
                format!("\"{}\"", trace.to_string_lossy()),
            ),
        ];
        let mut server = RunningServer::start(ServerKind::Turnpike, spec.clone());
        let rest = |secret: &str| {
            let user = rest_username("carol", unix_now_s() + 3600);
            let pw = rest_password(secret, &user);
            TurnClient::udp(server.addr, &user, &pw).unwrap()
        };
        let peer = Peer::start();
        let mut live: Vec<TurnClient> = (0..2 * server.loops)
            .map(|_| rest("old-secret-of-the-node"))
            .collect();
        for c in &mut live {
            c.allocate().expect("allocates");
            c.create_permission(peer.addr).expect("a permission");
        }
        let mut rotated = spec.clone();
        rotated.rest_secret = Some("new-secret-of-the-node".into());
        rotated.users = vec![("bob".into(), "bobs-password".into())];
        rotated.user_quota = Some(50);
        rotated
            .extra
            .push(("denied_peer_ip".into(), "[\"127.0.0.2/32\"]".into()));
        reload(&server, &rotated);
        for c in &mut live {
            c.refresh(600).expect("refreshes");
            let denied: SocketAddr = "127.0.0.2:40000".parse().unwrap();
            assert_eq!(c.create_permission(denied).unwrap_err().code(), Some(403));
        }
        for _ in 0..server.loops {
            assert!(rest("old-secret-of-the-node").allocate().is_err());
            rest("new-secret-of-the-node")
                .allocate()
                .expect("allocates");
        }
        let st = server.stop();
        assert!(st.is_some_and(|s| s.success()), "SIGTERM: {st:?}");

        // The secrets of both configurations, for the replay.
        let mut both = spec.clone();
        both.rest_secret = None;
        both.users.push(("bob".into(), "bobs-password".into()));
        both.extra.push((
            "static_auth_secret".into(),
            "[\"old-secret-of-the-node\", \"new-secret-of-the-node\"]".into(),
        ));
        let secrets = dir.join("secrets.toml");
        let events = dir.join("unused.jsonl");
        turnpike_tests::write_file(
            &secrets,
            &turnpike_config(&both, server.addr.port(), server.relay_ports, &events),
        );
        let report = replay_node(&trace, Some(&secrets)).unwrap_or_else(|e| panic!("replay: {e}"));
        println!("{report}");
        assert_eq!(report.loops.len(), server.loops, "{report}");
        assert!(report.is_identical(), "{report}");
        // Every loop's file holds the reload.
        for i in 0..server.loops {
            let path = turnpike_core::trace::loop_path(&trace, u16::try_from(i).unwrap());
            let bytes = std::fs::read(&path).expect("the loop's trace");
            let (_, records) = turnpike_core::trace::open(&bytes).expect("a trace");
            let reloads = records
                .flatten()
                .filter(|r| {
                    matches!(
                        r,
                        turnpike_core::trace::Record::Input(
                            turnpike_core::trace::Input::Reload { .. }
                        )
                    )
                })
                .count();
            assert_eq!(reloads, 1, "loop {i}");
        }
    });
}
