//! The session against a fake agent that breaks the rules: floods beyond
//! its credit, repeats ends of stream, never answers. The fake
//! ([`FakeAgent`]) speaks raw frames on one end of a socket pair; the
//! session under test is the real one.

use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

use husk_proto::message::*;
use husk_proto::Frame;
use husk_proto::{INITIAL_WINDOW, MAX_DATA};

use crate::inbox::{MAX_QUEUED_COST, MAX_RECORDS};
use crate::session::{ClientError, ProcEvent, Session};
use crate::testing::FakeAgent;

/// A session with a fake agent running `agent` on a thread of its own.
fn session_with(agent: impl FnOnce(FakeAgent) + Send + 'static) -> (Session, JoinHandle<()>) {
    let (host, guest) = UnixStream::pair().unwrap();
    let fake = std::thread::spawn(move || {
        let mut f = FakeAgent::new(guest);
        f.handshake();
        agent(f);
    });
    (Session::start(host, "test").unwrap(), fake)
}

fn exec() -> Request {
    Request::Exec {
        container: None,
        process: Box::default(),
    }
}

fn lost_reason(e: ClientError) -> String {
    match e {
        ClientError::Lost(why) | ClientError::NoAnswer(why) => why,
        other => panic!("expected a lost session, got {other}"),
    }
}

/// F2: an agent that ignores credit and floods stdout while the host reads
/// slowly. Before the host checked the window, every frame queued (the
/// supervisor grew by the amount sent); now the frame past the window ends
/// the session with a protocol error and the queue never held more than
/// its bound.
#[test]
fn output_beyond_the_credit_ends_the_session() {
    const FLOOD: usize = 64 << 20;
    let (session, fake) = session_with(|mut f| {
        f.start_proc();
        let chunk = vec![b'x'; MAX_DATA];
        let mut sent = 0;
        while sent < FLOOD && f.data(Stream::Stdout, &chunk) {
            sent += chunk.len();
        }
    });
    let p = session.start_process(exec()).unwrap();
    let mut got = 0;
    let why = loop {
        // A slow reader: the agent gets ahead by far more than the window.
        std::thread::sleep(Duration::from_millis(20));
        match p.next_event() {
            Ok(ProcEvent::Stdout(b)) => got += b.len(),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => break lost_reason(e),
        }
    };
    fake.join().unwrap();
    assert!(
        why.contains("broke the protocol") && why.contains("beyond the credit"),
        "{why}"
    );
    let peak = p.peak_queued();
    eprintln!("flood: {got} bytes delivered, peak queued {peak} bytes (bound {MAX_QUEUED_COST})");
    assert!(got <= 2 * INITIAL_WINDOW as usize, "{got}");
    // One stream's window and a record or two: far below what was sent.
    assert!(peak <= INITIAL_WINDOW as usize + 64, "{peak}");
    assert_eq!(session.lost().as_deref(), Some(why.as_str()));
    assert!(matches!(session.ping(), Err(ClientError::Lost(_))));
}

/// The agent keeps the rule: output in odd-sized pieces, never more than
/// the credit it was granted. A slow reader gets every byte in order and
/// the queue stays within the window.
#[test]
fn output_within_the_credit_arrives_whole() {
    const TOTAL: usize = 3 << 20;
    let (session, fake) = session_with(|mut f| {
        f.start_proc();
        let mut credit = INITIAL_WINDOW as usize;
        let mut sent = 0;
        let mut size = 1;
        while sent < TOTAL {
            if credit == 0 {
                match f.read().unwrap() {
                    Frame::Control(Message::Credit { bytes, .. }) => credit += bytes as usize,
                    other => panic!("unexpected {other:?}"),
                }
                continue;
            }
            let n = size.min(credit).min(TOTAL - sent).min(MAX_DATA);
            let bytes: Vec<u8> = (sent..sent + n).map(|i| i as u8).collect();
            assert!(f.data(Stream::Stdout, &bytes));
            sent += n;
            credit -= n;
            size = size * 7 % 70_001 + 1;
        }
        f.data(Stream::Stdout, &[]);
        f.exit(0);
    });
    let p = session.start_process(exec()).unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let (status, _) = p.wait_with_output(&mut out, &mut err).unwrap();
    fake.join().unwrap();
    assert_eq!(status, ExitStatus::Code(0));
    assert_eq!(out.len(), TOTAL);
    assert!(out.iter().enumerate().all(|(i, &b)| b == i as u8));
    assert!(p.peak_queued() <= MAX_QUEUED_COST, "{}", p.peak_queued());
}

