//! Streams (TCP, or TLS terminated in front): the optional PROXY protocol header first,
//! then STUN and ChannelData framed back to back (RFC 8656 §12.5), idle and header
//! timeouts, and the allocation that lives and dies with the stream (RFC 8656 §3.1).

use super::{Server, Source, Timer};
use crate::allocation::ClientKey;
use crate::event::{ClientInfo, CloseReason, DeleteReason, Event, Output};
use crate::framing::{Frame, FramingError, StreamFramer};
use crate::ids::{AllocationId, ConnId, ListenerId, RelayId, Transport};
use crate::node::{source_home, stream_source, LoopId, LoopMsg};
use crate::policy::canonical;
use crate::proxy_protocol::{self, ProxyHeader, ProxyParse};
use crate::time::Instant;
use std::net::{IpAddr, SocketAddr};

/// What a stream expects next.
#[derive(Debug)]
enum Phase {
    /// The PROXY header, collected here until complete.
    ProxyHeader(Vec<u8>),
    /// STUN and ChannelData.
    Frames,
}

/// One stream.
#[derive(Debug)]
pub(super) struct Stream {
    listener: ListenerId,
    /// The TCP peer: the client, or the proxy in front.
    remote: SocketAddr,
    /// The client as reported (from the PROXY header when there is one).
    client: SocketAddr,
    phase: Phase,
    /// Taken out while frames are handled, so the handlers can borrow the server.
    framer: Option<StreamFramer>,
    allocation: Option<AllocationId>,
    /// When the stream is closed unless something happens, and why.
    deadline: Option<(Instant, CloseReason)>,
    /// The source address this stream counts against in `max_streams_per_source`: the
    /// TCP peer, or for a trusted proxy the client its header names (a header that names
    /// no client counts against nobody: the proxy is trusted, the client unknown). It is
    /// a [`stream_source`], counted here or by its home loop.
    counted: Option<IpAddr>,
    /// The source whose home loop was asked to count this stream and has not answered.
    asking: Option<IpAddr>,
    /// Requests that failed authentication in a row (`stream_max_auth_failures`).
    auth_failures: u32,
}

impl Server {
    pub(super) fn open_stream(
        &mut self,
        now: Instant,
        conn: ConnId,
        listener: ListenerId,
        local: SocketAddr,
        remote: SocketAddr,
    ) {
        let _ = local;
        let proxy = match self.listeners.get(&listener) {
            Some(l) if l.transport == Transport::Tcp => l.proxy_protocol,
            _ => return self.reject_new(conn, remote, CloseReason::NotTurn),
        };
        if self.streams.len() >= self.cfg.max_streams as usize || self.streams.contains_key(&conn) {
            return self.reject_new(conn, remote, CloseReason::TooManyStreams);
        }
        let source = canonical(remote.ip());
        if !proxy && !self.source_has_room(source) {
            return self.reject_new(conn, remote, CloseReason::TooManyStreams);
        }
        if proxy {
            let ip = source;
            if !self
                .cfg
                .proxy_protocol_trusted
                .iter()
                .any(|n| n.contains(ip))
            {
                self.stats.proxy_rejected += 1;
                return self.reject_new(conn, remote, CloseReason::UntrustedProxy);
            }
        }
        let (phase, deadline) = if proxy {
            (
                Phase::ProxyHeader(Vec::new()),
                (
                    now + self.cfg.proxy_header_timeout,
                    CloseReason::ProxyHeaderTimeout,
                ),
            )
        } else {
            (
                Phase::Frames,
                (now + self.cfg.stream_idle_timeout, CloseReason::Idle),
            )
        };
        self.streams.insert(
            conn,
            Stream {
                listener,
                remote,
                client: remote,
                phase,
                framer: Some(StreamFramer::new(self.cfg.max_stream_frame).stun_first()),
                allocation: None,
                deadline: None,
                counted: None,
                asking: None,
                auth_failures: 0,
            },
        );
        if !proxy {
            self.count_source(conn, source);
        }
        self.set_stream_deadline(conn, Some(deadline));
        self.stats.streams_opened += 1;
    }

