//! The relay fast path (RFC 8656 §11–§12): ChannelData and Send indications from clients
//! to peers, and peer datagrams to clients as ChannelData or Data indications.
//!
//! Nothing here allocates: payloads stay in the caller's buffer, and headers are written
//! in place into the headroom the caller left before the payload.

use super::bandwidth::{self, Direction};
use super::{RelayOwner, Server, Source, Stats, TokenBucket, TransportTraffic};
use crate::allocation::{Allocation, ClientKey};
use crate::channel;
use crate::ids::{RelayId, Transport};
use crate::server::{Forward, HEADROOM, TAILROOM};
use crate::stun::{attr, encode_xor_address, Message, TransactionId, HEADER_LEN, MAGIC_COOKIE};
use crate::time::Instant;
use core::ops::Range;
use rand_core::RngCore;
use std::net::SocketAddr;

/// Message type of a Data indication (method 0x007, class indication: RFC 8489 §5).
const DATA_INDICATION: u16 = 0x0017;

impl Server {
    /// ChannelData from a client (RFC 8656 §12.6): the peer, relay and payload range
    /// within `data`, or None (dropped and counted).
    pub(super) fn channel_data_from_client(
        &mut self,
        now: Instant,
        key: ClientKey,
        data: &[u8],
    ) -> Option<(RelayId, SocketAddr, Range<usize>)> {
        let Ok((number, range)) = channel::parse(data) else {
            self.stats.dropped.malformed += 1;
            return None;
        };
        let Some(&id) = self.by_client.get(&key) else {
            self.stats.dropped.no_allocation += 1;
            return None;
        };
        let a = self.allocations.get_mut(&id)?;
        let Some(peer) = a.channel_by_number(number, now).map(|c| c.peer) else {
            a.traffic.dropped_packets += 1;
            self.stats.dropped.unbound_channel += 1;
            return None;
        };
        let relay = admit_to_peer(
            now,
            a,
            peer,
            range.len(),
            &mut self.bandwidth,
            &mut self.stats,
        )?;
        Some((relay, peer, range))
    }

