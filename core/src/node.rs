//! A node of several event loops: the messages their cores exchange.
//!
//! A relay node runs N event loops, each with its own [`crate::Server`]. The kernel spreads
//! clients over the loops (SO_REUSEPORT hashes the 4-tuple), so one client's requests may
//! land on different loops, and one user's allocations usually do. Whatever must agree
//! across loops is decided by exactly one core and travels as a [`LoopMsg`]: the core emits
//! [`crate::Output::ToLoop`], the driver carries it (a channel with a waker in the runtime,
//! an event with virtual latency in the simulator) and feeds it to the addressed core with
//! [`crate::Server::handle_loop_message`]. Nothing is shared or locked, so a node replays
//! from the inputs of each loop, messages included.
//!
//! Who decides what:
//! - **RESERVATION-TOKEN** (RFC 8656 §7.2): the loop that issued the token holds the
//!   reserved port; its index is the token's first byte. A loop that receives the token
//!   asks that loop, which hands the port over ([`LoopMsg::RedeemToken`]).
//! - **`user_quota`** (RFC 8656 §7.2 step 9, 486): each username has a home loop
//!   ([`home_of`]) that counts its allocations for the whole node; other loops ask it
//!   before allocating ([`LoopMsg::UserAcquire`]) and tell it when one ends.
//! - **`total_quota`** and **relay ports**: each loop starts with a share of the quota
//!   ([`quota_share`]) and a slice of the port range ([`port_slice`]); a loop that runs out
//!   borrows from the others, one at a time, before it answers 508 ([`LoopMsg::Borrow`]).
//!   What is lent changes owner for good, so the node's totals never change. A reload
//!   that lowers `total_quota` takes each loop's cut from its credits; what a loop cannot
//!   give up (it lent it) goes round the others until given up ([`LoopMsg::QuotaDebt`]).
//! - **`max_streams_per_source`**: each source (an IPv4 address, or an IPv6 /64:
//!   [`stream_source`]) has a home loop ([`source_home`]) that counts its open streams for
//!   the whole node; a stream accepted on another loop asks it ([`LoopMsg::StreamAcquire`])
//!   and is closed if refused, and tells it when it closes.
//!
//! A message may be delayed or overtaken by another; every exchange is safe in any order
//! because an answer only ever follows its question, and whatever arrives for a request
//! that is gone is kept (ports, quota) or given back (a user grant).

use crate::ids::AllocationId;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most loops in a node: a loop's index fits the first byte of a reservation token.
pub const MAX_LOOPS: u16 = 256;

/// Allocation ids of loop `i` count up from `i << ID_SHIFT` (2^44 ids per loop; the ids of
/// 256 loops stay below 2^53, exact in JavaScript numbers), so ids are unique in the node
/// and name their loop.
pub const ID_SHIFT: u32 = 44;

/// An event loop of the node, by index from 0.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct LoopId(pub u16);

/// Where a core stands in its node.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NodePlace {
    /// This loop.
    pub index: u16,
    /// How many loops the node runs (1 to [`MAX_LOOPS`]).
    pub count: u16,
}

impl NodePlace {
    /// A node of one loop: no message is ever sent.
    pub const SOLE: NodePlace = NodePlace { index: 0, count: 1 };

    /// This loop's id.
    pub fn id(self) -> LoopId {
        LoopId(self.index)
    }

    /// The other loops, starting after this one and going round: the order in which a
    /// loop that ran out asks to borrow.
    pub fn others(self) -> impl Iterator<Item = LoopId> {
        let count = self.count.max(1);
        (1..count).map(move |k| LoopId((self.index + k) % count))
    }
}

impl Default for NodePlace {
    fn default() -> Self {
        NodePlace::SOLE
    }
}

/// Which free ports a loop asks another to lend (RFC 8656 §7.2: EVEN-PORT).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PortWant {
    /// Any port.
    Any,
    /// An even port.
    Even,
    /// An even port and the odd port above it (EVEN-PORT with the R bit).
    EvenPair,
}

