//! A bounded byte ring for guest→host data the host socket could not take
//! yet.
//!
//! Its capacity is the credit (`buf_alloc`) the connection advertises to the
//! guest, so an honest guest can never overflow it and a dishonest one gets
//! an error (and an RST) instead of growing VMM memory. The storage is
//! allocated on first use: most connections never need it.

use std::io::{self, IoSlice, Write};

use vm_memory::VolatileSlice;

/// The buffer is full: the guest sent past its credit.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// Bounded FIFO of bytes.
#[derive(Debug)]
pub struct TxBuf {
    data: Box<[u8]>,
    head: usize,
    len: usize,
    cap: usize,
}

impl TxBuf {
    /// An empty buffer that will hold at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            data: Box::default(),
            head: 0,
            len: 0,
            cap,
        }
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left.
    pub fn free(&self) -> usize {
        self.cap - self.len
    }

    fn ensure_storage(&mut self) {
        if self.data.is_empty() {
            self.data = vec![0u8; self.cap].into_boxed_slice();
        }
    }

    /// The two free regions after the tail, in order.
    fn tail_regions(&mut self, n: usize) -> (&mut [u8], &mut [u8]) {
        let tail = (self.head + self.len) % self.cap;
        let first = n.min(self.cap - tail);
        let (before, after) = self.data.split_at_mut(tail);
        (&mut after[..first], &mut before[..n - first])
    }

    /// Appends all of `src`, or nothing if it does not fit.
    pub fn push_slice(&mut self, src: &VolatileSlice<'_, ()>) -> Result<(), Full> {
        let n = src.len();
        if n > self.free() {
            return Err(Full);
        }
        if n == 0 {
            return Ok(());
        }
        self.ensure_storage();
        let (a, b) = self.tail_regions(n);
        let a_len = a.len();
        src.copy_to(a);
        if !b.is_empty() {
            // `offset` cannot fail: a_len < n == src.len().
            if let Ok(rest) = src.offset(a_len) {
                rest.copy_to(b);
            }
        }
        self.len += n;
        Ok(())
    }

    /// Appends all of `src`, or nothing if it does not fit.
    pub fn push_bytes(&mut self, src: &[u8]) -> Result<(), Full> {
        let n = src.len();
        if n > self.free() {
            return Err(Full);
        }
        if n == 0 {
            return Ok(());
        }
        self.ensure_storage();
        let (a, b) = self.tail_regions(n);
        let a_len = a.len();
        a.copy_from_slice(&src[..a_len]);
        b.copy_from_slice(&src[a_len..]);
        self.len += n;
        Ok(())
    }

    /// Writes as much as `w` takes without blocking. Returns the bytes
    /// written; `WouldBlock` is not an error here.
    pub fn flush_to<W: Write>(&mut self, w: &mut W) -> io::Result<usize> {
        let mut total = 0;
        while self.len > 0 {
            let first = self.len.min(self.cap - self.head);
            let second = self.len - first;
            let bufs = [
                IoSlice::new(&self.data[self.head..self.head + first]),
                IoSlice::new(&self.data[..second]),
            ];
            match w.write_vectored(&bufs[..if second > 0 { 2 } else { 1 }]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.head = (self.head + n) % self.cap;
                    self.len -= n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.len == 0 {
            self.head = 0;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `chunk` bytes per call and then blocks.
    struct Trickle {
        out: Vec<u8>,
        chunk: usize,
        calls_left: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.calls_left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls_left -= 1;
            let n = buf.len().min(self.chunk);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn wraps_and_preserves_order() {
        let mut b = TxBuf::new(8);
        let mut w = Trickle {
            out: vec![],
            chunk: 3,
            calls_left: 1,
        };
        b.push_bytes(b"abcdef").unwrap();
        assert_eq!(b.flush_to(&mut w).unwrap(), 3);
        // 3 left, 5 free: this push wraps around the end.
        b.push_bytes(b"ghijk").unwrap();
        assert_eq!(b.push_bytes(b"x"), Err(Full));
        w.calls_left = 100;
        assert_eq!(b.flush_to(&mut w).unwrap(), 8);
        assert_eq!(w.out, b"abcdefghijk");
        assert!(b.is_empty());
    }

    #[test]
    fn volatile_push_wraps() {
        let mut b = TxBuf::new(8);
        b.push_bytes(b"123456").unwrap();
        let mut sink = Trickle {
            out: vec![],
            chunk: 5,
            calls_left: 1,
        };
        b.flush_to(&mut sink).unwrap();
        let mut src = *b"ABCDEFG";
        // SAFETY: `src` outlives the slice and nothing else accesses it.
        let vs = unsafe { VolatileSlice::new(src.as_mut_ptr(), src.len()) };
        assert_eq!(b.push_slice(&vs), Ok(()));
        assert_eq!(b.free(), 0);
        sink.calls_left = 10;
        sink.chunk = 100;
        b.flush_to(&mut sink).unwrap();
        assert_eq!(sink.out, b"123456ABCDEFG");
    }
}
