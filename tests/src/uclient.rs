//! coturn's `turnutils_uclient`: its command line, a bounded run, and a parser for the
//! summary it prints at the end of a run:
//!
//! ```text
//! 6: : start_mclient: tot_send_msgs=100, tot_recv_msgs=100
//! 6: : start_mclient: tot_send_bytes ~ 17000, tot_recv_bytes ~ 17000
//! 6: : Total transmit time is 6
//! 6: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
//! 6: : Average round trip delay 0.000000 ms; min = 0 ms, max = 0 ms
//! 6: : Average jitter 0.560000 ms; min = 0 ms, max = 4 ms
//! ```
//!
//! uclient sends `-n` messages per client from `-m` clients to the peer through the relay
//! and counts the echoes that come back. When nothing comes back it waits forever, so every
//! run has a time limit, and a run without its summary is a failure that shows the output.

use crate::{find_tool, run_with_timeout, CmdOutput};
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

/// How uclient authenticates.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// `-u USER -w PASSWORD`: a static long-term user (or a REST username made by hand).
    Static {
        /// Username.
        user: String,
        /// Password.
        password: String,
    },
    /// `-u USER -W SECRET`: uclient makes a TURN REST username (`<expiry>:USER`) and its
    /// password from the shared secret.
    Rest {
        /// The user part of the username.
        user: String,
        /// The shared secret.
        secret: String,
    },
}

/// One uclient run.
#[derive(Clone, Debug)]
pub struct Uclient {
    /// The TURN server (`-p PORT` and the address argument).
    pub server: SocketAddr,
    /// The peer (`-e ADDR -r PORT`).
    pub peer: SocketAddr,
    /// Credentials.
    pub credentials: Credentials,
    /// TURN over TCP (`-t`) rather than UDP.
    pub tcp: bool,
    /// TLS (`-S`, with `-t`): over TLS to the server.
    pub tls: bool,
    /// Send indications (`-s`) rather than channels.
    pub send_indications: bool,
    /// Messages per client (`-n`).
    pub messages: u32,
    /// Clients (`-m`).
    pub clients: u32,
    /// Message length (`-l`).
    pub length: u32,
    /// No RTCP allocations (`-c`); by default each client also opens an RTCP allocation.
    pub no_rtcp: bool,
    /// Local address to connect from (`-L`).
    pub local: Option<IpAddr>,
    /// Ask for an IPv4 relayed address explicitly (`-X`: REQUESTED-ADDRESS-FAMILY).
    pub ipv4_relay: bool,
    /// Time limit of the run.
    pub timeout: Duration,
}

impl Uclient {
    /// A bounded run: 50 messages of 170 bytes from 2 clients, over UDP with channels.
    pub fn new(server: SocketAddr, peer: SocketAddr, credentials: Credentials) -> Uclient {
        Uclient {
            server,
            peer,
            credentials,
            tcp: false,
            tls: false,
            send_indications: false,
            messages: 50,
            clients: 2,
            length: 170,
            no_rtcp: false,
            local: None,
            ipv4_relay: false,
            timeout: Duration::from_secs(40),
        }
    }

    /// As [`Uclient::new`], over TCP, as static user `user`.
    pub fn tcp_static(server: SocketAddr, peer: SocketAddr, user: &str, password: &str) -> Uclient {
        let mut u = Uclient::new(
            server,
            peer,
            Credentials::Static {
                user: user.into(),
                password: password.into(),
            },
        );
        u.tcp = true;
        u
    }

