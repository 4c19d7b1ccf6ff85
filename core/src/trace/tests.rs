//! Tests of the trace format: round trips, torn tails, corruption, versions, secrets.

use super::*;
use crate::auth::{rest_password, Credentials, OneTimeCredential};
use crate::config::{Config, ListenerConfig};
use crate::ids::Transport;

const SALT: [u8; 16] = [9; 16];

fn config() -> Config {
    let mut cr = Credentials::new("example.org");
    cr.add_user("alice", "pw-a");
    cr.add_user("bob", "pw-b");
    cr.add_rest_secret(b"s3cret");
    cr.insert_one_time(
        "1700000000:x",
        OneTimeCredential {
            password: rest_password(b"s3cret", "1700000000:x"),
            expires_unix_s: 1_700_000_000,
            listener: Some(ListenerId(2)),
        },
    );
    let mut c = Config::new(cr, "192.0.2.1".parse().unwrap());
    c.listeners.push(ListenerConfig {
        id: ListenerId(0),
        transport: Transport::Udp,
        local: "192.0.2.1:3478".parse().unwrap(),
        proxy_protocol: false,
    });
    c.listeners.push(ListenerConfig {
        id: ListenerId(1),
        transport: Transport::Tcp,
        local: "[2001:db8::1]:443".parse().unwrap(),
        proxy_protocol: true,
    });
    c.proxy_protocol_trusted = vec!["10.0.0.0/8".parse().unwrap()];
    c.peer_policy.deny = vec!["203.0.113.0/24".parse().unwrap()];
    c.max_channels = 17;
    c.node = NodePlace { index: 1, count: 3 };
    c
}

fn header() -> Header {
    Header {
        seed: [7; 32],
        start: Instant::from_millis(5),
        start_unix_ms: 1_700_000_000_000,
        salt: SALT,
        producer: "turnpike test".into(),
        payloads: false,
        segment: 0,
        place: NodePlace { index: 1, count: 3 },
        config: ConfigDescription::of(&config(), &SALT),
        version: FORMAT_VERSION,
    }
}

fn secrets() -> ReplaySecrets {
    ReplaySecrets {
        users: vec![
            ("alice".into(), "pw-a".into()),
            ("bob".into(), "pw-b".into()),
        ],
        rest_secrets: vec![b"other".to_vec(), b"s3cret".to_vec()],
        nonce_keys: Vec::new(),
        node_secret: None,
    }
}

