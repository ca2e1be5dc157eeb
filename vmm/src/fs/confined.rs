//! The policy layer between the FUSE server and fuse-backend-rs's passthrough file system.
//!
//! `PassthroughFs` already does the hard part of confinement: every inode is an `O_PATH`
//! descriptor, every name is resolved with `openat(parent_fd, name, O_NOFOLLOW)` and names with
//! `/` are refused, so neither `..` in a name, nor an absolute symlink, nor a symlink swapped in
//! between two requests can make the *server* resolve a path outside the share (a symlink is
//! only ever handed to the guest as a symlink; the guest kernel follows it in the guest's own
//! namespace). Node ids are keys into the server's own map: a guest cannot name a host inode it
//! was never given, so `link` cannot pull in an outside file. What the passthrough does not do,
//! and this layer adds:
//!
//! - **read-only shares**: every modifying request (create, mknod, mkdir, unlink, rmdir, rename,
//!   link, symlink, setattr, write, fallocate, setxattr, removexattr, open for writing or with
//!   `O_TRUNC`/`O_APPEND`, `access(W_OK)`) is answered with `EROFS` before it reaches the host;
//! - **no device nodes**: `mknod` of block/character devices is refused (`EPERM`); so is
//!   `RENAME_WHITEOUT`, which creates a 0/0 character device;
//! - **no set-id bits**: `S_ISUID`/`S_ISGID` are stripped from create, mkdir, mknod and chmod
//!   (the server runs as root with the guest's uid, so a guest could otherwise plant a setuid-root
//!   binary on the host);
//! - **xattrs**: reads of any namespace, but writes only in `user.*` (no `security.capability`
//!   file capabilities, no `trusted.*`, no SELinux labels); reply sizes are clamped to the
//!   kernel's 64 KiB xattr limit instead of allocating whatever size the guest asks for;
//! - **lookups of `.` and `..`** (which the passthrough allows for NFS export, and maps `..` at
//!   the root to the root) are refused outright: nothing we serve needs them;
//! - **open flags**: `O_PATH` and `O_TMPFILE` from the guest are refused;
//! - **descriptor budget**: see [`super::budget`];
//! - **no DAX**: there is no DAX window, so mapping requests get `ENOSYS`.
//!
//! # Round trips
//! The passthrough used on its own (not under fuse-backend-rs's `Vfs`) negotiates nothing at
//! INIT but READDIRPLUS, and answers every open with options that make the client send a FLUSH
//! on each `close(2)`. This layer negotiates what virtiofsd does ([`INIT_WANTED`]) and answers
//! file opens with `FOPEN_NOFLUSH` ([`open_options`]); together with the negative LOOKUP
//! entries ([`ConfinedFs::with_negative_timeout`]) that is what lets a create+close cost two
//! requests (LOOKUP miss, CREATE) plus the RELEASE instead of four.

use std::ffi::CStr;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{
    stat64, statvfs64, CreateIn, FsOptions, OpenOptions, SetattrValid,
};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileLock, FileSystem, GetxattrReply, IoctlData, ListxattrReply,
    ZeroCopyReader, ZeroCopyWriter,
};
use fuse_backend_rs::passthrough::PassthroughFs;
use fuse_backend_rs::transport::FsCacheReqHandler;
use vm_memory::bitmap::BitmapSlice;

use super::budget::FdBudget;
use super::root::ShareRoot;

/// FUSE node id of the root directory.
const ROOT_ID: u64 = 1;

/// Largest xattr value or name list Linux supports (`XATTR_SIZE_MAX`, `XATTR_LIST_MAX`).
const XATTR_MAX: u32 = 65_536;
/// `renameat2` flags a guest may use; `RENAME_WHITEOUT` (4) would create a device node.
const RENAME_ALLOWED: u32 = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
/// The `__O_TMPFILE` bit alone (`O_TMPFILE` includes `O_DIRECTORY`).
const O_TMPFILE_BIT: i32 = libc::O_TMPFILE & !libc::O_DIRECTORY;
const SET_ID_BITS: u32 = libc::S_ISUID | libc::S_ISGID;
/// `FOPEN_NOFLUSH` (protocol 7.35; fuse-backend-rs 0.14's `OpenOptions` lacks the name).
const FOPEN_NOFLUSH: u32 = 1 << 5;

