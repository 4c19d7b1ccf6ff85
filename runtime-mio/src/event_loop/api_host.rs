//! The HTTP API's glue: the loop as the API's [`crate::api::Host`].

use super::{Listener, ListenerSocket, Runtime};
use crate::api::Api;
use crate::clock::Clock;
use crate::link::Command;
use crate::plan;
use crate::settings::ListenerSpec;
use crate::sockets;
use crate::token::Source;
use mio::Interest;
use std::io;
use std::net::SocketAddr;
use turnpike_core::config::ListenerConfig;
use turnpike_core::{Instant, ListenerId, Server, Transport};

impl Runtime {
    /// Runs `f` with the API taken out of `self`, so that it can use the runtime as its
    /// host.
    pub(super) fn with_api(&mut self, f: impl FnOnce(&mut Api, &mut Runtime) -> io::Result<()>) {
        if let Some(mut api) = self.api.take() {
            if let Err(e) = f(&mut api, self) {
                log::warn!("HTTP API: {e}");
            }
            self.api = Some(api);
        }
    }
}

impl crate::api::Host for Runtime {
    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn unix_ms(&self) -> u64 {
        Clock::unix_ms()
    }

    fn server(&mut self) -> &mut Server {
        &mut self.server
    }

    fn reserve_listener(&mut self, id: ListenerId, username: &str) {
        if let Some(t) = &mut self.trace {
            t.listener_reserved(id, username);
        }
        self.server.credentials_mut().reserve_listener(id, username);
    }

    fn delete_allocation(&mut self, id: turnpike_core::AllocationId) -> bool {
        let owner = plan::loop_of(id);
        if owner != self.place.index {
            // Another loop's allocation: ask it (only loop 0 has peers).
            return self
                .peers
                .iter()
                .find(|p| p.index == owner)
                .and_then(|p| p.ask(|reply| Command::Delete(id, reply)))
                .unwrap_or(false);
        }
        let now = self.clock.now();
        if let Some(t) = &mut self.trace {
            t.delete_allocation(now, id);
        }
        self.server.delete_allocation(now, id)
    }

    fn open_udp(&mut self, addr: SocketAddr) -> io::Result<ListenerId> {
        let slot = self
            .listeners
            .iter()
            .position(|l| matches!(l.socket, ListenerSocket::Closed))
            .unwrap_or(self.listeners.len());
        let id = ListenerId(u32::try_from(slot).map_err(|_| io::ErrorKind::OutOfMemory)?);
        let mut sock = sockets::udp_listener(addr, self.buffers)?;
        self.poll.registry().register(
            &mut sock,
            Source::Listener(id.0).token(),
            Interest::READABLE,
        )?;
        let local = sock.local_addr()?;
        let config = ListenerConfig {
            id,
            transport: Transport::Udp,
            local,
            proxy_protocol: false,
        };
        let recorded = config.clone();
        if let Err(e) = self.server.add_listener(config) {
            let _ = self.poll.registry().deregister(&mut sock);
            return Err(io::Error::other(e.0));
        }
        if let Some(t) = &mut self.trace {
            t.listener_added(self.clock.now(), &recorded);
        }
        let listener = Listener {
            spec: ListenerSpec {
                id,
                transport: Transport::Udp,
                addr: local,
                proxy_protocol: false,
            },
            socket: ListenerSocket::Udp(sock),
        };
        match self.listeners.get_mut(slot) {
            Some(l) => *l = listener,
            None => self.listeners.push(listener),
        }
        Ok(id)
    }

    fn close_udp(&mut self, id: ListenerId) {
        let now = self.clock.now();
        if let Some(t) = &mut self.trace {
            t.listener_removed(now, id);
        }
        self.server.remove_listener(now, id);
        if let Some(l) = self.listeners.get_mut(id.0 as usize) {
            if let ListenerSocket::Udp(mut s) =
                std::mem::replace(&mut l.socket, ListenerSocket::Closed)
            {
                let _ = self.poll.registry().deregister(&mut s);
            }
        }
        self.drain(now);
    }

    fn runtime_metrics(&self) -> crate::api::metrics::RuntimeMetrics {
        let s = self.stats;
        crate::api::metrics::RuntimeMetrics {
            loop_lag_s: s.loop_lag_us as f64 / 1e6,
            loop_lag_max_s: s.loop_lag_max_us as f64 / 1e6,
            slow_readers_closed: s.slow_readers_closed,
            send_would_block: s.send_would_block,
            send_errors: s.send_errors,
            recv_truncated: s.recv_truncated,
            relay_bind_failures: s.relay_bind_failures,
            ..Default::default()
        }
    }

    fn flush(&mut self) {
        let now = self.clock.now();
        self.drain(now);
    }

    fn loop_stats(&mut self) -> Vec<crate::api::metrics::LoopStats> {
        let mut all = vec![self.own_stats()];
        for p in &self.peers {
            if let Some(s) = p.ask(Command::Stats) {
                all.push(s);
            }
        }
        all
    }

    fn all_allocations(&mut self) -> Vec<turnpike_core::server::AllocationInfo> {
        let now = self.clock.now();
        let mut all = self.server.allocations(now);
        for p in &self.peers {
            if let Some(list) = p.ask(Command::Allocations) {
                all.extend(list);
            }
        }
        all
    }
}