    /// The command-line arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        if self.tcp || self.tls {
            a.push("-t".into());
        }
        if self.tls {
            a.push("-S".into());
        }
        if self.send_indications {
            a.push("-s".into());
        }
        if self.no_rtcp {
            a.push("-c".into());
        }
        if self.ipv4_relay {
            a.push("-X".into());
        }
        for (flag, v) in [
            ("-n", self.messages),
            ("-m", self.clients),
            ("-l", self.length),
        ] {
            a.push(flag.into());
            a.push(v.to_string());
        }
        match &self.credentials {
            Credentials::Static { user, password } => {
                a.extend(["-u".into(), user.clone(), "-w".into(), password.clone()])
            }
            Credentials::Rest { user, secret } => {
                a.extend(["-u".into(), user.clone(), "-W".into(), secret.clone()])
            }
        }
        if let Some(l) = self.local {
            a.extend(["-L".into(), l.to_string()]);
        }
        a.extend([
            "-e".into(),
            self.peer.ip().to_string(),
            "-r".into(),
            self.peer.port().to_string(),
        ]);
        a.extend([
            "-p".into(),
            self.server.port().to_string(),
            self.server.ip().to_string(),
        ]);
        a
    }

    /// Runs uclient to completion or its time limit.
    pub fn run(&self) -> UclientRun {
        let bin = find_tool("turnutils_uclient")
            .expect("turnutils_uclient (checked by ServerKind::available)");
        let mut cmd = Command::new(bin);
        cmd.args(self.args());
        let output = run_with_timeout(cmd, self.timeout);
        UclientRun {
            output,
            expected_messages: u64::from(self.messages) * u64::from(self.clients),
        }
    }

    /// Runs uclient and asserts that it relayed every message and got every echo back;
    /// returns the summary (printed too).
    pub fn run_zero_loss(&self) -> Summary {
        let mut run = self.run();
        if run.lost_to_an_old_tls_version() {
            println!(
                "uclient {}: a client gave up after its random TLS 1.0/1.1 contexts were \
                 refused (see UclientRun::lost_to_an_old_tls_version); running it once more",
                self.args().join(" ")
            );
            run = self.run();
        }
        let s = run.summary().unwrap_or_else(|e| panic!("{e}"));
        println!("uclient {}: {s}", self.args().join(" "));
        run.assert_zero_loss(&s);
        s
    }
}

/// What one uclient run did.
#[derive(Debug)]
pub struct UclientRun {
    /// The process output.
    pub output: CmdOutput,
    /// Messages uclient was asked to send in total (`-n` × `-m`).
    pub expected_messages: u64,
}

impl UclientRun {
    /// The summary, or an error with the whole output when there is none (uclient hung, or
    /// failed before sending).
    pub fn summary(&self) -> Result<Summary, String> {
        parse_summary(&self.output.combined()).map_err(|e| {
            format!(
                "uclient printed no usable summary ({e})\n{}",
                self.output.report()
            )
        })
    }

    /// What keeps this run from being clean (empty when it is): exit 0, every message sent,
    /// every one received back, nothing lost or dropped.
    pub fn zero_loss_problems(&self, s: &Summary) -> Vec<String> {
        let mut p = Vec::new();
        if !self.output.success() {
            p.push("uclient did not exit with status 0".to_string());
        }
        if s.sent_msgs == 0 {
            p.push("uclient sent nothing".to_string());
        }
        if s.sent_msgs != self.expected_messages {
            p.push(format!(
                "uclient sent {} messages of {}",
                s.sent_msgs, self.expected_messages
            ));
        }
        if s.recv_msgs != s.sent_msgs {
            p.push(format!(
                "{} of {} messages came back through the relay",
                s.recv_msgs, s.sent_msgs
            ));
        }
        if s.lost_packets != 0 || s.send_dropped != 0 {
            p.push(format!(
                "uclient counted {} lost and {} dropped",
                s.lost_packets, s.send_dropped
            ));
        }
        p
    }

    /// Whether the run lost messages after the relay refused one of uclient's TLS
    /// handshakes for its protocol version. With `-S` over TCP, uclient draws a context at
    /// random for every connection among TLS_client_method, TLSv1, TLSv1.1 and TLSv1.2
    /// (coturn's `tls_connect`); turnpike, like any current server, speaks TLS 1.2 and 1.3
    /// only, so half the draws are refused with a handshake_failure alert, and uclient
    /// retries. Now and then a client gives up on one of its allocations that way, and its
    /// messages count as lost: the client's dice, not the relay's loss.
    pub fn lost_to_an_old_tls_version(&self) -> bool {
        let out = self.output.combined();
        out.contains("alert handshake failure")
            && self
                .summary()
                .map_or(true, |s| !self.zero_loss_problems(&s).is_empty())
    }

    /// Asserts that the run was clean (see [`UclientRun::zero_loss_problems`]).
    pub fn assert_zero_loss(&self, s: &Summary) {
        let p = self.zero_loss_problems(s);
        assert!(
            p.is_empty(),
            "uclient run not clean: {}\n{}",
            p.join("; "),
            self.output.report()
        );
    }