fn records() -> Vec<Record<'static>> {
    let now = Instant::from_millis(10);
    vec![
        Record::Input(Input::WallClock {
            now,
            unix_ms: 1_700_000_000_123,
        }),
        Record::Input(Input::Datagram {
            now,
            listener: ListenerId(0),
            from: "198.51.100.7:5000".parse().unwrap(),
            payload: Payload::Full(b"\x00\x01\x00\x00hello"),
        }),
        Record::Input(Input::StreamOpen {
            now,
            conn: ConnId(4),
            listener: ListenerId(1),
            local: "[2001:db8::1]:443".parse().unwrap(),
            remote: "[2001:db8::9]:9999".parse().unwrap(),
        }),
        Record::Input(Input::StreamData {
            now,
            conn: ConnId(4),
            data: Payload::Masked {
                len: 8,
                crc: 77,
                segments: &[0, 4, 0, 0, 0, 0x40, 0, 0, 4, 1, 4, 0, 0, 0],
            },
        }),
        Record::Input(Input::StreamClosed {
            now,
            conn: ConnId(4),
        }),
        Record::Input(Input::RelayBound {
            now,
            relay: RelayId(3),
            result: Err(BindError::AddrInUse),
        }),
        Record::Input(Input::RelayBound {
            now,
            relay: RelayId(4),
            result: Ok(()),
        }),
        Record::Input(Input::RelayDatagram {
            now,
            relay: RelayId(4),
            from: "192.0.2.99:7".parse().unwrap(),
            payload: Payload::Full(&[1, 2, 3]),
        }),
        Record::Input(Input::Timeout { now }),
        Record::Input(Input::Drain { now }),
        Record::Input(Input::DeleteAllocation {
            now,
            id: AllocationId(12),
        }),
        Record::Input(Input::OneTimeAdded(OneTimeDescription {
            username: "u".into(),
            password: [1; 16],
            expires_unix_s: 5,
            listener: None,
        })),
        Record::Input(Input::OneTimeRemoved { username: "u" }),
        Record::Input(Input::OneTimeExpired { wall_unix_s: 6 }),
        Record::Input(Input::ListenerAdded {
            now: Instant::from_nanos(7),
            id: ListenerId(4),
            transport: Transport::Udp,
            local: "127.0.0.1:40000".parse().unwrap(),
            proxy_protocol: false,
        }),
        Record::Input(Input::ListenerReserved {
            listener: ListenerId(4),
            username: "u",
        }),
        Record::Input(Input::ListenerRemoved {
            now: Instant::from_nanos(8),
            id: ListenerId(4),
        }),
        Record::Input(Input::RestSecretAdded {
            fingerprint: [3; 16],
        }),
        Record::Input(Input::LoopMessage {
            now,
            from: LoopId(2),
            msg: LoopMsg::RedeemToken {
                req: 5,
                token: [2, 1, 1, 1, 1, 1, 1, 1],
            },
        }),
        Record::Input(Input::LoopMessage {
            now,
            from: LoopId(0),
            msg: LoopMsg::Lend {
                req: 9,
                credits: 1,
                family: 0,
                ports: vec![50000, 50001],
            },
        }),
        Record::Input(Input::Reload {
            now,
            reload: Box::new(super::reload::ReloadDescription {
                users: vec![("bob".into(), [4; 16])],
                rest_secrets: vec![[5; 16], [6; 16]],
                peer_allow: vec!["192.0.2.0/24".parse().unwrap()],
                peer_deny: vec!["2001:db8::/32".parse().unwrap()],
                allow_loopback: true,
                user_quota: 3,
                total_quota: 99,
                max_bps: 1000,
                total_max_bps: 0,
            }),
        }),
        Record::Outputs {
            count: 3,
            drained: true,
            digest: 0xDEAD_BEEF_0000_0001,
        },
        Record::Panic { message: "boom" },
        Record::End { reason: "shutdown" },
    ]
}

fn file() -> Vec<u8> {
    let mut v = Vec::new();
    encode_header(&header(), &mut v);
    for r in records() {
        encode_record(&r, &mut v);
    }
    v
}

/// What format version 1 could hold: the records but loop messages.
fn v1_records() -> Vec<Record<'static>> {
    records()
        .into_iter()
        .filter(|r| {
            !matches!(
                r,
                Record::Input(Input::LoopMessage { .. } | Input::Reload { .. })
            )
        })
        .collect()
}

/// A file as format version 1 wrote it (no loop place, no `Config::node`).
fn v1_file() -> Vec<u8> {
    let mut h = header();
    h.place = NodePlace::SOLE;
    h.config.node = NodePlace::SOLE;
    let mut v = Vec::new();
    encode_header_version(&h, 1, &mut v).unwrap();
    assert!(encode_header_version(&header(), 1, &mut Vec::new()).is_err());
    assert!(encode_header_version(&h, FORMAT_VERSION + 1, &mut Vec::new()).is_err());
    for r in v1_records() {
        encode_record(&r, &mut v);
    }
    v
}

fn config_bytes(d: &ConfigDescription) -> Vec<u8> {
    let mut v = Vec::new();
    d.encode(&mut Put(&mut v), FORMAT_VERSION);
    v
}

#[test]
fn header_and_records_round_trip() {
    let bytes = file();
    let (h, mut reader) = open(&bytes).unwrap();
    assert_eq!(h.seed, [7; 32]);
    assert_eq!(h.start, Instant::from_millis(5));
    assert_eq!(h.producer, "turnpike test");
    assert_eq!(h.version, FORMAT_VERSION);
    assert_eq!(h.place, NodePlace { index: 1, count: 3 });
    assert_eq!(h.config.node, NodePlace { index: 1, count: 3 });
    assert_eq!(
        config_bytes(&h.config),
        config_bytes(&header().config),
        "every config field survives"
    );
    let got: Vec<Record<'_>> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(got, records());
    assert_eq!(reader.tail(), Some(Tail::Clean));
}

