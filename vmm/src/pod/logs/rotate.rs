//! A log file with a size cap and rotation, as docker's `max-size` and
//! `max-file`: `NAME` is written until the next write would take it past
//! `max_size`; then `NAME.(k-1)` becomes `NAME.k` (the oldest, `NAME.(max_file-1)`,
//! is replaced), ..., `NAME` becomes `NAME.1`, and a new `NAME` is made.
//! With `max_file` 1 the full file is unlinked and started afresh.
//!
//! Writes are whole records (the callers never split one), so a file ends
//! on a record boundary and never exceeds `max_size` as long as each write
//! is no larger than that; a larger one goes alone into a fresh file.
//! Readers that follow a file hold its descriptor across the rename and
//! find its successor by inode ([`super::read`]).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The path of generation `n` of `base` (0 is the live file).
pub fn generation(base: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return base.to_owned();
    }
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// An append-only file rotated by size.
#[derive(Debug)]
pub struct RotatingFile {
    base: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_file: u32,
}

impl RotatingFile {
    /// Opens (appending) or creates `base`, private to its user; rotated
    /// files beyond `max_file` left by an earlier, larger setting are removed.
    pub fn open(base: &Path, max_size: u64, max_file: u32) -> io::Result<RotatingFile> {
        let max_file = max_file.max(1);
        let file = crate::private::file_options()
            .create(true)
            .append(true)
            .open(base)?;
        let size = file.metadata()?.len();
        let mut n = max_file;
        while generation(base, n).exists() {
            std::fs::remove_file(generation(base, n))?;
            n += 1;
        }
        Ok(RotatingFile {
            base: base.to_owned(),
            file,
            size,
            max_size: max_size.max(1),
            max_file,
        })
    }

    /// Appends `data`, rotating first if it would not fit.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.size > 0 && self.size + data.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    /// Moves every generation one up and starts a new live file.
    fn rotate(&mut self) -> io::Result<()> {
        if self.max_file == 1 {
            std::fs::remove_file(&self.base)?;
        } else {
            for n in (1..self.max_file).rev() {
                match std::fs::rename(generation(&self.base, n - 1), generation(&self.base, n)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        self.file = crate::private::file_options()
            .create(true)
            .append(true)
            .open(&self.base)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("husk-rotate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap_or_default()
    }

    #[test]
    fn rotates_by_size_and_keeps_max_file() {
        let dir = scratch("keep");
        let base = dir.join("a.log");
        let mut f = RotatingFile::open(&base, 10, 3).unwrap();
        for rec in [
            "0123\n", "4567\n", "89ab\n", "cdef\n", "ghij\n", "klmn\n", "op\n",
        ] {
            f.write(rec.as_bytes()).unwrap();
        }
        assert_eq!(read(&base), "op\n");
        assert_eq!(read(&generation(&base, 1)), "ghij\nklmn\n");
        assert_eq!(read(&generation(&base, 2)), "89ab\ncdef\n");
        assert!(!generation(&base, 3).exists());
        for n in 0..3 {
            assert!(std::fs::metadata(generation(&base, n)).unwrap().len() <= 10);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_file_is_restarted_and_a_big_write_goes_alone() {
        let dir = scratch("one");
        let base = dir.join("c.log");
        let mut f = RotatingFile::open(&base, 8, 1).unwrap();
        f.write(b"abcdef\n").unwrap();
        f.write(b"gh\n").unwrap();
        assert_eq!(read(&base), "gh\n");
        f.write(b"0123456789\n").unwrap();
        assert_eq!(read(&base), "0123456789\n");
        assert!(!generation(&base, 1).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reopening_appends_and_drops_extra_generations() {
        let dir = scratch("reopen");
        let base = dir.join("b.log");
        let mut f = RotatingFile::open(&base, 4, 4).unwrap();
        for rec in ["aaa\n", "bbb\n", "ccc\n", "ddd\n"] {
            f.write(rec.as_bytes()).unwrap();
        }
        assert!(generation(&base, 3).exists());
        drop(f);
        let mut f = RotatingFile::open(&base, 8, 2).unwrap();
        assert!(!generation(&base, 2).exists() && !generation(&base, 3).exists());
        f.write(b"e\n").unwrap();
        assert_eq!(read(&base), "ddd\ne\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