    /// Asserts that the run failed to allocate (e.g. bad credentials): non-zero exit in
    /// time, an allocation error printed, nothing received.
    pub fn assert_allocation_refused(&self) {
        let report = self.output.report();
        assert!(
            !self.output.timed_out(),
            "uclient hung instead of failing\n{report}"
        );
        assert!(
            !self.output.success(),
            "uclient succeeded with bad credentials\n{report}"
        );
        assert!(
            self.output
                .combined()
                .contains("Cannot complete Allocation"),
            "uclient failed, but not at the allocation\n{report}"
        );
        if let Ok(s) = parse_summary(&self.output.combined()) {
            assert_eq!(s.recv_msgs, 0, "something was relayed\n{report}");
        }
    }
}

/// The figures of uclient's final summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Messages sent (all clients).
    pub sent_msgs: u64,
    /// Messages received back.
    pub recv_msgs: u64,
    /// Bytes sent (approximate, as uclient says).
    pub sent_bytes: u64,
    /// Bytes received.
    pub recv_bytes: u64,
    /// Lost packets.
    pub lost_packets: u64,
    /// Lost, percent.
    pub lost_percent: f64,
    /// Sends dropped.
    pub send_dropped: u64,
    /// Transmit time, seconds.
    pub transmit_time_s: u64,
    /// Average round-trip delay, ms.
    pub rtt_avg_ms: f64,
    /// Minimum round-trip delay, ms.
    pub rtt_min_ms: u64,
    /// Maximum round-trip delay, ms.
    pub rtt_max_ms: u64,
    /// Average jitter, ms.
    pub jitter_avg_ms: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {} msgs ({} B), received {} msgs ({} B), lost {} ({}%), send dropped {}, \
             transmit {} s, rtt avg {} ms (min {}, max {}), jitter avg {} ms",
            self.sent_msgs,
            self.sent_bytes,
            self.recv_msgs,
            self.recv_bytes,
            self.lost_packets,
            self.lost_percent,
            self.send_dropped,
            self.transmit_time_s,
            self.rtt_avg_ms,
            self.rtt_min_ms,
            self.rtt_max_ms,
            self.jitter_avg_ms
        )
    }
}

/// Parses uclient's final summary out of its whole output. Every line of the summary is
/// required; the last occurrence of each counts.
pub fn parse_summary(text: &str) -> Result<Summary, String> {
    let last = |needle: &str| {
        text.lines()
            .rev()
            .find_map(|l| l.find(needle).map(|i| &l[i + needle.len()..]))
    };
    let mut s = Summary::default();

    // "start_mclient: tot_send_msgs=100, tot_recv_msgs=100" (the progress lines carry "msz=").
    let msgs = last("start_mclient: tot_send_msgs=").ok_or("no `tot_send_msgs` total line")?;
    let (sent, rest) = msgs
        .split_once(", tot_recv_msgs=")
        .ok_or("malformed `tot_send_msgs` line")?;
    s.sent_msgs = num(sent)?;
    s.recv_msgs = num(rest)?;

    let bytes = last("start_mclient: tot_send_bytes ~ ").ok_or("no `tot_send_bytes` total line")?;
    let (sent, rest) = bytes
        .split_once(", tot_recv_bytes ~ ")
        .ok_or("malformed `tot_send_bytes` line")?;
    s.sent_bytes = num(sent)?;
    s.recv_bytes = num(rest)?;

    s.transmit_time_s =
        num(last("Total transmit time is ").ok_or("no `Total transmit time` line")?)?;

    // "Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)"
    let lost = last("Total lost packets ").ok_or("no `Total lost packets` line")?;
    let (n, rest) = lost
        .split_once(" (")
        .ok_or("malformed `Total lost packets` line")?;
    s.lost_packets = num(n)?;
    let (pct, rest) = rest
        .split_once("%)")
        .ok_or("malformed `Total lost packets` line")?;
    s.lost_percent = float(pct)?;
    let dropped = rest
        .split_once("total send dropped ")
        .ok_or("no `total send dropped` figure")?
        .1;
    s.send_dropped = num(dropped.split_once(" (").map(|p| p.0).unwrap_or(dropped))?;

    // "Average round trip delay 0.000000 ms; min = 0 ms, max = 0 ms"
    let rtt = last("Average round trip delay ").ok_or("no `Average round trip delay` line")?;
    let (avg, min, max) = avg_min_max(rtt)?;
    (s.rtt_avg_ms, s.rtt_min_ms, s.rtt_max_ms) = (avg, min, max);

    let jitter = last("Average jitter ").ok_or("no `Average jitter` line")?;
    s.jitter_avg_ms = float(jitter.split_once(" ms").map(|p| p.0).unwrap_or(jitter))?;
    Ok(s)
}

