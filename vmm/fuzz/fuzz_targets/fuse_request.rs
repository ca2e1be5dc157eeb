//! Arbitrary bytes as one FUSE request (in-header + body) into the share server, exactly as the
//! virtio-fs device hands a guest's descriptor chain to `Server::handle_message`, against a
//! passthrough share on a temp directory. Two shares (read-write and read-only) persist across
//! inputs, so node ids handed out by earlier inputs (small integers) can be hit by later ones.
//! A panic, abort or out-of-memory is a finding; error replies are the expected outcome.
//!
//! The first input byte picks the share (bit 0) and the transport (bit 1): the `/dev/fuse`
//! buffer as above, or a descriptor chain on a virtio split queue served by the virtio-fs
//! device's queue logic. For the latter, bits 2-5 shape the chain the way a hostile driver
//! would: the request split over two descriptors, the reply buffer before the request, the
//! reply buffer running off the end of guest memory, a request descriptor far longer than
//! guest memory.
//!
//! # Bounded disk use
//! The read-write share really writes to the host disk, and a fuzzer finds `FALLOCATE` of
//! terabytes and writes at huge offsets quickly (an unbounded run once filled a 73 GB disk).
//! So the target bounds what it can leave behind:
//! - `RLIMIT_FSIZE` = [`MAX_FILE`] for the process, with `SIGXFSZ` ignored, so writes, truncates
//!   and size-changing fallocates past it fail with `EFBIG` instead of growing the file;
//! - `FALLOCATE` requests are clamped to the same bound before they reach the server
//!   (`FALLOC_FL_KEEP_SIZE` allocates past the end of file without the limit applying);
//! - every [`SWEEP_EVERY`] inputs the share directories are measured, and when they hold more
//!   than [`MAX_TREE_BYTES`] or [`MAX_TREE_ENTRIES`] they are emptied (files truncated first,
//!   so space held by descriptors the server still keeps is freed too) and re-seeded;
//! - everything lives under one `husk-fuzz-fs-<pid>` directory that is removed at exit, and
//!   directories left by earlier runs that died (crash, kill) are removed at start.
#![no_main]

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use fuse_backend_rs::abi::fuse_abi::FsOptions;
use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter, Reader};
use husk_vmm::devices::virtio::fs::queue::process_queue;
use husk_vmm::devices::virtio::testing::{guest_memory, Buf, DriverQueue};
use husk_vmm::devices::virtio::GuestMemory;
use husk_vmm::fs::{prepare_server_thread, CacheMode, FdBudget, FsServer, ShareServer, ShareSpec};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

/// Largest file the target lets the server create (also the fallocate clamp).
const MAX_FILE: u64 = 4 << 20;
/// Share trees larger than this are emptied at the next sweep.
const MAX_TREE_BYTES: u64 = 256 << 20;
/// Share trees with more entries than this are emptied at the next sweep.
const MAX_TREE_ENTRIES: u64 = 50_000;
/// Inputs between sweeps: at most `SWEEP_EVERY * MAX_FILE` (1 GiB) can accumulate in between.
const SWEEP_EVERY: u64 = 256;
const DIR_PREFIX: &str = "husk-fuzz-fs-";

const IN_HEADER_LEN: usize = 40;
const OPCODE_FALLOCATE: u32 = 43;

/// Guest memory for the virtio transport: queue at 0, request at 1 MiB, reply at 2 MiB.
const GUEST_MEM: usize = 4 << 20;
const REQ_AT: u64 = 1 << 20;
const REPLY_AT: u64 = 2 << 20;
const REPLY_LEN: u32 = 64 << 10;
const QUEUE_SIZE: u16 = 16;

struct State {
    shares: [ShareServer; 2],
    dirs: [PathBuf; 2],
    sink: File,
    inputs: AtomicU64,
    mem: GuestMemory,
}

