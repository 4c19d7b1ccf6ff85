//! The API's routes:
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/ice-servers` | an ICE configuration for one client ([`super::ice`]) |
//! | `GET /v1/allocations` | every allocation: client, transport, relayed addresses, user, label, age, traffic |
//! | `DELETE /v1/allocations/{id}` | ends one allocation now (204, or 404) |
//! | `GET /metrics` | Prometheus text ([`super::metrics`]) |
//! | `GET /health` | `{"status": "ok"}` for load balancers and systemd; 503 `{"status": "draining", ...}` while draining |
//! | `POST /v1/drain` | starts draining, as SIGTERM does (202, with `/health`'s draining body) |
//!
//! With `api_token` (or `api_token_file`) set, the routes that mint credentials, list
//! allocations (client addresses and usernames), end them or drain the relay need `Authorization: Bearer
//! TOKEN` (RFC 6750), else 401 with `WWW-Authenticate: Bearer`; `/metrics` and `/health`
//! stay open to scrapers and probes.

use super::http::{Request, Response};
use super::ice::{check_request, issue_credential, label_of, IceRequest};
use super::{Api, Host};
use crate::config::{Secret, UdpPort};
use rand_core::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use turnpike_core::AllocationId;

/// Answers one request. `HEAD` is answered as `GET` (the caller leaves the body out).
pub fn handle(api: &mut Api, host: &mut dyn Host, req: &Request) -> Response {
    let method = if req.method == "HEAD" {
        "GET"
    } else {
        req.method.as_str()
    };
    let path = req.path.trim_end_matches('/');
    let guarded = matches!(
        (method, path),
        ("POST", "/v1/ice-servers") | ("GET", "/v1/allocations") | ("POST", "/v1/drain")
    ) || (method == "DELETE" && path.starts_with("/v1/allocations/"));
    if guarded {
        if let Some(denied) = check_token(api.settings.token.as_ref(), req) {
            return denied;
        }
    }
    match (method, path) {
        ("GET", "/health") => {
            let (status, body) = health(host);
            Response::json(status, &body)
        }
        ("POST", "/v1/drain") => {
            let started = host.start_drain();
            let (_, mut body) = health(host);
            body["started"] = json!(started);
            Response::json(202, &body)
        }
        ("GET", "/metrics") => {
            let loops = host.loop_stats();
            let (stats, mut r) = super::metrics::sum(&loops);
            api.add_own_metrics(&mut r);
            r.draining = u64::from(host.drain_state().is_some());
            let mut text = super::metrics::render(&stats, &r);
            if loops.len() > 1 {
                text.push_str(&super::metrics::render_loops(&loops));
            }
            Response::text(200, super::metrics::CONTENT_TYPE, text)
        }
        ("POST", "/v1/ice-servers") => ice_servers(api, host, &req.body),
        ("GET", "/v1/allocations") => allocations(host),
        (_, "/health" | "/metrics" | "/v1/allocations") => not_allowed("GET, HEAD"),
        (_, "/v1/ice-servers" | "/v1/drain") => not_allowed("POST"),
        (m, p) => match p.strip_prefix("/v1/allocations/") {
            Some(id) if m == "DELETE" => delete_allocation(host, id),
            Some(_) => not_allowed("DELETE"),
            None => Response::error(404, &format!("no route {p}")),
        },
    }
}

/// `/health`: 200 `{"status": "ok"}`, or while the relay drains 503 `{"status":
/// "draining", "allocations": N, ...}` so that a load balancer sends new clients
/// elsewhere (the live ones go on).
fn health(host: &mut dyn Host) -> (u16, Value) {
    let Some(d) = host.drain_state() else {
        return (200, json!({"status": "ok"}));
    };
    let allocations: u64 = host
        .loop_stats()
        .iter()
        .map(|l| l.core.allocations + l.core.allocations_pending)
        .sum();
    let body = json!({
        "status": "draining",
        "allocations": allocations,
        "started_unix_ms": d.started_unix_ms,
        "drain_timeout_s": d.timeout_s,
        "exit_within_s": d.left_s,
    });
    (503, body)
}

/// None when `req` may pass: no token is configured, or it carries the token as a bearer
/// token. The comparison takes the same time whatever the bytes and their length (both
/// sides are hashed to 32 bytes first, then compared in constant time).
fn check_token(token: Option<&Secret>, req: &Request) -> Option<Response> {
    let token = token?;
    let given = req.authorization.as_ref().and_then(|a| {
        let (scheme, value) = a.0.split_once(' ')?;
        scheme.eq_ignore_ascii_case("Bearer").then(|| value.trim())
    });
    let Some(given) = given else {
        return Some(
            Response::error(401, "this route needs `Authorization: Bearer <api_token>`")
                .with_header("WWW-Authenticate", "Bearer realm=\"turnpike\"".into()),
        );
    };
    let want = Sha256::digest(token.0.as_bytes());
    let got = Sha256::digest(given.as_bytes());
    if bool::from(want.as_slice().ct_eq(got.as_slice())) {
        None
    } else {
        Some(
            Response::error(401, "the bearer token is not the API's token").with_header(
                "WWW-Authenticate",
                "Bearer realm=\"turnpike\", error=\"invalid_token\"".into(),
            ),
        )
    }
}

