//! The measurement log: one record per measured event, one JSON object per
//! line, appended under a lock and synced before the pod's VM starts; and
//! its replay.
//!
//! A record has the shape of a TCG Canonical Event Log (CEL-JSON) record,
//! the form systemd writes to `/run/log/systemd/tpm2-measure.log`:
//!
//! ```json
//! {"recnum":7,"pcr":15,"digests":[{"hashAlg":"sha256","digest":"<64 hex>"}],
//!  "content_type":"husk",
//!  "content":{"event":"kernel","pod":"<id>","pod_name":"web","data":"/usr/lib/husk/vmlinux","time":1765000000},
//!  "tpm":{"reset_count":3,"restart_count":0,"base":"<64 hex>"}}
//! ```
//!
//! (on one line). `tpm` is there when the digest was extended into the
//! TPM's PCR, with the TPM's clock counters at that moment; `base` (only on
//! the first record husk extends after the PCR was reset, or after records
//! that were not extended) is the PCR's value just before. Records without
//! `tpm` were logged without a TPM.
//!
//! Replay, as any verifier can do it without husk: read the TPM's
//! `resetCount` and `restartCount` (`tpm2_readclock`), take the records
//! whose `pcr` is the PCR and whose `tpm` has those counts, in file order;
//! start from the first one's `base` (32 zero bytes if it has none) and
//! for each record `v = SHA-256(v || digest)`; `v` must be the PCR's value
//! (`tpm2_pcrread sha256:15`, or a quote). A later record's `base`, if
//! any, must equal `v` at that point (else something else extended the PCR
//! in between).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::tpm::Epoch;
pub(crate) use crate::image::digest::hex;

/// The one digest of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    #[serde(rename = "hashAlg")]
    pub hash_alg: String,
    /// Lower-case hex.
    pub digest: String,
}

/// What was measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// `pod-config`, `kernel`, `initramfs`, `cmdline` or `image`.
    pub event: String,
    /// The pod's id, and its name.
    pub pod: String,
    pub pod_name: String,
    /// The app, for an `image` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// For `cmdline` and `image`: the measured text itself (the digest is
    /// its SHA-256). For the files (`pod-config`, `kernel`, `initramfs`):
    /// the path, and the digest is the SHA-256 of the file's content.
    pub data: String,
    /// When it was measured, Unix seconds.
    pub time: u64,
}

impl Content {
    /// Whether the digest is the SHA-256 of `data` itself.
    pub fn hashes_its_data(&self) -> bool {
        matches!(self.event.as_str(), "cmdline" | "image")
    }
}

/// The TPM's side of an extended record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extended {
    pub reset_count: u32,
    pub restart_count: u32,
    /// The PCR's value before this record, when husk read it (see the module doc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