/// A message from one loop's core to another's.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LoopMsg {
    /// "Hand me the port reserved under `token`": sent to the loop that issued it.
    RedeemToken {
        /// The asker's request number, echoed in the answer.
        req: u64,
        /// The RESERVATION-TOKEN.
        token: [u8; 8],
    },
    /// Answer to [`LoopMsg::RedeemToken`]: the reserved port, now the asker's, or None
    /// when the token is unknown or expired.
    TokenRedeemed {
        /// The asker's request number.
        req: u64,
        /// The port, in the IPv4 pool.
        port: Option<u16>,
    },
    /// "May `username` have one more allocation?": sent to the user's home loop, which
    /// counts it when it says yes.
    UserAcquire {
        /// The asker's request number.
        req: u64,
        /// The authenticated username.
        username: String,
    },
    /// Answer to [`LoopMsg::UserAcquire`].
    UserGranted {
        /// The asker's request number.
        req: u64,
        /// The username asked about (so that a grant for a request that is gone can be
        /// given back).
        username: String,
        /// Yes: the allocation is counted at home until a [`LoopMsg::UserRelease`].
        granted: bool,
    },
    /// One of `username`'s allocations ended (or was never made): sent to its home loop.
    UserRelease {
        /// The username.
        username: String,
    },
    /// "Lend me some of what I ran out of."
    Borrow {
        /// The asker's request number.
        req: u64,
        /// What is wanted.
        want: Want,
    },
    /// Answer to [`LoopMsg::Borrow`]: what now belongs to the asker (possibly nothing).
    Lend {
        /// The asker's request number.
        req: u64,
        /// Allocations of `total_quota` handed over.
        credits: u32,
        /// The family of `ports`: 0 IPv4, 1 IPv6.
        family: u8,
        /// Free ports handed over (never in use, reserved or quarantined).
        ports: Vec<u16>,
    },
    /// "May one more stream from `source` be open?": sent to the source's home loop
    /// ([`source_home`]), which counts it when it says yes (`max_streams_per_source`).
    StreamAcquire {
        /// The asker's request number: the stream's connection id.
        req: u64,
        /// The source, as [`stream_source`] names it.
        source: IpAddr,
    },
    /// Answer to [`LoopMsg::StreamAcquire`].
    StreamGranted {
        /// The asker's request number.
        req: u64,
        /// The source asked about (so that a grant for a stream that is gone can be given
        /// back).
        source: IpAddr,
        /// Yes: the stream is counted at home until a [`LoopMsg::StreamRelease`].
        granted: bool,
    },
    /// A stream of `source` that its home counted closed: sent to the home loop.
    StreamRelease {
        /// The source.
        source: IpAddr,
    },
    /// Credits of `total_quota` the node holds above a lowered total, that the sender
    /// could not give up (it lent them): the receiver gives up what it can of them and
    /// passes the rest to the next loop round ([`NodePlace::others`]).
    QuotaDebt {
        /// Credits to give up.
        credits: u32,
        /// Loops that passed it on so far.
        hops: u16,
    },
}

/// What a [`LoopMsg::Borrow`] asks for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Want {
    /// Allocations of `total_quota`.
    Credits,
    /// Relay ports of `family` (0 IPv4, 1 IPv6).
    Ports {
        /// The address family.
        family: u8,
        /// Which ports.
        kind: PortWant,
    },
}