/// Alternate servers are recorded last, only when there are some: a configuration
/// without them is written as before them, and reads back without them.
#[test]
fn alternate_servers_survive_a_round_trip() {
    let plain = ConfigDescription::of(&config(), &SALT);
    let mut c = config();
    c.alternate_servers = vec![
        crate::config::AlternateServer {
            listener: ListenerId(0),
            addr: "192.0.2.2:3478".parse().unwrap(),
            domain: None,
        },
        crate::config::AlternateServer {
            listener: ListenerId(1),
            addr: "[2001:db8::2]:5349".parse().unwrap(),
            domain: Some("turn2.example.org".into()),
        },
    ];
    let with = ConfigDescription::of(&c, &SALT);
    assert!(config_bytes(&with).len() > config_bytes(&plain).len());
    let bytes = config_bytes(&with);
    let back = ConfigDescription::decode(&mut Get::new(&bytes), FORMAT_VERSION).unwrap();
    assert_eq!(back.alternate_servers, c.alternate_servers);
    let bytes = config_bytes(&plain);
    let back = ConfigDescription::decode(&mut Get::new(&bytes), FORMAT_VERSION).unwrap();
    assert!(back.alternate_servers.is_empty());
}

/// The anti-amplification limits are recorded (format 2) when they are not the defaults,
/// and a default configuration is written exactly as before them.
#[test]
fn anti_amplification_limits_are_recorded_when_not_the_defaults() {
    // Format 2 leaves out default limits; format 3 always writes them (the node secret
    // follows).
    let v2 = |d: &ConfigDescription| {
        let mut v = Vec::new();
        d.encode(&mut Put(&mut v), 2);
        v
    };
    let default_d = ConfigDescription::of(&config(), &SALT);
    assert_eq!(
        config_bytes(&default_d).len(),
        v2(&default_d).len() + 24 + 1 + 8
    );
    let default = v2(&default_d);
    let mut c = config();
    c.unauth_amplification_factor = 2;
    c.unauth_source_bytes_per_s = 123_456;
    c.unauth_node_bytes_per_s = 7_654_321;
    c.stream_max_auth_failures = 4;
    let d = ConfigDescription::of(&c, &SALT);
    assert_eq!(v2(&d).len(), default.len() + 24);
    let bytes = config_bytes(&d);
    let back = ConfigDescription::decode(&mut Get::new(&bytes), FORMAT_VERSION).unwrap();
    let c2 = back.to_config(&SALT, &secrets()).unwrap();
    assert_eq!(
        (
            c2.unauth_amplification_factor,
            c2.unauth_source_bytes_per_s,
            c2.unauth_node_bytes_per_s,
            c2.stream_max_auth_failures
        ),
        (2, 123_456, 7_654_321, 4)
    );
    // Format 1 has no place for them.
    let mut v1 = Vec::new();
    d.encode(&mut Put(&mut v1), 1);
    let back = ConfigDescription::decode(&mut Get::new(&v1), 1).unwrap();
    assert_eq!(back.unauth_amplification_factor, 3);
    let back = ConfigDescription::decode(&mut Get::new(&default), 2).unwrap();
    assert_eq!(back.unauth_amplification_factor, 3);
    assert_eq!(back.stream_max_auth_failures, 10);
}

#[test]
fn the_config_comes_back_with_the_supplied_secrets() {
    let h = header();
    let c = h.config.to_config(&SALT, &secrets()).unwrap();
    let orig = config();
    assert_eq!(
        config_bytes(&ConfigDescription::of(&c, &SALT)),
        config_bytes(&ConfigDescription::of(&orig, &SALT))
    );
    let users: Vec<_> = c.credentials.users().collect();
    assert_eq!(users, vec![("alice", "pw-a"), ("bob", "pw-b")]);
    assert_eq!(
        c.credentials.rest_secrets().collect::<Vec<_>>(),
        vec![b"s3cret".as_slice()]
    );
    // The one-time credential was derived from the REST secret, so it is recovered.
    assert_eq!(c.credentials.one_time().count(), 1);
}

