//! Listeners added and removed at run time: the dynamic UDP ports
//! (`turn_udp_port = "dynamic"`), served by loop 0. The HTTP API binds each for one issued
//! configuration and hands it over ([`crate::link::DynamicPort`]); the loop makes its
//! sockets core listeners reserved for the issued username (recorded in the trace like any
//! input) and closes them once the credential has expired and no allocation uses them.

use super::{Listener, ListenerSocket, Runtime};
use crate::link::DynamicPort;
use crate::settings::ListenerSpec;
use crate::token::Source;
use mio::net::UdpSocket;
use mio::Interest;
use std::io;
use turnpike_core::config::ListenerConfig;
use turnpike_core::{Instant, ListenerId, Transport};

impl Runtime {
    /// Serves `port`: each socket a listener reserved for its username. If one cannot
    /// be added, the others are closed again (the issued URL then gets no answer).
    pub(super) fn serve_dynamic_port(&mut self, now: Instant, port: DynamicPort) {
        let mut listeners = Vec::with_capacity(port.sockets.len());
        for sock in port.sockets {
            match self.add_udp_listener(now, sock) {
                Ok(id) => listeners.push(id),
                Err(e) => {
                    log::warn!("cannot serve a dynamic UDP port: {e}");
                    for id in listeners {
                        self.close_udp_listener(now, id);
                    }
                    return;
                }
            }
        }
        for id in &listeners {
            if let Some(t) = &mut self.trace {
                t.listener_reserved(*id, &port.username);
            }
            self.server
                .credentials_mut()
                .reserve_listener(*id, &port.username);
        }
        self.dynamic.add(listeners, port.expires_unix_s);
    }

    /// Closes the dynamic ports whose credential expired before `wall_s` and that no
    /// allocation uses any more (housekeeping).
    pub(super) fn sweep_dynamic_ports(&mut self, now: Instant, wall_s: u64) {
        if self.dynamic.is_empty() {
            return;
        }
        let busy = self.server.allocations_per_listener();
        for id in self.dynamic.take_done(wall_s, |l| busy.contains_key(&l)) {
            self.close_udp_listener(now, id);
            log::debug!("dynamic UDP listener {} closed", id.0);
        }
    }

    /// Registers `sock` under the first free listener slot and adds it to the core.
    fn add_udp_listener(&mut self, now: Instant, mut sock: UdpSocket) -> io::Result<ListenerId> {
        let slot = self
            .listeners
            .iter()
            .position(|l| matches!(l.socket, ListenerSocket::Closed))
            .unwrap_or(self.listeners.len());
        let id = ListenerId(u32::try_from(slot).map_err(|_| io::ErrorKind::OutOfMemory)?);
        let local = sock.local_addr()?;
        self.poll.registry().register(
            &mut sock,
            Source::Listener(id.0).token(),
            Interest::READABLE,
        )?;
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
            t.listener_added(now, &recorded);
        }
        let listener = Listener {
            spec: ListenerSpec {
                id,
                transport: Transport::Udp,
                addr: local,
                proxy_protocol: false,
                tls: crate::tls::TlsMode::Off,
            },
            socket: ListenerSocket::Udp(sock),
        };
        match self.listeners.get_mut(slot) {
            Some(l) => *l = listener,
            None => self.listeners.push(listener),
        }
        Ok(id)
    }

    /// Closes a listener added by [`Runtime::add_udp_listener`]; the core forgets it too.
    fn close_udp_listener(&mut self, now: Instant, id: ListenerId) {
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
}