fn seed(p: &Path) {
    fs::write(p.join("file"), vec![7u8; 70_000]).unwrap();
    fs::create_dir_all(p.join("dir")).unwrap();
    fs::write(p.join("dir/inner"), b"inner").unwrap();
    let _ = std::os::unix::fs::symlink("/etc/passwd", p.join("link"));
}

fn share(root: &Path, name: &str, read_only: bool) -> (ShareServer, PathBuf) {
    let p = root.join(name);
    fs::create_dir(&p).unwrap();
    seed(&p);
    let spec = ShareSpec {
        tag: "fuzz".into(),
        host_dir: p.clone(),
        read_only,
        cache: CacheMode::Auto,
    };
    // A small descriptor budget keeps a long run from exhausting the fuzzer's own descriptors.
    let s = ShareServer::new(spec.open().unwrap(), FdBudget::new(4096)).unwrap();
    s.fs().init(FsOptions::empty()).unwrap();
    (s, p)
}

/// The per-run root directory, removed by [`remove_root`] at exit.
fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        remove_stale_roots(&tmp);
        let p = tmp.join(format!("{DIR_PREFIX}{}", std::process::id()));
        let _ = force_remove(&p);
        fs::create_dir(&p).unwrap();
        p
    })
}

/// Removes `husk-fuzz-fs-<pid>` directories whose process is gone.
fn remove_stale_roots(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = force_remove(&e.path());
        }
    }
}

extern "C" fn remove_root() {
    if let Some(p) = ROOT_FOR_EXIT.get() {
        let _ = force_remove(p);
    }
}
static ROOT_FOR_EXIT: OnceLock<PathBuf> = OnceLock::new();

/// Caps file sizes for the whole process; see the module doc.
fn limit_file_size() {
    let lim = libc::rlimit {
        rlim_cur: MAX_FILE,
        rlim_max: MAX_FILE,
    };
    // SAFETY: setrlimit reads a valid rlimit; signal() installs SIG_IGN, which needs no handler
    // code. Both results are checked.
    let ok = unsafe {
        libc::setrlimit(libc::RLIMIT_FSIZE, &lim) == 0
            && libc::signal(libc::SIGXFSZ, libc::SIG_IGN) != libc::SIG_ERR
    };
    assert!(
        ok,
        "cannot limit file sizes: {}",
        std::io::Error::last_os_error()
    );
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        limit_file_size();
        let root = root();
        if ROOT_FOR_EXIT.set(root.clone()).is_ok() {
            // SAFETY: `remove_root` is an `extern "C" fn()` that only touches a static.
            unsafe { libc::atexit(remove_root) };
        }
        prepare_server_thread().unwrap();
        let (rw, d1) = share(root, "rw", false);
        let (ro, d2) = share(root, "ro", true);
        State {
            shares: [rw, ro],
            dirs: [d1, d2],
            sink: File::options().write(true).open("/dev/null").unwrap(),
            inputs: AtomicU64::new(0),
            mem: guest_memory(GUEST_MEM),
        }
    })
}

/// Allocated bytes and entry count below `dir` (symlinks not followed). Also makes every
/// directory searchable again, so a later wipe cannot be blocked by a `chmod 000`.
fn measure(dir: &Path, bytes: &mut u64, entries: &mut u64) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        *entries += 1;
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        *bytes += m.blocks() * 512;
        if m.is_dir() {
            let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o755));
            measure(&e.path(), bytes, entries);
        }
    }
}

/// Truncates every regular file below `dir` (frees space even where the server still holds a
/// descriptor), then removes everything.
fn wipe(dir: &Path) {
    fn truncate_all(dir: &Path) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                truncate_all(&e.path());
            } else if m.is_file() {
                let _ = File::options()
                    .write(true)
                    .open(e.path())
                    .map(|f| f.set_len(0));
            }
        }
    }
    truncate_all(dir);
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let _ = force_remove(&e.path());
        }
    }
}

fn force_remove(p: &Path) -> std::io::Result<()> {
    let m = p.symlink_metadata()?;
    if m.is_dir() {
        let mut ignored = (0, 0);
        measure(p, &mut ignored.0, &mut ignored.1);
        let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    }
}

