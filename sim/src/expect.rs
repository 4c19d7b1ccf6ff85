//! End-of-run judgement: liveness (every well-behaved client got through once faults
//! stopped) and the scenario's own expectations.

use crate::oracle::Oracle;
use crate::runner::{via_named, Finished};
use crate::scenario::Scenario;
use core::time::Duration;
use std::collections::BTreeSet;
use turnpike_core::Instant;

/// Answers a well-behaved session must get in the liveness phase, at the latest.
pub const LIVENESS_ANSWER: Duration = Duration::from_secs(15);

type Verdict = Result<(), (&'static str, String)>;

/// The scripted clients' expectations.
fn uclients(e: &crate::scenario::Expect, t: &crate::uclient::Tally) -> Verdict {
    if t.pairs < e.min_even_pairs {
        return Err((
            "expect_min_even_pairs",
            format!(
                "{} EVEN-PORT pairs completed, expected at least {} (codes {:?}, timeouts {})",
                t.pairs, e.min_even_pairs, t.codes, t.timeouts
            ),
        ));
    }
    let n486 = t.codes.get(&486).copied().unwrap_or(0);
    if n486 < e.min_486 {
        return Err((
            "expect_min_486",
            format!("{n486} answers 486, expected at least {}", e.min_486),
        ));
    }
    if e.races_fill_quota && (t.races.0 == 0 || t.races.1 != t.races.0) {
        return Err((
            "expect_races_fill_quota",
            format!(
                "{} of {} races were won by exactly min(sockets, user_quota) 5-tuples",
                t.races.1, t.races.0
            ),
        ));
    }
    if e.uclients_never_refused && !t.codes.is_empty() {
        return Err((
            "expect_uclients_never_refused",
            format!("Allocates refused: {:?}", t.codes),
        ));
    }
    Ok(())
}

/// Time-to-relay of every session of a well-behaved browser group (of group `group`
/// only, if given) that started early enough to connect before `drain_at` (first
/// request to first allocation kept), in ms; a session that never connected is
/// `u64::MAX`. Sorted, fastest first.
pub fn times_to_relay_ms(
    sc: &Scenario,
    oracle: &Oracle,
    drain_at: Instant,
    group: Option<usize>,
) -> Vec<u64> {
    let mut t: Vec<u64> = oracle
        .sessions
        .iter()
        .filter(|s| {
            group.is_none_or(|g| g == s.group)
                && sc
                    .clients
                    .get(s.group)
                    .is_some_and(|g| g.well_behaved && g.model == "browser")
                && s.start + LIVENESS_ANSWER <= drain_at
        })
        .map(|s| match &s.connected {
            Some((at, ..)) => at.since(s.start).as_millis() as u64,
            None => u64::MAX,
        })
        .collect();
    t.sort_unstable();
    t
}

/// The `p`-th percentile (nearest rank) of sorted `values`.
pub fn percentile(values: &[u64], p: u64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let rank = (values.len() as u64 * p).div_ceil(100).max(1) as usize;
    values.get(rank - 1).copied()
}

/// The 50th and 99th percentiles of [`times_to_relay_ms`]: over every well-behaved
/// browser (`all`), then by group; nothing when no session counts.
pub fn time_to_relay_ms(
    sc: &Scenario,
    oracle: &Oracle,
    drain_at: Instant,
) -> Vec<(String, [u64; 2])> {
    let p = |t: Vec<u64>| Some([percentile(&t, 50)?, percentile(&t, 99)?]);
    let mut out = Vec::new();
    if let Some(all) = p(times_to_relay_ms(sc, oracle, drain_at, None)) {
        out.push(("all".to_string(), all));
    }
    if sc.clients.len() > 1 {
        for (i, g) in sc.clients.iter().enumerate() {
            if let Some(v) = p(times_to_relay_ms(sc, oracle, drain_at, Some(i))) {
                out.push((g.name.clone(), v));
            }
        }
    }
    out
}

/// The crowd's expectations: every session connected, the time-to-relay's 99th
/// percentile, IPv6 relayed addresses for the groups that ask for them, and that a
/// reflection had something to bound.
fn crowd(sc: &Scenario, w: &impl Finished) -> Verdict {
    let e = &sc.expect;
    let oracle = w.oracle();
    if e.all_sessions_connected {
        let held = |g: usize| sc.clients.get(g).is_some_and(|c| c.well_behaved);
        let never: Vec<&str> = oracle
            .sessions
            .iter()
            .filter(|s| held(s.group) && s.connected.is_none())
            .map(|s| s.username.as_str())
            .collect();
        if let Some(first) = never.first() {
            return Err((
                "expect_all_sessions_connected",
                format!(
                    "{} sessions never kept an allocation, first {first}",
                    never.len()
                ),
            ));
        }
    }
    for (name, &bound) in &e.time_to_relay_p99_ms {
        let Some(g) = sc.clients.iter().position(|g| &g.name == name) else {
            return Err((
                "expect_time_to_relay_p99",
                format!("no browser group {name:?}"),
            ));
        };
        let t = times_to_relay_ms(sc, oracle, w.drain_at(), Some(g));
        let p99 = percentile(&t, 99);
        if p99.is_none_or(|p| p > bound) {
            let show = |v: Option<u64>| match v {
                Some(u64::MAX) => "never".to_string(),
                Some(ms) => format!("{ms} ms"),
                None => "no session".to_string(),
            };
            return Err((
                "expect_time_to_relay_p99",
                format!(
                    "{name}: time-to-relay p99 {} over {} sessions (p50 {}, slowest {}), bound {bound} ms",
                    show(p99),
                    t.len(),
                    show(percentile(&t, 50)),
                    show(t.last().copied())
                ),
            ));
        }
    }
    for s in &oracle.sessions {
        let v6 = sc.clients.get(s.group).is_some_and(|g| g.relay_ipv6);
        if let (true, Some((_, via, _, relayed))) = (v6, &s.connected) {
            if !relayed.iter().any(|r| r.is_ipv6()) {
                return Err((
                    "expect_relayed_ipv6",
                    format!(
                        "{} asked for an IPv6 relayed address, kept {relayed:?} over {}",
                        s.username,
                        via.as_str()
                    ),
                ));
            }
        }
    }
    if e.min_spoofed_bytes > 0 {
        let victims = oracle.reflection.as_ref().map(|r| r.victims());
        for (ip, v) in victims.into_iter().flatten() {
            if v.spoofed_in < e.min_spoofed_bytes {
                return Err((
                    "expect_min_spoofed_bytes",
                    format!(
                        "{} bytes reached the relay in {ip}'s name, expected {}",
                        v.spoofed_in, e.min_spoofed_bytes
                    ),
                ));
            }
        }
        if victims.is_none_or(|v| v.is_empty()) {
            return Err(("expect_min_spoofed_bytes", "no victim".into()));
        }
    }
    Ok(())
}

/// The fleet's expectations: something was redirected, reconnected, restarted.
fn fleet(e: &crate::scenario::Expect, f: &crate::fleet::FleetWatch) -> Verdict {
    let figures = [
        ("expect_min_redirects", f.redirects, e.min_redirects),
        (
            "expect_min_redirects_refused",
            f.redirects_refused,
            e.min_redirects_refused,
        ),
        (
            "expect_min_reconnects",
            f.reconnects.len() as u64,
            e.min_reconnects,
        ),
        ("expect_min_restarts", f.restarts, e.min_restarts),
        (
            "expect_min_drain_redemptions",
            f.drain_redemptions,
            e.min_drain_redemptions,
        ),
    ];
    for (name, seen, least) in figures {
        if seen < least {
            return Err((name, format!("{seen}, expected at least {least}")));
        }
    }
    Ok(())
}

/// Checks liveness and every expectation of `sc` against a finished world.
pub fn check(sc: &Scenario, w: &impl Finished, now: Instant) -> Verdict {
    liveness(sc, w)?;
    crowd(sc, w)?;
    fleet(&sc.expect, &w.oracle().fleet)?;
    if sc.expect.no_call_lost {
        let held = |g: usize| sc.clients.get(g).is_some_and(|c| c.well_behaved);
        if let Some(s) = w.oracle().sessions.iter().find(|s| held(s.group) && s.lost) {
            return Err((
                "expect_no_call_lost",
                format!("{} (browser {}) lost its relay", s.username, s.browser),
            ));
        }
    }
    let e = &sc.expect;
    let oracle = w.oracle();
    let sessions = &oracle.sessions;
    let hosts = w.server_hosts();
    let per_host: Vec<_> = hosts.iter().map(|h| h.stats(now)).collect();
    let stats: Vec<_> = per_host.iter().flatten().collect();
    if !e.connected_over.is_empty() {
        for s in sessions {
            if let Some((_, via, _, _)) = &s.connected {
                if !e.connected_over.iter().any(|v| v == via.as_str()) {
                    return Err((
                        "expect_connected_over",
                        format!("{} kept a {} allocation", s.username, via.as_str()),
                    ));
                }
            }
        }
    }
    if let Some(bound) = e.connect_within_s {
        for s in sessions {
            if let Some((at, via, _, _)) = &s.connected {
                if at.since(s.start) > Duration::from_secs(bound) {
                    return Err((
                        "expect_connect_within",
                        format!(
                            "{} connected over {} after {:?}",
                            s.username,
                            via.as_str(),
                            at.since(s.start)
                        ),
                    ));
                }
            }
        }
    }
    let sum =
        |f: &dyn Fn(&turnpike_core::server::Stats) -> u64| stats.iter().map(|s| f(s)).sum::<u64>();
    let n508 = sum(&|s| s.insufficient_capacity);
    if n508 < e.min_508 {
        return Err((
            "expect_min_508",
            format!("{n508} answers 508, expected at least {}", e.min_508),
        ));
    }
    let created = sum(&|s| s.allocations_created);
    if created < e.min_allocations {
        return Err((
            "expect_min_allocations",
            format!(
                "{created} allocations, expected at least {}",
                e.min_allocations
            ),
        ));
    }
    uclients(e, &oracle.tally)?;
    if e.no_allocation_left {
        for (h, loops) in hosts.iter().zip(&per_host) {
            for (lp, s) in loops.iter().enumerate() {
                let ports = s.ports_v4.in_use + s.ports_v6.in_use;
                if s.allocations + s.allocations_pending + s.streams + u64::from(ports) > 0
                    || h.bound_relays() > 0
                {
                    return Err((
                    "expect_no_allocation_left",
                    format!(
                        "{} loop {lp}: {} allocations, {} pending, {} streams, {ports} ports in use, {} relay sockets",
                        h.name,
                        s.allocations,
                        s.allocations_pending,
                        s.streams,
                        h.bound_relays()
                    ),
                ));
                }
            }
        }
        if w.open_streams() > 0 {
            return Err((
                "expect_no_allocation_left",
                format!("{} streams still open in the network", w.open_streams()),
            ));
        }
    }
    for s in sessions {
        let Some((_, via, mapped, relayed)) = &s.connected else {
            continue;
        };
        let real = s.real.ip();
        let core_client = oracle
            .servers
            .iter()
            .flat_map(|sh| sh.history.iter())
            .find(|a| a.username == s.username && &a.relayed == relayed)
            .map(|a| a.client);
        if e.real_address_over.iter().any(|v| v == via.as_str()) {
            let mapped_ok = mapped.is_some_and(|m| m.ip() == real);
            let event_ok = core_client.is_some_and(|c| c.ip() == real);
            if !mapped_ok || !event_ok {
                return Err((
                    "expect_real_address",
                    format!("{} over {}: real {real}, mapped {mapped:?}, AllocationCreated says {core_client:?}", s.username, via.as_str()),
                ));
            }
        }
        if e.proxy_address_over.iter().any(|v| v == via.as_str())
            && mapped.is_some_and(|m| m.ip() == real)
        {
            return Err((
                "expect_proxy_address",
                format!(
                    "{} over {}: the relay saw the real address",
                    s.username,
                    via.as_str()
                ),
            ));
        }
    }
    for (reason, min) in &e.min_rejected {
        let n: u64 = oracle
            .servers
            .iter()
            .map(|sh| sh.rejected.get(reason.as_str()).copied().unwrap_or(0))
            .sum();
        if n < *min {
            return Err((
                "expect_min_rejected",
                format!("{n} streams rejected for {reason}, expected at least {min}"),
            ));
        }
    }
    let accepted = sum(&|s| s.proxy_accepted);
    if accepted < e.min_proxy_accepted {
        return Err((
            "expect_min_proxy_accepted",
            format!(
                "{accepted} PROXY headers accepted, expected {}",
                e.min_proxy_accepted
            ),
        ));
    }
    if e.data_echoed {
        for s in sessions {
            let Some((at, ..)) = &s.connected else {
                continue;
            };
            // With a browser pair, echoes are due only while both ends were up.
            let (from, until) = match s.pair_window {
                Some((known, gone)) => ((*at).max(known), min_of(s.ended, gone)),
                None => (*at, s.ended),
            };
            let lasted = match until {
                Some(end) => end > from && end.since(from) > Duration::from_secs(5),
                None => true,
            };
            if s.with_peer && !s.lost && !s.vanished && lasted && s.echoes == 0 {
                return Err((
                    "expect_data_echoed",
                    format!(
                        "{} got no echo from its peer (connected {:?} after {:?}, ended {:?})",
                        s.username,
                        s.connected,
                        at.since(s.start),
                        s.ended.map(|e| e.since(*at))
                    ),
                ));
            }
        }
    }
    if let Some(bound) = e.losers_released_within_s {
        for s in sessions {
            let Some((won, _, _, relayed)) = &s.connected else {
                continue;
            };
            for a in oracle.servers.iter().flat_map(|sh| sh.history.iter()) {
                if a.username != s.username || &a.relayed == relayed {
                    continue;
                }
                let due = (*won).max(a.created) + Duration::from_secs(bound);
                match a.deleted {
                    Some((at, _)) if at <= due => {}
                    other => {
                        return Err((
                            "expect_losers_released",
                            format!(
                                "{}: losing allocation {:?} ended {other:?}, due by {:?}",
                                s.username, a.relayed, due
                            ),
                        ))
                    }
                }
            }
        }
    }
    if !e.each_transport_won.is_empty() {
        let won: BTreeSet<&str> = sessions
            .iter()
            .filter_map(|s| s.connected.as_ref().map(|c| c.1.as_str()))
            .collect();
        for v in &e.each_transport_won {
            if via_named(v).is_none() || !won.contains(v.as_str()) {
                return Err((
                    "expect_each_transport_won",
                    format!("no session kept a {v} allocation (won: {won:?})"),
                ));
            }
        }
    }
    if e.dynamic_listeners_closed {
        for h in &hosts {
            let core = h.cores[0].config().listeners.len();
            if !h.dynamic.is_empty() || core != h.listeners.len() {
                return Err((
                    "expect_dynamic_listeners_closed",
                    format!(
                        "{}: {} dynamic listeners left ({} in the core)",
                        h.name,
                        h.dynamic.len(),
                        core
                    ),
                ));
            }
        }
    }
    if e.misuse_refused {
        let misusing = |g: usize| {
            sc.clients
                .get(g)
                .is_some_and(|c| c.borrow_credential || c.config_age_s > 0)
        };
        let mut seen = 0;
        for s in sessions.iter().filter(|s| misusing(s.group)) {
            if s.first_answer.is_none() {
                continue;
            }
            seen += 1;
            if s.connected.is_some() || !s.codes.contains(&401) {
                return Err((
                    "expect_misuse_refused",
                    format!(
                        "{}: connected {:?}, codes {:?}",
                        s.username, s.connected, s.codes
                    ),
                ));
            }
        }
        if seen == 0 {
            return Err((
                "expect_misuse_refused",
                "no misusing session got an answer".into(),
            ));
        }
    }
    for s in sessions {
        let held = sc.clients.get(s.group).is_some_and(|g| g.well_behaved);
        if let Some(c) = s.codes.iter().find(|c| e.codes_never_seen.contains(c)) {
            if held {
                return Err((
                    "expect_codes_never_seen",
                    format!("{} got {c} (codes {:?})", s.username, s.codes),
                ));
            }
        }
    }
    let limited = sum(&|s| s.dropped.rate_limited);
    if limited < e.min_rate_limited {
        return Err((
            "expect_min_rate_limited",
            format!(
                "{limited} answers held back, expected {}",
                e.min_rate_limited
            ),
        ));
    }
    tls(e, &hosts)?;
    rotation(e, oracle, w.drain_at())?;
    let denied = sum(&|s| s.peers_denied);
    if denied < e.min_peers_denied {
        return Err((
            "expect_min_peers_denied",
            format!("{denied} peers denied, expected {}", e.min_peers_denied),
        ));
    }
    Ok(())
}

/// Native TLS: handshakes completed and failed by reason, at least as many as expected.
fn tls(e: &crate::scenario::Expect, hosts: &[&crate::server::ServerHost]) -> Verdict {
    let done: u64 = hosts.iter().map(|h| h.tls.handshakes).sum();
    if done < e.min_tls_handshakes {
        return Err((
            "expect_min_tls_handshakes",
            format!(
                "{done} native TLS handshakes completed, expected at least {}",
                e.min_tls_handshakes
            ),
        ));
    }
    for (reason, min) in &e.min_tls_failed {
        let n: u64 = hosts
            .iter()
            .map(|h| h.tls.failed.get(reason.as_str()).copied().unwrap_or(0))
            .sum();
        if n < *min {
            return Err((
                "expect_min_tls_failed",
                format!("{n} native TLS handshakes failed for {reason}, expected at least {min}"),
            ));
        }
    }
    Ok(())
}

/// Secret rotation: the reload oracle saw each rule at work, and sessions that kept an
/// allocation across a reload kept it while their credential was valid.
fn rotation(e: &crate::scenario::Expect, oracle: &Oracle, drain_at: Instant) -> Verdict {
    let c = &oracle.rotation.counts;
    for (name, n, min) in [
        (
            "expect_min_old_secret_refused",
            c.old_secret_refused,
            e.min_old_secret_refused,
        ),
        (
            "expect_min_old_credential_kept",
            c.old_credential_kept,
            e.min_old_credential_kept,
        ),
        (
            "expect_min_old_credential_expired",
            c.old_credential_expired,
            e.min_old_credential_expired,
        ),
    ] {
        if n < min {
            return Err((name, format!("{n}, expected at least {min} ({c:?})")));
        }
    }
    if !e.reload_keeps_sessions {
        return Ok(());
    }
    let Some(&reload) = oracle.rotation.first_reload.values().min() else {
        return Err(("expect_reload_keeps_sessions", "no reload happened".into()));
    };
    let wall_s = |t: Instant| {
        (crate::runner::WALL_START_MS + t.since(crate::runner::START).as_millis() as u64) / 1000
    };
    let mut across = 0;
    for s in &oracle.sessions {
        let Some((at, ..)) = &s.connected else {
            continue;
        };
        let end = s.ended.unwrap_or(drain_at);
        if *at >= reload || end <= reload || s.vanished {
            continue;
        }
        across += 1;
        let expiry = turnpike_core::auth::rest_expiry(&s.username).unwrap_or(0);
        if s.lost && wall_s(end) <= expiry {
            return Err((
                "expect_reload_keeps_sessions",
                format!(
                    "{} kept an allocation across the reload and lost it before its end (credential valid until {expiry})",
                    s.username
                ),
            ));
        }
    }
    if across == 0 {
        return Err((
            "expect_reload_keeps_sessions",
            "no session kept an allocation across the reload".into(),
        ));
    }
    Ok(())
}

fn min_of(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Every session a well-behaved browser started in the liveness phase got an answer in
/// bounded time; with `all_connected`, it kept an allocation.
fn liveness(sc: &Scenario, w: &impl Finished) -> Verdict {
    let from = w.liveness_at();
    let until = w.drain_at();
    for s in &w.oracle().sessions {
        let held = sc.clients.get(s.group).is_some_and(|g| g.well_behaved);
        if !held || s.start < from || s.start + LIVENESS_ANSWER > until {
            continue;
        }
        match s.first_answer {
            Some(at) if at.since(s.start) <= LIVENESS_ANSWER => {}
            other => {
                return Err((
                    "liveness_answered",
                    format!(
                        "{} (browser {}) started at {:?}: first answer {other:?}",
                        s.username, s.browser, s.start
                    ),
                ))
            }
        }
        if sc.expect.all_connected && s.connected.is_none() {
            return Err((
                "liveness_connected",
                format!(
                    "{} never kept an allocation (codes {:?})",
                    s.username, s.codes
                ),
            ));
        }
    }
    Ok(())
}
