//! A streaming reader for tar archives (ustar, GNU and PAX extensions).
//!
//! Hand-written rather than the `tar` crate because layers are untrusted and
//! that crate reads GNU long names and PAX headers whole into memory,
//! whatever size the archive claims; here every piece of metadata has a
//! fixed bound ([`MAX_NAME`], [`MAX_PAX`]) checked before it is read, and
//! checksums are verified. The reader hands each member's body out as a
//! bounded `Read` so the applier streams file contents straight to disk.

use std::io::{self, Read};

/// Longest path or link target accepted (Linux's PATH_MAX).
pub const MAX_NAME: u64 = 4096;
/// Largest PAX extended header accepted.
pub const MAX_PAX: u64 = 1 << 20;
/// Largest single extended attribute value accepted.
const MAX_XATTR: usize = 64 << 10;

const BLOCK: usize = 512;

/// An archive the reader cannot accept.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("i/o error reading the archive")]
    Io(#[from] io::Error),
    #[error("archive ends inside a member")]
    Truncated,
    #[error("header checksum mismatch at byte {0}")]
    Checksum(u64),
    #[error("bad numeric field {field} at byte {offset}")]
    Number { field: &'static str, offset: u64 },
    #[error("{what} of {size} bytes exceeds the limit of {limit}")]
    TooLong {
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("malformed PAX header at byte {0}")]
    Pax(u64),
    #[error("unsupported member type {0:?}")]
    Unsupported(char),
}

/// The kind of an archive member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    HardLink,
    Symlink,
    CharDev,
    BlockDev,
    Dir,
    Fifo,
}

/// One member's metadata, extensions applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// PAX overrides for the next member.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Reads members one by one; call [`TarReader::body`] for each member's data.
pub struct TarReader<R> {
    inner: R,
    offset: u64,
    /// Unread body bytes of the current member, then its padding.
    remaining: u64,
    padding: u64,
    ended: bool,
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: big-endian, first byte's top bit is the marker.
        if field[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut v: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

fn cstr(field: &[u8]) -> Vec<u8> {
    field.iter().copied().take_while(|&b| b != 0).collect()
}

fn parse_pax_time(v: &str) -> Option<(i64, u32)> {
    let (secs, frac) = match v.split_once('.') {
        Some((s, f)) => (s, f),
        None => (v, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    let mut nsec: u32 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        let d = c.to_digit(10)?;
        nsec += d * 10u32.pow(8 - i as u32);
    }
    Some((secs, nsec))
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            offset: 0,
            remaining: 0,
            padding: 0,
            ended: false,
        }
    }

    /// Bytes of archive consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The underlying reader (to drain what follows the end marker).
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), TarError> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                TarError::Truncated
            } else {
                TarError::Io(e)
            }
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, mut n: u64) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.read_exact(&mut buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    fn finish_member(&mut self) -> Result<(), TarError> {
        let n = self.remaining + self.padding;
        self.remaining = 0;
        self.padding = 0;
        self.skip(n)
    }

    /// Reads a whole extension member of `size` bytes (bounded by `limit`).
    fn read_ext(&mut self, size: u64, limit: u64, what: &'static str) -> Result<Vec<u8>, TarError> {
        if size > limit {
            return Err(TarError::TooLong { what, size, limit });
        }
        let mut data = vec![0u8; size as usize];
        self.read_exact(&mut data)?;
        self.skip(pad(size))?;
        Ok(data)
    }

    /// The next member's header, or `None` at the end of the archive.
    pub fn next_header(&mut self) -> Result<Option<Header>, TarError> {
        self.finish_member()?;
        if self.ended {
            return Ok(None);
        }
        let mut pax = Pax::default();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let start = self.offset;
            let mut block = [0u8; BLOCK];
            self.read_exact(&mut block)?;
            if block.iter().all(|&b| b == 0) {
                // End of archive (the second zero block is optional in practice).
                self.ended = true;
                return Ok(None);
            }
            verify_checksum(&block, start)?;
            let num = |field: &'static str, range: std::ops::Range<usize>| {
                parse_octal(&block[range]).ok_or(TarError::Number {
                    field,
                    offset: start,
                })
            };
            let size = num("size", 124..136)?;
            let typeflag = block[156];
            match typeflag {
                b'x' => {
                    let data = self.read_ext(size, MAX_PAX, "PAX header")?;
                    parse_pax(&data, &mut pax, start)?;
                    continue;
                }
                b'g' => {
                    // Global PAX defaults: rare in image layers; bounded and ignored.
                    self.read_ext(size, MAX_PAX, "global PAX header")?;
                    continue;
                }
                b'L' => {
                    long_name = Some(cstr(&self.read_ext(size, MAX_NAME, "long name")?));
                    continue;
                }
                b'K' => {
                    long_link = Some(cstr(&self.read_ext(size, MAX_NAME, "long link name")?));
                    continue;
                }
                _ => {}
            }
            let kind = match typeflag {
                b'0' | 0 | b'7' => Kind::File,
                b'1' => Kind::HardLink,
                b'2' => Kind::Symlink,
                b'3' => Kind::CharDev,
                b'4' => Kind::BlockDev,
                b'5' => Kind::Dir,
                b'6' => Kind::Fifo,
                other => return Err(TarError::Unsupported(other as char)),
            };
            let is_ustar = &block[257..263] == b"ustar\0";
            let mut path = cstr(&block[0..100]);
            if is_ustar && block[345] != 0 {
                let mut full = cstr(&block[345..500]);
                full.push(b'/');
                full.extend_from_slice(&path);
                path = full;
            }
            let size = pax.size.unwrap_or(size);
            let mut header = Header {
                path: pax.path.take().or(long_name.take()).unwrap_or(path),
                link: pax
                    .link
                    .take()
                    .or(long_link.take())
                    .unwrap_or_else(|| cstr(&block[157..257])),
                kind,
                mode: (num("mode", 100..108)? & 0o7777) as u32,
                uid: pax.uid.unwrap_or(num("uid", 108..116)?),
                gid: pax.gid.unwrap_or(num("gid", 116..124)?),
                size,
                mtime: num("mtime", 136..148)? as i64,
                mtime_nsec: 0,
                dev_major: num("devmajor", 329..337)? as u32,
                dev_minor: num("devminor", 337..345)? as u32,
                xattrs: std::mem::take(&mut pax.xattrs),
            };
            if let Some((s, ns)) = pax.mtime {
                header.mtime = s;
                header.mtime_nsec = ns;
            }
            // Only regular files carry data; other kinds may still declare a
            // size (hard links in some writers): skip it.
            self.remaining = size;
            self.padding = pad(size);
            if kind != Kind::File {
                self.finish_member()?;
                header.size = 0;
            }
            return Ok(Some(header));
        }
    }

    /// The current member's data (exactly `size` bytes, then padding).
    pub fn body(&mut self) -> Body<'_, R> {
        Body { tar: self }
    }
}

fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn verify_checksum(block: &[u8; BLOCK], offset: u64) -> Result<(), TarError> {
    let stored = parse_octal(&block[148..156]).ok_or(TarError::Checksum(offset))?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || stored as i64 == signed {
        Ok(())
    } else {
        Err(TarError::Checksum(offset))
    }
}

fn parse_pax(data: &[u8], pax: &mut Pax, offset: u64) -> Result<(), TarError> {
    let bad = || TarError::Pax(offset);
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &rest[sp + 1..len - 1];
        rest = &rest[len..];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let key = std::str::from_utf8(&record[..eq]).map_err(|_| bad())?;
        let value = &record[eq + 1..];
        let text = || std::str::from_utf8(value).map_err(|_| bad());
        match key {
            "path" => pax.path = Some(value.to_vec()),
            "linkpath" => pax.link = Some(value.to_vec()),
            "size" => pax.size = Some(text()?.parse().map_err(|_| bad())?),
            "uid" => pax.uid = Some(text()?.parse().map_err(|_| bad())?),
            "gid" => pax.gid = Some(text()?.parse().map_err(|_| bad())?),
            "mtime" => pax.mtime = Some(parse_pax_time(text()?).ok_or_else(bad)?),
            k if k.starts_with("GNU.sparse.") => return Err(TarError::Unsupported('S')),
            k => {
                if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                    if value.len() > MAX_XATTR {
                        return Err(TarError::TooLong {
                            what: "extended attribute",
                            size: value.len() as u64,
                            limit: MAX_XATTR as u64,
                        });
                    }
                    pax.xattrs.push((name.to_owned(), value.to_vec()));
                }
            }
        }
    }
    Ok(())
}

/// A member's data.
pub struct Body<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: Read> Read for Body<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tar.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.tar.remaining.min(usize::MAX as u64) as usize);
        let n = self.tar.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ends inside a file",
            ));
        }
        self.tar.remaining -= n as u64;
        self.tar.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
        assert_eq!(parse_octal(b"  755 \0"), Some(0o755));
        assert_eq!(parse_octal(b"\0\0\0"), Some(0));
        assert_eq!(parse_octal(b"9"), None);
        assert_eq!(parse_octal(&[0x80, 0, 0, 1, 0]), Some(256));
        assert_eq!(parse_octal(&[0xff, 0, 0]), None);
        assert_eq!(
            parse_octal(&[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time("-3"), Some((-3, 0)));
        assert_eq!(parse_pax_time("x"), None);
    }

    /// One PAX record with its self-inclusive length prefix.
    fn rec(kv: &str) -> String {
        let mut len = kv.len() + 3;
        if len.to_string().len() + kv.len() + 2 != len {
            len += 1;
        }
        format!("{len} {kv}\n")
    }

    #[test]
    fn pax_records() {
        let mut pax = Pax::default();
        let data = rec("path=a/b/c.d") + &rec("SCHILY.xattr.user.k=value");
        parse_pax(data.as_bytes(), &mut pax, 0).unwrap();
        assert_eq!(pax.path.as_deref(), Some(&b"a/b/c.d"[..]));
        assert_eq!(pax.xattrs, vec![("user.k".to_string(), b"value".to_vec())]);
        for bad in [
            &b"99 path=x\n"[..],
            b"x path=y\n",
            b"5 a=b\n",
            b"9 noeq\n\n",
        ] {
            assert!(parse_pax(bad, &mut Pax::default(), 0).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_pax(rec("GNU.sparse.major=1").as_bytes(), &mut Pax::default(), 0),
            Err(TarError::Unsupported('S'))
        ));
    }
}
