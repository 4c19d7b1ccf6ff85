//! The table of dynamic UDP ports a loop serves (`turn_udp_port = "dynamic"`): each port's
//! listeners and when its credential expires.

use turnpike_core::ListenerId;

/// The dynamic ports a loop serves.
#[derive(Debug, Default)]
pub struct DynamicPorts {
    open: Vec<Served>,
}

#[derive(Debug)]
struct Served {
    listeners: Vec<ListenerId>,
    expires_unix_s: u64,
}

impl DynamicPorts {
    /// Records a port served by `listeners` until `expires_unix_s`.
    pub fn add(&mut self, listeners: Vec<ListenerId>, expires_unix_s: u64) {
        self.open.push(Served {
            listeners,
            expires_unix_s,
        });
    }

    /// Forgets the ports whose credential expired before `wall_s` and none of whose
    /// listeners is `in_use`, and returns their listeners, to be closed.
    pub fn take_done(
        &mut self,
        wall_s: u64,
        in_use: impl Fn(ListenerId) -> bool,
    ) -> Vec<ListenerId> {
        let mut done = Vec::new();
        self.open.retain(|d| {
            let over = d.expires_unix_s < wall_s && !d.listeners.iter().any(|l| in_use(*l));
            if over {
                done.extend_from_slice(&d.listeners);
            }
            !over
        });
        done
    }

    /// How many ports are open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_closes_once_expired_and_unused() {
        let mut d = DynamicPorts::default();
        d.add(vec![ListenerId(4), ListenerId(5)], 100);
        d.add(vec![ListenerId(6)], 200);
        assert!(d.take_done(100, |_| false).is_empty(), "not expired yet");
        // Expired, but an allocation uses its IPv6 listener: kept.
        assert!(d.take_done(150, |l| l == ListenerId(5)).is_empty());
        assert_eq!(
            d.take_done(150, |_| false),
            vec![ListenerId(4), ListenerId(5)]
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d.take_done(201, |_| false), vec![ListenerId(6)]);
        assert!(d.is_empty());
    }
}
