//! Applies one layer's archive members to the root file system.
//!
//! Every member path is checked (no `..`, not absolute) and its parent is
//! resolved inside the root with `openat2(RESOLVE_IN_ROOT)`; the member
//! itself is created with `*at` calls on that parent and never followed, so
//! neither `..`, nor absolute paths, nor symlinks planted by earlier members
//! or layers can lead a write outside the root. An existing entry of the
//! wrong type (a symlink where a directory is wanted, a file where a link
//! goes) is removed first, never written through.
//!
//! OCI whiteouts: `.wh.NAME` deletes NAME from lower layers; `.wh..wh..opq`
//! empties its directory of everything lower layers put there. Members of
//! the current layer are never affected by its own whiteouts.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use husk_proto::SpecialFiles;

use super::tar::{Header, Kind};
use crate::rooted::Root;

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// Why a member was refused or could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{reason}")]
    Hostile { reason: &'static str },
    #[error("cannot read the archive")]
    Read(#[source] io::Error),
    #[error("cannot {op}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

fn hostile(reason: &'static str) -> ApplyError {
    ApplyError::Hostile { reason }
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> ApplyError {
    move |source| ApplyError::Io { op, source }
}

fn check(ret: libc::c_int, op: &'static str) -> Result<(), ApplyError> {
    if ret < 0 {
        Err(ApplyError::Io {
            op,
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(())
    }
}

/// A member path split into checked components. Leading `./` and `/` are
/// not stripped: an absolute path or `..` anywhere is refused.
pub fn normalize(raw: &[u8]) -> Result<Vec<&[u8]>, ApplyError> {
    if raw.first() == Some(&b'/') {
        return Err(hostile("absolute path"));
    }
    if raw.contains(&0) {
        return Err(hostile("NUL byte in path"));
    }
    let mut parts = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(hostile("`..` in path")),
            c => parts.push(c),
        }
    }
    Ok(parts)
}

fn join(parts: &[&[u8]]) -> PathBuf {
    let mut p = Vec::new();
    for (i, c) in parts.iter().enumerate() {
        if i > 0 {
            p.push(b'/');
        }
        p.extend_from_slice(c);
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&p))
}

fn cname(name: &[u8]) -> Result<CString, ApplyError> {
    CString::new(name).map_err(|_| hostile("NUL byte in path"))
}

/// What `fstatat` says is at a name (without following it).
fn stat_at(dir: &OwnedFd, name: &CString) -> Result<Option<libc::stat>, ApplyError> {
    // SAFETY: stat is plain data, fully written on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, C string and out-pointer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        return Ok(Some(st));
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::NotFound {
        Ok(None)
    } else {
        Err(io_err("inspect an existing entry")(e))
    }
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Removes `name` in `dir`, recursively for a directory, never following symlinks.
fn remove_at(dir: &OwnedFd, name: &CString) -> Result<(), ApplyError> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(());
    };
    if is_dir(&st) {
        // std's remove_dir_all opens each level with O_NOFOLLOW relative to
        // the last: symlinks inside are removed, not followed. The prefix is
        // our own, already-resolved directory descriptor.
        let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        path.extend_from_slice(name.as_bytes());
        return std::fs::remove_dir_all(std::ffi::OsStr::from_bytes(&path))
            .map_err(io_err("remove a directory"));
    }
    // SAFETY: valid fd and C string.
    let r = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    check(r, "remove an entry")
}

/// Counters for the report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub entries: u64,
    pub stripped: u64,
}

/// Applies members of successive layers to one root.
pub struct Applier {
    root: Root,
    policy: SpecialFiles,
    /// Whether to chown (false when not root: tests as a normal user).
    chown: bool,
    /// Paths created by the current layer (whiteouts must spare them).
    this_layer: HashSet<PathBuf>,
    /// Directories whose mtime is set once the layer is complete.
    dir_times: Vec<(PathBuf, libc::timespec)>,
    /// The last resolved parent directory, reused while nothing is removed.
    cached_parent: Option<(PathBuf, OwnedFd)>,
    pub stats: Stats,
    buf: Vec<u8>,
}

impl Applier {
    pub fn new(root: Root, policy: SpecialFiles) -> Self {
        Applier {
            root,
            policy,
            // SAFETY: geteuid cannot fail.
            chown: unsafe { libc::geteuid() } == 0,
            this_layer: HashSet::new(),
            dir_times: Vec::new(),
            cached_parent: None,
            stats: Stats::default(),
            buf: vec![0u8; 256 << 10],
        }
    }

