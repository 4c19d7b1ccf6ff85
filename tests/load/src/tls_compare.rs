//! `turnpike-load tls-compare`: TURN over TLS relayed flat out (ChannelData over TCP in
//! TLS records, the load generator's clients speaking TLS with rustls), per server
//! CPU-second, against three servers in alternating rounds:
//!
//! - turnpike terminating TLS itself (`turn_tls_listen_port`);
//! - nginx terminating TLS (the stream module, one process) in front of turnpike's plain
//!   TURN-TCP listener with a PROXY header, the seed's layout: its CPU is nginx's plus
//!   the relay's;
//! - coturn's TLS listener.
//!
//! The certificate is a fresh self-signed RSA 2048 one (`openssl req -x509`); the clients
//! accept it without checking (loopback only, a benchmark).

use crate::compare::{echo_any, flat, report, Options};
use crate::procfs;
use crate::scenarios::Session;
use crate::servers::{coturn_args, turnpike_config, wait_ready, Layout};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where Debian's `libnginx-mod-stream` installs the stream module.
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// The three servers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Setup {
    Native,
    Nginx,
    Coturn,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Native => "turnpike native TLS",
            Setup::Nginx => "nginx TLS + turnpike",
            Setup::Coturn => "coturn TLS",
        }
    }
}

/// A client configuration that accepts any server certificate (loopback benchmark only).
pub fn client_config() -> Arc<rustls::ClientConfig> {
    #[allow(deprecated)] // ring: see the relay's own TLS module
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCert(Arc::clone(&provider)));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        });
    match config {
        Ok(mut c) => {
            c.alpn_protocols = vec![b"stun.turn".to_vec()];
            Arc::new(c)
        }
        // The built-in provider supports its own default versions.
        Err(e) => panic!("rustls client configuration: {e}"),
    }
}

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A process of a setup, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the comparison and prints the table.
pub fn run(o: &Options) -> Result<(), String> {
    let l = &o.layout;
    std::fs::create_dir_all(&l.dir).map_err(|e| e.to_string())?;
    let (cert, key) = make_cert(&l.dir)?;
    let tls = client_config();
    println!(
        "tls-compare: {} rounds, {} clients, {}-byte payloads, {} s flat out, turnpike event loops {}, load average {}",
        o.rounds,
        o.clients,
        o.size,
        o.duration.as_secs_f64(),
        l.workers
            .map_or_else(|| "its default (one per core)".to_string(), |n| n.to_string()),
        procfs::load_average()
    );
    let mut rows: Vec<(Setup, f64, f64)> = Vec::new();
    let all = [Setup::Native, Setup::Nginx, Setup::Coturn];
    for round in 0..o.rounds {
        let mut order = all;
        if round % 2 == 1 {
            order.reverse();
        }
        for setup in order {
            println!("round {} {}", round + 1, setup.name());
            match measure(o, setup, &cert, &key, &tls, 1000 + round * 50_000) {
                Ok((cpu, pps)) => rows.push((setup, cpu, pps)),
                Err(e) => println!("  {} failed: {e}", setup.name()),
            }
        }
    }
    println!();
    println!(
        "## TURN over TLS: {} clients, {}-byte payloads, flat out (mean of {} rounds)",
        o.clients, o.size, o.rounds
    );
    println!();
    println!("| server | relayed pkts / server CPU-s | relayed pkts / s (wall) | CPU-s per s |");
    println!("|---|---:|---:|---:|");
    for setup in all {
        let v: Vec<&(Setup, f64, f64)> = rows.iter().filter(|r| r.0 == setup).collect();
        if v.is_empty() {
            println!("| {} | — | — | — |", setup.name());
            continue;
        }
        let n = v.len() as f64;
        let cpu = v.iter().map(|r| r.1).sum::<f64>() / n;
        let pps = v.iter().map(|r| r.2).sum::<f64>() / n;
        println!(
            "| {} | {cpu:.0} | {pps:.0} | {:.2} |",
            setup.name(),
            if cpu > 0.0 { pps / cpu } else { 0.0 }
        );
    }
    println!();
    println!(
        "Relayed packets count both directions; for nginx, server CPU is nginx's plus the relay's."
    );
    Ok(())
}

