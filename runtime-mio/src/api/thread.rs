//! The HTTP API's own thread: its own `mio::Poll`, the API listener and connections on it,
//! and a waker to stop it. It is started (bound) before the event loops, which take its
//! issuance secret and webhook, and runs once they are.

use super::ice::IceSettings;
use super::loops::Loops;
use super::webhook::Webhook;
use super::{Api, ApiSettings};
use crate::link::LoopHandle;
use crate::sockets::SocketBuffers;
use crate::token::Source;
use core::time::Duration;
use mio::{Events, Poll, Waker};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

/// Period of the API's housekeeping (timed-out connections).
const TICK: Duration = Duration::from_secs(1);

/// What the event loops take from the API at start. Not `Debug`: it holds a secret.
#[derive(Clone)]
pub struct ApiShare {
    /// The secret of issued credentials: every core accepts it as a REST secret.
    pub secret: Vec<u8>,
    /// Where the API listens (recorded by loop 0 in the event log).
    pub listen: SocketAddr,
    /// The webhook's sending side, if configured: every loop posts its own events.
    pub webhook: Option<Webhook>,
}

/// The API, bound and ready to run on a thread of its own.
pub struct ApiThread {
    poll: Poll,
    api: Api,
    stop: ApiStop,
    updates: (mpsc::Sender<Reloaded>, mpsc::Receiver<Reloaded>),
}

/// A configuration reload's outcome, for the API (not `Debug`: it holds a secret).
struct Reloaded {
    ok: bool,
    issuance_secret: Option<Vec<u8>>,
}

/// Tells a running [`ApiThread`] about configuration reloads (SIGHUP).
#[derive(Clone)]
pub struct ApiUpdates {
    tx: mpsc::Sender<Reloaded>,
    waker: Arc<Waker>,
}

impl ApiUpdates {
    /// A reload succeeded (`ok`) or failed; on success, the issuance secret to sign new
    /// credentials with from now on.
    pub fn reloaded(&self, ok: bool, issuance_secret: Option<Vec<u8>>) {
        let sent = self.tx.send(Reloaded {
            ok,
            issuance_secret,
        });
        if sent.is_err() || self.waker.wake().is_err() {
            log::debug!("the HTTP API thread is gone: reload not passed on");
        }
    }
}

/// Stops a running [`ApiThread`] from another thread.
#[derive(Clone)]
pub struct ApiStop {
    waker: Arc<Waker>,
    stopped: Arc<AtomicBool>,
}

impl ApiStop {
    /// Asks the API thread to end; it does within a poll round.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            log::debug!("cannot wake the HTTP API thread: {e}");
        }
    }
}

impl ApiThread {
    /// Creates the API's poll, binds its listener and starts the webhook thread.
    pub fn start(
        settings: ApiSettings,
        ice: IceSettings,
        buffers: SocketBuffers,
    ) -> io::Result<ApiThread> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), Source::Waker.token())?);
        let api = Api::start(settings, ice, buffers, poll.registry())?;
        Ok(ApiThread {
            poll,
            api,
            stop: ApiStop {
                waker,
                stopped: Arc::new(AtomicBool::new(false)),
            },
            updates: mpsc::channel(),
        })
    }

    /// Where the API listens.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.api.local_addr()
    }

    /// What the loops must be given.
    pub fn share(&self) -> io::Result<ApiShare> {
        Ok(ApiShare {
            secret: self.api.secret().to_vec(),
            listen: self.api.local_addr()?,
            webhook: self.api.webhook(),
        })
    }

    /// A way to tell the thread about reloads once it runs.
    pub fn updates(&self) -> ApiUpdates {
        ApiUpdates {
            tx: self.updates.0.clone(),
            waker: self.stop.waker.clone(),
        }
    }

    /// A way to stop the thread once it runs.
    pub fn stopper(&self) -> ApiStop {
        self.stop.clone()
    }

    /// Serves requests, reaching the loops through `loops`, until stopped.
    pub fn run(mut self, loops: Vec<LoopHandle>) -> io::Result<()> {
        let mut host = Loops::new(loops);
        let mut events = Events::with_capacity(256);
        let mut next_tick = std::time::Instant::now() + TICK;
        while !self.stop.stopped.load(Ordering::Acquire) {
            let timeout = next_tick.saturating_duration_since(std::time::Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let registry = self.poll.registry();
            for ev in events.iter() {
                match Source::from_token(ev.token()) {
                    Some(Source::ApiListener) => self.api.accept(registry, &mut host),
                    Some(Source::ApiConn(n)) => self.api.serve(n, registry, &mut host),
                    // The waker: the loop condition says whether to stop, the
                    // updates are read below.
                    _ => {}
                }
            }
            while let Ok(r) = self.updates.1.try_recv() {
                self.api.reloaded(r.ok, r.issuance_secret);
            }
            if std::time::Instant::now() >= next_tick {
                self.api.tick(registry, &mut host);
                next_tick = std::time::Instant::now() + TICK;
            }
        }
        Ok(())
    }
}
