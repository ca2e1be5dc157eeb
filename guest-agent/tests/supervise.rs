//! Process supervision through the real agent server and protocol, with
//! real processes: exit codes, signals, stdio streaming and backpressure,
//! TTYs, reaping, grace-period kills, protocol misuse.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{args, exec, run, sh, Server};
use husk_agent_client::{ClientError, ProcEvent};
use husk_proto::{
    ErrorKind, ExitStatus, Frame, FrameReader, FrameWriter, Message, ProcessSpec, Reply, Request,
    TtySize,
};

#[test]
fn exit_codes_and_signals_are_reported() {
    need_root!();
    let srv = Server::start();
    let s = srv.session();
    for code in [0, 1, 42] {
        let (_, _, status) = run(&s, sh(&format!("exit {code}")));
        assert_eq!(status, ExitStatus::Code(code));
    }
    let (_, _, status) = run(&s, sh("kill -9 $$"));
    assert_eq!(status, ExitStatus::Signal(libc::SIGKILL));
    let (_, _, status) = run(&s, sh("kill -SEGV $$"));
    assert_eq!(status, ExitStatus::Signal(libc::SIGSEGV));
}

#[test]
fn ten_mib_of_stdout_arrive_intact_and_in_order() {
    need_root!();
    let srv = Server::start();
    let s = srv.session();
    // 1..=1_500_000, one per line: ~10.9 MB whose order is checkable.
    let (out, err, status) = run(
        &s,
        ProcessSpec {
            args: args(&["seq", "1", "1500000"]),
            ..Default::default()
        },
    );
    assert_eq!(
        status,
        ExitStatus::Code(0),
        "{}",
        String::from_utf8_lossy(&err)
    );
    let expected: String = (1..=1_500_000).map(|i| format!("{i}\n")).collect();
    assert!(out.len() > 10 << 20);
    assert!(
        out == expected.as_bytes(),
        "stdout differs from seq's output"
    );
}

#[test]
fn interleaved_stdout_and_stderr_stay_separate_and_ordered() {
    need_root!();
    let srv = Server::start();
    let s = srv.session();
    let (out, err, status) = run(
        &s,
        sh("i=0; while [ $i -lt 2000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done"),
    );
    assert_eq!(status, ExitStatus::Code(0));
    let want = |p: &str| -> String { (0..2000).map(|i| format!("{p}{i}\n")).collect() };
    assert_eq!(String::from_utf8(out).unwrap(), want("out"));
    assert_eq!(String::from_utf8(err).unwrap(), want("err"));
}

#[test]
fn stdin_round_trips_through_cat() {
    need_root!();
    let srv = Server::start();
    let s = srv.session();
    let p = exec(
        &s,
        ProcessSpec {
            args: args(&["cat"]),
            stdin: true,
            ..Default::default()
        },
    )
    .unwrap();
    // 3 MiB: several windows' worth, so credit must flow back.
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 + i / 1000) as u8).collect();
    let writer = {
        let data = data.clone();
        // The session is shared; the process handle is used from this thread
        // for reading, so write from a scoped thread.
        std::thread::scope(|sc| {
            let stdin = p.stdin();
            let h = sc.spawn(move || {
                stdin.write(&data).unwrap();
                stdin.close().unwrap();
            });
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (status, _) = p.wait_with_output(&mut out, &mut err).unwrap();
            h.join().unwrap();
            (out, status)
        })
    };
    let (out, status) = writer;
    assert_eq!(status, ExitStatus::Code(0));
    assert!(out == data, "cat echoed different bytes");
}

