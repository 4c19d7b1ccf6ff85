//! A real nginx in front of the relay: its `stream` module terminating TLS with a
//! self-signed certificate and passing plain TURN-TCP on, with or without a PROXY protocol
//! header; and the two-hop layout of Sora's production guide (`ssl_preread` on one port,
//! SNI routing, a TLS-terminating second hop on a unix socket).
//!
//! nginx runs in the foreground, one process (`daemon off; master_process off;`), with
//! every file under the test's scratch directory.

use crate::{find_tool, run_with_timeout, tail, wait_for_tcp, write_file, Child, TempDir};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where Debian's `libnginx-mod-stream` installs the stream module.
pub const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// The name the TURN-TLS route answers to in the two-hop layout.
pub const TURNS_NAME: &str = "turns.test";

/// A certificate and its key.
#[derive(Clone, Debug)]
pub struct Cert {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Makes a self-signed certificate for `CN=turn.test` (valid one day) in `dir` with
/// `openssl req -x509`.
pub fn self_signed_cert(dir: &Path) -> Cert {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let openssl = find_tool("openssl").expect("openssl (checked by the test)");
    let mut cmd = Command::new(openssl);
    cmd.args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=turn.test",
        "-days",
        "1",
    ])
    .arg("-addext")
    .arg(format!("subjectAltName=DNS:turn.test,DNS:{TURNS_NAME}"))
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&cert);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(
        out.success(),
        "could not make a self-signed certificate\n{}",
        out.report()
    );
    Cert { cert, key }
}

/// The `load_module` line for the stream module, when it is a dynamic module here (empty
/// when nginx was built with it).
pub fn load_stream_module() -> String {
    if Path::new(STREAM_MODULE).is_file() {
        format!("load_module {STREAM_MODULE};\n")
    } else {
        String::new()
    }
}

/// True when this nginx can run a `stream` block (module file present, or built in).
pub fn has_stream_module() -> bool {
    if Path::new(STREAM_MODULE).is_file() {
        return true;
    }
    let Some(nginx) = find_tool("nginx") else {
        return false;
    };
    let mut cmd = Command::new(nginx);
    cmd.arg("-V");
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    out.combined().contains("--with-stream ") || out.combined().contains("--with-stream\n")
}

/// The top of every configuration: one process, logs and pid in `dir`.
fn preamble(dir: &Path) -> String {
    format!(
        "{}error_log {}/error.log info;\npid {}/nginx.pid;\nevents {{ worker_connections 256; }}\n",
        load_stream_module(),
        dir.display(),
        dir.display()
    )
}

/// One hop: TLS terminated on `listen`, plain TCP to `upstream`, a PROXY v1 header first
/// when `proxy_protocol`.
pub fn tls_terminator_conf(
    dir: &Path,
    cert: &Cert,
    listen: SocketAddr,
    upstream: SocketAddr,
    proxy_protocol: bool,
) -> String {
    format!(
        "{pre}stream {{
    log_format e2e '$remote_addr:$remote_port -> $upstream_addr sni=$ssl_server_name $status';
    access_log {dir}/stream.log e2e;
    server {{
        listen {listen} ssl;
        proxy_pass {upstream};
        proxy_protocol {pp};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_handshake_timeout 10s;
    }}
}}
",
        pre = preamble(dir),
        dir = dir.display(),
        pp = on_off(proxy_protocol),
        cert = cert.cert.display(),
        key = cert.key.display(),
    )
}

/// A plain TCP proxy on `listen` to `upstream` that does not touch TLS but sends a PROXY
/// v1 header first: a load balancer in front of a relay that terminates TLS itself.
pub fn passthrough_conf(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        "{pre}stream {{
    log_format e2e '$remote_addr:$remote_port -> $upstream_addr $status';
    access_log {dir}/stream.log e2e;
    server {{
        listen {listen};
        proxy_pass {upstream};
        proxy_protocol on;
    }}
}}
",
        pre = preamble(dir),
        dir = dir.display(),
    )
}

/// The address the SNI bridge connects to the front from (`proxy_bind`), so that the
/// relay can tell the bridge's connection (the "client" of the TLS route) from nginx's
/// own hops, which come from 127.0.0.1.
pub const BRIDGE_SOURCE: &str = "127.0.0.4";

/// The ports of the two-hop layout.
#[derive(Clone, Copy, Debug)]
pub struct TwoHopPorts {
    /// The shared port (443 in production): `ssl_preread`, routes by SNI.
    pub front: SocketAddr,
    /// A helper listener that opens TLS *with* SNI `turns.test` towards `front`, for clients
    /// that cannot send SNI themselves (uclient does not): plain TCP in, TLS out.
    pub sni_bridge: SocketAddr,
    /// The relay's TURN-TCP listener.
    pub relay_tcp: SocketAddr,
}