/// "A ms; min = B ms, max = C ms" → (A, B, C).
fn avg_min_max(rest: &str) -> Result<(f64, u64, u64), String> {
    let (avg, rest) = rest
        .split_once(" ms; min = ")
        .ok_or_else(|| format!("malformed figures: {rest}"))?;
    let (min, rest) = rest
        .split_once(" ms, max = ")
        .ok_or_else(|| format!("malformed figures: {rest}"))?;
    let max = rest.split_once(" ms").map(|p| p.0).unwrap_or(rest);
    Ok((float(avg)?, num(min)?, num(max)?))
}

fn num(s: &str) -> Result<u64, String> {
    s.trim().parse().map_err(|_| format!("not a count: {s:?}"))
}

fn float(s: &str) -> Result<f64, String> {
    let s = s.trim();
    // uclient prints "-nan" when nothing came back.
    if s.ends_with("nan") {
        return Ok(f64::NAN);
    }
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output of `turnutils_uclient -n 50 -m 2 -l 170` against coturn 4.6.1 on loopback.
    const CLEAN: &str = "\
0: : Total connect time is 0
1: : start_mclient: msz=2, tot_send_msgs=0, tot_recv_msgs=0, tot_send_bytes ~ 0, tot_recv_bytes ~ 0
5: : start_mclient: msz=2, tot_send_msgs=43, tot_recv_msgs=43, tot_send_bytes ~ 7310, tot_recv_bytes ~ 7310
6: : start_mclient: msz=2, tot_send_msgs=87, tot_recv_msgs=87, tot_send_bytes ~ 14790, tot_recv_bytes ~ 14790
6: : start_mclient: tot_send_msgs=100, tot_recv_msgs=100
6: : start_mclient: tot_send_bytes ~ 17000, tot_recv_bytes ~ 17000
6: : Total transmit time is 6
6: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
6: : Average round trip delay 0.000000 ms; min = 0 ms, max = 0 ms
6: : Average jitter 0.560000 ms; min = 0 ms, max = 4 ms
";

    #[test]
    fn parses_a_clean_run() {
        let s = parse_summary(CLEAN).unwrap();
        assert_eq!((s.sent_msgs, s.recv_msgs), (100, 100));
        assert_eq!((s.sent_bytes, s.recv_bytes), (17000, 17000));
        assert_eq!(
            (s.lost_packets, s.send_dropped, s.transmit_time_s),
            (0, 0, 6)
        );
        assert_eq!((s.rtt_min_ms, s.rtt_max_ms), (0, 0));
        assert!((s.jitter_avg_ms - 0.56).abs() < 1e-9);
    }

    #[test]
    fn parses_a_lossy_run_with_nan_jitter() {
        let text = "\
3: : start_mclient: tot_send_msgs=20, tot_recv_msgs=0
3: : start_mclient: tot_send_bytes ~ 3400, tot_recv_bytes ~ 0
3: : Total transmit time is 3
3: : Total lost packets 20 (100.000000%), total send dropped 0 (0.000000%)
3: : Average round trip delay 0.000000 ms; min = 4294967295 ms, max = 0 ms
3: : Average jitter -nan ms; min = 4294967295 ms, max = 0 ms
";
        let s = parse_summary(text).unwrap();
        assert_eq!((s.sent_msgs, s.recv_msgs, s.lost_packets), (20, 0, 20));
        assert!((s.lost_percent - 100.0).abs() < 1e-9);
        assert!(s.jitter_avg_ms.is_nan());
    }

    #[test]
    fn a_run_without_summary_is_an_error() {
        let text = "0: : ERROR: Cannot complete Allocation\n";
        assert!(parse_summary(text).is_err());
        let progress_only = "5: : start_mclient: msz=1, tot_send_msgs=10, tot_recv_msgs=0, tot_send_bytes ~ 1700, tot_recv_bytes ~ 0\n";
        assert!(parse_summary(progress_only).is_err());
    }

    #[test]
    fn command_line() {
        let mut u = Uclient::new(
            "127.0.0.1:3478".parse().unwrap(),
            "127.0.0.1:3480".parse().unwrap(),
            Credentials::Rest {
                user: "bob".into(),
                secret: "s".into(),
            },
        );
        u.tcp = true;
        u.send_indications = true;
        assert_eq!(
            u.args().join(" "),
            "-t -s -n 50 -m 2 -l 170 -u bob -W s -e 127.0.0.1 -r 3480 -p 3478 127.0.0.1"
        );
    }
}