fn not_allowed(allow: &str) -> Response {
    Response::error(405, &format!("method not allowed; use {allow}"))
        .with_header("Allow", allow.to_string())
}

/// `POST /v1/ice-servers`.
fn ice_servers(api: &mut Api, host: &mut dyn Host, body: &[u8]) -> Response {
    let req: IceRequest = if body.iter().all(u8::is_ascii_whitespace) {
        IceRequest::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return Response::error(400, &format!("body: {e}")),
        }
    };
    if let Err(m) = check_request(&req, api.settings.max_ttl_s) {
        return Response::error(400, &m);
    }
    let ttl = req.ttl.unwrap_or(api.settings.ttl_s);
    let expires = host.unix_ms() / 1000 + ttl;
    let mut random = [0u8; 12];
    api.rng.fill_bytes(&mut random);
    let cred = issue_credential(&api.secret, expires, &random, req.label.as_deref());
    let udp_port = if api.ice.wants_udp() {
        match api.settings.udp_port {
            UdpPort::Fixed(p) => p,
            UdpPort::Dynamic => match api.open_dynamic(host, &cred.username, expires) {
                Some(p) => p,
                None => {
                    return Response::error(503, "no dynamic UDP port could be opened; try again")
                }
            },
        }
    } else {
        0
    };
    api.issued += 1;
    let urls = api.ice.urls(&req, udp_port);
    log::info!(
        "issued an ICE configuration for {:?} ({} URLs, valid {ttl}s{})",
        cred.username,
        urls.len(),
        if api.ice.wants_udp() && api.settings.udp_port == UdpPort::Dynamic {
            format!(", UDP port {udp_port}")
        } else {
            String::new()
        }
    );
    Response::json(
        200,
        &json!({
            "iceTransportPolicy": "relay",
            "iceServers": [{
                "urls": urls,
                "username": cred.username,
                "credential": cred.credential,
            }],
        }),
    )
}

/// `GET /v1/allocations`.
fn allocations(host: &mut dyn Host) -> Response {
    let list: Vec<Value> = host
        .all_allocations()
        .iter()
        .map(|a| {
            let t = a.traffic;
            json!({
                "id": a.id.0,
                "client": a.client.addr.to_string(),
                "transport": a.client.transport.as_str(),
                "relayed": a.relayed.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "username": a.username,
                "label": label_of(&a.username),
                "age_ms": a.age_ms,
                "expires_in_ms": a.expires_in_ms,
                "permissions": a.permissions,
                "channels": a.channels,
                "to_peer_packets": t.to_peer_packets,
                "to_peer_bytes": t.to_peer_bytes,
                "from_peer_packets": t.from_peer_packets,
                "from_peer_bytes": t.from_peer_bytes,
            })
        })
        .collect();
    Response::json(200, &json!({ "allocations": list }))
}

/// `DELETE /v1/allocations/{id}`.
fn delete_allocation(host: &mut dyn Host, id: &str) -> Response {
    let Ok(n) = id.parse::<u64>() else {
        return Response::error(400, &format!("`{id}` is not an allocation id"));
    };
    // The owning loop deletes it and acts on what its core says before answering.
    if host.delete_allocation(AllocationId(n)) {
        Response {
            status: 204,
            content_type: "application/json",
            body: Vec::new(),
            headers: Vec::new(),
        }
    } else {
        Response::error(404, &format!("no allocation {n}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> Request {
        Request {
            method: "POST".into(),
            path: "/v1/ice-servers".into(),
            query: None,
            body: Vec::new(),
            authorization: auth.map(|a| Secret(a.into())),
            close: false,
        }
    }

    fn header(r: &Response) -> Option<&str> {
        r.headers
            .iter()
            .find(|(k, _)| *k == "WWW-Authenticate")
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_token_is_checked_when_set() {
        let token = Secret("0123456789abcdefXYZ".into());
        assert!(check_token(None, &req(None)).is_none());
        assert!(check_token(Some(&token), &req(Some("Bearer 0123456789abcdefXYZ"))).is_none());
        assert!(check_token(Some(&token), &req(Some("bearer  0123456789abcdefXYZ"))).is_none());
        for bad in [
            None,
            Some("0123456789abcdefXYZ"),
            Some("Basic 0123456789abcdefXYZ"),
            Some("Bearer 0123456789abcdefXY"),
            Some("Bearer 0123456789abcdefXYZZ"),
            Some("Bearer "),
        ] {
            let r = check_token(Some(&token), &req(bad)).expect("refused");
            assert_eq!(r.status, 401, "{bad:?}");
            let h = header(&r).unwrap_or_default();
            assert!(h.starts_with("Bearer"), "{bad:?}: {h}");
            assert!(!String::from_utf8_lossy(&r.body).contains("0123456789"));
        }
    }
}
