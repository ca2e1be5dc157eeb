//! Each pod's host id range: the uids and gids its VMM's user namespace maps to
//! ([`crate::jail::userns`]).
//!
//! Every pod gets [`IDS_PER_POD`] ids of its own, so that two pods' VMMs are different host
//! users: one that escaped its VM and its jail still cannot signal, trace or read the files of
//! another pod. Ranges are handed out in slots from a pool:
//! - the `husk` entries of `/etc/subuid` and `/etc/subgid` when both exist and are the same
//!   range (how an operator gives husk a range that no other tool uses, as with docker's
//!   `dockremap` or podman's `containers` user);
//! - otherwise [`DEFAULT_POOL_BASE`], [`DEFAULT_POOL_SLOTS`] slots: above the ranges that
//!   `useradd` hands out from `/etc/subuid` (from 100000, 65536 per user) and those systemd
//!   uses for its own dynamic and container users below 2^31, a part that nothing else
//!   allocates by default.
//!
//! A pod's base is written to its directory (`ids`) when the directory is made, under the
//! pod store's lock, and a new pod takes the lowest slot no existing pod directory records;
//! removing a pod frees its slot. Nothing the range owned outlives the pod: its files on the
//! host are in the pod's own empty-dir volumes, removed with it (files it writes to an
//! id-mapped host volume keep the guest's own ids).

use std::path::Path;

use crate::jail::userns::{IdRange, IDS_PER_POD};

/// First host id of the default pool: 2^30.
pub const DEFAULT_POOL_BASE: u32 = 1 << 30;
/// Slots in the default pool: 2^28 ids, up to 0x5000_0000.
pub const DEFAULT_POOL_SLOTS: u32 = 4096;
/// The user name whose `/etc/subuid` and `/etc/subgid` entries give husk its pool.
pub const SUBID_USER: &str = "husk";

/// Where the ranges come from: `slots` ranges of [`IDS_PER_POD`] ids from `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// First host id.
    pub base: u32,
    /// How many ranges.
    pub slots: u32,
}

impl Pool {
    /// The host's pool: see the module documentation.
    pub fn of_host() -> Pool {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let uid = subid_entry(&read("/etc/subuid"), SUBID_USER);
        let gid = subid_entry(&read("/etc/subgid"), SUBID_USER);
        match (uid, gid) {
            (Some(u), Some(g)) if u == g => u,
            _ => Pool::default(),
        }
    }

    /// The range of `slot`.
    pub fn range(&self, slot: u32) -> Option<IdRange> {
        (slot < self.slots)
            .then(|| self.base.checked_add(slot.checked_mul(IDS_PER_POD)?))
            .flatten()
            .and_then(IdRange::per_pod)
    }

    /// The lowest range whose base is not in `used`.
    pub fn allocate(&self, used: &[u32]) -> Option<IdRange> {
        (0..self.slots)
            .filter_map(|s| self.range(s))
            .find(|r| !used.contains(&r.base))
    }
}

impl Default for Pool {
    fn default() -> Pool {
        Pool {
            base: DEFAULT_POOL_BASE,
            slots: DEFAULT_POOL_SLOTS,
        }
    }
}

/// The first `user:start:count` entry of a subordinate-id file for `user` that holds at
/// least one whole range, as a pool.
fn subid_entry(text: &str, user: &str) -> Option<Pool> {
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        if f.next()? != user {
            return None;
        }
        let start: u32 = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        let slots = count / IDS_PER_POD;
        (start > 0 && slots > 0 && start.checked_add(slots * IDS_PER_POD - 1).is_some())
            .then_some(Pool { base: start, slots })
    })
}

/// The file in a pod's directory that records its range's base.
pub const IDS_FILE: &str = "ids";

/// The range recorded in the pod directory `dir`, if any.
pub fn recorded(dir: &Path) -> Option<IdRange> {
    let base = std::fs::read_to_string(dir.join(IDS_FILE)).ok()?;
    IdRange::per_pod(base.trim().parse().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_pool_hands_out_the_lowest_free_slot() {
        let pool = Pool::default();
        let first = pool.allocate(&[]).unwrap();
        assert_eq!(first.base, DEFAULT_POOL_BASE);
        assert_eq!(first.count, IDS_PER_POD);
        let second = pool.allocate(&[first.base]).unwrap();
        assert_eq!(second.base, DEFAULT_POOL_BASE + IDS_PER_POD);
        let gap = pool.allocate(&[second.base]).unwrap();
        assert_eq!(gap.base, DEFAULT_POOL_BASE, "a freed slot is reused");
        let last = pool.range(DEFAULT_POOL_SLOTS - 1).unwrap();
        assert_eq!(last.base + last.count - 1, 0x5000_0000 - 1);
        assert_eq!(pool.range(DEFAULT_POOL_SLOTS), None);
    }

    #[test]
    fn a_full_pool_has_nothing_left() {
        let pool = Pool {
            base: 200_000,
            slots: 2,
        };
        let used: Vec<u32> = (0..2).map(|s| pool.range(s).unwrap().base).collect();
        assert_eq!(pool.allocate(&used), None);
    }

    #[test]
    fn subid_entries_name_the_pool() {
        let text = "alice:100000:65536\nhusk:300000:200000\nhusk:1:1\n";
        assert_eq!(
            subid_entry(text, "husk"),
            Some(Pool {
                base: 300_000,
                slots: 3
            })
        );
        assert_eq!(subid_entry(text, "bob"), None);
        assert_eq!(
            subid_entry("husk:100000:1000\n", "husk"),
            None,
            "less than one range"
        );
        assert_eq!(subid_entry("husk:x:65536\n", "husk"), None);
        assert_eq!(
            subid_entry("husk:4294967000:65536\n", "husk"),
            None,
            "past 2^32"
        );
    }

    #[test]
    fn ranges_never_include_host_root() {
        assert_eq!(IdRange::per_pod(0), None);
        assert_eq!(Pool { base: 0, slots: 1 }.allocate(&[]), None);
    }
}