impl Extended {
    pub fn epoch(&self) -> Epoch {
        Epoch {
            reset_count: self.reset_count,
            restart_count: self.restart_count,
        }
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub recnum: u64,
    pub pcr: u32,
    pub digests: Vec<Digest>,
    pub content_type: String,
    pub content: Content,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Extended>,
}

/// `content_type` of husk's records.
pub const CONTENT_TYPE: &str = "husk";

impl Record {
    /// The SHA-256 digest, if the record has one that reads.
    pub fn sha256(&self) -> Option<[u8; 32]> {
        let d = self.digests.iter().find(|d| d.hash_alg == "sha256")?;
        from_hex(&d.digest)
    }
}

/// 64 hex digits to 32 bytes.
pub fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// `SHA-256(pcr || digest)`: what TPM2_PCR_Extend makes of the PCR.
pub fn extend(pcr: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(pcr);
    h.update(digest);
    h.finalize().into()
}

/// The log, open for appending, with its lock held until it is dropped.
pub struct Appender {
    file: File,
    next: u64,
    /// The last record, as read when the lock was taken.
    last: Option<Record>,
}

/// How much of the log's end is read to find its last record.
const TAIL: u64 = 64 << 10;

impl Appender {
    /// Opens (creating, 0600) and locks the log at `path`; reads its last
    /// record. A torn last line (husk died while writing it) is ended with
    /// a newline, so that it stays a line of its own that no reader takes
    /// for a record.
    pub fn open(path: &Path) -> std::io::Result<Appender> {
        let existed = path.exists();
        let mut file = crate::private::file_options()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        if !existed {
            if let Some(dir) = path.parent() {
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
        }
        crate::private::flock(&file, libc::LOCK_EX)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(TAIL);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        (&mut file).take(TAIL).read_to_end(&mut tail)?;
        if !tail.is_empty() && tail.last() != Some(&b'\n') {
            file.write_all(b"\n")?;
        }
        let last = tail
            .split(|b| *b == b'\n')
            .rev()
            .filter(|l| !l.is_empty())
            .find_map(|l| serde_json::from_slice::<Record>(l).ok());
        let next = last.as_ref().map_or(0, |r| r.recnum + 1);
        Ok(Appender { file, next, last })
    }

    /// The last record, when the log was opened (or since: the last appended).
    pub fn last(&self) -> Option<&Record> {
        self.last.as_ref()
    }

    /// The number the next record gets.
    pub fn next_recnum(&self) -> u64 {
        self.next
    }

    /// Appends `record` (its `recnum` is set here) as one line, in one write.
    pub fn append(&mut self, mut record: Record) -> std::io::Result<()> {
        record.recnum = self.next;
        let mut line = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.next += 1;
        self.last = Some(record);
        Ok(())
    }

    /// Makes what was appended durable.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

/// The log's records, in order, and how many lines were not records.
pub fn read_all(path: &Path, limit: u64) -> std::io::Result<(Vec<Record>, usize)> {
    let mut text = Vec::new();
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    f.take(limit + 1).read_to_end(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} MiB", limit >> 20),
        ));
    }
    let mut records = Vec::new();
    let mut bad = 0;
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => records.push(r),
            Err(_) => bad += 1,
        }
    }
    Ok((records, bad))
}

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The PCR value the records of the epoch replay to.
    pub value: [u8; 32],
    /// How many records were replayed.
    pub events: usize,
    /// The value replay started from (the first record's `base`).
    pub base: [u8; 32],
}

/// Why a log cannot be right, whatever the PCR says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("record #{recnum} ({event} of pod {pod}) has no SHA-256 digest")]
    NoDigest {
        recnum: u64,
        event: String,
        pod: String,
    },
    #[error("record #{recnum} ({event} of pod {pod}): its data does not hash to its digest: the log was altered")]
    DataMismatch {
        recnum: u64,
        event: String,
        pod: String,
    },
    #[error("record #{recnum} ({event} of pod {pod}): the PCR was {base} before it, not the {replayed} the records before it replay to: something outside this log extended the PCR")]
    BaseMismatch {
        recnum: u64,
        event: String,
        pod: String,
        base: String,
        replayed: String,
    },
}

