//! A `husk` command that writes the store, killed with SIGKILL at random
//! points (with any helper it started), and what it must leave: `husk check` finds at most debris (an
//! interrupted write's temp files), never a damaged blob or image;
//! `--repair` leaves the store clean; `husk images` shows the image whole or
//! not at all; the command run again completes and checks clean. Shared by
//! the import and pull tests through `#[path]`, beside `husk_cli`.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::husk_cli::husk;

/// Kills rounds of one command at random points.
pub struct Killer {
    rng: rand::rngs::StdRng,
    seed: u64,
    /// Delays are below this many microseconds.
    span: u64,
    /// Rounds whose command was still running when killed.
    pub killed: usize,
    /// Rounds that left debris `--repair` removed.
    pub debris: usize,
}

impl Killer {
    /// Seeded from `$HUSK_KILL_SEED`, else the clock (printed, so a failing
    /// run can be repeated); kills land within 1.5 times `typical`, how
    /// long the command takes here.
    pub fn new(typical: Duration) -> Killer {
        let seed = std::env::var("HUSK_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("HUSK_KILL_SEED={seed}");
        Killer {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            seed,
            span: (typical.as_micros() as u64 * 3 / 2).max(1),
            killed: 0,
            debris: 0,
        }
    }

    /// How long `husk ARGS` takes on `root` (which it leaves changed).
    pub fn time(root: &Path, args: &[&str]) -> Duration {
        let t = Instant::now();
        let (rc, _, err) = husk(root, args);
        assert_eq!(rc, 0, "{err}");
        t.elapsed()
    }

    /// One round: removes the image `name` and its blobs (`rmi`, `gc`) so
    /// that `husk ARGS` writes them again, kills it after a random delay,
    /// and checks what it left (see the module doc); `blobs` is how many
    /// blobs the image has.
    pub fn round(&mut self, root: &Path, name: &str, args: &[&str], blobs: usize) {
        let seed = self.seed;
        let _ = husk(root, &["rmi", name]);
        let (rc, _, err) = husk(root, &["gc"]);
        assert_eq!(rc, 0, "{err}");
        // In a process group of its own, killed whole: `husk pull`'s
        // helper dies with it, mid-blob, as on a crash or an OOM kill of both.
        let mut child = Command::new(env!("CARGO_BIN_EXE_husk"))
            .args(args)
            .env("HUSK_ROOT", root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(self.rng.gen_range(0..self.span)));
        if child.try_wait().unwrap().is_none() {
            self.killed += 1;
        }
        // SAFETY: kill() only sends a signal, to the group this test made
        // (its id is the child's pid, not yet reaped, so not reused).
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        child.wait().unwrap();

        let (rc, out, err) = husk(root, &["check"]);
        assert!(rc == 0 || rc == 122, "seed {seed}: {rc} {err}");
        for line in out.lines().filter(|l| l.starts_with("damaged: ")) {
            assert!(
                line.contains(": left by an interrupted ") && line.contains("(--repair will"),
                "seed {seed}: not debris: {line}"
            );
        }
        if rc == 122 {
            self.debris += 1;
            let (rc, out, _) = husk(root, &["check", "--repair"]);
            assert_eq!(rc, 0, "seed {seed}: {out}");
        }
        let (rc, out, _) = husk(root, &["check"]);
        assert_eq!(rc, 0, "seed {seed}: {out}");
        // The image is there whole (it checked clean) or not at all.
        let (rc, json, _) = husk(root, &["images", "--json"]);
        assert_eq!(rc, 0);
        let images: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        assert!(images.len() <= 1, "{json}");

        let (rc, _, err) = husk(root, args);
        assert_eq!(rc, 0, "seed {seed}: run again: {err}");
        let (rc, out, _) = husk(root, &["check"]);
        assert_eq!(rc, 0, "seed {seed}: {out}");
        let whole = format!("checked 1 image(s), {blobs} blob(s)");
        assert!(out.starts_with(&whole), "seed {seed}: {out}");
    }

    /// Prints the tally; fails when no round killed a running command.
    pub fn finish(&self, rounds: usize, what: &str) {
        eprintln!(
            "{rounds} {what}: {} killed while running, {} left debris that --repair removed",
            self.killed, self.debris
        );
        assert!(
            self.killed > 0,
            "no {what} was killed while it ran: the delays are too short for this host"
        );
    }
}