/// Starts `setup`, runs the clients flat out; (relayed pkts per server CPU-s, per s).
fn measure(
    o: &Options,
    setup: Setup,
    cert: &Path,
    key: &Path,
    tls: &Arc<rustls::ClientConfig>,
    ip_base: usize,
) -> Result<(f64, f64), String> {
    let l = &o.layout;
    let tls_port = l.port + 1;
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let procs = start(setup, l, cert, key, tls_port)?;
    wait_tcp(tls_addr)?;
    let pids: Vec<u32> = procs.iter().map(|p| p.0.id()).collect();
    let mut s = Session::open_tls(tls_addr, o.clients, ip_base, echo_any(), tls)?;
    let cpu = |pids: &[u32]| -> f64 {
        pids.iter()
            .filter_map(|p| procfs::cpu_seconds(*p).ok())
            .sum()
    };
    let cpu0 = cpu(&pids);
    let r = report("tls flat", s.run(flat(o), pids.first().copied()));
    let used = cpu(&pids) - cpu0;
    let per_cpu = if used > 0.0 {
        r.relayed() as f64 / used
    } else {
        0.0
    };
    println!("    server CPU {used:.2} s → {per_cpu:.0} relayed pkts / CPU-s");
    drop(s);
    drop(procs);
    Ok((per_cpu, r.per_second()))
}

fn start(
    setup: Setup,
    l: &Layout,
    cert: &Path,
    key: &Path,
    tls_port: u16,
) -> Result<Vec<Proc>, String> {
    let log = |name: &str| -> Result<std::fs::File, String> {
        std::fs::File::create(l.dir.join(name)).map_err(|e| e.to_string())
    };
    let turnpike = |extra: String| -> Result<Proc, String> {
        let conf = l.dir.join("turnpike-tls.toml");
        std::fs::write(&conf, format!("{extra}{}", turnpike_config(l)))
            .map_err(|e| e.to_string())?;
        Command::new(&l.turnpike)
            .arg("--config")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log("turnpike-tls.log")?)
            .spawn()
            .map(Proc)
            .map_err(|e| format!("{}: {e}", l.turnpike.display()))
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], l.port));
    let procs = match setup {
        Setup::Native => vec![turnpike(format!(
            "turn_tls_listen_port = {tls_port}\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ))?],
        Setup::Nginx => {
            let relay = turnpike(
                "proxy_protocol = true\nproxy_protocol_trusted = [\"127.0.0.1/32\"]\n".into(),
            )?;
            let conf = l.dir.join("nginx-tls.conf");
            let module = if Path::new(STREAM_MODULE).is_file() {
                format!("load_module {STREAM_MODULE};\n")
            } else {
                String::new()
            };
            let dir = l.dir.display();
            std::fs::write(
                &conf,
                format!(
                    "{module}daemon off;\nmaster_process off;\nerror_log {dir}/nginx-error.log;\npid {dir}/nginx.pid;\n\
                     events {{ worker_connections 8192; }}\n\
                     stream {{\n  server {{\n    listen 127.0.0.1:{tls_port} ssl;\n    proxy_pass 127.0.0.1:{port};\n    \
                     proxy_protocol on;\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n  }}\n}}\n",
                    port = l.port,
                    cert = cert.display(),
                    key = key.display(),
                ),
            )
            .map_err(|e| e.to_string())?;
            let nginx = Command::new("nginx")
                .arg("-p")
                .arg(&l.dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(l.dir.join("nginx-error.log"))
                .stdout(Stdio::null())
                .stderr(log("nginx.stderr")?)
                .spawn()
                .map(Proc)
                .map_err(|e| format!("nginx: {e} (apt-get install nginx libnginx-mod-stream)"))?;
            vec![relay, nginx]
        }
        Setup::Coturn => {
            let mut args = coturn_args(l);
            args.retain(|a| a != "--no-tls");
            args.extend([
                format!("--cert={}", cert.display()),
                format!("--pkey={}", key.display()),
                format!("--tls-listening-port={tls_port}"),
            ]);
            vec![Command::new("turnserver")
                .args(args)
                .stdout(log("coturn-tls.stdout")?)
                .stderr(Stdio::null())
                .spawn()
                .map(Proc)
                .map_err(|e| format!("turnserver: {e} (apt-get install coturn)"))?]
        }
    };
    wait_ready(addr)?;
    Ok(procs)
}

/// Waits (at most 10 s) until `addr` accepts TCP connections.
fn wait_tcp(addr: SocketAddr) -> Result<(), String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing accepts TCP on {addr}"))
}

/// A self-signed certificate and its key in `dir`.
fn make_cert(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let (cert, key) = (dir.join("tls-cert.pem"), dir.join("tls-key.pem"));
    let out = Command::new("openssl")
        .args([
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
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("openssl: {e}"))?;
    if out.success() {
        Ok((cert, key))
    } else {
        Err("openssl req failed".into())
    }
}