impl LoopMsg {
    /// Appends the message's wire form (for traces and digests): a kind byte, then its
    /// fields little-endian, strings and port lists prefixed by a u16 length.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            LoopMsg::RedeemToken { req, token } => {
                out.push(1);
                out.extend_from_slice(&req.to_le_bytes());
                out.extend_from_slice(token);
            }
            LoopMsg::TokenRedeemed { req, port } => {
                out.push(2);
                out.extend_from_slice(&req.to_le_bytes());
                out.push(u8::from(port.is_some()));
                out.extend_from_slice(&port.unwrap_or(0).to_le_bytes());
            }
            LoopMsg::UserAcquire { req, username } => {
                out.push(3);
                out.extend_from_slice(&req.to_le_bytes());
                put_bytes(out, username.as_bytes());
            }
            LoopMsg::UserGranted {
                req,
                username,
                granted,
            } => {
                out.push(4);
                out.extend_from_slice(&req.to_le_bytes());
                put_bytes(out, username.as_bytes());
                out.push(u8::from(*granted));
            }
            LoopMsg::UserRelease { username } => {
                out.push(5);
                put_bytes(out, username.as_bytes());
            }
            LoopMsg::Borrow { req, want } => {
                out.push(6);
                out.extend_from_slice(&req.to_le_bytes());
                match want {
                    Want::Credits => out.extend_from_slice(&[0, 0, 0]),
                    Want::Ports { family, kind } => {
                        let k = match kind {
                            PortWant::Any => 0,
                            PortWant::Even => 1,
                            PortWant::EvenPair => 2,
                        };
                        out.extend_from_slice(&[1, *family, k]);
                    }
                }
            }
            LoopMsg::Lend {
                req,
                credits,
                family,
                ports,
            } => {
                out.push(7);
                out.extend_from_slice(&req.to_le_bytes());
                out.extend_from_slice(&credits.to_le_bytes());
                out.push(*family);
                let n = u16::try_from(ports.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&n.to_le_bytes());
                for p in ports.iter().take(usize::from(n)) {
                    out.extend_from_slice(&p.to_le_bytes());
                }
            }
            LoopMsg::StreamAcquire { req, source } => {
                out.push(8);
                out.extend_from_slice(&req.to_le_bytes());
                put_ip(out, *source);
            }
            LoopMsg::StreamGranted {
                req,
                source,
                granted,
            } => {
                out.push(9);
                out.extend_from_slice(&req.to_le_bytes());
                put_ip(out, *source);
                out.push(u8::from(*granted));
            }
            LoopMsg::StreamRelease { source } => {
                out.push(10);
                put_ip(out, *source);
            }
            LoopMsg::QuotaDebt { credits, hops } => {
                out.push(11);
                out.extend_from_slice(&credits.to_le_bytes());
                out.extend_from_slice(&hops.to_le_bytes());
            }
        }
    }

    /// Parses what [`LoopMsg::encode`] wrote; None if `b` is not exactly one message.
    pub fn decode(b: &[u8]) -> Option<LoopMsg> {
        let mut r = Reader(b);
        let msg = match r.u8()? {
            1 => LoopMsg::RedeemToken {
                req: r.u64()?,
                token: r.take(8)?.try_into().ok()?,
            },
            2 => {
                let req = r.u64()?;
                let some = r.u8()? != 0;
                let port = r.u16()?;
                LoopMsg::TokenRedeemed {
                    req,
                    port: some.then_some(port),
                }
            }
            3 => LoopMsg::UserAcquire {
                req: r.u64()?,
                username: r.string()?,
            },
            4 => LoopMsg::UserGranted {
                req: r.u64()?,
                username: r.string()?,
                granted: r.u8()? != 0,
            },
            5 => LoopMsg::UserRelease {
                username: r.string()?,
            },
            6 => {
                let req = r.u64()?;
                let (what, family, kind) = (r.u8()?, r.u8()?, r.u8()?);
                let want = match (what, kind) {
                    (0, _) => Want::Credits,
                    (1, 0) => Want::Ports {
                        family,
                        kind: PortWant::Any,
                    },
                    (1, 1) => Want::Ports {
                        family,
                        kind: PortWant::Even,
                    },
                    (1, 2) => Want::Ports {
                        family,
                        kind: PortWant::EvenPair,
                    },
                    _ => return None,
                };
                LoopMsg::Borrow { req, want }
            }
            7 => {
                let req = r.u64()?;
                let credits = r.u32()?;
                let family = r.u8()?;
                let n = r.u16()?;
                let mut ports = Vec::with_capacity(usize::from(n).min(b.len() / 2));
                for _ in 0..n {
                    ports.push(r.u16()?);
                }
                LoopMsg::Lend {
                    req,
                    credits,
                    family,
                    ports,
                }
            }
            8 => LoopMsg::StreamAcquire {
                req: r.u64()?,
                source: r.ip()?,
            },
            9 => LoopMsg::StreamGranted {
                req: r.u64()?,
                source: r.ip()?,
                granted: r.u8()? != 0,
            },
            10 => LoopMsg::StreamRelease { source: r.ip()? },
            11 => LoopMsg::QuotaDebt {
                credits: r.u32()?,
                hops: r.u16()?,
            },
            _ => return None,
        };
        r.0.is_empty().then_some(msg)
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(b.get(..usize::from(n)).unwrap_or(b));
}

/// An address: its version (4 or 6), then its octets.
fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

/// A cursor over untrusted bytes: every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u16()?;
        String::from_utf8(self.take(usize::from(n))?.to_vec()).ok()
    }
    fn ip(&mut self) -> Option<IpAddr> {
        match self.u8()? {
            4 => Some(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(self.take(4)?).ok()?,
            ))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(self.take(16)?).ok()?,
            ))),
            _ => None,
        }
    }
}