/// INIT flags negotiated on top of the passthrough's own (READDIRPLUS), when the client offers
/// them; the same set virtiofsd enables by default. Each one is safe for a passthrough whose
/// every operation is a positional host system call and which is safe to call from several
/// threads:
/// - `ASYNC_READ`: several READs of one file may be in flight (the guest's readahead);
/// - `PARALLEL_DIROPS`: LOOKUP and READDIR in one directory are not serialised by the client;
/// - `BIG_WRITES` + `MAX_PAGES`: WRITEs and READs of up to 1 MiB (the size the virtio-fs
///   device's `MAX_REQUEST_BYTES` and the `/dev/fuse` session's buffer are built for) instead of
///   one page, i.e. 256x fewer requests for large files;
/// - `ATOMIC_O_TRUNC`: `open(O_TRUNC)` carries the truncation in OPEN instead of a following
///   SETATTR (an open with `O_TRUNC` is a write, refused with `EROFS` on read-only shares).
pub const INIT_WANTED: FsOptions = FsOptions::ASYNC_READ
    .union(FsOptions::PARALLEL_DIROPS)
    .union(FsOptions::BIG_WRITES)
    .union(FsOptions::MAX_PAGES)
    .union(FsOptions::ATOMIC_O_TRUNC);

/// The passthrough's open options for a regular file plus `FOPEN_NOFLUSH`, which spares the
/// client the FLUSH request it otherwise sends on every `close(2)`. The passthrough's FLUSH only
/// emulates a host `close` (dup + close of the host descriptor): no data waits in the server
/// (every WRITE is a host `pwrite` and the mount has no writeback cache), POSIX locks are not
/// negotiated (the client keeps them locally), so the one thing lost is a close-time error
/// from a host file system that reports errors only on `close` (NFS). The kernel ignores the flag
/// when writeback caching is on, where FLUSH must push cached data.
pub fn open_options(opts: OpenOptions) -> OpenOptions {
    // SAFETY: `OpenOptions` is a plain `u32` bit set with no invariant on unknown bits (it is
    // copied to `fuse_open_out.open_flags` as is); bit 5 is FOPEN_NOFLUSH in the FUSE ABI.
    opts | unsafe { OpenOptions::from_bits_unchecked(FOPEN_NOFLUSH) }
}

fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// A passthrough file system with the share's policy applied. One instance per share: inodes,
/// handles and descriptors are never shared between shares.
pub struct ConfinedFs<S: BitmapSlice + Send + Sync = ()> {
    /// Reached through [`ConfinedFs::inner`], which refuses while the root is not verified;
    /// only INIT, DESTROY and reference drops use it directly.
    passthrough: PassthroughFs<S>,
    /// The share's root, opened once; the passthrough's root must be this directory.
    root: ShareRoot,
    /// Whether the passthrough's current root was checked against `root`.
    serving: AtomicBool,
    read_only: bool,
    budget: FdBudget,
    /// How long the client may cache a failed LOOKUP (zero: not at all, plain ENOENT).
    negative_timeout: Duration,
}

impl<S: BitmapSlice + Send + Sync> ConfinedFs<S> {
    /// Wraps `passthrough`, whose configured root must be `root`'s
    /// [`ShareRoot::passthrough_path`]. `budget` bounds the descriptors the share may hold.
    /// Nothing is served until INIT has imported the root and it checked out.
    pub fn new(
        passthrough: PassthroughFs<S>,
        root: ShareRoot,
        read_only: bool,
        budget: FdBudget,
    ) -> Self {
        ConfinedFs {
            passthrough,
            root,
            serving: AtomicBool::new(false),
            read_only,
            budget,
            negative_timeout: Duration::ZERO,
        }
    }

