//! Arbitrary bytes as one FUSE request (in-header + body) into the share server, exactly as the
//! virtio-fs device hands a guest's descriptor chain to `Server::handle_message`, against a
//! passthrough share on a temp directory. Two shares (read-write and read-only) persist across
//! inputs, so node ids handed out by earlier inputs (small integers) can be hit by later ones.
//! A panic, abort or out-of-memory is a finding; error replies are the expected outcome.
#![no_main]

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

use fuse_backend_rs::abi::fuse_abi::FsOptions;
use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter, Reader};
use husk_vmm::fs::{prepare_server_thread, CacheMode, ShareServer, ShareSpec};
use libfuzzer_sys::fuzz_target;
use vmm_sys_util::tempdir::TempDir;

struct State {
    shares: [ShareServer; 2],
    sink: File,
    _dirs: [TempDir; 2],
}

fn share(read_only: bool) -> (ShareServer, TempDir) {
    let dir = TempDir::new().unwrap();
    let p = dir.as_path();
    fs::write(p.join("file"), vec![7u8; 70_000]).unwrap();
    fs::create_dir(p.join("dir")).unwrap();
    fs::write(p.join("dir/inner"), b"inner").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", p.join("link")).unwrap();
    let spec = ShareSpec {
        tag: "fuzz".into(),
        host_dir: p.to_path_buf(),
        read_only,
        cache: CacheMode::Auto,
    };
    // A small descriptor budget keeps a long run from exhausting the fuzzer's own descriptors.
    let s = ShareServer::new(&spec, 4096).unwrap();
    s.fs().init(FsOptions::empty()).unwrap();
    (s, dir)
}

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        prepare_server_thread().unwrap();
        let (rw, d1) = share(false);
        let (ro, d2) = share(true);
        State {
            shares: [rw, ro],
            sink: File::options().write(true).open("/dev/null").unwrap(),
            _dirs: [d1, d2],
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let st = state();
    let server = st.shares[(sel & 1) as usize].server();
    let mut input = msg.to_vec();
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