fn sweep(st: &State) {
    for dir in &st.dirs {
        let (mut bytes, mut entries) = (0, 0);
        measure(dir, &mut bytes, &mut entries);
        if bytes > MAX_TREE_BYTES || entries > MAX_TREE_ENTRIES {
            wipe(dir);
            seed(dir);
        }
    }
}

/// Clamps a FALLOCATE request's range to `MAX_FILE`, in place.
fn clamp_fallocate(msg: &mut [u8]) {
    let opcode = msg
        .get(4..8)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()));
    if opcode != Some(OPCODE_FALLOCATE) || msg.len() < IN_HEADER_LEN + 24 {
        return;
    }
    // FallocateIn { fh: u64, offset: u64, length: u64, mode: u32, padding: u32 }
    let body = &mut msg[IN_HEADER_LEN..];
    let read = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let offset = read(body, 8).min(MAX_FILE);
    let length = read(body, 16).min(MAX_FILE - offset);
    body[8..16].copy_from_slice(&offset.to_le_bytes());
    body[16..24].copy_from_slice(&length.to_le_bytes());
}

/// Serves `msg` as one descriptor chain, shaped by `sel` (see the module doc).
fn through_virtio(mem: &GuestMemory, server: &FsServer, sel: u8, msg: &[u8]) {
    let len = msg.len().min(REPLY_AT as usize - REQ_AT as usize);
    mem.write_slice(&msg[..len], GuestAddress(REQ_AT)).unwrap();
    let len = len as u32;
    let bit = |n: u8| sel & (1 << n) != 0;
    let mut bufs = Vec::with_capacity(3);
    let reply = Buf {
        addr: if bit(4) {
            GUEST_MEM as u64 - 100
        } else {
            REPLY_AT
        },
        len: REPLY_LEN,
        write: true,
    };
    if bit(3) {
        bufs.push(reply);
    }
    let first = if bit(2) { len / 2 } else { len };
    bufs.push(Buf {
        addr: REQ_AT,
        len: first,
        write: false,
    });
    if first < len {
        bufs.push(Buf {
            addr: REQ_AT + u64::from(first),
            len: len - first,
            write: false,
        });
    }
    if bit(5) {
        bufs.last_mut().unwrap().len = u32::MAX;
    }
    if !bit(3) {
        bufs.push(reply);
    }
    let mut dq = DriverQueue::new(mem, 0, QUEUE_SIZE);
    dq.add_chain(mem, &bufs).unwrap();
    dq.publish(mem);
    let mut q = Queue::new(QUEUE_SIZE).unwrap();
    q.try_set_desc_table_address(GuestAddress(dq.desc)).unwrap();
    q.try_set_avail_ring_address(GuestAddress(dq.avail))
        .unwrap();
    q.try_set_used_ring_address(GuestAddress(dq.used)).unwrap();
    q.set_ready(true);
    let pass = process_queue(&mut q, mem, server, usize::from(QUEUE_SIZE));
    assert!(
        pass.used && !pass.more,
        "the chain must come back: {pass:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let st = state();
    if st.inputs.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
        sweep(st);
    }
    let server = st.shares[(sel & 1) as usize].server();
    let mut input = msg.to_vec();
    clamp_fallocate(&mut input);
    if sel & 2 != 0 {
        through_virtio(&st.mem, server, sel, &input);
        return;
    }
    let Ok(reader) = Reader::<()>::from_fuse_buffer(FuseBuf::new(&mut input)) else {
        return;
    };
    // Room for the largest reply (MAX_BUFFER_SIZE plus a page of headers), like /dev/fuse.
    let mut out = vec![0u8; (1 << 20) + 4096];
    let Ok(writer) = FuseDevWriter::<()>::new(st.sink.as_raw_fd(), &mut out) else {
        return;
    };
    let _ = server.handle_message(reader, writer.into(), None, None);
});
