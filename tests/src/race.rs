//! Allocations from many client 5-tuples, for what must hold across a relay's event loops.
//!
//! turnpike runs one event loop per core; the kernel's `SO_REUSEPORT` hash gives each UDP
//! 5-tuple to one loop. Clients on distinct local ports are therefore spread over the loops,
//! and a limit that is kept per loop rather than per node shows as too many successes (a
//! quota) or too early a refusal (ports). [`race`] lets many such clients allocate at the
//! same moment; [`Tally`] counts what they got.

use crate::turn::{Failure, TurnClient};
use crate::ServerKind;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// One client's attempt: the client (which holds its allocation, if it got one) and what
/// its Allocate got.
pub struct Attempt {
    /// The client, on its own UDP socket.
    pub client: TurnClient,
    /// The relayed address, or how it failed.
    pub result: Result<SocketAddr, Failure>,
}

/// Opens `n` UDP clients of `user` (each on its own local port, so on its own 5-tuple) and
/// lets them send their Allocate requests at the same moment (after a barrier; each with
/// its 401 round). Returns the attempts in the clients' order. Every exchange is bounded in
/// time by the client (at most a few seconds).
pub fn race(server: SocketAddr, n: usize, user: &str, password: &str) -> Vec<Attempt> {
    // Every socket first, so that no thread waits at the barrier for one never started.
    let clients: Vec<TurnClient> = (0..n)
        .map(|i| {
            TurnClient::udp(server, user, password)
                .unwrap_or_else(|e| panic!("client {i}: a UDP socket on loopback: {e}"))
        })
        .collect();
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let result = client.allocate();
                Attempt { client, result }
            })
        })
        .collect();
    handles
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            h.join()
                .unwrap_or_else(|_| panic!("racing client {i} panicked"))
        })
        .collect()
}

/// Allocates with one fresh client of `user` after another (each its own 5-tuple), at most
/// `max` of them and for at most `limit`, stopping after `stop_after_refusals` failures in
/// a row. Returns the attempts in order.
pub fn one_by_one(
    server: SocketAddr,
    (max, limit): (usize, Duration),
    stop_after_refusals: usize,
    user: &str,
    password: &str,
) -> Vec<Attempt> {
    let deadline = Instant::now() + limit;
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut refused_in_a_row = 0;
    for i in 0..max {
        if Instant::now() >= deadline {
            break;
        }
        let mut client = TurnClient::udp(server, user, password)
            .unwrap_or_else(|e| panic!("client {i}: a UDP socket on loopback: {e}"));
        let result = client.allocate();
        refused_in_a_row = if result.is_ok() {
            0
        } else {
            refused_in_a_row + 1
        };
        attempts.push(Attempt { client, result });
        if refused_in_a_row >= stop_after_refusals {
            break;
        }
    }
    attempts
}

/// What a set of attempts got: successes, refusals by error code, and failures without an
/// answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Allocations made.
    pub allocated: usize,
    /// Error responses, by code.
    pub refused: BTreeMap<u16, usize>,
    /// Attempts that got no usable answer (with why).
    pub unanswered: Vec<String>,
}

impl Tally {
    /// Counts `attempts`.
    pub fn of(attempts: &[Attempt]) -> Tally {
        let mut t = Tally::default();
        for a in attempts {
            match &a.result {
                Ok(_) => t.allocated += 1,
                Err(Failure::Refused(code, _)) => *t.refused.entry(*code).or_default() += 1,
                Err(Failure::Transport(why)) => t.unanswered.push(why.clone()),
            }
        }
        t
    }

    /// How many were refused with `code`.
    pub fn refused_with(&self, code: u16) -> usize {
        self.refused.get(&code).copied().unwrap_or(0)
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} allocated", self.allocated)?;
        for (code, n) in &self.refused {
            write!(f, ", {n} refused with {code}")?;
        }
        if !self.unanswered.is_empty() {
            write!(
                f,
                ", {} unanswered ({})",
                self.unanswered.len(),
                self.unanswered.join("; ")
            )?;
        }
        Ok(())
    }
}

/// How long to wait after deleting allocations before counting on their quota again.
/// turnpike: what the other event loops learn of the deletions may travel as messages
/// between them, so a moment (far more than that takes). coturn frees a deleted
/// allocation on its next timer tick, not at once.
pub fn settle_after_delete(kind: ServerKind) -> Duration {
    match kind {
        ServerKind::Turnpike => Duration::from_millis(250),
        ServerKind::Coturn => Duration::from_millis(2500),
    }
}

/// Deletes every allocation among `attempts` (Refresh with LIFETIME 0, RFC 8656 §8);
/// panics, naming the client, when one is not deleted.
pub fn delete_all(attempts: &mut [Attempt]) {
    for (i, a) in attempts.iter_mut().enumerate() {
        if a.result.is_ok() {
            a.client
                .refresh(0)
                .unwrap_or_else(|e| panic!("deleting the allocation of client {i}: {e:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_by_outcome() {
        let server: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let client = || TurnClient::udp(server, "u", "p").unwrap();
        let attempts = vec![
            Attempt {
                client: client(),
                result: Ok(server),
            },
            Attempt {
                client: client(),
                result: Err(Failure::Refused(486, "quota".into())),
            },
            Attempt {
                client: client(),
                result: Err(Failure::Refused(486, "quota".into())),
            },
            Attempt {
                client: client(),
                result: Err(Failure::Transport("no answer".into())),
            },
        ];
        let t = Tally::of(&attempts);
        assert_eq!(
            (t.allocated, t.refused_with(486), t.refused_with(508)),
            (1, 2, 0)
        );
        assert_eq!(
            t.to_string(),
            "1 allocated, 2 refused with 486, 1 unanswered (no answer)"
        );
    }
}