    /// A Send indication (RFC 8656 §11.2): the DATA value goes to XOR-PEER-ADDRESS if a
    /// permission covers it. `data` is the whole message; the range is within it.
    pub(super) fn send_indication(
        &mut self,
        now: Instant,
        src: &Source,
        msg: &Message<'_>,
        data: &[u8],
    ) -> Option<(RelayId, SocketAddr, Range<usize>)> {
        let Some(&id) = self.by_client.get(&src.key) else {
            self.stats.dropped.no_allocation += 1;
            return None;
        };
        let tid = msg.transaction_id();
        let peer = msg
            .get(attr::XOR_PEER_ADDRESS)
            .and_then(|v| attr::decode_xor_address(v, &tid).ok());
        let (Some(peer), Some(payload)) = (peer, msg.get(attr::DATA)) else {
            self.stats.dropped.malformed += 1;
            return None;
        };
        let a = self.allocations.get_mut(&id)?;
        if peer.port() == 0 {
            // The permission covered the address; port 0 is never a destination.
            a.traffic.dropped_packets += 1;
            self.stats.dropped.denied_peer += 1;
            return None;
        }
        // The DATA value is a slice of `data`: its offset is the distance between them.
        let start = (payload.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
        let relay = admit_to_peer(
            now,
            a,
            peer,
            payload.len(),
            &mut self.bandwidth,
            &mut self.stats,
        )?;
        Some((relay, peer, start..start + payload.len()))
    }

    /// A datagram from a peer (RFC 8656 §11.3, §12.7): wrapped in place as ChannelData when
    /// a channel is bound to the peer, else as a Data indication.
    pub(super) fn relay_to_client(
        &mut self,
        now: Instant,
        relay: RelayId,
        from: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<Forward> {
        let Some(RelayOwner::Allocation(id)) = self.relays.get(&relay) else {
            self.stats.dropped.unknown_relay += 1;
            return None;
        };
        let a = self.allocations.get_mut(id)?;
        if !a.permits(from.ip(), now) {
            a.traffic.dropped_packets += 1;
            self.stats.dropped.no_permission += 1;
            return None;
        }
        if payload.start < HEADROOM
            || payload.end < payload.start
            || buf.len() < payload.end + TAILROOM
        {
            // The driver broke the buffer contract; drop rather than panic.
            self.stats.dropped.too_large += 1;
            return None;
        }
        let len = payload.len();
        if over_cap(
            now,
            len as u64,
            Direction::FromPeer,
            a,
            &mut self.bandwidth,
            &mut self.stats,
        ) {
            return None;
        }
        let on_stream = matches!(a.key5, ClientKey::Stream(_));
        let (start, end) = if let Some(number) = a.channel_by_peer(from, now).map(|c| c.number) {
            let Ok(len16) = u16::try_from(len) else {
                self.stats.dropped.too_large += 1;
                return None;
            };
            let start = payload.start - channel::HEADER_LEN;
            channel::write_header(&mut buf[start..payload.start], number, len16);
            // RFC 8656 §12.5: padded to 4 bytes on streams, not on UDP.
            let pad = if on_stream {
                channel::stream_padding(len)
            } else {
                0
            };
            buf[payload.end..payload.end + pad].fill(0);
            (start, payload.end + pad)
        } else {
            let addr_len = if from.is_ipv4() { 8 } else { 20 };
            let header = HEADER_LEN + 4 + addr_len + 4;
            let pad = channel::stream_padding(len);
            let Ok(body) = u16::try_from(4 + addr_len + 4 + len + pad) else {
                self.stats.dropped.too_large += 1;
                return None;
            };
            let Ok(len16) = u16::try_from(len) else {
                self.stats.dropped.too_large += 1;
                return None;
            };
            let start = payload.start - header;
            let mut tid = [0u8; 12];
            self.token_rng.fill_bytes(&mut tid);
            let h = &mut buf[start..payload.start];
            h[0..2].copy_from_slice(&DATA_INDICATION.to_be_bytes());
            h[2..4].copy_from_slice(&body.to_be_bytes());
            h[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            h[8..20].copy_from_slice(&tid);
            h[20..22].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
            h[22..24].copy_from_slice(&(addr_len as u16).to_be_bytes());
            encode_xor_address(&mut h[24..24 + addr_len], from, &TransactionId(tid));
            h[24 + addr_len..26 + addr_len].copy_from_slice(&attr::DATA.to_be_bytes());
            h[26 + addr_len..28 + addr_len].copy_from_slice(&len16.to_be_bytes());
            buf[payload.end..payload.end + pad].fill(0);
            (start, payload.end + pad)
        };
        a.traffic.from_peer_packets += 1;
        a.traffic.from_peer_bytes += len as u64;
        let t = traffic(&mut self.stats, a.client.transport);
        t.from_peer_packets += 1;
        t.from_peer_bytes += len as u64;
        Some(match a.key5 {
            ClientKey::Udp(listener, client) => Forward::ToClient {
                listener,
                client,
                range: start..end,
            },
            ClientKey::Stream(conn) => Forward::ToStream {
                conn,
                range: start..end,
            },
        })
    }
}

/// Checks `len` relayed bytes against the allocation's and the server's bandwidth caps;
/// true (dropped and counted) when either is exhausted.
/// The checks every packet to a peer passes (RFC 8656 §11.2, §12.6): a live permission
/// for its address, a relay of its family, and the bandwidth caps. Counts the packet
/// either way; returns the relay socket to send from.
fn admit_to_peer(
    now: Instant,
    a: &mut Allocation,
    peer: SocketAddr,
    len: usize,
    total: &mut [TokenBucket; 2],
    stats: &mut Stats,
) -> Option<RelayId> {
    let relay = match (a.permits(peer.ip(), now), a.side_for(peer.ip())) {
        (true, Some(side)) => side.relay,
        _ => {
            a.traffic.dropped_packets += 1;
            stats.dropped.no_permission += 1;
            return None;
        }
    };
    let len = len as u64;
    if over_cap(now, len, Direction::ToPeer, a, total, stats) {
        return None;
    }
    a.traffic.to_peer_packets += 1;
    a.traffic.to_peer_bytes += len;
    let t = traffic(stats, a.client.transport);
    t.to_peer_packets += 1;
    t.to_peer_bytes += len;
    Some(relay)
}

fn over_cap(
    now: Instant,
    len: u64,
    dir: Direction,
    a: &mut Allocation,
    total: &mut [TokenBucket; 2],
    stats: &mut Stats,
) -> bool {
    let i = dir as usize;
    let (Some(own), Some(all)) = (a.bandwidth.get_mut(i), total.get_mut(i)) else {
        return false;
    };
    if bandwidth::admit(now, len, own, all) {
        return false;
    }
    a.traffic.dropped_packets += 1;
    stats.dropped.bandwidth += 1;
    stats.dropped.bandwidth_bytes += len;
    true
}

fn traffic(stats: &mut Stats, transport: Transport) -> &mut TransportTraffic {
    match transport {
        Transport::Udp => &mut stats.udp,
        Transport::Tcp => &mut stats.tcp,
    }
}