#[test]
fn wrong_or_missing_secrets_are_refused_by_name() {
    let h = header();
    let mut s = secrets();
    s.users[1].1 = "wrong".into();
    let e = h.config.to_config(&SALT, &s).unwrap_err();
    assert!(e.to_string().contains("user `bob`"), "{e}");
    let mut s = secrets();
    s.users.remove(0);
    let e = h.config.to_config(&SALT, &s).unwrap_err();
    assert!(e.to_string().contains("`alice`"), "{e}");
    let mut s = secrets();
    s.rest_secrets = vec![b"nope".to_vec()];
    let e = h.config.to_config(&SALT, &s).unwrap_err();
    assert!(e.to_string().contains("REST secret #1"), "{e}");
}

#[test]
fn no_secret_is_written() {
    let bytes = file();
    for secret in [&b"pw-a"[..], b"pw-b", b"s3cret"] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "{secret:?} leaked"
        );
    }
    let otp = rest_password(b"s3cret", "1700000000:x");
    assert!(!bytes.windows(otp.len()).any(|w| w == otp.as_bytes()));
}

#[test]
fn a_torn_tail_is_skipped_and_reported() {
    let bytes = file();
    let whole = records().len();
    let (_, reader) = open(&bytes).unwrap();
    let last_start = {
        let mut r = reader.clone();
        let mut last = 0;
        while let Some(x) = r.next() {
            x.unwrap();
            last = r.offset();
        }
        last
    };
    // Cut anywhere inside the last record.
    for cut in last_start + 1..bytes.len() {
        let (_, mut r) = open(&bytes[..cut]).unwrap();
        let n = r.by_ref().map(Result::unwrap).count();
        assert_eq!(n, whole - 1, "cut at {cut}");
        assert_eq!(
            r.tail(),
            Some(Tail::Torn {
                offset: last_start,
                bytes: cut - last_start
            })
        );
    }
    // Cut exactly at a boundary: clean.
    let (_, mut r) = open(&bytes[..last_start]).unwrap();
    assert_eq!(r.by_ref().count(), whole - 1);
    assert_eq!(r.tail(), Some(Tail::Clean));
}

#[test]
fn a_bad_crc_in_the_middle_is_corruption_at_the_end_a_torn_tail() {
    let bytes = file();
    let (_, mut r) = open(&bytes).unwrap();
    r.next().unwrap().unwrap();
    let second = {
        r.next().unwrap().unwrap();
        r.offset()
    };
    let mut bad = bytes.clone();
    bad[second + 6] ^= 0x55;
    let (_, r) = open(&bad).unwrap();
    let out: Vec<_> = r.collect();
    assert_eq!(out.len(), 2);
    assert!(out[0].is_ok());
    assert_eq!(
        out[1],
        Err(TraceError::Corrupt {
            record: 1,
            offset: second
        })
    );
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let (_, mut r) = open(&bad).unwrap();
    assert_eq!(r.by_ref().count(), records().len() - 1);
    assert!(matches!(r.tail(), Some(Tail::Torn { .. })));
}

#[test]
fn another_version_is_refused_with_a_clear_message() {
    for found in [0u16, FORMAT_VERSION + 1, 0x0101] {
        let mut bytes = file();
        bytes[8..10].copy_from_slice(&found.to_le_bytes());
        let e = open(&bytes).unwrap_err();
        assert_eq!(
            e,
            TraceError::Version {
                found,
                supported: FORMAT_VERSION
            }
        );
        assert_eq!(
            e.to_string(),
            format!("trace format version {found} not supported (this build reads 1 to 3)")
        );
    }
    assert_eq!(open(b"hello").unwrap_err(), TraceError::NotATrace);
    let mut bytes = file();
    bytes[20] ^= 1;
    assert!(matches!(open(&bytes), Err(TraceError::Malformed(_))));
}

#[test]
fn garbage_never_panics() {
    let bytes = file();
    for cut in 0..bytes.len() {
        if let Ok((_, r)) = open(&bytes[..cut]) {
            for x in r {
                let _ = x;
            }
        }
    }
    let mut x: u32 = 1;
    for i in 0..2000 {
        let mut b = bytes.clone();
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let at = (x as usize) % b.len();
        b[at] = (x >> 16) as u8;
        if i % 3 == 0 {
            b.truncate(at.max(1));
        }
        if let Ok((_, r)) = open(&b) {
            for rec in r.flatten() {
                if let Record::Input(
                    Input::Datagram { payload: p, .. } | Input::StreamData { data: p, .. },
                ) = rec
                {
                    let _ = p.bytes();
                }
            }
        }
    }
}

