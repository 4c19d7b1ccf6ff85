//! Elsewhere than Linux: one `recv_from` / `send_to` per datagram.

use super::queued::{Queued, SendOutcome};
use super::{Received, Tally, RECV_SLOTS, SLOT_LEN};
use mio::net::UdpSocket;
use std::io;
use turnpike_core::HEADROOM;

pub fn gso_supported() -> bool {
    false
}

pub struct RecvSys;

impl RecvSys {
    pub fn new() -> Self {
        RecvSys
    }

    pub fn recv(
        &mut self,
        sock: &UdpSocket,
        buf: &mut [u8],
        got: &mut [Option<Received>],
        first: usize,
        want: usize,
    ) -> io::Result<usize> {
        let want = want.min(RECV_SLOTS.saturating_sub(first));
        let mut n = 0;
        while n < want {
            let i = first + n;
            let Some(rx) =
                buf.get_mut(i * SLOT_LEN + HEADROOM..(i + 1) * SLOT_LEN - turnpike_core::TAILROOM)
            else {
                break;
            };
            match sock.recv_from(rx) {
                Ok((len, from)) => {
                    if let Some(g) = got.get_mut(i) {
                        *g = Some(Received {
                            from,
                            len,
                            truncated: false,
                        });
                    }
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }
}

#[derive(Default)]
pub struct SendSys;

impl SendSys {
    pub fn new() -> Self {
        SendSys
    }

    pub fn send(
        &mut self,
        q: Queued<'_>,
        sock: &UdpSocket,
        group: core::ops::Range<usize>,
        recv: &[u8],
        tally: &mut Tally<'_>,
    ) -> SendOutcome {
        for pos in group {
            let Some(to) = q.entry_at(pos).map(|e| e.to) else {
                continue;
            };
            if let Err(e) = sock.send_to(q.data(recv, pos), to) {
                tally.failed(&e, 1);
            }
        }
        SendOutcome::default()
    }
}