/// The layout of Sora's production guide, scaled to loopback: on `front`, `ssl_preread`
/// maps no SNI (or an unknown name) to the relay's TCP listener and `turns.test` to a
/// unix socket where a second server terminates TLS and passes TURN-TCP on to the relay.
/// Both hops send PROXY headers when `proxy_protocol` (the first hop to the second always
/// does, as in the guide; the second hop then sends `PROXY UNKNOWN`, nginx's own
/// behaviour on unix sockets). With `real_ip_from_unix`, the second server also has
/// `set_real_ip_from unix:;`, after which nginx sends the client's address with the socket
/// path as destination (`PROXY TCP4 <client> unix:/path <port> 0`). The upstream names
/// follow the guide's `proxy_pass $ssl_server_name` pattern.
pub fn two_hop_conf(
    dir: &Path,
    cert: &Cert,
    ports: TwoHopPorts,
    proxy_protocol: bool,
    real_ip_from_unix: bool,
) -> String {
    let sock = dir.join("tls.sock");
    format!(
        "{pre}stream {{
    log_format e2e '$remote_addr:$remote_port -> $upstream_addr preread_sni=$ssl_preread_server_name sni=$ssl_server_name $status';
    access_log {dir}/stream.log e2e;

    map $ssl_preread_server_name $upstream {{
        default {name};
        \"{name}\" unix:{sock};
    }}

    upstream {name} {{
        server {relay};
    }}

    server {{
        listen {front};
        proxy_pass $upstream;
        proxy_protocol {pp};
        ssl_preread on;
    }}

    server {{
        listen unix:{sock} ssl{listen_pp};{real_ip}
        proxy_pass $ssl_server_name;
        proxy_protocol {pp};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_handshake_timeout 10s;
        ssl_session_cache off;
        ssl_session_tickets off;
    }}

    server {{
        listen {bridge};
        proxy_bind {bridge_source};
        proxy_pass {front};
        proxy_ssl on;
        proxy_ssl_server_name on;
        proxy_ssl_name {name};
    }}
}}
",
        pre = preamble(dir),
        dir = dir.display(),
        name = TURNS_NAME,
        sock = sock.display(),
        relay = ports.relay_tcp,
        front = ports.front,
        bridge = ports.sni_bridge,
        pp = on_off(proxy_protocol),
        listen_pp = if proxy_protocol { " proxy_protocol" } else { "" },
        real_ip = if real_ip_from_unix { "\n        set_real_ip_from unix:;" } else { "" },
        bridge_source = BRIDGE_SOURCE,
        cert = cert.cert.display(),
        key = cert.key.display(),
    )
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// A running nginx, killed when dropped (its error log printed if the test fails).
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Writes `conf` to `dir/nginx.conf`, checks it with `nginx -t`, starts nginx and waits
    /// until every address in `listens` accepts TCP connections (at most 10 s).
    pub fn start(dir: &TempDir, conf: &str, listens: &[SocketAddr]) -> Nginx {
        let mut n = Nginx::spawn_with(dir, conf, |p: &Path| Command::new(p));
        for addr in listens {
            if let Err(e) = wait_for_tcp(*addr, Duration::from_secs(10)) {
                n.child.assert_running();
                panic!("nginx: {e}\n{}", n.error_log());
            }
        }
        n
    }

    /// Writes `conf` to `dir/nginx.conf`, checks it with `nginx -t` and starts nginx, both
    /// through `launch(path of nginx)` (e.g. inside a network namespace), without waiting
    /// for its listeners: the caller checks them where it can reach them.
    pub fn spawn_with(dir: &TempDir, conf: &str, launch: impl Fn(&Path) -> Command) -> Nginx {
        let nginx = find_tool("nginx").expect("nginx (checked by the test)");
        let conf_path = dir.join("nginx.conf");
        write_file(&conf_path, conf);
        let base = |extra: &[&str]| {
            let mut c = launch(&nginx);
            c.arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(&conf_path);
            c.arg("-g").arg("daemon off; master_process off;");
            c.args(extra);
            c
        };
        let check = run_with_timeout(base(&["-t"]), Duration::from_secs(20));
        assert!(
            check.success(),
            "nginx rejects its configuration\n{conf}\n{}",
            check.report()
        );
        let child = Child::spawn("nginx", base(&[]), dir.path());
        Nginx {
            child,
            dir: dir.path().to_path_buf(),
        }
    }

    /// Panics, with nginx's error log, if it has exited.
    pub fn assert_running(&mut self) {
        if self.child.exited().is_some() {
            panic!("nginx exited early; its error log:\n{}", self.error_log());
        }
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// nginx's stream access log so far (one line per session: client, upstream, SNI).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stream.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- nginx error log -----\n{}\n----- nginx stream log -----\n{}",
                tail(&self.error_log(), 60),
                tail(&self.access_log(), 60)
            );
        }
    }
}