    /// Opens (creating missing directories, mode 0755) directory `parts`.
    fn parent(&mut self, parts: &[&[u8]]) -> Result<OwnedFd, ApplyError> {
        let path = join(parts);
        if self.cached_parent.as_ref().is_none_or(|(p, _)| *p != path) {
            let fd = match self.root.open_dir(&path) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.make_dirs(parts)?,
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(hostile("a parent directory is not a directory"))
                }
                Err(e) => return Err(io_err("open a parent directory")(e)),
            };
            self.cached_parent = Some((path, fd));
        }
        match &self.cached_parent {
            Some((_, fd)) => fd.try_clone().map_err(io_err("dup a descriptor")),
            None => Err(io_err("open a parent directory")(
                io::ErrorKind::NotFound.into(),
            )),
        }
    }

    /// Creates the missing directories of `parts` one level at a time,
    /// resolving each level from the root (so a symlink met on the way is
    /// followed exactly as a later lookup would follow it).
    fn make_dirs(&mut self, parts: &[&[u8]]) -> Result<OwnedFd, ApplyError> {
        let mut fd = self
            .root
            .open_dir(Path::new(""))
            .map_err(io_err("open the root"))?;
        for i in 0..parts.len() {
            let name = cname(parts[i])?;
            // SAFETY: valid fd and C string.
            let r = unsafe { libc::mkdirat(fd.as_raw_fd(), name.as_ptr(), 0o755) };
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::AlreadyExists {
                return Err(io_err("create a parent directory")(
                    io::Error::last_os_error(),
                ));
            }
            fd = self
                .root
                .open_dir(&join(&parts[..=i]))
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ENOTDIR) => hostile("a parent directory is not a directory"),
                    // It exists (mkdirat said so) but does not resolve.
                    Some(libc::ENOENT) => hostile("a parent directory is a dangling symlink"),
                    _ => io_err("open a parent directory")(e),
                })?;
        }
        Ok(fd)
    }

    /// Starts a new layer.
    pub fn begin_layer(&mut self) {
        self.this_layer.clear();
    }

    /// Applies one member; `body` yields its data (regular files only).
    pub fn apply(&mut self, h: &Header, body: &mut dyn Read) -> Result<(), ApplyError> {
        self.stats.entries += 1;
        let parts = normalize(&h.path)?;
        let Some((&name, dir)) = parts.split_last() else {
            // The root itself ("./"): nothing to create.
            return Ok(());
        };
        if name == OPAQUE {
            return self.opaque(dir);
        }
        if let Some(target) = name.strip_prefix(WHITEOUT) {
            if target.is_empty() || target == b"." || target == b".." {
                return Err(hostile("malformed whiteout"));
            }
            return self.whiteout(dir, target);
        }
        let mut mode = h.mode;
        if mode & 0o6000 != 0 && matches!(h.kind, Kind::File | Kind::Dir) {
            match self.policy {
                SpecialFiles::Refuse => return Err(hostile("setuid or setgid file")),
                SpecialFiles::Strip => {
                    mode &= !0o6000;
                    self.stats.stripped += 1;
                }
                SpecialFiles::Keep => {}
            }
        }
        if matches!(h.kind, Kind::CharDev | Kind::BlockDev) {
            match self.policy {
                SpecialFiles::Refuse => return Err(hostile("device node")),
                SpecialFiles::Strip => {
                    self.stats.stripped += 1;
                    return Ok(());
                }
                SpecialFiles::Keep => {}
            }
        }
        let full = join(&parts);
        let cn = cname(name)?;
        let link_target = if h.kind == Kind::HardLink {
            Some(self.hardlink_source(&h.link)?)
        } else {
            None
        };
        let parent = self.parent(dir)?;
        self.this_layer.insert(full.clone());
        match h.kind {
            Kind::File => self.write_file(&parent, &cn, h, mode, body),
            Kind::Dir => self.make_dir(&parent, &cn, &full, h, mode),
            Kind::Symlink => {
                let target =
                    CString::new(h.link.clone()).map_err(|_| hostile("NUL byte in link"))?;
                self.create_replacing(&parent, &cn, false, "create a symlink", || {
                    // SAFETY: valid C strings and fd.
                    unsafe { libc::symlinkat(target.as_ptr(), parent.as_raw_fd(), cn.as_ptr()) }
                })?;
                self.chown_at(&parent, &cn, h)?;
                set_times_at(&parent, &cn, h)
            }
            Kind::HardLink => {
                let Some((src_dir, src_name)) = link_target else {
                    return Err(hostile("hard link without a target"));
                };
                self.create_replacing(&parent, &cn, false, "create a hard link", || {
                    // SAFETY: valid fds and C strings; flags 0 links the
                    // entry itself (a symlink stays a symlink).
                    unsafe {
                        libc::linkat(
                            src_dir.as_raw_fd(),
                            src_name.as_ptr(),
                            parent.as_raw_fd(),
                            cn.as_ptr(),
                            0,
                        )
                    }
                })?;
                Ok(())
            }
            Kind::Fifo | Kind::CharDev | Kind::BlockDev => {
                let (fmt, dev) = match h.kind {
                    Kind::Fifo => (libc::S_IFIFO, 0),
                    Kind::CharDev => (libc::S_IFCHR, libc::makedev(h.dev_major, h.dev_minor)),
                    _ => (libc::S_IFBLK, libc::makedev(h.dev_major, h.dev_minor)),
                };
                self.create_replacing(&parent, &cn, false, "create a special file", || {
                    // SAFETY: valid fd and C string, integer mode and device.
                    unsafe {
                        libc::mknodat(parent.as_raw_fd(), cn.as_ptr(), fmt | (mode & 0o777), dev)
                    }
                })?;
                self.chown_at(&parent, &cn, h)?;
                // SAFETY: valid fd and C string.
                let r = unsafe { libc::fchmodat(parent.as_raw_fd(), cn.as_ptr(), mode, 0) };
                check(r, "set a mode")?;
                set_times_at(&parent, &cn, h)
            }
        }
    }

    /// Runs `create` (a syscall creating `name`); if the name is taken,
    /// removes what is there (unless `keep_dir` and it is a directory) and
    /// runs it once more. Creating first and replacing only on EEXIST saves
    /// a lookup per member in the common case. Returns the syscall's result,
    /// or -1 when an existing directory was kept.
    fn create_replacing(
        &mut self,
        parent: &OwnedFd,
        name: &CString,
        keep_dir: bool,
        op: &'static str,
        mut create: impl FnMut() -> libc::c_int,
    ) -> Result<libc::c_int, ApplyError> {
        let r = create();
        if r >= 0 {
            return Ok(r);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::AlreadyExists {
            return Err(io_err(op)(err));
        }
        if keep_dir && stat_at(parent, name)?.is_some_and(|st| is_dir(&st)) {
            return Ok(-1);
        }
        remove_at(parent, name)?;
        self.cached_parent = None;
        let r = create();
        if r < 0 {
            return Err(io_err(op)(io::Error::last_os_error()));
        }
        Ok(r)
    }

    /// Resolves a hard link's source inside the root: (its directory, its name).
    fn hardlink_source(&mut self, link: &[u8]) -> Result<(OwnedFd, CString), ApplyError> {
        let parts = normalize(link)?;
        let Some((&name, dir)) = parts.split_last() else {
            return Err(hostile("hard link to the root"));
        };
        let dir_fd = match self.root.open_dir(&join(dir)) {
            Ok(fd) => fd,
            Err(_) => return Err(hostile("hard link to a missing file")),
        };
        let cn = cname(name)?;
        match stat_at(&dir_fd, &cn)? {
            None => Err(hostile("hard link to a missing file")),
            Some(st) if is_dir(&st) => Err(hostile("hard link to a directory")),
            Some(_) => Ok((dir_fd, cn)),
        }
    }

    fn write_file(
        &mut self,
        parent: &OwnedFd,
        name: &CString,
        h: &Header,
        mode: u32,
        body: &mut dyn Read,
    ) -> Result<(), ApplyError> {
        let fd = self.create_replacing(parent, name, false, "create a file", || {
            // SAFETY: valid fd and C string; O_EXCL|O_NOFOLLOW never opens an
            // existing entry or follows a symlink.
            unsafe {
                libc::openat(
                    parent.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o600,
                )
            }
        })?;
        // SAFETY: a fresh descriptor owned by nobody else.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut left = h.size;
        while left > 0 {
            let want = (left.min(self.buf.len() as u64)) as usize;
            let n = body.read(&mut self.buf[..want]).map_err(ApplyError::Read)?;
            if n == 0 {
                return Err(ApplyError::Read(io::ErrorKind::UnexpectedEof.into()));
            }
            file.write_all(&self.buf[..n])
                .map_err(io_err("write a file"))?;
            left -= n as u64;
        }
        if self.chown && (h.uid != 0 || h.gid != 0) {
            // SAFETY: fchown on our fd with integer ids.
            let r = unsafe { libc::fchown(file.as_raw_fd(), h.uid as u32, h.gid as u32) };
            check(r, "set ownership")?;
        }
        // After chown, which clears setuid bits.
        // SAFETY: fchmod on our fd.
        let r = unsafe { libc::fchmod(file.as_raw_fd(), mode) };
        check(r, "set a mode")?;
        set_xattrs(&file, h);
        let times = [timespec(h), timespec(h)];
        // SAFETY: futimens with a valid two-element array.
        let r = unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
        check(r, "set times")
    }

    fn make_dir(
        &mut self,
        parent: &OwnedFd,
        name: &CString,
        full: &Path,
        h: &Header,
        mode: u32,
    ) -> Result<(), ApplyError> {
        // An existing directory is kept (layers add to it); anything else
        // there (a symlink, a file) is replaced, never followed.
        self.create_replacing(parent, name, true, "create a directory", || {
            // SAFETY: valid fd and C string.
            unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o700) }
        })?;
        self.chown_at(parent, name, h)?;
        // SAFETY: valid fd and C string; fchmodat does not follow (it is a
        // directory we just checked or made).
        let r = unsafe { libc::fchmodat(parent.as_raw_fd(), name.as_ptr(), mode, 0) };
        check(r, "set a mode")?;
        if !h.xattrs.is_empty() {
            // SAFETY: valid fd and C string.
            let fd = unsafe {
                libc::openat(
                    parent.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: a fresh descriptor owned by nobody else.
                set_xattrs(&File::from(unsafe { OwnedFd::from_raw_fd(fd) }), h);
            }
        }
        self.dir_times.push((full.to_owned(), timespec(h)));
        Ok(())
    }

    fn chown_at(&self, parent: &OwnedFd, name: &CString, h: &Header) -> Result<(), ApplyError> {
        if !self.chown || (h.uid == 0 && h.gid == 0) {
            return Ok(());
        }
        // SAFETY: valid fd and C string; never follows a symlink.
        check(
            unsafe {
                libc::fchownat(
                    parent.as_raw_fd(),
                    name.as_ptr(),
                    h.uid as u32,
                    h.gid as u32,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            },
            "set ownership",
        )
    }

    fn whiteout(&mut self, dir: &[&[u8]], target: &[u8]) -> Result<(), ApplyError> {
        let mut parts = dir.to_vec();
        parts.push(target);
        if self.this_layer.contains(&join(&parts)) {
            return Ok(());
        }
        let Ok(dir_fd) = self.root.open_dir(&join(dir)) else {
            return Ok(()); // nothing below to hide
        };
        remove_at(&dir_fd, &cname(target)?)?;
        self.cached_parent = None;
        Ok(())
    }

    fn opaque(&mut self, dir: &[&[u8]]) -> Result<(), ApplyError> {
        let dir_fd = self.parent(dir)?;
        let listing = std::fs::read_dir(format!("/proc/self/fd/{}", dir_fd.as_raw_fd()))
            .map_err(io_err("list an opaque directory"))?;
        for entry in listing {
            let entry = entry.map_err(io_err("list an opaque directory"))?;
            let name = entry.file_name();
            let mut parts = dir.to_vec();
            parts.push(name.as_bytes());
            if !self.this_layer.contains(&join(&parts)) {
                remove_at(&dir_fd, &cname(name.as_bytes())?)?;
            }
        }
        self.cached_parent = None;
        Ok(())
    }

    /// Ends a layer: directory mtimes, now that nothing more is written in them.
    pub fn end_layer(&mut self) -> Result<(), ApplyError> {
        for (path, ts) in std::mem::take(&mut self.dir_times) {
            let parts: Vec<&[u8]> = path.as_os_str().as_bytes().split(|&b| b == b'/').collect();
            let Some((&name, dir)) = parts.split_last() else {
                continue;
            };
            let Ok(dir_fd) = self.root.open_dir(&join(dir)) else {
                continue;
            };
            let cn = cname(name)?;
            let times = [ts, ts];
            // SAFETY: valid fd, C string and two-element array.
            unsafe {
                libc::utimensat(
                    dir_fd.as_raw_fd(),
                    cn.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
        }
        self.cached_parent = None;
        Ok(())
    }
}

fn timespec(h: &Header) -> libc::timespec {
    libc::timespec {
        tv_sec: h.mtime as libc::time_t,
        tv_nsec: h.mtime_nsec as _,
    }
}

fn set_times_at(parent: &OwnedFd, name: &CString, h: &Header) -> Result<(), ApplyError> {
    let times = [timespec(h), timespec(h)];
    // SAFETY: valid fd, C string and two-element array; does not follow.
    check(
        unsafe {
            libc::utimensat(
                parent.as_raw_fd(),
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        },
        "set times",
    )
}

/// Extended attributes "where the file system allows": refusals are ignored.
fn set_xattrs(file: &File, h: &Header) {
    for (name, value) in &h.xattrs {
        let Ok(cn) = CString::new(name.as_str()) else {
            continue;
        };
        // SAFETY: valid fd, C string and value buffer of the given length.
        unsafe {
            libc::fsetxattr(
                file.as_raw_fd(),
                cn.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert_eq!(
            normalize(b"./a//b/./c").unwrap(),
            vec![&b"a"[..], b"b", b"c"]
        );
        assert!(normalize(b"./").unwrap().is_empty());
        assert!(normalize(b"/etc/passwd").is_err());
        assert!(normalize(b"a/../../b").is_err());
        assert!(normalize(b"..").is_err());
    }
}