/// Within the window but as badly as it can: one-byte frames alternating
/// stdout and stderr, a window of each, nothing read meanwhile. Runs stop
/// splitting past MAX_RECORDS, so the queue costs at most its bound; each
/// stream's bytes still come out in order.
#[test]
fn alternating_tiny_frames_stay_bounded() {
    let n = INITIAL_WINDOW as usize;
    let (session, fake) = session_with(move |mut f| {
        f.start_proc();
        for i in 0..n {
            assert!(f.data(Stream::Stdout, &[i as u8]));
            assert!(f.data(Stream::Stderr, &[!(i as u8)]));
        }
        // Answered after every data frame: once the host has the answer,
        // its reader has queued them all.
        let (id, _) = f.request().unwrap();
        f.reply(
            id,
            Reply::Pong {
                version: 1,
                software: "fake".into(),
            },
        );
        f.exit(0);
    });
    let p = session.start_process(exec()).unwrap();
    session.ping().unwrap();
    let peak = p.peak_queued();
    eprintln!(
        "alternating: {} one-byte frames, peak queued {peak} bytes (bound {MAX_QUEUED_COST})",
        2 * n
    );
    assert!(peak >= 2 * n && peak <= MAX_QUEUED_COST, "{peak}");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut events = 0;
    loop {
        match p.next_event().unwrap() {
            ProcEvent::Stdout(b) => out.extend(b),
            ProcEvent::Stderr(b) => err.extend(b),
            ProcEvent::Eof(_) => {}
            ProcEvent::Exited { .. } => break,
        }
        events += 1;
    }
    fake.join().unwrap();
    assert!(events <= MAX_RECORDS + 4 * (n / MAX_DATA + 1), "{events}");
    assert!(out.iter().enumerate().all(|(i, &b)| b == i as u8));
    assert!(err.iter().enumerate().all(|(i, &b)| b == !(i as u8)));
    assert_eq!((out.len(), err.len()), (n, n));
}

/// Records without bytes are not bounded by the window, so each may come
/// once: a second end of stream, data after it, or stdin data from the
/// agent ends the session.
#[test]
fn empty_frames_cannot_flood() {
    type Misbehave = fn(&mut FakeAgent);
    let cases: [(&str, Misbehave); 3] = [
        ("after its end of stream", |f| {
            for _ in 0..100_000 {
                if !f.data(Stream::Stderr, &[]) {
                    break;
                }
            }
        }),
        ("after its end of stream", |f| {
            f.data(Stream::Stdout, &[]);
            f.data(Stream::Stdout, b"x");
        }),
        ("stdin data", |f| {
            f.data(Stream::Stdin, b"x");
        }),
    ];
    for (needle, misbehave) in cases {
        let (session, fake) = session_with(move |mut f| {
            f.start_proc();
            misbehave(&mut f);
        });
        let p = session.start_process(exec()).unwrap();
        let why = loop {
            match p.next_event() {
                Ok(_) => {}
                Err(e) => break lost_reason(e),
            }
        };
        fake.join().unwrap();
        assert!(
            why.contains("broke the protocol") && why.contains(needle),
            "{why}"
        );
        assert!(p.peak_queued() < 1024, "{}", p.peak_queued());
    }
}

/// F10: an agent that accepts and never answers the handshake.
#[test]
fn a_silent_agent_fails_the_handshake() {
    let (host, guest) = UnixStream::pair().unwrap();
    let fake = std::thread::spawn(move || {
        let mut f = FakeAgent::new(guest);
        let _ = f.read();
        // Holds the connection open, says nothing, until the host gives up.
        let _ = f.read();
    });
    let err = Session::start_within(host, "test", Duration::from_millis(200))
        .err()
        .unwrap();
    assert!(
        matches!(&err, ClientError::NoAnswer(why) if why.contains("handshake")),
        "{err}"
    );
    drop(err);
    fake.join().unwrap();
}

/// F10: an agent that completes the handshake, starts a process, then
/// answers nothing more. The request fails with a clear reason and the
/// session is over for everyone: other callers and the process's reader
/// see the same reason instead of waiting forever.
#[test]
fn a_reply_that_never_comes_ends_the_session() {
    let (session, fake) = session_with(|mut f| {
        f.start_proc();
        // Read (and ignore) until the host hangs up.
        while f.request().is_some() {}
    });
    let p = session.start_process(exec()).unwrap();
    let err = session
        .call_within(Request::Ping, Duration::from_millis(200))
        .unwrap_err();
    let why = lost_reason(err);
    assert_eq!(why, "the agent did not answer ping within 200ms");
    assert_eq!(lost_reason(p.next_event().unwrap_err()), why);
    assert_eq!(lost_reason(session.ping().unwrap_err()), why);
    assert!(p.write_stdin(b"x").is_err());
    fake.join().unwrap();
}
