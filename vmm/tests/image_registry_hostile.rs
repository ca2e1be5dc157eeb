//! `husk pull` against a hostile registry (F3 of the security review): a
//! server on 127.0.0.1, started by the test, that answers the manifest, the
//! bearer token or an error with a huge body (256 MiB, sent until the
//! client hangs up). The pull must fail with one line (naming the limit
//! where a limit is what refused it), read only a bounded prefix of the
//! body, and stay small: the peak RSS of `husk` and of the `husk-pull` it
//! waits for (`wait4`'s `ru_maxrss` covers reaped descendants) stays under
//! [`MAX_RSS_KIB`]. A client that reads bodies whole before checking their
//! size (oci-client 0.18) reaches hundreds of MiB here and fails the test.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[path = "common/peak_rss.rs"]
mod peak_rss;

/// What the hostile server sends at most.
const HUGE: u64 = 256 << 20;
/// The peak RSS a refused pull may reach (a debug build; a normal pull
/// stays near 20 MiB).
const MAX_RSS_KIB: i64 = 64 << 10;
/// How much of a huge body may be sent before the client hangs up:
/// the cap plus what loopback socket buffers hold.
const MAX_SENT: u64 = 48 << 20;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// The manifest: 200 with a `Content-Length` of [`HUGE`].
    ManifestWithLength,
    /// The manifest: 200, no length, the body ends when the connection does.
    ManifestEndless,
    /// `/v2/` asks for a bearer token; the token answer is huge.
    Token,
    /// The manifest request fails: HTTP 500 with a huge error body.
    ErrorBody,
    /// The manifest is fine; the config blob fails with a huge error body.
    BlobErrorBody,
}

/// A hostile registry on 127.0.0.1; counts the body bytes it managed to send.
struct Hostile {
    port: u16,
    sent: Arc<AtomicU64>,
}

fn hostile(mode: Mode) -> Hostile {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let counter = counter.clone();
            std::thread::spawn(move || answer(conn, mode, port, &counter));
        }
    });
    Hostile { port, sent }
}

/// A config digest the manifest of [`Mode::BlobErrorBody`] names.
const CONFIG: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn answer(conn: TcpStream, mode: Mode, port: u16, sent: &AtomicU64) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut out = &conn;
        if path == "/v2/" && mode == Mode::Token {
            let _ = write!(
                out,
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"hostile\"\r\nContent-Length: 0\r\n\r\n"
            );
        } else if path == "/v2/" {
            let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{{}}");
        } else if path.starts_with("/token") {
            huge(out, "200 OK", Some(HUGE), b"{\"token\":\"", sent);
            return;
        } else if path.contains("/manifests/") {
            match mode {
                Mode::ManifestWithLength => huge(out, "200 OK", Some(HUGE), b"{", sent),
                Mode::ManifestEndless | Mode::Token => huge(out, "200 OK", None, b"{", sent),
                Mode::ErrorBody => huge(out, "500 Internal Server Error", None, b"oops ", sent),
                Mode::BlobErrorBody => {
                    let m = format!(
                        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{CONFIG}","size":100}},"layers":[]}}"#
                    );
                    let _ = write!(
                        out,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n{m}",
                        m.len()
                    );
                    continue;
                }
            }
            return;
        } else if path.contains("/blobs/") {
            huge(
                out,
                "500 Internal Server Error",
                Some(HUGE),
                b"{\"errors\":[",
                sent,
            );
            return;
        } else {
            let _ = write!(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    }
}

/// Sends `status` and a body of `start` then filler, [`HUGE`] bytes in all,
/// or less if the client hangs up first.
fn huge(mut out: &TcpStream, status: &str, length: Option<u64>, start: &[u8], sent: &AtomicU64) {
    let length = match length {
        Some(n) => format!("Content-Length: {n}\r\n"),
        None => "Connection: close\r\n".to_string(),
    };
    if write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{length}\r\n"
    )
    .is_err()
    {
        return;
    }
    let _ = out.write_all(start);
    let filler = vec![b'a'; 64 << 10];
    let mut total = start.len() as u64;
    while total < HUGE {
        let n = filler.len().min((HUGE - total) as usize);
        if out.write_all(&filler[..n]).is_err() {
            break;
        }
        total += n as u64;
        sent.fetch_max(total, Ordering::Relaxed);
    }
}

/// Runs `husk pull` of the hostile registry's image; returns (exit status,
/// stderr, peak RSS in KiB of husk and its reaped helper).
fn pull(root: &PathBuf, port: u16) -> (i32, String, i64) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_husk"));
    cmd.args(["pull", "-q", &format!("127.0.0.1:{port}/evil/img:1")])
        .env("HUSK_ROOT", root)
        .env("HOME", root)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("HUSK_REGISTRY_CA");
    peak_rss::run(&mut cmd, Duration::from_secs(300))
}

/// Runs the case and checks what every case must hold; returns stderr.
fn refused(name: &str, mode: Mode, want_status: i32) -> String {
    let root = std::env::temp_dir().join(format!("husk-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let server = hostile(mode);
    let (code, err, rss) = pull(&root, server.port);
    let sent = server.sent.load(Ordering::Relaxed);
    eprintln!("{name}: exit {code}, peak RSS {rss} KiB, {sent} body bytes sent: {err}");
    assert_eq!(code, want_status, "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("husk: "), "{err:?}");
    assert!(err.len() < 600, "a long error line: {err:?}");
    assert!(
        rss < MAX_RSS_KIB,
        "peak RSS {rss} KiB (limit {MAX_RSS_KIB})"
    );
    assert!(
        sent < MAX_SENT,
        "the client read {sent} bytes of a huge body"
    );
    let tmp: Vec<_> = std::fs::read_dir(root.join("images/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
    let _ = std::fs::remove_dir_all(&root);
    err
}

#[test]
fn huge_manifest_with_a_length_is_refused_before_reading() {
    let err = refused("mlen", Mode::ManifestWithLength, 122);
    assert!(
        err.contains("larger than the limit of 4194304 bytes"),
        "{err}"
    );
}

#[test]
fn endless_manifest_is_cut_at_the_limit() {
    let err = refused("mend", Mode::ManifestEndless, 122);
    assert!(
        err.contains("larger than the limit of 4194304 bytes"),
        "{err}"
    );
}

#[test]
fn huge_token_answer_is_refused() {
    let err = refused("token", Mode::Token, 121);
    assert!(
        err.contains("token answer is larger than the limit of 1048576 bytes"),
        "{err}"
    );
}

#[test]
fn huge_error_body_is_read_only_in_part() {
    let err = refused("error", Mode::ErrorBody, 121);
    assert!(err.contains("answered HTTP 500: oops aaa"), "{err}");
}

#[test]
fn huge_blob_error_body_is_read_only_in_part() {
    let err = refused("blob", Mode::BlobErrorBody, 121);
    assert!(err.contains("answered HTTP 500"), "{err}");
}
