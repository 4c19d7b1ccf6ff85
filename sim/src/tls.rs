//! The modelled TLS handshake, one state machine for every host that terminates TLS: the
//! nginx-like hops ([`crate::nginx`]) and the relay's native TLS listeners
//! ([`crate::server`], as the runtime's `runtime-mio/src/tls.rs` layers them).
//!
//! Records are [`TLS_RECORD`] bytes: the TLS handshake content type (0x16, what ssl_preread
//! and the runtime's shared-port detection look at), a version, and a kind. A client flight
//! is any number of [`TLS_PAD`] records (a large ClientHello) ended by one [`TLS_CLIENT`];
//! the server answers each flight with [`TLS_MORE`] until the last, answered with
//! [`TLS_DONE`] (one round trip for TLS 1.3, two for TLS 1.2), or with [`TLS_ALERT`] when
//! the handshake fails. After it, bytes pass as they are: the model encrypts nothing.
//!
//! The server side is bounded as the runtime bounds it: [`HANDSHAKE_MAX_BYTES`] received
//! before completion (counted here), [`HANDSHAKE_TIMEOUT`] (a deadline its host keeps).

use core::time::Duration;

/// Length of a modelled TLS record.
pub const TLS_RECORD: usize = 16;
/// First byte of a TLS handshake record (what ssl_preread and the runtime look at).
pub const TLS_HANDSHAKE: u8 = 0x16;
/// A client flight ends (ClientHello, or the client's Finished).
pub const TLS_CLIENT: u8 = b'C';
/// More of a client flight (a ClientHello larger than a record).
pub const TLS_PAD: u8 = b'P';
/// The server wants another round trip.
pub const TLS_MORE: u8 = b'S';
/// The handshake is over.
pub const TLS_DONE: u8 = b'F';
/// The server refuses the handshake (a TLS alert), then closes.
pub const TLS_ALERT: u8 = b'A';
/// A native handshake not done this long after the connection was accepted is closed
/// (the runtime's `HANDSHAKE_TIMEOUT`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that sends more than this before its native handshake completes is closed
/// (the runtime's `HANDSHAKE_MAX_BYTES`).
pub const HANDSHAKE_MAX_BYTES: usize = 16 * 1024;

/// A record of the modelled handshake.
pub fn record(kind: u8) -> Vec<u8> {
    let mut r = vec![0u8; TLS_RECORD];
    r[0] = TLS_HANDSHAKE;
    r[1] = 3;
    r[2] = 3;
    r[3] = kind;
    r
}

/// Whether a TCP listener speaks TLS (the runtime's `TlsMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TURN-TCP only.
    #[default]
    Off,
    /// TLS only.
    On,
    /// TLS or plain TURN-TCP, decided on the first byte (0x16 is TLS).
    Auto,
}

/// Why a server-side handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// The first record is not a TLS handshake record (plain TURN sent to a TLS port).
    NotTls,
    /// More than the byte bound before completion.
    TooManyBytes,
    /// Refused (a fault: bad certificate, no common version or cipher).
    Refused,
    /// Not done within [`HANDSHAKE_TIMEOUT`].
    Timeout,
}

impl Failure {
    /// Name as in scenario expectations (`min_tls_failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NotTls => "not_tls",
            Failure::TooManyBytes => "too_many_bytes",
            Failure::Refused => "refused",
            Failure::Timeout => "timeout",
        }
    }
}

/// What the server does after one record.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// No complete record yet, or a record within a flight: nothing to say.
    NeedMore,
    /// Send this record; the handshake goes on.
    Reply(Vec<u8>),
    /// Send this record; the handshake is done, what is left in the buffer is data.
    Done(Vec<u8>),
    /// Send this record (an alert, or nothing), then close.
    Failed(Failure, Vec<u8>),
}

/// The server side of one modelled handshake.
#[derive(Debug)]
pub struct ServerHandshake {
    rtts: u32,
    flights: u32,
    bytes: usize,
    max_bytes: Option<usize>,
    refuse: bool,
}

impl ServerHandshake {
    /// A handshake of `rtts` round trips (at least 1), bounded to `max_bytes` received
    /// (none: unbounded, as the nginx model), refused at the first flight if `refuse`.
    pub fn new(rtts: u32, max_bytes: Option<usize>, refuse: bool) -> Self {
        ServerHandshake {
            rtts: rtts.max(1),
            flights: 0,
            bytes: 0,
            max_bytes,
            refuse,
        }
    }

    /// Consumes at most one complete record from the front of `buf`.
    pub fn step(&mut self, buf: &mut Vec<u8>) -> Step {
        if buf.len() < TLS_RECORD {
            return Step::NeedMore;
        }
        let rec: Vec<u8> = buf.drain(..TLS_RECORD).collect();
        self.bytes += TLS_RECORD;
        if rec.first() != Some(&TLS_HANDSHAKE) {
            return Step::Failed(Failure::NotTls, Vec::new());
        }
        if self.max_bytes.is_some_and(|m| self.bytes > m) {
            return Step::Failed(Failure::TooManyBytes, record(TLS_ALERT));
        }
        match rec.get(3).copied() {
            Some(TLS_PAD) => Step::NeedMore,
            Some(TLS_CLIENT) if self.refuse => Step::Failed(Failure::Refused, record(TLS_ALERT)),
            Some(TLS_CLIENT) => {
                self.flights += 1;
                if self.flights >= self.rtts {
                    Step::Done(record(TLS_DONE))
                } else {
                    Step::Reply(record(TLS_MORE))
                }
            }
            _ => Step::Failed(Failure::NotTls, record(TLS_ALERT)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flight(pads: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for _ in 0..pads {
            v.extend(record(TLS_PAD));
        }
        v.extend(record(TLS_CLIENT));
        v
    }

    #[test]
    fn two_round_trips_then_data() {
        let mut hs = ServerHandshake::new(2, Some(HANDSHAKE_MAX_BYTES), false);
        let mut buf = flight(3);
        for _ in 0..3 {
            assert_eq!(hs.step(&mut buf), Step::NeedMore);
        }
        assert_eq!(hs.step(&mut buf), Step::Reply(record(TLS_MORE)));
        buf = flight(0);
        buf.extend_from_slice(b"\x00\x03data");
        assert_eq!(hs.step(&mut buf), Step::Done(record(TLS_DONE)));
        assert_eq!(buf, b"\x00\x03data");
    }

    #[test]
    fn bounds_and_refusals() {
        let mut hs = ServerHandshake::new(1, Some(HANDSHAKE_MAX_BYTES), false);
        let mut buf = flight(HANDSHAKE_MAX_BYTES / TLS_RECORD + 1);
        let mut last = Step::NeedMore;
        while !buf.is_empty() && last == Step::NeedMore {
            last = hs.step(&mut buf);
        }
        assert!(matches!(last, Step::Failed(Failure::TooManyBytes, _)));
        let mut hs = ServerHandshake::new(1, None, true);
        assert!(matches!(
            hs.step(&mut flight(0)),
            Step::Failed(Failure::Refused, _)
        ));
        let mut hs = ServerHandshake::new(1, None, false);
        let mut stun = vec![0u8; TLS_RECORD];
        assert!(matches!(
            hs.step(&mut stun),
            Step::Failed(Failure::NotTls, _)
        ));
    }
}
