//! Both ends of the end-to-end vsock test.
//!
//! `vsock_peer guest` (static, the test initramfs's /init; "--cmdline
//! '... -- guest'" passes the word) serves on AF_VSOCK:
//!   port 1000  echo: everything read is written back; EOF → shutdown(WR)
//!   port 1001  sink: accepts and never reads (the guest that stops reading)
//!   port 1002  control: "G2H <port> <bytes>\n" makes the guest connect to
//!              the host (CID 2) on <port>, send <bytes> of the test pattern,
//!              read the echo back and answer "OK <bytes>\n", "REFUSED\n" or
//!              "BAD <reason>\n"
//!   port 1003  power off
//!
//! `vsock_peer host --sock PATH [--vmm-pid PID]` runs on the host against the
//! VMM's Unix socket (Firecracker's CONNECT protocol) and prints one
//! `PASS <case>` or `FAIL <case>: <why>` line per case; exit status 0 only if
//! all passed.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

const ECHO: u32 = 1000;
const SINK: u32 = 1001;
const CONTROL: u32 = 1002;
const POWEROFF: u32 = 1003;

/// Byte `i` of the test stream.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(7) ^ (i >> 11)) as u8
}

fn fill(buf: &mut [u8], start: u64) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern(start + k as u64);
    }
}

/// Writes `total` pattern bytes.
fn send_pattern(w: &mut impl Write, total: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0;
    while off < total {
        let n = (buf.len() as u64).min(total - off) as usize;
        fill(&mut buf[..n], off);
        w.write_all(&buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// Reads to EOF, checking every byte against the pattern; returns the count.
fn check_pattern(r: &mut impl Read) -> Result<u64, String> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(off),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read after {off} bytes: {e}")),
        };
        for (k, &b) in buf[..n].iter().enumerate() {
            if b != pattern(off + k as u64) {
                return Err(format!("byte {} differs", off + k as u64));
            }
        }
        off += n as u64;
    }
}

// ---------------------------------------------------------------- guest side

fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain data; all zeroes is a valid value.
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

fn vsock_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn vsock_listen(port: u32) -> io::Result<OwnedFd> {
    let fd = vsock_socket()?;
    let a = vsock_addr(libc::VMADDR_CID_ANY, port);
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `a` is a valid sockaddr_vm of `len` bytes that outlives the call.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const a).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: plain call on a socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), 64) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

