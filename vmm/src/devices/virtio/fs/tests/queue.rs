//! One pass of the queue logic at a time, over the mock split queue, against real temp-dir
//! shares.

use std::fs;

use fuse_backend_rs::abi::fuse_abi::{AttrOut, EntryOut, InitOut, Opcode, OpenOut, WriteOut};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempdir::TempDir;

use super::*;
use crate::devices::virtio::fs::MAX_REQUEST_BYTES;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// INIT then LOOKUP of `name` in the root; returns its node id.
fn init_and_lookup(d: &mut MockDriver<'_>, s: &ShareServer, name: &str) -> u64 {
    let r = d.call(s.server(), &init_req(1), 4096);
    assert_eq!(r.errno(), 0, "INIT");
    let r = d.call(s.server(), &lookup_req(2, ROOT, name), 4096);
    assert_eq!(r.errno(), 0, "LOOKUP {name}");
    r.obj::<EntryOut>().nodeid
}

#[test]
fn init_lookup_getattr_and_read_of_a_real_file() {
    let dir = TempDir::new().unwrap();
    let content = pattern(10_000);
    fs::write(dir.as_path().join("hello.txt"), &content).unwrap();
    let s = share(dir.as_path(), false);
    let mem = memory();
    let mut d = MockDriver::new(&mem);

    let r = d.call(s.server(), &init_req(1), 4096);
    assert_eq!((r.errno(), r.header.unique), (0, 1));
    assert_eq!(r.used_len, r.header.len, "used length is the reply length");
    let init: InitOut = r.obj();
    assert_eq!(init.major, 7);
    assert!(
        init.max_write as usize <= MAX_REQUEST_BYTES,
        "{}",
        init.max_write
    );

    let r = d.call(s.server(), &lookup_req(2, ROOT, "hello.txt"), 4096);
    assert_eq!((r.errno(), r.header.unique), (0, 2));
    let entry: EntryOut = r.obj();
    assert_ne!(entry.nodeid, 0);
    assert_eq!(entry.attr.size, 10_000);

    let r = d.call(s.server(), &getattr_req(3, entry.nodeid), 4096);
    assert_eq!(r.errno(), 0);
    let attr: AttrOut = r.obj();
    assert_eq!(attr.attr.size, 10_000);
    assert_eq!(attr.attr.mode & libc::S_IFMT, libc::S_IFREG);

    let r = d.call(s.server(), &open_req(4, entry.nodeid, libc::O_RDONLY), 4096);
    assert_eq!(r.errno(), 0);
    let fh = r.obj::<OpenOut>().fh;

    let r = d.call(
        s.server(),
        &read_req(5, entry.nodeid, fh, 0, 8192),
        8192 + 16,
    );
    assert_eq!((r.errno(), r.used_len), (0, 16 + 8192));
    assert_eq!(r.body, content[..8192]);
    let r = d.call(
        s.server(),
        &read_req(6, entry.nodeid, fh, 8192, 8192),
        8192 + 16,
    );
    assert_eq!(r.errno(), 0);
    assert_eq!(r.body, content[8192..], "short read at the end of the file");
}

#[test]
fn read_only_share_answers_writes_with_erofs() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.as_path().join("f"), b"data").unwrap();
    let s = share(dir.as_path(), true);
    let mem = memory();
    let mut d = MockDriver::new(&mem);
    let f = init_and_lookup(&mut d, &s, "f");

    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        let r = d.call(s.server(), &open_req(10, f, flags), 4096);
        assert_eq!(r.errno(), libc::EROFS, "open flags {flags:#o}");
    }
    let r = d.call(s.server(), &open_req(11, f, libc::O_RDONLY), 4096);
    assert_eq!(r.errno(), 0);
    let fh = r.obj::<OpenOut>().fh;
    let r = d.call(s.server(), &write_req(12, f, fh, b"evil"), 4096);
    assert_eq!(r.errno(), libc::EROFS, "write through a read-only handle");
    let r = d.call(s.server(), &create_req(13, ROOT, "new"), 4096);
    assert_eq!(r.errno(), libc::EROFS, "create");
    let r = d.call(
        s.server(),
        &req(Opcode::Mkdir, 14, ROOT, &[&[0u8; 8], &cname("d")]),
        4096,
    );
    assert_eq!(r.errno(), libc::EROFS, "mkdir");
    let r = d.call(
        s.server(),
        &req(Opcode::Unlink, 15, ROOT, &[&cname("f")]),
        4096,
    );
    assert_eq!(r.errno(), libc::EROFS, "unlink");

    assert_eq!(fs::read(dir.as_path().join("f")).unwrap(), b"data");
    assert!(!dir.as_path().join("new").exists());
    assert!(!dir.as_path().join("d").exists());
}

