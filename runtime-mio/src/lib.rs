//! # turnpike: the TURN relay on mio
//!
//! The runtime people deploy: it drives the sans-IO core of `turnpike-core` with real
//! sockets. One [`event_loop::Runtime`] owns one `mio::Poll`, one core `Server`, the
//! listeners (TURN over UDP and TCP, IPv4 and IPv6, TCP optionally behind a PROXY-protocol
//! proxy such as nginx terminating TLS) and one UDP socket per relayed address.
//!
//! Several such loops, one per core, run side by side ([`workers`]): each has its own
//! sockets (listeners shared with `SO_REUSEPORT`), core and slice of the relay ports.
//!
//! Configuration is one TOML file ([`config`]), turned into the core's configuration and
//! the list of sockets ([`settings`]). Without a file, [`connect_info`] prints how to use
//! the built-in loopback default.
#![deny(missing_docs)]

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connect_info;
pub mod drain;
pub mod event_log;
pub mod event_loop;
pub mod fdlimit;
pub mod id_hash;
pub mod link;
pub mod log_limit;
#[cfg(target_os = "linux")]
pub mod packing;
pub mod plan;
pub mod reload;
pub mod reloader;
pub mod report;
pub mod seed;
pub mod settings;
pub mod sockets;
pub mod start_error;
pub mod tcp;
pub mod term_count;
#[cfg(all(test, target_os = "linux"))]
mod test_sockets;
pub mod tls;
pub mod token;
pub mod trace_recorder;
pub mod udp_batch;
#[cfg(target_os = "linux")]
pub mod uring;
#[cfg(target_os = "linux")]
pub mod uring_recv;
#[cfg(target_os = "linux")]
pub mod uring_send;
#[cfg(target_os = "linux")]
pub mod uring_stream;
pub mod workers;
pub mod write_buf;