/// Replays the records of PCR `pcr` extended in `epoch` (see the module doc).
pub fn replay(records: &[Record], pcr: u32, epoch: Epoch) -> Result<Replay, ReplayError> {
    let mut value = [0u8; 32];
    let mut start = None;
    let mut events = 0;
    for r in records {
        let Some(t) = &r.tpm else { continue };
        if r.pcr != pcr || t.epoch() != epoch {
            continue;
        }
        let d = r.sha256().ok_or_else(|| ReplayError::NoDigest {
            recnum: r.recnum,
            event: r.content.event.clone(),
            pod: r.content.pod_name.clone(),
        })?;
        if r.content.hashes_its_data() && super::sha256(r.content.data.as_bytes()) != d {
            return Err(ReplayError::DataMismatch {
                recnum: r.recnum,
                event: r.content.event.clone(),
                pod: r.content.pod_name.clone(),
            });
        }
        let base = t.base.as_deref().and_then(from_hex);
        match (start, base) {
            (None, b) => {
                value = b.unwrap_or([0; 32]);
                start = Some(value);
            }
            (Some(_), Some(b)) if b != value => {
                return Err(ReplayError::BaseMismatch {
                    recnum: r.recnum,
                    event: r.content.event.clone(),
                    pod: r.content.pod_name.clone(),
                    base: hex(&b),
                    replayed: hex(&value),
                })
            }
            _ => {}
        }
        value = extend(&value, &d);
        events += 1;
    }
    Ok(Replay {
        value,
        events,
        base: start.unwrap_or([0; 32]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: &str, data: &str, tpm: Option<Extended>) -> Record {
        let d = Sha256::digest(data.as_bytes());
        Record {
            recnum: 0,
            pcr: 15,
            digests: vec![Digest {
                hash_alg: "sha256".into(),
                digest: hex(&d),
            }],
            content_type: CONTENT_TYPE.into(),
            content: Content {
                event: event.into(),
                pod: "id".into(),
                pod_name: "p".into(),
                app: None,
                data: data.into(),
                time: 1,
            },
            tpm,
        }
    }

    fn ext(reset: u32, base: Option<[u8; 32]>) -> Option<Extended> {
        Some(Extended {
            reset_count: reset,
            restart_count: 0,
            base: base.map(|b| hex(&b)),
        })
    }

    #[test]
    fn hex_round_trips() {
        let b = [0x01, 0xab, 0xff];
        assert_eq!(hex(&b), "01abff");
        let d: [u8; 32] = Sha256::digest(b"x").into();
        assert_eq!(from_hex(&hex(&d)), Some(d));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
    }

    /// The replay of the records of one epoch, by the definition.
    #[test]
    fn replay_follows_the_epoch_and_the_bases() {
        let e1 = Epoch {
            reset_count: 1,
            restart_count: 0,
        };
        let e2 = Epoch {
            reset_count: 2,
            restart_count: 0,
        };
        let a = record("cmdline", "a", ext(1, Some([0; 32])));
        let b = record("cmdline", "b", ext(1, None));
        let nothing = record("cmdline", "skipped: no TPM", None);
        let c = record("cmdline", "c", ext(2, Some([7; 32])));
        let other_pcr = Record {
            pcr: 16,
            ..record("cmdline", "other", ext(2, None))
        };
        let log = vec![a.clone(), b.clone(), nothing, c.clone(), other_pcr];
        let da = a.sha256().unwrap();
        let db = b.sha256().unwrap();
        let dc = c.sha256().unwrap();
        let r1 = replay(&log, 15, e1).unwrap();
        assert_eq!(r1.value, extend(&extend(&[0; 32], &da), &db));
        assert_eq!(r1.events, 2);
        let r2 = replay(&log, 15, e2).unwrap();
        assert_eq!(r2.value, extend(&[7; 32], &dc));
        assert_eq!(r2.base, [7; 32]);
        assert_eq!(
            replay(
                &log,
                15,
                Epoch {
                    reset_count: 9,
                    restart_count: 0
                }
            )
            .unwrap()
            .events,
            0
        );

        // An altered text: refused whatever the PCR says.
        let mut forged = log.clone();
        forged[1].content.data = "B".into();
        assert!(matches!(
            replay(&forged, 15, e1),
            Err(ReplayError::DataMismatch { .. })
        ));
        // A later base that does not continue the replay.
        let mut gap = log.clone();
        gap[1].tpm = ext(1, Some([9; 32]));
        assert!(matches!(
            replay(&gap, 15, e1),
            Err(ReplayError::BaseMismatch { .. })
        ));
        // A later base that does continue it is fine.
        let mut cont = log;
        cont[1].tpm = ext(1, Some(extend(&[0; 32], &da)));
        assert_eq!(replay(&cont, 15, e1).unwrap().value, r1.value);
    }

    #[test]
    fn the_appender_numbers_locks_and_mends_a_torn_line() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("m.log");
        {
            let mut a = Appender::open(&path).unwrap();
            assert!(a.last().is_none());
            a.append(record("cmdline", "one", None)).unwrap();
            a.append(record("cmdline", "two", None)).unwrap();
            a.sync().unwrap();
        }
        // A crash in the middle of a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"recnum\":2,\"pc")
            .unwrap();
        {
            let mut a = Appender::open(&path).unwrap();
            assert_eq!(a.last().unwrap().content.data, "two");
            assert_eq!(a.next_recnum(), 2);
            a.append(record("cmdline", "three", None)).unwrap();
        }
        let (records, bad) = read_all(&path, 1 << 20).unwrap();
        assert_eq!(bad, 1);
        let nums: Vec<u64> = records.iter().map(|r| r.recnum).collect();
        assert_eq!(nums, [0, 1, 2]);
        assert_eq!(records[2].content.data, "three");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The lock: a second appender waits for the first.
        let first = Appender::open(&path).unwrap();
        let p = path.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _second = Appender::open(&p).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        t.join().unwrap();
    }
}