    pub(super) fn stream_data(
        &mut self,
        now: Instant,
        conn: ConnId,
        data: &[u8],
        to_peer: &mut dyn FnMut(RelayId, SocketAddr, &[u8]),
    ) {
        let Some(s) = self.streams.get_mut(&conn) else {
            return;
        };
        let Phase::ProxyHeader(header) = &mut s.phase else {
            return self.feed_frames(now, conn, data, to_peer);
        };
        // Collect no more than a header can be long; what follows it is stream payload.
        let limit = self
            .cfg
            .proxy_header_max_len
            .max(proxy_protocol::V1_MAX_LEN);
        let take = data.len().min(limit.saturating_sub(header.len()));
        header.extend_from_slice(&data[..take]);
        match proxy_protocol::parse(header, self.cfg.proxy_header_max_len) {
            Ok(ProxyParse::Incomplete) if header.len() < limit => {}
            Ok(ProxyParse::Done {
                header: h,
                consumed,
            }) => {
                let rest_of_header = header.split_off(consumed.min(header.len()));
                let client = match h {
                    ProxyHeader::Proxied { source, .. } => source,
                    // LOCAL and UNKNOWN keep the connection's own address (seed: nginx's
                    // second hop sends `PROXY UNKNOWN`).
                    ProxyHeader::Local | ProxyHeader::Unknown => s.remote,
                };
                s.client = client;
                s.phase = Phase::Frames;
                let proxy = s.remote;
                if let ProxyHeader::Proxied { source, .. } = h {
                    let ip = canonical(source.ip());
                    if !self.source_has_room(ip) {
                        self.stats.proxy_accepted += 1;
                        return self.close_stream(now, conn, CloseReason::TooManyStreams);
                    }
                    self.count_source(conn, ip);
                }
                self.stats.proxy_accepted += 1;
                self.emit(Event::ProxyAccepted {
                    conn,
                    proxy,
                    client,
                });
                let idle = now + self.cfg.stream_idle_timeout;
                self.set_stream_deadline(conn, Some((idle, CloseReason::Idle)));
                self.feed_frames(now, conn, &rest_of_header, to_peer);
                self.feed_frames(now, conn, &data[take..], to_peer);
            }
            Ok(ProxyParse::Incomplete) | Err(_) => {
                self.stats.proxy_rejected += 1;
                self.close_stream(now, conn, CloseReason::BadProxyHeader);
            }
        }
    }

    fn feed_frames(
        &mut self,
        now: Instant,
        conn: ConnId,
        data: &[u8],
        to_peer: &mut dyn FnMut(RelayId, SocketAddr, &[u8]),
    ) {
        if data.is_empty() {
            return;
        }
        let Some(mut framer) = self.streams.get_mut(&conn).and_then(|s| s.framer.take()) else {
            return;
        };
        let result = framer.push(data, |frame| self.stream_frame(now, conn, frame, to_peer));
        match self.streams.get_mut(&conn) {
            Some(s) => s.framer = Some(framer),
            None => return,
        }
        if let Err(e) = result {
            let reason = match e {
                FramingError::TooLarge => CloseReason::FrameTooLarge,
                FramingError::NotTurn | FramingError::BadCookie | FramingError::BadLength => {
                    CloseReason::NotTurn
                }
            };
            self.stats.dropped.malformed += 1;
            self.close_stream(now, conn, reason);
        }
    }

    /// One frame from a stream; false stops the framer (the stream was closed).
    fn stream_frame(
        &mut self,
        now: Instant,
        conn: ConnId,
        frame: Frame<'_>,
        to_peer: &mut dyn FnMut(RelayId, SocketAddr, &[u8]),
    ) -> bool {
        let Some(s) = self.streams.get(&conn) else {
            return false;
        };
        let src = Source {
            key: ClientKey::Stream(conn),
            info: ClientInfo {
                transport: Transport::Tcp,
                addr: s.client,
                listener: s.listener,
                conn: Some(conn),
            },
        };
        match frame {
            Frame::Stun(bytes) => {
                if let Some((relay, peer, range)) = self.handle_stun(now, &src, bytes) {
                    to_peer(relay, peer, &bytes[range]);
                }
            }
            Frame::ChannelData(bytes) => {
                if s.allocation.is_none() && !self.pending_by_client.contains_key(&src.key) {
                    // ChannelData before any allocation: not a TURN client. HTTP ("GET ")
                    // lands here, as its first bits read as a channel number.
                    self.stats.dropped.malformed += 1;
                    self.close_stream(now, conn, CloseReason::NotTurn);
                    return false;
                }
                if let Some((relay, peer, range)) =
                    self.channel_data_from_client(now, src.key, bytes)
                {
                    to_peer(relay, peer, &bytes[range]);
                }
            }
        }
        self.streams.contains_key(&conn)
    }

