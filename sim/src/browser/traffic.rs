//! What a connected browser sends: data to its peer (or partner), probes of denied
//! addresses, and the client's transmits flushed to the network.

use super::state::{AState, Browser};
use crate::host::Cx;
use crate::net::Side;
use crate::scenario::Via;
use core::time::Duration;

/// The lifetime a probing Refresh asks for, seconds.
const PROBE_LIFETIME_S: u32 = 60;

impl Browser {
    /// Sends the next data packet to the peer through the kept allocation.
    pub(super) fn data(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let Some(s) = &mut self.session else {
            return;
        };
        let (Some(k), Some(at)) = (s.winner, s.next_data) else {
            return;
        };
        if s.ending.is_some() {
            s.next_data = None;
            return;
        }
        if at > now {
            return;
        }
        if let Some(partner) = self.partner {
            let known = cx.board.relayed(partner);
            if known != s.peer {
                if s.peer.is_some() {
                    cx.oracle.session_partner_gone(s.record, now);
                }
                s.peer = known;
                s.permitted = false;
                if let (Some(p), Some(a)) = (known, s.attempts.get_mut(k)) {
                    cx.note(format!("browser {} learns its partner at {p}", self.id));
                    cx.oracle.session_partner(s.record, now);
                    a.client.create_permission(now, &[p.ip()]);
                }
            }
        }
        let (Some(peer), true) = (s.peer, s.permitted) else {
            s.next_data = Some(now + Duration::from_millis(self.spec.data_interval_ms));
            return;
        };
        s.seq += 1;
        let payload = format!("b{} #{}", self.id, s.seq);
        if let Some(a) = s.attempts.get_mut(k) {
            if a.state == AState::Turn {
                a.client.send(now, peer, payload.as_bytes());
            }
        }
        s.next_data = Some(now + Duration::from_millis(self.spec.data_interval_ms));
    }

    /// Refreshes the kept allocation when a probe is due (see [`expiry_probes`]).
    pub(super) fn probe(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let Some(s) = &mut self.session else { return };
        let due = s.probes.iter().filter(|&&t| t <= now).count();
        if due == 0 {
            return;
        }
        // Due probes go, whether they can be sent or not (the session may be ending).
        s.probes.retain(|&t| t > now);
        let (Some(k), false) = (s.winner, s.ending.is_some()) else {
            return;
        };
        if let Some(a) = s.attempts.get_mut(k) {
            if a.state == AState::Turn {
                a.client.refresh(now, PROBE_LIFETIME_S);
            }
        }
    }

    /// Sends what the clients queued.
    pub(super) fn flush(&mut self, cx: &mut Cx) {
        let now = cx.now;
        let me = cx.me;
        let Some(s) = &mut self.session else { return };
        let record = s.record;
        for a in &mut s.attempts {
            if matches!(a.state, AState::Connecting | AState::Tls) {
                continue; // the client keeps what it queued until the stream is up
            }
            while let Some(bytes) = a.client.poll_transmit() {
                if a.state == AState::Closed {
                    continue;
                }
                if crate::fleet::is_allocate_request(&bytes) {
                    cx.oracle
                        .allocate_sent(record, &mut a.allocates_to, a.server);
                }
                match (a.via, a.sid) {
                    (Via::Udp, _) => cx.net.send_datagram(now, me, a.local, a.server, bytes),
                    (_, Some(sid)) => cx.net.write(now, sid, Side::Connector, bytes),
                    _ => {}
                }
            }
        }
    }
}