#[test]
fn read_write_share_writes_reach_the_host() {
    let dir = TempDir::new().unwrap();
    let s = share(dir.as_path(), false);
    let mem = memory();
    let mut d = MockDriver::new(&mem);
    let r = d.call(s.server(), &init_req(1), 4096);
    assert_eq!(r.errno(), 0);
    let r = d.call(s.server(), &create_req(2, ROOT, "new"), 4096);
    assert_eq!(r.errno(), 0);
    let entry: EntryOut = r.obj();
    let mut open = OpenOut::default();
    let off = std::mem::size_of::<EntryOut>();
    open.as_mut_slice()
        .copy_from_slice(&r.body[off..off + std::mem::size_of::<OpenOut>()]);
    let data = pattern(100_000);
    let r = d.call(
        s.server(),
        &write_req(3, entry.nodeid, open.fh, &data),
        4096,
    );
    assert_eq!(r.errno(), 0);
    assert_eq!(r.obj::<WriteOut>().size, 100_000);
    assert_eq!(fs::read(dir.as_path().join("new")).unwrap(), data);
}

#[test]
fn malformed_requests_get_error_replies() {
    let dir = TempDir::new().unwrap();
    fs::write(dir.as_path().join("f"), b"data").unwrap();
    let s = share(dir.as_path(), false);
    let mem = memory();
    let mut d = MockDriver::new(&mem);
    let f = init_and_lookup(&mut d, &s, "f");

    // Shorter than a request header: nothing to reply to.
    let r = d.call(s.server(), &[1u8; 10], 4096);
    assert_eq!(r.used_len, 0);

    let mut unknown = getattr_req(20, ROOT);
    unknown[4..8].copy_from_slice(&9999u32.to_le_bytes());
    let r = d.call(s.server(), &unknown, 4096);
    assert_eq!((r.errno(), r.header.unique), (libc::ENOSYS, 20));

    // A name without its NUL: the server writes EINVAL and reports a failure; the device
    // keeps the server's reply.
    let r = d.call(s.server(), &req(Opcode::Lookup, 21, ROOT, &[b"abc"]), 4096);
    assert_eq!(
        (r.errno(), r.header.unique, r.used_len),
        (libc::EINVAL, 21, 16)
    );

    for (i, node) in [0, 999, 12_345, u64::MAX].into_iter().enumerate() {
        let r = d.call(s.server(), &getattr_req(30 + i as u64, node), 4096);
        assert_eq!(r.errno(), libc::EBADF, "node {node}");
    }

    // The header claims more than the server accepts.
    let mut huge = getattr_req(40, f);
    huge[0..4].copy_from_slice(&(8u32 << 20).to_le_bytes());
    let r = d.call(s.server(), &huge, 4096);
    assert_eq!((r.errno(), r.header.unique), (libc::ENOMEM, 40));

    // A READ whose arguments are cut short: the device answers EINVAL itself.
    let cut = &read_req(41, f, 0, 0, 10)[..48];
    let r = d.call(s.server(), cut, 4096);
    assert_eq!(
        (r.errno(), r.header.unique, r.used_len),
        (libc::EINVAL, 41, 16)
    );

    // A READ of 4 GiB into a 4 KiB reply buffer.
    let r = d.call(s.server(), &open_req(42, f, libc::O_RDONLY), 4096);
    let fh = r.obj::<OpenOut>().fh;
    let r = d.call(s.server(), &read_req(43, f, fh, 0, u32::MAX), 4096);
    assert_ne!(r.errno(), 0);
    assert_eq!(r.header.unique, 43);

    // FORGET of an unknown node: no reply, and the buffer comes back.
    let r = d.call(
        s.server(),
        &req(Opcode::Forget, 44, 999, &[&5u64.to_le_bytes()]),
        4096,
    );
    assert_eq!(r.used_len, 0);

    let r = d.call(s.server(), &getattr_req(45, f), 4096);
    assert_eq!(r.errno(), 0, "the share still works");
}