#[test]
fn payload_helpers_mask_or_keep() {
    let cd = [0x40, 0x00, 0x00, 0x03, b'a', b'b', b'c'];
    let mut s = Vec::new();
    let p = Payload::client_datagram(&cd, false, &mut s);
    assert_eq!(p.len(), 7);
    assert_eq!(&p.bytes().unwrap()[..], &[0x40, 0, 0, 3, 0, 0, 0]);
    let mut s = Vec::new();
    assert_eq!(
        Payload::client_datagram(&cd, true, &mut s),
        Payload::Full(&cd)
    );
    let mut s = Vec::new();
    let p = Payload::peer_datagram(b"media", false, &mut s);
    assert_eq!(p.bytes().unwrap().as_ref(), &[0; 5]);
    if let Payload::Masked { crc, .. } = p {
        assert_eq!(crc, crc32fast::hash(b"media"));
    }
}

#[test]
fn a_channel_data_payload_of_five_bytes_is_masked() {
    // Found by the trace_mask fuzz target: a 4-byte literal and a 5-byte zero run encode
    // in 5 + 9 bytes, the size of one literal run of all 9, and such a datagram was kept
    // in full, its media in the clear.
    let cd = [0x40, 0x00, 0x00, 0x05, b's', b'e', b'c', b'r', b't'];
    let mut s = Vec::new();
    let p = Payload::client_datagram(&cd, false, &mut s);
    assert!(matches!(p, Payload::Masked { .. }), "{p:?}");
    assert_eq!(&p.bytes().unwrap()[..], &[0x40, 0, 0, 5, 0, 0, 0, 0, 0]);
    // A control message is still kept in full.
    let stun = [
        0u8, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    let mut s = Vec::new();
    assert_eq!(
        Payload::client_datagram(&stun, false, &mut s),
        Payload::Full(&stun)
    );
}

#[test]
fn version_1_still_reads_as_loop_0_of_1() {
    let bytes = v1_file();
    assert_eq!(&bytes[8..10], &1u16.to_le_bytes());
    let (h, mut reader) = open(&bytes).unwrap();
    assert_eq!(h.version, 1);
    assert_eq!(h.place, NodePlace::SOLE);
    assert_eq!(h.config.node, NodePlace::SOLE);
    let mut want = header().config;
    want.node = NodePlace::SOLE;
    assert_eq!(config_bytes(&h.config), config_bytes(&want));
    let got: Vec<Record<'_>> = reader.by_ref().map(Result::unwrap).collect();
    assert_eq!(got, v1_records());
    assert_eq!(reader.tail(), Some(Tail::Clean));
    // The same header, read as version 2, is one place short: refused, not misread.
    let mut as_v2 = bytes.clone();
    as_v2[8] = 2;
    assert!(matches!(open(&as_v2), Err(TraceError::Malformed(_))));
}

#[test]
fn a_version_1_file_and_its_rewrite_in_the_current_format_differ_only_in_the_header() {
    let v1 = v1_file();
    let (h, reader) = open(&v1).unwrap();
    let mut out = Vec::new();
    encode_header(&h, &mut out);
    for r in reader {
        encode_record(&r.unwrap(), &mut out);
    }
    let (h2, reader) = open(&out).unwrap();
    assert_eq!(h2.version, FORMAT_VERSION);
    assert_eq!(h2.place, NodePlace::SOLE);
    assert_eq!(
        h2.config.node_secret, None,
        "secrets still come from the seed"
    );
    assert_eq!(reader.map(Result::unwrap).collect::<Vec<_>>(), v1_records());
}

/// A file of `header()` and one record with body `body`, framed.
fn raw_record(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_header(&header(), &mut v);
    v.extend_from_slice(&(body.len() as u32).to_le_bytes());
    v.extend_from_slice(body);
    v.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    v
}

#[test]
fn a_loop_message_that_does_not_decode_is_refused() {
    let mut good = Vec::new();
    encode_record(
        &Record::Input(Input::LoopMessage {
            now: Instant::from_millis(1),
            from: LoopId(1),
            msg: LoopMsg::UserRelease {
                username: "alice".into(),
            },
        }),
        &mut good,
    );
    let body = &good[4..good.len() - 4];
    let file = raw_record(body);
    let (_, mut r) = open(&file).unwrap();
    assert!(r.next().unwrap().is_ok());
    // Unknown message kind, a truncated message, a padded one, a length past the end.
    let mut unknown = body.to_vec();
    unknown[15] = 99;
    let mut short = body.to_vec();
    short.pop();
    let mut padded = body.to_vec();
    padded.push(0);
    let mut long = body.to_vec();
    long[11] = 0xFF;
    for bad in [unknown, short, padded, long] {
        let file = raw_record(&bad);
        let (_, mut r) = open(&file).unwrap();
        assert!(
            matches!(r.next(), Some(Err(TraceError::Malformed(_)))),
            "{bad:?}"
        );
        assert!(r.next().is_none());
    }
}

#[test]
fn an_impossible_place_is_refused() {
    for (index, count) in [(0u16, 0u16), (3, 3), (0, MAX_LOOPS + 1)] {
        let mut h = header();
        h.place = NodePlace { index, count };
        let mut v = Vec::new();
        encode_header(&h, &mut v);
        let e = open(&v).unwrap_err();
        assert!(e.to_string().contains("not a place in a node"), "{e}");
        let mut h = header();
        h.config.node = NodePlace { index, count };
        let mut v = Vec::new();
        encode_header(&h, &mut v);
        assert!(matches!(open(&v), Err(TraceError::Malformed(_))));
    }
}

#[test]
fn a_loop_nonce_key_is_taken_from_the_candidates_only_when_it_matches() {
    let key = crate::auth::NonceKey([4; 32]);
    let mut c = config();
    c.nonce_key = Some(key.clone());
    let d = ConfigDescription::of(&c, &SALT);
    let e = d.to_config(&SALT, &secrets()).unwrap_err();
    assert!(e.to_string().contains("nonce key"), "{e}");
    let mut s = secrets();
    s.nonce_keys = vec![crate::auth::NonceKey([5; 32])];
    assert!(d.to_config(&SALT, &s).is_err());
    s.nonce_keys.push(key);
    let back = d.to_config(&SALT, &s).unwrap();
    assert_eq!(back.nonce_key.map(|k| k.0), Some([4; 32]));
    assert_eq!(back.node, NodePlace { index: 1, count: 3 });
}

#[test]
fn loop_files_are_named_after_loop_0s() {
    let base = Path::new("/var/log/trace.bin");
    assert_eq!(loop_path(base, 0), base);
    assert_eq!(loop_path(base, 12), Path::new("/var/log/trace.bin.loop12"));
    for i in [0u16, 1, 7, 255] {
        assert_eq!(loop_base(&loop_path(base, i), i).as_deref(), Some(base));
    }
    assert_eq!(loop_base(Path::new("/var/log/trace.bin.loop1"), 2), None);
}

#[test]
fn the_node_secret_is_written_as_a_fingerprint_and_replay_asks_for_it() {
    use crate::secret::NodeSecret;
    let secret = NodeSecret([0x5a; 32]);
    let mut h = header();
    h.config = ConfigDescription::of(
        &{
            let mut c = config();
            c.node_secret = Some(secret.clone());
            c
        },
        &SALT,
    );
    let mut v = Vec::new();
    encode_header(&h, &mut v);
    assert!(
        !v.windows(32).any(|w| w == secret.0),
        "the node secret is in the header"
    );
    let (back, _) = open(&v).unwrap();
    assert!(back.config.node_secret.is_some());
    let e = back.config.to_config(&SALT, &secrets()).unwrap_err();
    assert!(e.to_string().contains("node_secret"), "{e}");
    let mut s = secrets();
    s.node_secret = Some(NodeSecret([1; 32]));
    let e = back.config.to_config(&SALT, &s).unwrap_err();
    assert!(e.to_string().contains("not the one"), "{e}");
    s.node_secret = Some(secret.clone());
    let c = back.config.to_config(&SALT, &s).unwrap();
    assert_eq!(c.node_secret, Some(secret));
    // Format 2 has no node secret: it reads as "drawn from the seed".
    let mut v2 = Vec::new();
    encode_header_version(&h, 2, &mut v2).unwrap();
    let (old, _) = open(&v2).unwrap();
    assert_eq!(old.config.node_secret, None);
    assert!(old.config.to_config(&SALT, &secrets()).is_ok());
}
