//! The bounded write buffer of one TCP connection.
//!
//! Bytes are written to the socket straight away; what the socket will not take now waits
//! here, up to a bound. A client that does not read (or reads too slowly) fills the bound
//! and is closed, so memory stays bounded whatever the peers send its way.

use std::io::{self, Write};

/// Default bound of one connection's pending bytes.
pub const DEFAULT_LIMIT: usize = 256 * 1024;

/// Pending bytes of one connection, bounded.
#[derive(Debug)]
pub struct WriteBuf {
    buf: Vec<u8>,
    head: usize,
    limit: usize,
}

/// Why a write failed.
#[derive(Debug)]
pub enum WriteError {
    /// The pending bytes would exceed the bound: the reader is too slow.
    Overflow,
    /// The socket failed.
    Io(io::Error),
}

impl WriteBuf {
    /// An empty buffer holding at most `limit` pending bytes.
    pub fn new(limit: usize) -> Self {
        WriteBuf {
            buf: Vec::new(),
            head: 0,
            limit,
        }
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes `data` to `w` after what is already pending: as much as `w` takes now, the
    /// rest queued. Nothing is queued (and `Overflow` is returned) if the bound would be
    /// passed.
    pub fn write<W: Write>(&mut self, w: &mut W, data: &[u8]) -> Result<(), WriteError> {
        if !self.is_empty() {
            // Keep the order: first what waits, then the new bytes.
            self.flush(w).map_err(WriteError::Io)?;
        }
        let mut rest = data;
        if self.is_empty() {
            match write_some(w, rest) {
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) => return Err(WriteError::Io(e)),
            }
        }
        if rest.is_empty() {
            return Ok(());
        }
        if self.len() + rest.len() > self.limit {
            return Err(WriteError::Overflow);
        }
        self.compact();
        self.buf.extend_from_slice(rest);
        Ok(())
    }

    /// Appends `data` after what is pending without writing it yet (a later
    /// [`WriteBuf::flush`] writes everything in one go). Only when the bound would be
    /// passed are pending bytes written to `w` first; `Overflow` if that does not make
    /// room.
    pub fn queue<W: Write>(&mut self, w: &mut W, data: &[u8]) -> Result<(), WriteError> {
        if self.len() + data.len() > self.limit {
            self.flush(w).map_err(WriteError::Io)?;
            if self.len() + data.len() > self.limit {
                return Err(WriteError::Overflow);
            }
        }
        self.compact();
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Writes pending bytes to `w` until none are left or `w` would block.
    pub fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<()> {
        let n = write_some(w, self.pending())?;
        self.consume(n);
        Ok(())
    }

    /// The bytes waiting, in order (for a write made elsewhere, then [`WriteBuf::consume`]).
    pub fn pending(&self) -> &[u8] {
        self.buf.get(self.head..).unwrap_or_default()
    }

    /// Forgets the first `n` pending bytes: the socket took them.
    pub fn consume(&mut self, n: usize) {
        self.head = (self.head + n).min(self.buf.len());
        if self.is_empty() {
            self.buf.clear();
            self.head = 0;
            // Give back the memory of a past burst.
            if self.buf.capacity() > 64 * 1024 {
                self.buf.shrink_to(16 * 1024);
            }
        }
    }

    /// Moves pending bytes to the front when the consumed prefix is large.
    fn compact(&mut self) {
        if self.head > 0 && self.head >= self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
    }
}

/// Writes as much of `data` as `w` takes without blocking. Returns how much.
fn write_some<W: Write>(w: &mut W, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match w.write(data.get(done..).unwrap_or_default()) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes `room` bytes, then would block.
    struct Sink {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room).min(3); // short writes too
            self.room -= n;
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_through_when_the_socket_takes_it() {
        let mut s = Sink {
            room: 100,
            got: Vec::new(),
        };
        let mut b = WriteBuf::new(16);
        b.write(&mut s, b"hello world").unwrap();
        assert!(b.is_empty());
        assert_eq!(s.got, b"hello world");
    }

    #[test]
    fn queues_what_would_block_and_keeps_order() {
        let mut s = Sink {
            room: 4,
            got: Vec::new(),
        };
        let mut b = WriteBuf::new(16);
        b.write(&mut s, b"abcdefgh").unwrap();
        assert_eq!(b.len(), 4);
        b.write(&mut s, b"ij").unwrap();
        assert_eq!(b.len(), 6);
        s.room = 5;
        b.flush(&mut s).unwrap();
        assert_eq!(b.len(), 1);
        s.room = 100;
        b.write(&mut s, b"kl").unwrap();
        assert!(b.is_empty());
        assert_eq!(s.got, b"abcdefghijkl");
    }

    #[test]
    fn slow_reader_overflows_the_bound() {
        let mut s = Sink {
            room: 0,
            got: Vec::new(),
        };
        let mut b = WriteBuf::new(10);
        b.write(&mut s, b"0123456789").unwrap();
        assert!(matches!(b.write(&mut s, b"x"), Err(WriteError::Overflow)));
        assert_eq!(b.len(), 10, "nothing queued past the bound");
    }

    #[test]
    fn queued_bytes_wait_for_the_flush_and_keep_order() {
        let mut s = Sink {
            room: 100,
            got: Vec::new(),
        };
        let mut b = WriteBuf::new(8);
        b.queue(&mut s, b"abc").unwrap();
        b.queue(&mut s, b"def").unwrap();
        assert!(s.got.is_empty(), "nothing written before the flush");
        // Past the bound, what waits is written first to make room.
        b.queue(&mut s, b"ghi").unwrap();
        assert_eq!(s.got, b"abcdef");
        b.write(&mut s, b"jk").unwrap();
        b.flush(&mut s).unwrap();
        assert_eq!(s.got, b"abcdefghijk");
        assert!(b.is_empty());
        // A reader that takes nothing overflows the bound.
        s.room = 0;
        b.queue(&mut s, b"01234567").unwrap();
        assert!(matches!(b.queue(&mut s, b"8"), Err(WriteError::Overflow)));
    }

    #[test]
    fn socket_errors_are_reported() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut b = WriteBuf::new(10);
        assert!(matches!(b.write(&mut Broken, b"x"), Err(WriteError::Io(_))));
    }
}