fn vsock_accept(l: &OwnedFd) -> io::Result<std::fs::File> {
    // SAFETY: accept4 with null address pointers only returns a new fd.
    let fd = unsafe {
        libc::accept4(
            l.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

fn vsock_connect(cid: u32, port: u32) -> io::Result<std::fs::File> {
    let fd = vsock_socket()?;
    let a = vsock_addr(cid, port);
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `a` is a valid sockaddr_vm of `len` bytes that outlives the call.
    if unsafe { libc::connect(fd.as_raw_fd(), (&raw const a).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::fs::File::from(fd))
}

fn shutdown_write(f: &impl AsRawFd) {
    // SAFETY: plain call on a socket we own.
    unsafe { libc::shutdown(f.as_raw_fd(), libc::SHUT_WR) };
}

fn serve(port: u32, handler: fn(std::fs::File)) {
    let l = match vsock_listen(port) {
        Ok(l) => l,
        Err(e) => {
            println!("vsock_peer: cannot listen on port {port}: {e}");
            return;
        }
    };
    thread::spawn(move || loop {
        match vsock_accept(&l) {
            Ok(c) => {
                thread::spawn(move || handler(c));
            }
            Err(e) => println!("vsock_peer: accept on {port}: {e}"),
        }
    });
}

fn echo(mut c: std::fs::File) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    shutdown_write(&c);
}

fn sink(c: std::fs::File) {
    // Hold the connection open and never read from it.
    thread::sleep(Duration::from_secs(3600));
    drop(c);
}

fn control(c: std::fs::File) {
    let mut out = c.try_clone().expect("dup");
    let mut line = String::new();
    if BufReader::new(c).read_line(&mut line).is_err() {
        return;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let reply = match words.as_slice() {
        ["G2H", port, bytes] => match (port.parse(), bytes.parse()) {
            (Ok(port), Ok(bytes)) => guest_to_host(port, bytes),
            _ => "BAD arguments".into(),
        },
        _ => "BAD command".into(),
    };
    let _ = writeln!(out, "{reply}");
}

fn guest_to_host(port: u32, bytes: u64) -> String {
    let s = match vsock_connect(libc::VMADDR_CID_HOST, port) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => return "REFUSED".into(),
        Err(e) => return format!("REFUSED ({e})"),
    };
    let mut w = s.try_clone().expect("dup");
    let writer = thread::spawn(move || {
        let r = send_pattern(&mut w, bytes);
        shutdown_write(&w);
        r
    });
    let mut r = s;
    let got = check_pattern(&mut r);
    let sent = writer.join().expect("writer");
    match (sent, got) {
        (Ok(()), Ok(n)) if n == bytes => format!("OK {n}"),
        (Ok(()), Ok(n)) => format!("BAD echoed {n} of {bytes}"),
        (Err(e), _) => format!("BAD send: {e}"),
        (_, Err(e)) => format!("BAD {e}"),
    }
}

fn poweroff(_c: std::fs::File) {
    println!("vsock_peer: powering off");
    // SAFETY: sync takes no arguments.
    unsafe { libc::sync() };
    // SAFETY: reboot takes no pointers and does not return on success.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
}

fn guest() -> ! {
    serve(ECHO, echo);
    serve(SINK, sink);
    serve(CONTROL, control);
    serve(POWEROFF, poweroff);
    println!("vsock_peer: ready");
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

// ----------------------------------------------------------------- host side

/// Connects to guest `port` through the VMM; Ok(None) if the guest refused
/// (the VMM closed our connection without "OK").
fn host_connect(sock: &Path, port: u32) -> io::Result<Option<UnixStream>> {
    let mut s = UnixStream::connect(sock)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => return Ok(None),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(io::Error::other(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    s.set_read_timeout(None)?;
    Ok(Some(s))
}

fn echo_roundtrip(sock: &Path, bytes: u64) -> Result<(), String> {
    let s = host_connect(sock, ECHO)
        .map_err(|e| e.to_string())?
        .ok_or("guest refused the echo port")?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let writer = thread::spawn(move || {
        let r = send_pattern(&mut w, bytes);
        let _ = w.shutdown(std::net::Shutdown::Write);
        r
    });
    let mut r = s;
    let got = check_pattern(&mut r)?;
    writer
        .join()
        .map_err(|_| "writer panicked")?
        .map_err(|e| format!("send: {e}"))?;
    if got != bytes {
        return Err(format!("echoed {got} of {bytes} bytes"));
    }
    Ok(())
}

fn control_cmd(sock: &Path, cmd: &str) -> Result<String, String> {
    let mut s = host_connect(sock, CONTROL)
        .map_err(|e| e.to_string())?
        .ok_or("guest refused the control port")?;
    s.write_all(cmd.as_bytes()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line.trim().to_string())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// An echo server on the host side of a guest→host port.
fn host_echo_listener(path: PathBuf) -> io::Result<()> {
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path)?;
    thread::spawn(move || {
        for c in l.incoming().flatten() {
            thread::spawn(move || {
                let mut w = c.try_clone().expect("dup");
                let _ = io::copy(&mut &c, &mut w);
                let _ = w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Ok(())
}

type Case = (&'static str, Box<dyn Fn() -> Result<String, String>>);

fn host(sock: PathBuf, vmm_pid: Option<u32>, big: u64) -> i32 {
    // Wait for the guest to listen (it answers RST until then).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match host_connect(&sock, ECHO) {
            Ok(Some(_)) => break,
            _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(250)),
            Ok(None) => {
                println!("FAIL ready: the guest never listened on port {ECHO}");
                return 1;
            }
            Err(e) => {
                println!("FAIL ready: {e}");
                return 1;
            }
        }
    }
    println!("PASS ready");
    let s = sock.clone();
    let s2 = sock.clone();
    let s3 = sock.clone();
    let s4 = sock.clone();
    let s5 = sock.clone();
    let s6 = sock.clone();
    let cases: Vec<Case> = vec![
        (
            "h2g-echo",
            Box::new(move || {
                let t = Instant::now();
                echo_roundtrip(&s, big)?;
                let secs = t.elapsed().as_secs_f64();
                Ok(format!(
                    "{} MiB, {:.1} MiB/s each way",
                    big >> 20,
                    (big >> 20) as f64 / secs
                ))
            }),
        ),
        (
            "g2h-echo",
            Box::new(move || {
                host_echo_listener(PathBuf::from(format!("{}_5000", s2.display())))
                    .map_err(|e| e.to_string())?;
                let t = Instant::now();
                let r = control_cmd(&s2, &format!("G2H 5000 {big}\n"))?;
                if r != format!("OK {big}") {
                    return Err(r);
                }
                let secs = t.elapsed().as_secs_f64();
                Ok(format!(
                    "{} MiB, {:.1} MiB/s each way",
                    big >> 20,
                    (big >> 20) as f64 / secs
                ))
            }),
        ),
        (
            "concurrent-32",
            Box::new(move || {
                let hs: Vec<_> = (0..32)
                    .map(|_| {
                        let s = s3.clone();
                        thread::spawn(move || echo_roundtrip(&s, 1 << 20))
                    })
                    .collect();
                for h in hs {
                    h.join().map_err(|_| "thread panicked")??;
                }
                Ok("32 x 1 MiB echoed".into())
            }),
        ),
        (
            "guest-stops-reading",
            Box::new(move || {
                let before = vmm_pid.and_then(rss_kib);
                let mut c = host_connect(&s4, SINK)
                    .map_err(|e| e.to_string())?
                    .ok_or("guest refused the sink port")?;
                c.set_nonblocking(true).map_err(|e| e.to_string())?;
                let chunk = vec![0x55u8; 1 << 20];
                let mut written = 0u64;
                let mut last_progress = Instant::now();
                while last_progress.elapsed() < Duration::from_secs(3) {
                    match c.write(&chunk) {
                        Ok(n) => {
                            written += n as u64;
                            last_progress = Instant::now();
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(50))
                        }
                        Err(e) => return Err(format!("write: {e}")),
                    }
                    if written > 256 << 20 {
                        return Err("the host writer never blocked".into());
                    }
                }
                let after = vmm_pid.and_then(rss_kib);
                // The VMM must still serve others while this one is stuck.
                echo_roundtrip(&s4, 1 << 20)?;
                let growth = match (before, after) {
                    (Some(b), Some(a)) => {
                        let g = a.saturating_sub(b);
                        if g > 32 * 1024 {
                            return Err(format!("VMM RSS grew by {g} KiB"));
                        }
                        format!(", VMM RSS {b} -> {a} KiB")
                    }
                    _ => String::new(),
                };
                drop(c);
                Ok(format!("writer blocked after {written} bytes{growth}"))
            }),
        ),
        (
            "nothing-listening-in-guest",
            Box::new(move || match host_connect(&s5, 4444) {
                Ok(None) => Ok("host connection closed".into()),
                Ok(Some(_)) => Err("got OK for a port nobody listens on".into()),
                Err(e) => Err(e.to_string()),
            }),
        ),
        (
            "nothing-listening-on-host",
            Box::new(move || {
                let r = control_cmd(&s6, "G2H 5999 1\n")?;
                if r.starts_with("REFUSED") {
                    Ok("guest connect refused".into())
                } else {
                    Err(r)
                }
            }),
        ),
    ];
    let (mut passed, mut failed) = (1, 0); // "ready" passed above
    for (name, f) in cases {
        eprintln!("vsock_peer: running {name}");
        match f() {
            Ok(detail) => {
                println!("PASS {name}: {detail}");
                passed += 1;
            }
            Err(e) => {
                println!("FAIL {name}: {e}");
                failed += 1;
            }
        }
    }
    // Power the guest off so the VMM exits cleanly.
    let _ = host_connect(&sock, POWEROFF);
    println!("vsock: {passed} passed, {failed} failed");
    i32::from(failed > 0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str);
    match mode {
        Some("guest") => guest(),
        Some("host") => {
            let mut sock = None;
            let mut pid = None;
            let mut mib = 64u64;
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match (a.as_str(), it.next()) {
                    ("--sock", Some(p)) => sock = Some(PathBuf::from(p)),
                    ("--vmm-pid", Some(p)) => pid = p.parse().ok(),
                    ("--mib", Some(m)) => mib = m.parse().unwrap_or(64),
                    _ => {
                        eprintln!("usage: vsock_peer host --sock PATH [--vmm-pid PID] [--mib N]");
                        std::process::exit(2);
                    }
                }
            }
            let Some(sock) = sock else {
                eprintln!("usage: vsock_peer host --sock PATH [--vmm-pid PID] [--mib N]");
                std::process::exit(2);
            };
            std::process::exit(host(sock, pid, mib << 20));
        }
        // As PID 1 without arguments: serve.
        _ if std::process::id() == 1 => guest(),
        _ => {
            eprintln!("usage: vsock_peer guest | host --sock PATH [--vmm-pid PID]");
            std::process::exit(2);
        }
    }
}