    /// A valid request on a stream without allocation pushes its idle deadline back.
    pub(super) fn stream_activity(&mut self, now: Instant, src: &Source) {
        let ClientKey::Stream(conn) = src.key else {
            return;
        };
        if self
            .streams
            .get(&conn)
            .is_some_and(|s| s.allocation.is_none())
        {
            let idle = now + self.cfg.stream_idle_timeout;
            self.set_stream_deadline(conn, Some((idle, CloseReason::Idle)));
        }
    }

    /// A request on a stream failed authentication (its 401, 438 or 400 is queued). After
    /// `stream_max_auth_failures` in a row the stream is closed: answers on a stream are
    /// never held back, so this is what bounds a client that keeps guessing.
    pub(super) fn stream_auth_failed(&mut self, now: Instant, src: &Source) {
        let ClientKey::Stream(conn) = src.key else {
            return;
        };
        let max = self.cfg.stream_max_auth_failures;
        let Some(s) = self.streams.get_mut(&conn) else {
            return;
        };
        s.auth_failures = s.auth_failures.saturating_add(1);
        if max > 0 && s.auth_failures >= max {
            self.stats.unauth.streams_closed_auth_failures += 1;
            self.close_stream(now, conn, CloseReason::TooManyAuthFailures);
        }
    }

    /// A request on a stream passed authentication: the failures in a row start over.
    pub(super) fn stream_auth_passed(&mut self, src: &Source) {
        if let ClientKey::Stream(conn) = src.key {
            if let Some(s) = self.streams.get_mut(&conn) {
                s.auth_failures = 0;
            }
        }
    }

    pub(super) fn stream_got_allocation(&mut self, conn: ConnId, id: AllocationId) {
        if let Some(s) = self.streams.get_mut(&conn) {
            s.allocation = Some(id);
        }
        self.set_stream_deadline(conn, None);
    }

    /// The allocation of a stream ended: the stream may make another, or idles out.
    pub(super) fn stream_lost_allocation(&mut self, now: Instant, conn: ConnId) {
        if let Some(s) = self.streams.get_mut(&conn) {
            s.allocation = None;
            let idle = now + self.cfg.stream_idle_timeout;
            self.set_stream_deadline(conn, Some((idle, CloseReason::Idle)));
        }
    }

    pub(super) fn stream_timer(&mut self, now: Instant, conn: ConnId) {
        let Some((at, reason)) = self.streams.get(&conn).and_then(|s| s.deadline) else {
            return;
        };
        if at > now {
            return;
        }
        if reason == CloseReason::ProxyHeaderTimeout {
            self.stats.proxy_rejected += 1;
        }
        self.close_stream(now, conn, reason);
    }

    fn set_stream_deadline(&mut self, conn: ConnId, deadline: Option<(Instant, CloseReason)>) {
        let Some(s) = self.streams.get_mut(&conn) else {
            return;
        };
        if let Some((old, _)) = s.deadline {
            self.timers.remove(&(old, Timer::Stream(conn)));
        }
        s.deadline = deadline;
        if let Some((at, _)) = deadline {
            self.timers.insert((at, Timer::Stream(conn)));
        }
    }

    /// The core closes a stream: the driver is told, the allocation on it ends.
    fn close_stream(&mut self, now: Instant, conn: ConnId, reason: CloseReason) {
        let Some(remote) = self.streams.get(&conn).map(|s| s.remote) else {
            return;
        };
        self.forget_stream(now, conn);
        self.stats.streams_rejected += 1;
        self.push_output(Output::CloseStream { conn, reason });
        self.emit(Event::StreamRejected {
            conn,
            remote,
            reason,
        });
    }

    fn reject_new(&mut self, conn: ConnId, remote: SocketAddr, reason: CloseReason) {
        self.stats.streams_rejected += 1;
        self.push_output(Output::CloseStream { conn, reason });
        self.emit(Event::StreamRejected {
            conn,
            remote,
            reason,
        });
    }