#[test]
fn output_stops_at_the_window_until_credit_is_granted() {
    need_root!();
    let srv = Server::start();
    // Speak the protocol directly, so no credit is granted behind our back.
    let stream = UnixStream::connect(&srv.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut w = FrameWriter::new(stream.try_clone().unwrap());
    let mut r = FrameReader::new(stream.try_clone().unwrap());
    w.write_frame(&Frame::Control(Message::Hello {
        min_version: 1,
        max_version: 1,
        software: "t".into(),
    }))
    .unwrap();
    assert!(matches!(
        r.read_frame().unwrap(),
        Frame::Control(Message::Welcome { .. })
    ));
    // 64 chunks of 64 KiB (4 MiB), each followed by a progress line on stderr.
    let script =
        "i=0; while [ $i -lt 64 ]; do head -c 65536 /dev/zero; i=$((i+1)); echo $i >&2; done";
    w.write_frame(&Frame::Control(Message::Request {
        id: 1,
        body: Request::Exec {
            container: None,
            process: Box::new(sh(script)),
        },
    }))
    .unwrap();
    let proc = match r.read_frame().unwrap() {
        Frame::Control(Message::Response {
            result: husk_proto::Outcome::Ok(Reply::Started { proc, .. }),
            ..
        }) => proc,
        other => panic!("{other:?}"),
    };
    std::thread::sleep(Duration::from_millis(1500));
    // Everything sent so far: at most one window of stdout.
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let (mut stdout, mut progress) = (0usize, 0u32);
    let tally = |f: Frame, stdout: &mut usize, progress: &mut u32| match f {
        Frame::Data {
            stream: husk_proto::Stream::Stdout,
            bytes,
            ..
        } => *stdout += bytes.len(),
        Frame::Data {
            stream: husk_proto::Stream::Stderr,
            bytes,
            ..
        } => {
            if let Some(n) = String::from_utf8_lossy(&bytes)
                .lines()
                .last()
                .and_then(|l| l.parse().ok())
            {
                *progress = n;
            }
        }
        _ => {}
    };
    while let Ok(f) = r.read_frame() {
        tally(f, &mut stdout, &mut progress);
    }
    assert_eq!(
        stdout,
        husk_proto::INITIAL_WINDOW as usize,
        "stdout sent without credit"
    );
    // window + pipe buffer + the chunk in flight: far below 64.
    assert!(
        progress <= 8,
        "writer was not held back: {progress} chunks written"
    );
    // Grant the rest: the process completes.
    w.write_frame(&Frame::Control(Message::Credit {
        proc,
        stream: husk_proto::Stream::Stdout,
        bytes: 64 << 20,
    }))
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    loop {
        match r.read_frame().unwrap() {
            Frame::Control(Message::Event {
                event: husk_proto::Event::Exited { status, .. },
            }) => {
                assert_eq!(status, ExitStatus::Code(0));
                break;
            }
            f => tally(f, &mut stdout, &mut progress),
        }
    }
    assert_eq!(stdout, 64 * 65536);
    assert_eq!(progress, 64);
}

#[test]
fn orphaned_grandchildren_are_reaped() {
    need_root!();
    let srv = Server::start();
    let s = srv.session();
    // The inner shell exits at once, orphaning five sleepers; they are
    // re-parented to the agent (a subreaper here, PID 1 in the guest).
    let (_, _, status) = run(
        &s,
        sh("sh -c 'for i in 1 2 3 4 5; do sleep 0.3 & done; exit 0'; exit 0"),
    );
    assert_eq!(status, ExitStatus::Code(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (children, zombies) = children_of(srv.pid());
        if children == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{children} children left, {zombies} zombies"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (children, zombie children) of `pid`, from /proc.
fn children_of(pid: i32) -> (usize, usize) {
    let (mut n, mut z) = (0, 0);
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(pid) {
            n += 1;
            if f[0] == "Z" {
                z += 1;
            }
        }
    }
    (n, z)
}

#[test]
fn sigterm_ignoring_process_is_killed_after_the_grace_period() {
    need_root!();
    let srv = Server::start();
    let s = srv.session();
    let p = exec(
        &s,
        sh("trap '' TERM; echo ready; while :; do sleep 0.05; done"),
    )
    .unwrap();
    assert_eq!(
        p.next_event().unwrap(),
        ProcEvent::Stdout(b"ready\n".to_vec())
    );
    let t0 = Instant::now();
    let reply = s
        .call(Request::Stop {
            proc: p.proc,
            grace_ms: 700,
        })
        .unwrap();
    let waited = t0.elapsed();
    assert_eq!(
        reply,
        Reply::Stopped {
            status: ExitStatus::Signal(libc::SIGKILL)
        }
    );
    assert!(
        waited >= Duration::from_millis(700),
        "killed after {waited:?}"
    );
    // A process that honours SIGTERM ends with it, well within the grace.
    let p = exec(&s, sh("echo ready; exec sleep 30")).unwrap();
    assert_eq!(
        p.next_event().unwrap(),
        ProcEvent::Stdout(b"ready\n".to_vec())
    );
    let t0 = Instant::now();
    let reply = s
        .call(Request::Stop {
            proc: p.proc,
            grace_ms: 10_000,
        })
        .unwrap();
    let waited = t0.elapsed();
    assert_eq!(
        reply,
        Reply::Stopped {
            status: ExitStatus::Signal(libc::SIGTERM)
        },
        "after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5));
}

#[test]
fn signals_are_delivered() {
    need_root!();
    let srv = Server::start();
    let s = srv.session();
    let p = exec(
        &s,
        sh("trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.05; done"),
    )
    .unwrap();
    assert_eq!(
        p.next_event().unwrap(),
        ProcEvent::Stdout(b"ready\n".to_vec())
    );
    s.call(Request::Signal {
        proc: p.proc,
        signal: libc::SIGUSR1,
    })
    .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (status, _) = p.wait_with_output(&mut out, &mut err).unwrap();
    assert_eq!(out, b"got-usr1\n");
    assert_eq!(status, ExitStatus::Code(3));
}

#[test]
fn tty_processes_get_a_terminal_and_resizes() {
    need_root!();
    let srv = Server::start();
    let s = srv.session();
    let p = exec(
        &s,
        ProcessSpec {
            args: args(&[
                "/bin/sh",
                "-c",
                "stty size; read x; stty size; [ -t 0 ] && echo is-a-tty",
            ]),
            tty: true,
            tty_size: Some(TtySize {
                rows: 30,
                cols: 100,
            }),
            stdin: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("30 100") {
        match p.next_event().unwrap() {
            ProcEvent::Stdout(b) => seen.extend(b),
            other => panic!("unexpected {other:?}"),
        }
    }
    s.call(Request::ResizeTty {
        proc: p.proc,
        rows: 40,
        cols: 120,
    })
    .unwrap();
    p.write_stdin(b"go\n").unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (status, _) = p.wait_with_output(&mut out, &mut err).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("40 120"), "{text}");
    assert!(text.contains("is-a-tty"), "{text}");
    assert_eq!(status, ExitStatus::Code(0));
}

#[test]
fn bad_requests_fail_cleanly() {
    need_root!();
    let srv = Server::start();
    let s = srv.session();
    let err = |r: Result<husk_agent_client::Process, ClientError>| match r {
        Err(ClientError::Agent(e)) => e,
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("started"),
    };
    let e = err(exec(
        &s,
        ProcessSpec {
            args: args(&["/nonexistent/prog"]),
            ..Default::default()
        },
    ));
    assert_eq!(e.kind, ErrorKind::Spawn);
    assert!(e.message.contains("/nonexistent/prog"), "{}", e.message);
    let e = err(exec(&s, ProcessSpec::default()));
    assert_eq!(e.kind, ErrorKind::BadRequest);
    let e = err(exec(
        &s,
        ProcessSpec {
            args: args(&["true"]),
            env: vec!["NOEQ".into()],
            ..Default::default()
        },
    ));
    assert_eq!(e.kind, ErrorKind::BadRequest);
    match s.call(Request::Signal {
        proc: 9999,
        signal: 15,
    }) {
        Err(ClientError::Agent(e)) => assert_eq!(e.kind, ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    // The session still works.
    assert!(matches!(s.ping().unwrap(), Reply::Pong { .. }));
}

#[test]
fn protocol_misuse_is_refused_without_harm() {
    need_root!();
    let srv = Server::start();
    // A version range the agent does not speak.
    let stream = UnixStream::connect(&srv.socket).unwrap();
    let mut w = FrameWriter::new(stream.try_clone().unwrap());
    let mut r = FrameReader::new(stream);
    w.write_frame(&Frame::Control(Message::Hello {
        min_version: 99,
        max_version: 100,
        software: "future".into(),
    }))
    .unwrap();
    assert!(matches!(
        r.read_frame().unwrap(),
        Frame::Control(Message::Refused { .. })
    ));
    // An oversized frame and garbage: the agent drops the connection.
    let mut raw = UnixStream::connect(&srv.socket).unwrap();
    raw.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let mut buf = [0u8; 16];
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        raw.read(&mut buf).unwrap(),
        0,
        "connection should be closed"
    );
    let mut raw = UnixStream::connect(&srv.socket).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(raw.read(&mut buf).unwrap_or(0), 0);
    // The agent still serves others.
    let s = srv.session();
    assert!(matches!(s.ping().unwrap(), Reply::Pong { .. }));
}

#[test]
fn disconnect_kills_the_connections_processes() {
    need_root!();
    let srv = Server::start();
    let pid = {
        let s = srv.session();
        let p = exec(&s, sh("echo ready; exec sleep 60")).unwrap();
        assert_eq!(
            p.next_event().unwrap(),
            ProcEvent::Stdout(b"ready\n".to_vec())
        );
        p.pid
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    // SAFETY: kill with signal 0 only checks for existence.
    while unsafe { libc::kill(pid, 0) } == 0 {
        assert!(Instant::now() < deadline, "process survived its connection");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Closing stdin of a TTY process delivers end of file (VEOF), after a
/// full line and after a partial one.
#[test]
fn closing_tty_stdin_gives_eof() {
    need_root!();
    let srv = Server::start();
    let s = srv.session();
    for input in [&b"one line\n"[..], b"partial", b""] {
        let p = exec(
            &s,
            ProcessSpec {
                args: args(&["/bin/sh", "-c", "stty -echo; echo go; cat; echo END"]),
                tty: true,
                stdin: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("go") {
            match p.next_event().unwrap() {
                ProcEvent::Stdout(b) => seen.extend(b),
                other => panic!("unexpected {other:?}"),
            }
        }
        if !input.is_empty() {
            p.write_stdin(input).unwrap();
        }
        p.close_stdin().unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (status, _) = p.wait_with_output(&mut out, &mut err).unwrap();
        let text = String::from_utf8_lossy(&out).replace('\r', "");
        let want = String::from_utf8_lossy(input).into_owned();
        assert!(text.contains(&want), "{text:?}");
        assert!(text.contains("END"), "cat did not see EOF: {text:?}");
        assert_eq!(status, ExitStatus::Code(0));
    }
}