#[test]
fn hostile_chains_are_answered_or_dropped() {
    let dir = TempDir::new().unwrap();
    let s = share(dir.as_path(), false);
    let mem = memory();
    let mut d = MockDriver::new(&mem);
    let r = d.call(s.server(), &init_req(1), 4096);
    assert_eq!(r.errno(), 0);
    let get = getattr_req(2, ROOT);
    mem.write_slice(&get, GuestAddress(REQ_AT)).unwrap();
    let len = get.len() as u32;
    let end = MEM_SIZE as u64;

    let cases: Vec<(&str, Vec<Seg>)> = vec![
        (
            "request outside memory",
            vec![(end + 0x1000, len, false), (REPLY_AT, 4096, true)],
        ),
        (
            "request across the end",
            vec![(end - 8, len, false), (REPLY_AT, 4096, true)],
        ),
        (
            "reply outside memory",
            vec![(REQ_AT, len, false), (end, 4096, true)],
        ),
        (
            "reply at u64::MAX",
            vec![(REQ_AT, len, false), (u64::MAX - 4, 4096, true)],
        ),
        ("only writable", vec![(REPLY_AT, 4096, true)]),
        ("no reply room", vec![(REQ_AT, len, false)]),
        (
            "tiny reply room",
            vec![(REQ_AT, len, false), (REPLY_AT, 8, true)],
        ),
        (
            "reply before request",
            vec![(REPLY_AT, 4096, true), (REQ_AT, len, false)],
        ),
    ];
    for (what, bufs) in cases {
        d.offer(&bufs);
        let pass = d.serve(s.server());
        assert!(pass.used, "{what}: chain not returned");
        let (_, used) = d.pop_used().unwrap();
        assert!(used <= 4096, "{what}: used length {used}");
    }

    // Oversized request and reply parts get E2BIG without reaching the server.
    let big = (2 * MAX_REQUEST_BYTES) as u32;
    for (what, bufs) in [
        (
            "huge request",
            [(REQ_AT, big, false), (0x40_0000, 4096, true)],
        ),
        ("huge reply", [(REQ_AT, len, false), (0x40_0000, big, true)]),
    ] {
        d.offer(&bufs);
        assert!(d.serve(s.server()).used);
        let (_, used) = d.pop_used().unwrap();
        let mut out = [0u8; 16];
        mem.read_slice(&mut out, GuestAddress(0x40_0000)).unwrap();
        let reply = Reply::parse(used, &out);
        assert_eq!((reply.errno(), reply.used_len), (libc::E2BIG, 16), "{what}");
    }

    // A head index outside the queue is dropped; the chain after it is served.
    d.offer_head(500);
    let r = d.call(s.server(), &getattr_req(3, ROOT), 4096);
    assert_eq!((r.errno(), r.header.unique), (0, 3));

    // A descriptor that links to itself ends at the queue size (virtio-queue's ttl).
    let at = 60u16;
    let looped = virtio_queue::desc::split::Descriptor::new(REQ_AT, len, DESC_F_NEXT, at);
    let raw = [virtio_queue::desc::RawDescriptor::from(looped)];
    d.add_raw(&raw, at);
    assert!(d.serve(s.server()).used);
    assert_eq!(d.pop_used().unwrap().1, 0);

    let r = d.call(s.server(), &getattr_req(4, ROOT), 4096);
    assert_eq!(
        (r.errno(), r.header.unique),
        (0, 4),
        "the share still works"
    );
}

#[test]
fn a_pass_serves_at_most_its_budget() {
    let dir = TempDir::new().unwrap();
    let s = share(dir.as_path(), false);
    let mem = memory();
    let mut d = MockDriver::new(&mem);
    let r = d.call(s.server(), &init_req(1), 4096);
    assert_eq!(r.errno(), 0);
    let get = getattr_req(2, ROOT);
    mem.write_slice(&get, GuestAddress(REQ_AT)).unwrap();
    for _ in 0..10 {
        d.offer(&[(REQ_AT, get.len() as u32, false), (REPLY_AT, 4096, true)]);
    }
    let mut served = Vec::new();
    loop {
        let pass = process_queue(&mut d.queue, &mem, s.server(), 4);
        let mut n = 0;
        while d.pop_used().is_some() {
            n += 1;
        }
        served.push(n);
        if !pass.more {
            break;
        }
    }
    assert_eq!(served, [4, 4, 2]);
}
