//! mio tokens: which socket an event is for, packed into one `usize`.
//!
//! The low two bits say the kind (control, relay, stream, HTTP API), the rest the index or id, so
//! no table lookup is needed to route an event.

use mio::Token;
use turnpike_core::{ConnId, RelayId};

/// What a token names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The signal pipe.
    Signals,
    /// The waker of a loop's inbox (the HTTP API asks for counters, allocation lists,
    /// deletions; other loops' cores send messages; a stop), or of the API thread's poll.
    Waker,
    /// Listener number `n` (its `ListenerId`).
    Listener(u32),
    /// The poll of loop `n`, run on this loop's thread (hosting).
    Hosted(u32),
    /// A relay socket.
    Relay(RelayId),
    /// A TCP connection.
    Conn(ConnId),
    /// The HTTP API's listener (on the API thread's own poll).
    ApiListener,
    /// HTTP API connection number `n`.
    ApiConn(u64),
}

const KIND_BITS: u32 = 2;
const CONTROL: usize = 0;
const RELAY: usize = 1;
const CONN: usize = 2;
const API: usize = 3;
/// Control ids from here on name hosted loops; below, listeners.
const HOSTED: usize = 1 << 40;

impl Source {
    /// The token for this source.
    pub fn token(self) -> Token {
        let (kind, id) = match self {
            Source::Signals => (CONTROL, 0),
            Source::Waker => (CONTROL, 1),
            Source::Listener(n) => (CONTROL, n as usize + 2),
            Source::Hosted(n) => (CONTROL, HOSTED + n as usize),
            Source::Relay(r) => (RELAY, r.0 as usize),
            // Connection ids count up from 0 and stay far below 2^62 on 64-bit hosts.
            Source::Conn(c) => (CONN, c.0 as usize),
            Source::ApiListener => (API, 0),
            Source::ApiConn(n) => (API, n as usize + 1),
        };
        Token((id << KIND_BITS) | kind)
    }

    /// The source a token names, if any.
    pub fn from_token(t: Token) -> Option<Source> {
        let id = t.0 >> KIND_BITS;
        match t.0 & ((1 << KIND_BITS) - 1) {
            CONTROL if id == 0 => Some(Source::Signals),
            CONTROL if id == 1 => Some(Source::Waker),
            CONTROL if id >= HOSTED => u32::try_from(id - HOSTED).ok().map(Source::Hosted),
            CONTROL => u32::try_from(id - 2).ok().map(Source::Listener),
            RELAY => u32::try_from(id).ok().map(|r| Source::Relay(RelayId(r))),
            CONN => Some(Source::Conn(ConnId(id as u64))),
            API if id == 0 => Some(Source::ApiListener),
            API => Some(Source::ApiConn(id as u64 - 1)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for s in [
            Source::Signals,
            Source::Waker,
            Source::Listener(0),
            Source::Listener(3),
            Source::Listener(u32::MAX),
            Source::Hosted(0),
            Source::Hosted(7),
            Source::Relay(RelayId(0)),
            Source::Relay(RelayId(u32::MAX)),
            Source::Conn(ConnId(0)),
            Source::Conn(ConnId(1 << 40)),
            Source::ApiListener,
            Source::ApiConn(0),
            Source::ApiConn(77),
        ] {
            assert_eq!(Source::from_token(s.token()), Some(s), "{s:?}");
        }
        assert_eq!(
            Source::from_token(Token(3)),
            Some(Source::ApiListener),
            "kind 3 is the API"
        );
    }
}