    /// True when `ip` may open one more stream (`max_streams_per_source`); counts the
    /// refusal otherwise. Only the source's home loop knows how many the node has open: a
    /// loop that is not its home lets the stream in and asks (`count_source`).
    fn source_has_room(&mut self, ip: IpAddr) -> bool {
        let source = stream_source(ip);
        if source_home(source, self.node.count) != self.node.id() || self.source_room(source) {
            return true;
        }
        self.stats.streams_over_source_cap += 1;
        false
    }

    /// True when `source` has fewer than `max_streams_per_source` streams open in the node
    /// (this loop being its home).
    fn source_room(&self, source: IpAddr) -> bool {
        let cap = self.cfg.max_streams_per_source;
        cap == 0 || self.streams_per_source.get(&source).copied().unwrap_or(0) < cap
    }

    /// Counts stream `conn` against source `ip`: here when this loop is the source's home,
    /// else by asking the home.
    ///
    /// Until the home answers, the stream is provisional and works like any other: the
    /// core holds no more of its bytes than it always does (no queue to bound), a TCP
    /// source cannot be spoofed, and the answer comes within one message round trip
    /// between loops. If the home refuses, the stream is closed with `TooManyStreams`
    /// and whatever it started meanwhile (an allocation) ends with it. With no cap
    /// (`max_streams_per_source = 0`) nothing is asked.
    fn count_source(&mut self, conn: ConnId, ip: IpAddr) {
        let source = stream_source(ip);
        let home = source_home(source, self.node.count);
        let uncapped = self.cfg.max_streams_per_source == 0;
        let Some(s) = self.streams.get_mut(&conn) else {
            return;
        };
        if home == self.node.id() {
            s.counted = Some(source);
            *self.streams_per_source.entry(source).or_insert(0) += 1;
        } else if !uncapped {
            s.asking = Some(source);
            self.send_loop(
                home,
                LoopMsg::StreamAcquire {
                    req: conn.0,
                    source,
                },
            );
        }
    }

    /// At the home loop of `source`: counts one more stream of it, opened on another loop,
    /// unless the node has `max_streams_per_source` open.
    pub(super) fn acquire_source(&mut self, source: IpAddr) -> bool {
        let source = stream_source(source);
        if !self.source_room(source) {
            return false;
        }
        *self.streams_per_source.entry(source).or_insert(0) += 1;
        true
    }

    /// At the home loop of `source`: one of its streams closed.
    pub(super) fn release_source(&mut self, source: IpAddr) {
        let source = stream_source(source);
        if let Some(n) = self.streams_per_source.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.streams_per_source.remove(&source);
            }
        }
    }

    /// The home loop of `source` answered whether stream `conn` may stay open.
    pub(super) fn source_answer(
        &mut self,
        now: Instant,
        home: LoopId,
        conn: ConnId,
        source: IpAddr,
        granted: bool,
    ) {
        let waiting = self
            .streams
            .get_mut(&conn)
            .filter(|s| s.asking == Some(source));
        match (waiting, granted) {
            (Some(s), true) => {
                s.asking = None;
                s.counted = Some(source);
            }
            (Some(s), false) => {
                s.asking = None;
                self.stats.streams_over_source_cap += 1;
                self.close_stream(now, conn, CloseReason::TooManyStreams);
            }
            // The stream is gone: give the count back.
            (None, true) => self.send_loop(home, LoopMsg::StreamRelease { source }),
            (None, false) => {}
        }
    }

    /// A stream counted against `source` closed: its home loop counts one fewer.
    fn give_back_source(&mut self, source: IpAddr) {
        let home = source_home(source, self.node.count);
        if home == self.node.id() {
            self.release_source(source);
        } else {
            self.send_loop(home, LoopMsg::StreamRelease { source });
        }
    }

    /// Forgets a stream and ends what hangs off it.
    pub(super) fn forget_stream(&mut self, now: Instant, conn: ConnId) {
        self.set_stream_deadline(conn, None);
        let Some(s) = self.streams.remove(&conn) else {
            return;
        };
        // A stream still asking its source's home is given back when the answer comes.
        if let Some(source) = s.counted {
            self.give_back_source(source);
        }
        if let Some(id) = s.allocation {
            self.remove_allocation(now, id, DeleteReason::StreamClosed);
        }
        if let Some(pid) = self
            .pending_by_client
            .get(&ClientKey::Stream(conn))
            .copied()
        {
            self.end_pending(now, pid, None);
        }
    }
}
