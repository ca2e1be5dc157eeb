//! Starting Debian's `docker-registry` for a test: one place for the
//! spawn and the wait until it accepts connections (shared by the registry
//! and trust tests through `#[path]`, as each test file is its own crate).

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Serves `config` (which listens on 127.0.0.1:`port`); returns once the
/// port answers, or panics after 20 s.
pub fn serve(config: &Path, port: u16) -> Child {
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "registry did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}
