//! Little-endian primitives of the trace format: fixed-width integers, length-prefixed
//! byte strings and socket addresses. Reading never panics: every shortfall is an error.

use super::TraceError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Appends primitives to a byte vector.
pub(crate) struct Put<'a>(pub &'a mut Vec<u8>);

impl Put<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    /// A length (u32, saturating: callers bound what they write far below 4 GiB).
    pub fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    pub fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
    pub fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.u8(4);
                self.raw(&a.octets());
            }
            IpAddr::V6(a) => {
                self.u8(6);
                self.raw(&a.octets());
            }
        }
    }
    pub fn addr(&mut self, a: SocketAddr) {
        self.ip(a.ip());
        self.u16(a.port());
    }
    /// A duration in milliseconds (every duration of the core config is whole ms or more).
    pub fn duration_ns(&mut self, d: core::time::Duration) {
        self.u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// Reads primitives from a byte slice.
pub(crate) struct Get<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Get<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Get { buf, pos: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], TraceError> {
        let end = self.pos.checked_add(n).ok_or_else(short)?;
        let s = self.buf.get(self.pos..end).ok_or_else(short)?;
        self.pos = end;
        Ok(s)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], TraceError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, TraceError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, TraceError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, TraceError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, TraceError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn bool(&mut self) -> Result<bool, TraceError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(TraceError::Malformed(format!("boolean byte {b}"))),
        }
    }
    pub fn len(&mut self) -> Result<usize, TraceError> {
        Ok(self.u32()? as usize)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], TraceError> {
        let n = self.len()?;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<&'a str, TraceError> {
        core::str::from_utf8(self.bytes()?)
            .map_err(|_| TraceError::Malformed("text that is not UTF-8".into()))
    }
    pub fn opt_str(&mut self) -> Result<Option<&'a str>, TraceError> {
        Ok(if self.bool()? {
            Some(self.str()?)
        } else {
            None
        })
    }
    pub fn ip(&mut self) -> Result<IpAddr, TraceError> {
        match self.u8()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            f => Err(TraceError::Malformed(format!("address family {f}"))),
        }
    }
    pub fn addr(&mut self) -> Result<SocketAddr, TraceError> {
        let ip = self.ip()?;
        Ok(SocketAddr::new(ip, self.u16()?))
    }
    pub fn duration_ns(&mut self) -> Result<core::time::Duration, TraceError> {
        Ok(core::time::Duration::from_nanos(self.u64()?))
    }
    /// A count of items that each take at least `min_item` bytes: refuses counts the
    /// remaining bytes cannot hold, so a corrupt count never reserves memory.
    pub fn count(&mut self, min_item: usize) -> Result<usize, TraceError> {
        let n = self.len()?;
        let left = self.buf.len().saturating_sub(self.pos);
        if n.saturating_mul(min_item.max(1)) > left {
            return Err(short());
        }
        Ok(n)
    }
}

fn short() -> TraceError {
    TraceError::Malformed("a field runs past the end of its record".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut v = Vec::new();
        let mut p = Put(&mut v);
        p.u8(7);
        p.u16(0xBEEF);
        p.u32(0xDEAD_BEEF);
        p.u64(u64::MAX - 3);
        p.bool(true);
        p.str("héllo");
        p.opt_str(None);
        p.opt_str(Some("x"));
        p.addr("[2001:db8::1]:3478".parse().unwrap());
        p.addr("192.0.2.1:9".parse().unwrap());
        let mut g = Get::new(&v);
        assert_eq!(g.u8().unwrap(), 7);
        assert_eq!(g.u16().unwrap(), 0xBEEF);
        assert_eq!(g.u32().unwrap(), 0xDEAD_BEEF);
        assert_eq!(g.u64().unwrap(), u64::MAX - 3);
        assert!(g.bool().unwrap());
        assert_eq!(g.str().unwrap(), "héllo");
        assert_eq!(g.opt_str().unwrap(), None);
        assert_eq!(g.opt_str().unwrap(), Some("x"));
        assert_eq!(
            g.addr().unwrap(),
            "[2001:db8::1]:3478".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            g.addr().unwrap(),
            "192.0.2.1:9".parse::<SocketAddr>().unwrap()
        );
        assert!(g.is_empty());
        assert!(g.u8().is_err());
    }

    #[test]
    fn short_and_bad_input_is_an_error() {
        assert!(Get::new(&[1, 0]).u32().is_err());
        assert!(Get::new(&[9]).ip().is_err());
        assert!(Get::new(&[2]).bool().is_err());
        // A length larger than what follows.
        assert!(Get::new(&[200, 0, 0, 0, 1]).bytes().is_err());
        assert!(Get::new(&[0xFF, 0xFF, 0xFF, 0xFF]).count(1).is_err());
    }
}
