//! Native TLS (`turns:`) on rustls.
//!
//! rustls is sans-IO like the core: the event loop reads ciphertext from the socket, hands
//! it to the session, takes the plaintext out and gives it to the core exactly as a plain
//! TURN-TCP stream's bytes ([`turnpike_core::Server::handle_stream_data`]); what the core
//! writes is encrypted by the session and the records go through the connection's bounded
//! [`WriteBuf`], so the slow-reader bound holds for TLS streams too.
//!
//! A stream of a TLS-capable listener goes through these layers ([`Layer`]):
//!
//! 1. `Proxy`: the listener trusts a load balancer in front (`proxy_protocol = true`), so a
//!    plaintext PROXY header comes before the ClientHello. The runtime only finds where it
//!    ends (with the core's own parser) and hands those bytes to the core unchanged, so the
//!    core's checks (trusted sources, the client address) stay in one place.
//! 2. `Detect`: on a port shared by TLS and plain TURN-TCP, the first byte decides: 0x16
//!    (a TLS handshake record) is TLS, anything else (STUN starts with 0b00, ChannelData
//!    with 0b01) is plain TURN-TCP.
//! 3. `Tls`: the session. Its handshake is bounded in time ([`HANDSHAKE_TIMEOUT`]) and in
//!    the bytes the client may send before it completes ([`HANDSHAKE_MAX_BYTES`]).

use crate::write_buf::{WriteBuf, WriteError, DEFAULT_LIMIT};
use core::time::Duration;
use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

/// The ALPN protocol id of TURN over TLS (RFC 7443).
pub const ALPN_STUN_TURN: &[u8] = b"stun.turn";
/// A TLS handshake not done this long after the connection was accepted is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that sends more than this before its handshake completes is closed (a
/// ClientHello is a few hundred bytes, 2 KiB with post-quantum key shares).
pub const HANDSHAKE_MAX_BYTES: usize = 16 * 1024;
/// The first byte of a TLS handshake record.
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Whether a TCP listener speaks TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TURN-TCP only.
    #[default]
    Off,
    /// TLS only.
    On,
    /// TLS or plain TURN-TCP, decided on the first byte.
    Auto,
}

/// Why the certificate or key could not be loaded: the configuration key at fault and
/// what is wrong (the file and the reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsLoadError {
    /// `tls_cert_file` or `tls_key_file`.
    pub key: &'static str,
    /// What is wrong, naming the file.
    pub message: String,
}

impl fmt::Display for TlsLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for TlsLoadError {}