    /// Lets the client cache failed lookups for `timeout` (FUSE negative entries: node id 0
    /// with an entry timeout). Worth it because every create is preceded by a LOOKUP miss;
    /// only correct when the share's cache mode already tolerates stale dentries for that
    /// long, so the server passes the same timeout it uses for positive entries (zero for
    /// `cache=never`, which keeps replying ENOENT).
    pub fn with_negative_timeout(mut self, timeout: Duration) -> Self {
        self.negative_timeout = timeout;
        self
    }

    /// Whether the share refuses writes.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Descriptor accounting (for tests and diagnostics).
    pub fn budget(&self) -> &FdBudget {
        &self.budget
    }

    /// The passthrough, if its root is the share's root (else `EIO`: nothing is served).
    fn inner(&self) -> io::Result<&PassthroughFs<S>> {
        if self.serving.load(Ordering::Acquire) {
            Ok(&self.passthrough)
        } else {
            Err(err(libc::EIO))
        }
    }

    /// Drops every inode and handle and has the passthrough open its root again (its DESTROY),
    /// with our accounting cleared to match. Nothing is served until [`Self::check_root`].
    fn drop_all(&self) {
        self.serving.store(false, Ordering::Release);
        self.passthrough.destroy();
        self.budget.clear();
    }

    /// Serves again only if the root the passthrough imported is the share's root by device
    /// and inode number. The path it opens goes through the held descriptor, so a mismatch
    /// means this process's `/proc` is not what it should be: fail closed with `EIO`.
    fn check_root(&self) -> io::Result<()> {
        let (st, _) = self
            .passthrough
            .getattr(&Context::new(), ROOT_ID, None)
            .map_err(|e| {
                log::error!("virtio-fs: cannot import the share root: {e}");
                err(libc::EIO)
            })?;
        if !self.root.is(st.st_dev, st.st_ino) {
            log::error!(
                "virtio-fs: the imported root is not {}: refusing to serve",
                self.root.path().display()
            );
            return Err(err(libc::EIO));
        }
        self.serving.store(true, Ordering::Release);
        Ok(())
    }

    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            Err(err(libc::EROFS))
        } else {
            Ok(())
        }
    }

    /// Room for a new node or handle, checked before creating anything on disk.
    fn room(&self) -> io::Result<()> {
        if self.budget.has_room() {
            Ok(())
        } else {
            Err(err(libc::ENFILE))
        }
    }

    /// Accounts an entry reply; undoes the lookup reference when over budget.
    fn admit(&self, ctx: &Context, entry: Entry) -> io::Result<Entry> {
        if self.budget.admit_node(entry.inode) {
            Ok(entry)
        } else {
            self.passthrough.forget(ctx, entry.inode, 1);
            Err(err(libc::ENFILE))
        }
    }

    /// Runs an open-like call with a reserved handle descriptor.
    fn with_handle<T>(
        &self,
        f: impl FnOnce() -> io::Result<(Option<u64>, T)>,
    ) -> io::Result<(Option<u64>, T)> {
        if !self.budget.reserve_handle() {
            return Err(err(libc::ENFILE));
        }
        let res = f();
        if !matches!(res, Ok((Some(_), _))) {
            self.budget.release_handle();
        }
        res
    }
}

fn is_dot_or_dotdot(name: &CStr) -> bool {
    matches!(name.to_bytes(), b"." | b"..")
}

fn check_open_flags(flags: u32, read_only: bool) -> io::Result<()> {
    let flags = flags as i32;
    if flags & (libc::O_PATH | O_TMPFILE_BIT) != 0 {
        return Err(err(libc::EINVAL));
    }
    let writes = flags & libc::O_ACCMODE != libc::O_RDONLY
        || flags & (libc::O_TRUNC | libc::O_APPEND | libc::O_CREAT) != 0;
    if read_only && writes {
        return Err(err(libc::EROFS));
    }
    Ok(())
}

fn check_xattr_write(name: &CStr) -> io::Result<()> {
    if name.to_bytes().starts_with(b"user.") {
        Ok(())
    } else {
        Err(err(libc::EPERM))
    }
}