/// The loop that counts `username`'s allocations for the node: a fixed hash of the name
/// (FNV-1a), so every loop agrees without asking.
pub fn home_of(username: &str, count: u16) -> LoopId {
    home_of_bytes(username.as_bytes(), count)
}

fn home_of_bytes(key: &[u8], count: u16) -> LoopId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let count = u64::from(count.max(1));
    LoopId(u16::try_from(h % count).unwrap_or(0))
}

/// The source a stream from `ip` counts against in `max_streams_per_source`: the IPv4
/// address (IPv4-mapped and other embedded forms count as the IPv4 address, see
/// [`crate::policy::canonical`]), or the /64 prefix of an IPv6 address, as the per-source
/// budget counts it: one host usually owns a whole /64 and could otherwise rotate through
/// it.
pub fn stream_source(ip: IpAddr) -> IpAddr {
    match crate::policy::canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// The loop that counts the open streams of `source` (a [`stream_source`]) for the node: a
/// fixed hash of its bytes (a family tag, then the IPv4 address or the /64 prefix), so
/// every loop agrees without asking.
pub fn source_home(source: IpAddr, count: u16) -> LoopId {
    let mut key = [0u8; 9];
    let len = match stream_source(source) {
        IpAddr::V4(v4) => {
            key[0] = 4;
            key[1..5].copy_from_slice(&v4.octets());
            5
        }
        IpAddr::V6(v6) => {
            key[0] = 6;
            key[1..9].copy_from_slice(&v6.octets()[..8]);
            9
        }
    };
    home_of_bytes(&key[..len], count)
}

/// The loop that created allocation `id`.
pub fn loop_of(id: AllocationId) -> LoopId {
    LoopId(u16::try_from(id.0 >> ID_SHIFT).unwrap_or(u16::MAX))
}

/// The first allocation id of loop `index` is this plus 1.
pub fn allocation_id_base(index: u16) -> u64 {
    u64::from(index) << ID_SHIFT
}

/// The slice of the relay ports `min..=max` that loop `index` of `count` starts with:
/// contiguous, disjoint, together the whole range, sizes differing by at most one. A loop
/// may own no port at start when the range has fewer ports than there are loops.
/// Returns None for an empty slice.
pub fn port_slice(min: u16, max: u16, count: u16, index: u16) -> Option<(u16, u16)> {
    let count = u32::from(count.max(1));
    let index = u32::from(index).min(count - 1);
    if min > max {
        return None;
    }
    let total = u32::from(max) - u32::from(min) + 1;
    let (base, extra) = (total / count, total % count);
    let start = u32::from(min) + index * base + index.min(extra);
    let len = base + u32::from(index < extra);
    if len == 0 {
        return None;
    }
    let last = start + len - 1;
    Some((u16::try_from(start).ok()?, u16::try_from(last).ok()?))
}

/// Loop `index`'s share of `total` (e.g. `total_quota`) among `count` loops at start:
/// shares differ by at most one and add up to `total` exactly (a loop may start with 0 and
/// borrow).
pub fn quota_share(total: u32, count: u16, index: u16) -> u32 {
    let count = u32::from(count.max(1));
    let index = u32::from(index);
    total / count + u32::from(index < total % count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_contiguous_disjoint_and_cover_the_range() {
        for (min, max) in [(49152u16, 65535u16), (40000, 40127), (1, 1000), (7, 9)] {
            for count in 1..=16u16 {
                let mut next = u32::from(min);
                for i in 0..count {
                    let Some((lo, hi)) = port_slice(min, max, count, i) else {
                        continue;
                    };
                    assert_eq!(u32::from(lo), next, "{min}-{max} / {count}, slice {i}");
                    assert!(lo <= hi);
                    next = u32::from(hi) + 1;
                }
                assert_eq!(next, u32::from(max) + 1, "{min}-{max} / {count}");
            }
        }
        assert_eq!(port_slice(49152, 65535, 2, 0), Some((49152, 57343)));
        assert_eq!(port_slice(49152, 65535, 2, 1), Some((57344, 65535)));
        assert_eq!(port_slice(7, 9, 4, 3), None);
    }

    #[test]
    fn shares_add_up_exactly() {
        for total in [0u32, 1, 3, 7, 100, 10_001] {
            for count in 1..=9u16 {
                let sum: u32 = (0..count).map(|i| quota_share(total, count, i)).sum();
                assert_eq!(sum, total, "{total} / {count}");
            }
        }
    }

    #[test]
    fn ids_name_their_loop() {
        for index in [0u16, 1, 2, 15, 255] {
            let base = allocation_id_base(index);
            for n in [1u64, 2, 1 << 20, (1 << ID_SHIFT) - 1] {
                assert_eq!(loop_of(AllocationId(base + n)), LoopId(index));
            }
        }
        assert!(allocation_id_base(255) + (1 << ID_SHIFT) <= 1 << 53);
    }

    #[test]
    fn messages_round_trip() {
        let msgs = [
            LoopMsg::RedeemToken {
                req: 7,
                token: [1, 2, 3, 4, 5, 6, 7, 8],
            },
            LoopMsg::TokenRedeemed {
                req: 7,
                port: Some(50001),
            },
            LoopMsg::TokenRedeemed { req: 8, port: None },
            LoopMsg::UserAcquire {
                req: 9,
                username: "alice".into(),
            },
            LoopMsg::UserGranted {
                req: 9,
                username: "alice".into(),
                granted: true,
            },
            LoopMsg::UserRelease {
                username: "1767225900:x:label".into(),
            },
            LoopMsg::Borrow {
                req: 1,
                want: Want::Credits,
            },
            LoopMsg::Borrow {
                req: 2,
                want: Want::Ports {
                    family: 1,
                    kind: PortWant::EvenPair,
                },
            },
            LoopMsg::Lend {
                req: 2,
                credits: 3,
                family: 0,
                ports: vec![50000, 50001],
            },
            LoopMsg::StreamAcquire {
                req: 11,
                source: "203.0.113.9".parse().unwrap(),
            },
            LoopMsg::StreamGranted {
                req: 11,
                source: "2001:db8:1:2::".parse().unwrap(),
                granted: true,
            },
            LoopMsg::StreamGranted {
                req: 12,
                source: "198.51.100.1".parse().unwrap(),
                granted: false,
            },
            LoopMsg::StreamRelease {
                source: "2001:db8:1:2::".parse().unwrap(),
            },
            LoopMsg::QuotaDebt {
                credits: 40,
                hops: 2,
            },
        ];
        for m in msgs {
            let mut b = Vec::new();
            m.encode(&mut b);
            assert_eq!(LoopMsg::decode(&b), Some(m.clone()));
            // Truncated or padded bytes are not a message.
            assert_eq!(LoopMsg::decode(&b[..b.len() - 1]), None);
            b.push(0);
            assert_eq!(LoopMsg::decode(&b), None);
        }
    }

    #[test]
    fn others_go_round_once() {
        let p = NodePlace { index: 2, count: 4 };
        let o: Vec<u16> = p.others().map(|l| l.0).collect();
        assert_eq!(o, vec![3, 0, 1]);
        assert_eq!(NodePlace::SOLE.others().count(), 0);
    }

    #[test]
    fn homes_spread_and_agree() {
        let mut seen = [0u32; 4];
        for i in 0..400 {
            let h = home_of(&format!("user{i}"), 4);
            assert_eq!(h, home_of(&format!("user{i}"), 4));
            seen[usize::from(h.0)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(home_of("anyone", 1), LoopId(0));
    }

    #[test]
    fn sources_are_ipv4_addresses_or_ipv6_64s() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(stream_source(ip("203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(stream_source(ip("::ffff:203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(
            stream_source(ip("2001:db8:1:2:aa:bb:cc:dd")),
            ip("2001:db8:1:2::")
        );
        let mut seen = [0u32; 4];
        for i in 0..400u32 {
            let v4 = IpAddr::V4(Ipv4Addr::from(0xcb00_7100 + i));
            let h = source_home(v4, 4);
            seen[usize::from(h.0)] += 1;
            // Every address of a /64 has the home of the /64.
            let v6 = |host: u64| IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64 | u128::from(host)));
            assert_eq!(source_home(v6(1), 4), source_home(v6(u64::MAX), 4));
            assert_eq!(source_home(v6(7), 4), source_home(stream_source(v6(7)), 4));
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
        assert_eq!(source_home(ip("2001:db8::1"), 1), LoopId(0));
    }
}