/// Loads the certificate chain and private key (PEM) and builds the server configuration:
/// TLS 1.2 and 1.3, ALPN `stun.turn` offered (a client offering none is accepted too).
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsLoadError> {
    let cert_err = |why: String| TlsLoadError {
        key: "tls_cert_file",
        message: format!("{}: {why}", cert.display()),
    };
    let key_err = |why: String| TlsLoadError {
        key: "tls_key_file",
        message: format!("{}: {why}", key.display()),
    };
    let cert_pem = std::fs::read(cert).map_err(|e| cert_err(format!("cannot read: {e}")))?;
    let key_pem = std::fs::read(key).map_err(|e| key_err(format!("cannot read: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err("no certificate (PEM `CERTIFICATE`) in it".into()));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| key_err(format!("no PEM private key in it: {e}")))?;
    // ring builds with the C compiler alone (aws-lc-rs wants more of a toolchain). rustls
    // deprecated ring's provider for lacking post-quantum key exchange; browsers offer
    // X25519 beside it, so handshakes are unaffected.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| cert_err(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| key_err(format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![ALPN_STUN_TURN.to_vec()];
    Ok(Arc::new(config))
}

/// The SHA-256 of the first certificate (the leaf) in the PEM file at `cert`, in hex, as
/// `openssl x509 -fingerprint -sha256` shows it without colons; None if unreadable.
pub fn cert_fingerprint(cert: &Path) -> Option<String> {
    use sha2::Digest as _;
    let leaf = CertificateDer::pem_file_iter(cert).ok()?.next()?.ok()?;
    let d = sha2::Sha256::digest(leaf.as_ref());
    Some(d.iter().map(|b| format!("{b:02X}")).collect())
}

/// What stands between a stream's socket and the core.
#[derive(Debug, Default)]
pub enum Layer {
    /// Plain TURN-TCP: the bytes go to the core as they are.
    #[default]
    Plain,
    /// A PROXY header is being gathered (its bytes so far); then `then`.
    Proxy {
        /// The bytes gathered so far.
        buf: Vec<u8>,
        /// TLS only, or decided on the first byte after the header.
        then: TlsMode,
    },
    /// The first byte decides between TLS and plain.
    Detect,
    /// TLS.
    Tls(Box<TlsStream>),
}

/// One TLS session and its handshake budget.
#[derive(Debug)]
pub struct TlsStream {
    /// The rustls session.
    pub session: rustls::ServerConnection,
    /// Ciphertext bytes received while handshaking.
    pub handshake_bytes: usize,
    /// Whether the close_notify was already queued.
    pub closed: bool,
}

impl TlsStream {
    /// A new server session.
    pub fn new(config: &Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let mut session = rustls::ServerConnection::new(Arc::clone(config))?;
        // Plaintext written before the handshake completes waits in the session; bounded
        // like the write buffer.
        session.set_buffer_limit(Some(DEFAULT_LIMIT));
        Ok(TlsStream {
            session,
            handshake_bytes: 0,
            closed: false,
        })
    }

    /// Encrypts `data` and appends the records to `out` (written to the socket when the
    /// batch ends, or at once if `now`).
    pub fn write(
        &mut self,
        out: &mut WriteBuf,
        stream: &mut TcpStream,
        data: &[u8],
        now: bool,
    ) -> Result<(), WriteError> {
        if self.closed {
            return Ok(());
        }
        let mut rest = data;
        while !rest.is_empty() {
            match self.session.writer().write(rest) {
                Ok(0) => return Err(WriteError::Overflow),
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) => return Err(WriteError::Io(e)),
            }
            self.take_records(out, stream)?;
        }
        if now {
            out.flush(stream).map_err(WriteError::Io)?;
        }
        Ok(())
    }

    /// Moves the records the session has ready (handshake, alerts, data) into `out`.
    pub fn take_records(
        &mut self,
        out: &mut WriteBuf,
        stream: &mut TcpStream,
    ) -> Result<(), WriteError> {
        let mut sink = Sink {
            out,
            stream,
            err: None,
        };
        while self.session.wants_write() {
            if let Err(e) = self.session.write_tls(&mut sink) {
                return Err(sink.err.take().unwrap_or(WriteError::Io(e)));
            }
        }
        Ok(())
    }

    /// Queues a close_notify alert (once).
    pub fn close(&mut self, out: &mut WriteBuf, stream: &mut TcpStream) {
        if !std::mem::replace(&mut self.closed, true) {
            self.session.send_close_notify();
            let _ = self.take_records(out, stream);
        }
    }

    /// The ALPN protocol agreed, if any (for the log).
    pub fn alpn(&self) -> Option<&[u8]> {
        self.session.alpn_protocol()
    }
}

/// Appends TLS records to a write buffer; the buffer writes to the socket only when its
/// bound would be passed.
struct Sink<'a> {
    out: &'a mut WriteBuf,
    stream: &'a mut TcpStream,
    err: Option<WriteError>,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.out.queue(self.stream, buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                self.err = Some(e);
                Err(io::Error::other("write buffer"))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_certificate_names_key_and_file() {
        let e = load(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .unwrap_err();
        assert_eq!(e.key, "tls_cert_file");
        assert!(e.message.contains("/nonexistent/cert.pem"), "{e}");
        assert!(e.message.contains("cannot read"), "{e}");
    }

    #[test]
    fn a_file_without_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!("turnpike-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("empty.pem");
        std::fs::write(&p, "not pem\n").unwrap();
        let e = load(&p, &p).unwrap_err();
        assert_eq!(e.key, "tls_cert_file");
        assert!(e.message.contains("no certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