impl<S: BitmapSlice + Send + Sync + 'static> FileSystem for ConfinedFs<S> {
    type Inode = u64;
    type Handle = u64;

    fn init(&self, capable: FsOptions) -> io::Result<FsOptions> {
        // A second INIT (a driver reset, or a hostile guest) starts from scratch: dropping the
        // passthrough's inodes and handles together with our accounting keeps the budget
        // equal to the descriptors really held, instead of letting INIT reset the count
        // while the descriptors stay open.
        self.drop_all();
        // No DAX window exists, so never advertise per-file DAX. The server enables the
        // intersection of what the client offers and what this returns. The passthrough's
        // init imports the root (again): that import is the one checked.
        let wanted = self.passthrough.init(capable - FsOptions::PERFILE_DAX)?;
        self.check_root()?;
        Ok(wanted | INIT_WANTED)
    }

    fn destroy(&self) {
        // Also what a device reset calls. A failed check is logged; the share then answers
        // EIO until an INIT imports a root that checks out.
        self.drop_all();
        let _ = self.check_root();
    }

    fn lookup(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        if is_dot_or_dotdot(name) {
            return Err(err(libc::EINVAL));
        }
        match self.inner()?.lookup(ctx, parent, name) {
            Ok(entry) => self.admit(ctx, entry),
            Err(e)
                if e.raw_os_error() == Some(libc::ENOENT) && !self.negative_timeout.is_zero() =>
            {
                // Node id 0 takes no reference: the kernel never sends FORGET for it, so the
                // fd budget is untouched.
                Ok(Entry {
                    inode: 0,
                    generation: 0,
                    // SAFETY: stat64 is a plain C struct of integers, valid when all zero; the
                    // kernel ignores the attributes of node id 0.
                    attr: unsafe { std::mem::zeroed::<stat64>() },
                    attr_flags: 0,
                    attr_timeout: Duration::ZERO,
                    entry_timeout: self.negative_timeout,
                })
            }
            Err(e) => Err(e),
        }
    }

    fn forget(&self, ctx: &Context, inode: u64, count: u64) {
        self.budget.forget_node(inode, count);
        self.passthrough.forget(ctx, inode, count)
    }

    fn batch_forget(&self, ctx: &Context, requests: Vec<(u64, u64)>) {
        for &(inode, count) in &requests {
            self.budget.forget_node(inode, count);
        }
        self.passthrough.batch_forget(ctx, requests)
    }

    fn getattr(
        &self,
        ctx: &Context,
        inode: u64,
        handle: Option<u64>,
    ) -> io::Result<(stat64, Duration)> {
        self.inner()?.getattr(ctx, inode, handle)
    }

    fn setattr(
        &self,
        ctx: &Context,
        inode: u64,
        mut attr: stat64,
        handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(stat64, Duration)> {
        self.writable()?;
        if valid.contains(SetattrValid::MODE) {
            attr.st_mode &= !SET_ID_BITS;
        }
        self.inner()?.setattr(ctx, inode, attr, handle, valid)
    }

    fn readlink(&self, ctx: &Context, inode: u64) -> io::Result<Vec<u8>> {
        self.inner()?.readlink(ctx, inode)
    }

    fn symlink(
        &self,
        ctx: &Context,
        linkname: &CStr,
        parent: u64,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.writable()?;
        self.room()?;
        let entry = self.inner()?.symlink(ctx, linkname, parent, name)?;
        self.admit(ctx, entry)
    }

    fn mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        _rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.writable()?;
        match mode & libc::S_IFMT {
            0 | libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK => {}
            libc::S_IFCHR | libc::S_IFBLK => return Err(err(libc::EPERM)),
            _ => return Err(err(libc::EINVAL)),
        }
        self.room()?;
        // rdev only matters for devices, which are refused above.
        let entry = self
            .inner()?
            .mknod(ctx, parent, name, mode & !SET_ID_BITS, 0, umask)?;
        self.admit(ctx, entry)
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        self.writable()?;
        self.room()?;
        let entry = self
            .inner()?
            .mkdir(ctx, parent, name, mode & !SET_ID_BITS, umask)?;
        self.admit(ctx, entry)
    }

    fn unlink(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.writable()?;
        self.inner()?.unlink(ctx, parent, name)
    }

    fn rmdir(&self, ctx: &Context, parent: u64, name: &CStr) -> io::Result<()> {
        self.writable()?;
        self.inner()?.rmdir(ctx, parent, name)
    }

    fn rename(
        &self,
        ctx: &Context,
        olddir: u64,
        oldname: &CStr,
        newdir: u64,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        self.writable()?;
        if flags & !RENAME_ALLOWED != 0 {
            return Err(err(libc::EINVAL));
        }
        self.inner()?
            .rename(ctx, olddir, oldname, newdir, newname, flags)
    }

    fn link(&self, ctx: &Context, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        self.writable()?;
        let entry = self.inner()?.link(ctx, inode, newparent, newname)?;
        self.admit(ctx, entry)
    }

    fn open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions, Option<u32>)> {
        check_open_flags(flags, self.read_only)?;
        self.with_handle(|| {
            self.inner()?
                .open(ctx, inode, flags, fuse_flags)
                .map(|(h, o, p)| (h, (open_options(o), p)))
        })
        .map(|(h, (o, p))| (h, o, p))
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mut args: CreateIn,
    ) -> io::Result<(Entry, Option<u64>, OpenOptions, Option<u32>)> {
        self.writable()?;
        check_open_flags(args.flags, false)?;
        self.room()?;
        args.mode &= !SET_ID_BITS;
        let (handle, (entry, opts, passthrough)) = self.with_handle(|| {
            self.inner()?
                .create(ctx, parent, name, args)
                .map(|(e, h, o, p)| (h, (e, o, p)))
        })?;
        match self.admit(ctx, entry) {
            Ok(entry) => Ok((entry, handle, open_options(opts), passthrough)),
            Err(e) => {
                if let Some(h) = handle {
                    let _ = self.release(ctx, entry.inode, 0, h, false, false, None);
                }
                Err(e)
            }
        }
    }

    fn read(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        flags: u32,
    ) -> io::Result<usize> {
        self.inner()?
            .read(ctx, inode, handle, w, size, offset, lock_owner, flags)
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
        lock_owner: Option<u64>,
        delayed_write: bool,
        flags: u32,
        fuse_flags: u32,
    ) -> io::Result<usize> {
        self.writable()?;
        self.inner()?.write(
            ctx,
            inode,
            handle,
            r,
            size,
            offset,
            lock_owner,
            delayed_write,
            flags,
            fuse_flags,
        )
    }

    fn flush(&self, ctx: &Context, inode: u64, handle: u64, lock_owner: u64) -> io::Result<()> {
        self.inner()?.flush(ctx, inode, handle, lock_owner)
    }

    fn fsync(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.inner()?.fsync(ctx, inode, datasync, handle)
    }

    fn fallocate(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        self.writable()?;
        self.inner()?
            .fallocate(ctx, inode, handle, mode, offset, length)
    }

    #[allow(clippy::too_many_arguments)]
    fn release(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        handle: u64,
        flush: bool,
        flock_release: bool,
        lock_owner: Option<u64>,
    ) -> io::Result<()> {
        self.inner()?
            .release(ctx, inode, flags, handle, flush, flock_release, lock_owner)?;
        self.budget.release_handle();
        Ok(())
    }

    fn statfs(&self, ctx: &Context, inode: u64) -> io::Result<statvfs64> {
        self.inner()?.statfs(ctx, inode)
    }

    fn setxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        self.writable()?;
        check_xattr_write(name)?;
        self.inner()?.setxattr(ctx, inode, name, value, flags)
    }

    fn getxattr(
        &self,
        ctx: &Context,
        inode: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        self.inner()?
            .getxattr(ctx, inode, name, size.min(XATTR_MAX))
    }

    fn listxattr(&self, ctx: &Context, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        self.inner()?.listxattr(ctx, inode, size.min(XATTR_MAX))
    }

    fn removexattr(&self, ctx: &Context, inode: u64, name: &CStr) -> io::Result<()> {
        self.writable()?;
        check_xattr_write(name)?;
        self.inner()?.removexattr(ctx, inode, name)
    }

    fn opendir(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
    ) -> io::Result<(Option<u64>, OpenOptions)> {
        check_open_flags(flags, self.read_only)?;
        self.with_handle(|| self.inner()?.opendir(ctx, inode, flags))
    }

    fn readdir(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.inner()?
            .readdir(ctx, inode, handle, size, offset, add_entry)
    }

    fn readdirplus(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        size: u32,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        self.inner()?
            .readdirplus(ctx, inode, handle, size, offset, &mut |dirent, entry| {
                if self.budget.admit_node(entry.inode) {
                    let written = add_entry(dirent, entry)?;
                    if written == 0 {
                        // Buffer full: the passthrough drops its reference, so do we.
                        self.budget.forget_node(entry.inode, 1);
                    }
                    return Ok(written);
                }
                // Over budget: hand the name out without a node (node id 0 tells the kernel
                // not to instantiate it; a later lookup will get ENFILE) and drop the
                // reference the passthrough took, unless it drops it itself (buffer full).
                let anonymous = Entry {
                    inode: 0,
                    entry_timeout: Duration::ZERO,
                    attr_timeout: Duration::ZERO,
                    ..entry
                };
                let written = add_entry(dirent, anonymous)?;
                if written != 0 {
                    self.passthrough.forget(ctx, entry.inode, 1);
                }
                Ok(written)
            })
    }

    fn fsyncdir(&self, ctx: &Context, inode: u64, datasync: bool, handle: u64) -> io::Result<()> {
        self.inner()?.fsyncdir(ctx, inode, datasync, handle)
    }

    fn releasedir(&self, ctx: &Context, inode: u64, flags: u32, handle: u64) -> io::Result<()> {
        self.inner()?.releasedir(ctx, inode, flags, handle)?;
        self.budget.release_handle();
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn setupmapping(
        &self,
        _ctx: &Context,
        _inode: u64,
        _handle: u64,
        _foffset: u64,
        _len: u64,
        _flags: u64,
        _moffset: u64,
        _vu_req: &mut dyn FsCacheReqHandler,
    ) -> io::Result<()> {
        Err(err(libc::ENOSYS))
    }

    fn removemapping(
        &self,
        _ctx: &Context,
        _inode: u64,
        _requests: Vec<fuse_backend_rs::abi::virtio_fs::RemovemappingOne>,
        _vu_req: &mut dyn FsCacheReqHandler,
    ) -> io::Result<()> {
        Err(err(libc::ENOSYS))
    }

    fn access(&self, ctx: &Context, inode: u64, mask: u32) -> io::Result<()> {
        if self.read_only && mask & libc::W_OK as u32 != 0 {
            return Err(err(libc::EROFS));
        }
        self.inner()?.access(ctx, inode, mask)
    }

    fn lseek(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        self.inner()?.lseek(ctx, inode, handle, offset, whence)
    }

    fn getlk(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<FileLock> {
        self.inner()?.getlk(ctx, inode, handle, owner, lock, flags)
    }

    fn setlk(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<()> {
        self.inner()?.setlk(ctx, inode, handle, owner, lock, flags)
    }

    fn setlkw(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<()> {
        self.inner()?.setlkw(ctx, inode, handle, owner, lock, flags)
    }

    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _ctx: &Context,
        _inode: u64,
        _handle: u64,
        _flags: u32,
        _cmd: u32,
        _data: IoctlData,
        _out_size: u32,
    ) -> io::Result<IoctlData<'_>> {
        // Host ioctls on guest-chosen files are never forwarded.
        Err(err(libc::ENOTTY))
    }

    fn bmap(&self, _ctx: &Context, _inode: u64, _block: u64, _blocksize: u32) -> io::Result<u64> {
        Err(err(libc::ENOSYS))
    }

    fn poll(
        &self,
        _ctx: &Context,
        _inode: u64,
        _handle: u64,
        _khandle: u64,
        _flags: u32,
        _events: u32,
    ) -> io::Result<u32> {
        Err(err(libc::ENOSYS))
    }

    fn notify_reply(&self) -> io::Result<()> {
        Err(err(libc::ENOSYS))
    }
}
