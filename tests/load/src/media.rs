//! Media-shaped offers: what a relay carries at a fraction of its capacity.
//!
//! - **Audio**: every flow sends one packet every 20 ms (50 packets/s, an Opus frame), the
//!   flows' phases spread evenly over the period, so each millisecond a few flows send one
//!   packet each.
//! - **Video**: every flow sends a frame every 33 ms (30 frames/s) as a burst of 5–20
//!   packets of 1 200 bytes back to back, the phases spread evenly too.
//!
//! A mix is some flows of each. The schedule is deterministic (burst lengths from a fixed
//! seed), so two servers see the same offer.

/// Period of an audio flow, nanoseconds.
pub const AUDIO_PERIOD_NS: u64 = 20_000_000;
/// Period of a video flow (one frame), nanoseconds.
pub const VIDEO_PERIOD_NS: u64 = 33_333_333;
/// Payload bytes of a video packet.
pub const VIDEO_SIZE: usize = 1200;
/// Fewest and most packets of a video frame.
pub const VIDEO_BURST: (u64, u64) = (5, 20);

/// How many flows of each kind: flows `0..audio` are audio, the next `video` are video.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Media {
    /// Audio flows (50 packets/s each).
    pub audio: usize,
    /// Video flows (a burst of 5–20 packets 30 times a second each).
    pub video: usize,
}

impl Media {
    /// Flows in all.
    pub fn flows(self) -> usize {
        self.audio + self.video
    }

    /// Packets per second offered, on average.
    pub fn rate(self) -> f64 {
        let burst = (VIDEO_BURST.0 + VIDEO_BURST.1) as f64 / 2.0;
        self.audio as f64 * 1e9 / AUDIO_PERIOD_NS as f64
            + self.video as f64 * burst * 1e9 / VIDEO_PERIOD_NS as f64
    }
}

/// When each flow sends next.
pub struct Schedule {
    media: Media,
    /// Per flow: the next send, nanoseconds from the start.
    next_at: Vec<u64>,
    rng: u64,
}

impl Schedule {
    /// The schedule of `media`, phases spread evenly within each kind.
    pub fn new(media: Media) -> Schedule {
        let spread = |i: usize, n: usize, period: u64| period * i as u64 / n.max(1) as u64;
        let next_at = (0..media.audio)
            .map(|i| spread(i, media.audio, AUDIO_PERIOD_NS))
            .chain((0..media.video).map(|i| spread(i, media.video, VIDEO_PERIOD_NS)))
            .collect();
        Schedule {
            media,
            next_at,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Calls `send(flow, payload_bytes, packets)` for every flow due at `elapsed`
    /// (nanoseconds from the start; `audio_size` is an audio packet's payload) and returns
    /// how long until the next flow is due.
    pub fn due(
        &mut self,
        elapsed: u64,
        audio_size: usize,
        mut send: impl FnMut(usize, usize, u64),
    ) -> u64 {
        let mut next = u64::MAX;
        for (flow, at) in self.next_at.iter_mut().enumerate() {
            // A flow that fell behind (the generator was descheduled) sends what it owes,
            // as a codec would not; count it and move on.
            if *at <= elapsed {
                if flow < self.media.audio {
                    send(flow, audio_size, 1);
                    *at += AUDIO_PERIOD_NS;
                } else {
                    self.rng ^= self.rng << 13;
                    self.rng ^= self.rng >> 7;
                    self.rng ^= self.rng << 17;
                    let span = VIDEO_BURST.1 - VIDEO_BURST.0 + 1;
                    send(flow, VIDEO_SIZE, VIDEO_BURST.0 + self.rng % span);
                    *at += VIDEO_PERIOD_NS;
                }
            }
            next = next.min(*at);
        }
        next.saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_flows_send_fifty_a_second_spread_over_the_period() {
        let mut s = Schedule::new(Media {
            audio: 20,
            video: 0,
        });
        let mut sent = vec![0u64; 20];
        let mut per_ms = Vec::new();
        for ms in 0..1000u64 {
            let mut n = 0;
            s.due(ms * 1_000_000, 200, |f, size, k| {
                assert_eq!(size, 200);
                sent[f] += k;
                n += k;
            });
            per_ms.push(n);
        }
        assert!(sent.iter().all(|&n| n == 50), "{sent:?}");
        // 20 flows over 20 ms: one packet each millisecond, never a burst.
        assert!(per_ms.iter().all(|&n| n == 1), "{per_ms:?}");
    }

    #[test]
    fn video_flows_send_bursts_thirty_times_a_second() {
        let m = Media { audio: 2, video: 3 };
        let mut s = Schedule::new(m);
        let mut packets = 0;
        let mut frames = 0;
        for ms in 0..1000u64 {
            s.due(ms * 1_000_000, 200, |f, size, k| {
                if f >= 2 {
                    assert_eq!(size, VIDEO_SIZE);
                    assert!((5..=20).contains(&k));
                    frames += 1;
                }
                packets += k;
            });
        }
        assert_eq!(frames, 90);
        let expected = m.rate();
        assert!(
            (packets as f64 - expected).abs() < expected * 0.2,
            "{packets} vs {expected}"
        );
        assert!((m.rate() - (100.0 + 3.0 * 12.5 * 30.0)).abs() < 1.0);
    }
}
