//! `husk doctor`'s jail lines: can this host build a pod's VMM jail ([`crate::jail`])?
//!
//! - `user namespaces:` as root, husk makes one mapped to the first range of the pods' id
//!   pool, as a pod's start does ([`userns::create`]); when it cannot, the error and, where
//!   the host shows the cause, what to change (`user.max_user_namespaces` 0, a chrooted
//!   husk, a kernel without user namespaces, a security module or outer seccomp filter).
//!   Not root: whether this user may make the namespace a rootless VMM jails itself in
//!   ([`userns::unshare_own`], in a forked child).
//! - `pod id ranges:` where the pods' ranges come from ([`crate::pod::ids`]) and how many are
//!   taken.
//! - `idmapped mounts:` whether the store's file system (`$HUSK_ROOT`, or its nearest
//!   existing parent) can be id-mapped through that namespace ([`userns::can_id_map`]). This
//!   is information about one file system: what decides a pod's jail is each of its host
//!   volumes' file systems, checked when the pod is made (the store's own files, blobs and
//!   empty-dir tmpfs volumes, are never id-mapped).
//! - `seccomp:` whether the kernel takes seccomp filters (`seccomp(SECCOMP_SET_MODE_FILTER)`
//!   without a program answers `EFAULT` where it does, as libseccomp probes it), with the
//!   actions the VMM's filters use (`/proc/sys/kernel/seccomp/actions_avail`), and whether
//!   husk itself already runs under a filter (`Seccomp:` in `/proc/self/status`).
//! - `jail verdict:` what a pod's VMM and `husk vm`'s get here.
//!
//! The probes leave nothing behind: the namespace ends with its descriptor, the id-mapped
//! clone is a detached mount closed at once. Like the cgroup lines, these lines do not
//! change doctor's exit status.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use crate::jail::userns::{self, IDS_PER_POD};
use crate::jail::vmm::VMM_CAPS;
use crate::jail::JailError;
use crate::pod::ids::{self, Pool};

/// Prints the jail lines (see the module documentation).
pub fn report(store_root: &Path) {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let pool = Pool::of_host();
    let ns: Result<OwnedFd, String> = if !root {
        Err(match rootless_probe() {
            Ok(()) => ROOTLESS_OK.into(),
            Err(e) => format!("not usable: {e}"),
        })
    } else {
        let first = pool.range(0).expect("a pool has at least one range");
        userns::create(first).map_err(|e| {
            let line = super::error_line(&e);
            match userns_hint(errno_of(&e), max_user_namespaces(), chrooted()) {
                Some(hint) => format!("not usable: {line}: {hint}"),
                None => format!("not usable: {line}"),
            }
        })
    };
    match &ns {
        Ok(_) => println!(
            "user namespaces: usable (a pod's VMM is root only of a namespace mapped to its own {IDS_PER_POD} host ids)"
        ),
        Err(why) if why == ROOTLESS_OK => println!(
            "user namespaces: usable (rootless: a VMM is root only of a namespace of its own that maps this user's ids alone)"
        ),
        Err(why) => println!("user namespaces: {why}"),
    }
    let subid = pool != Pool::default();
    if root {
        println!(
            "pod id ranges: {}",
            pool_line(pool, subid, pods_with_ranges(store_root))
        );
    } else {
        println!("pod id ranges: not used rootless (mapping a range needs root)");
    }
    match &ns {
        Ok(ns) => println!("idmapped mounts: {}", id_map_line(store_root, ns)),
        Err(_) if !root => println!(
            "idmapped mounts: not used rootless (only this user's own ids are mapped; volumes are served as they are)"
        ),
        Err(_) => println!("idmapped mounts: not checked (no user namespace to map through)"),
    }
    let seccomp = seccomp_state(
        &std::fs::read_to_string("/proc/self/status").unwrap_or_default(),
        probe_filter_errno(),
        std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
            .ok()
            .as_deref(),
    );
    match &seccomp {
        Ok(what) => println!("seccomp: {what}"),
        Err(why) => println!("seccomp: not usable: {why}"),
    }
    println!(
        "jail verdict: {}",
        verdict(root, ns.as_ref().err().map(String::as_str), &seccomp)
    );
}

/// What the rootless probe's `Err` holds when it found nothing wrong (doctor keeps the
/// namespace check's outcome as one `Result`, and only root's probe yields a namespace).
const ROOTLESS_OK: &str = "rootless";

/// Rootless: whether this user can make the user namespace a rootless VMM jails itself in
/// ([`userns::unshare_own`]), tried in a forked child that then exits.
fn rootless_probe() -> Result<(), String> {
    // SAFETY: doctor runs on one thread; the child only makes system calls and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("cannot fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let code = match userns::unshare_own() {
            Ok(()) => 0,
            Err(e) => errno_of(&e).unwrap_or(255),
        };
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match libc::WEXITSTATUS(status) {
        0 if libc::WIFEXITED(status) => Ok(()),
        errno => {
            let e = std::io::Error::from_raw_os_error(errno);
            let hint = userns_hint(Some(errno), max_user_namespaces(), chrooted());
            Err(match hint {
                Some(h) => format!("an ordinary user's user namespace is refused ({e}): {h}"),
                None => format!("an ordinary user's user namespace is refused ({e})"),
            })
        }
    }
}

/// The errno of a failed [`userns::create`], if it was a system call's.
fn errno_of(e: &JailError) -> Option<i32> {
    match e {
        JailError::Step { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

/// What to change when a user namespace cannot be made, from what the host shows: `errno`
/// (of the `unshare`), `user.max_user_namespaces`, whether husk runs chrooted.
fn userns_hint(errno: Option<i32>, max_userns: Option<u64>, chrooted: bool) -> Option<String> {
    if chrooted {
        return Some(
            "husk runs chrooted, and the kernel refuses user namespaces to a chrooted process: \
             run it in a mount namespace whose root is its own (pivot_root or switch_root) instead"
                .into(),
        );
    }
    match (errno?, max_userns) {
        (libc::ENOSPC, Some(0)) => Some(
            "user.max_user_namespaces is 0: raise it (sysctl -w user.max_user_namespaces=15000)"
                .into(),
        ),
        (libc::ENOSPC, Some(n)) => Some(format!(
            "this user's {n} user namespaces (user.max_user_namespaces) are all in use"
        )),
        (libc::EINVAL, None) => Some("this kernel has no user namespaces (CONFIG_USER_NS)".into()),
        (libc::EPERM, _) => Some(
            "refused by a security module or a seccomp filter around husk (a container \
             runtime's default profile?)"
                .into(),
        ),
        (libc::EUSERS, _) => Some("husk already runs 32 user namespaces deep".into()),
        _ => None,
    }
}

fn max_user_namespaces() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether this process's root is not its mount namespace's (what the kernel refuses user
/// namespaces for), as far as it shows: no mount is at `/` in its mountinfo (a chroot into a
/// directory that is no mount point), or its `/` is another mount or directory than the root
/// of pid 1 in the same mount namespace. False when neither can be told.
fn chrooted() -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if !mountinfo.is_empty() && !has_root_mount(&mountinfo) {
        return true;
    }
    let same_ns =
        std::fs::read_link("/proc/self/ns/mnt").ok() == std::fs::read_link("/proc/1/ns/mnt").ok();
    if !same_ns {
        return false;
    }
    match (
        where_is(Path::new("/")),
        where_is(Path::new("/proc/1/root")),
    ) {
        (Some(mine), Some(init)) => mine != init,
        _ => false,
    }
}

/// Whether a mountinfo text lists a mount at `/` (its fifth field, relative to the reader's
/// root: mounts outside that root are not listed).
fn has_root_mount(mountinfo: &str) -> bool {
    mountinfo
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some("/"))
}

/// The mount id, device and inode of the directory at `path`.
fn where_is(path: &Path) -> Option<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::File::open(path).ok()?;
    let meta = dir.metadata().ok()?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", dir.as_raw_fd())).ok()?;
    let mnt = info
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))?
        .trim()
        .parse()
        .ok()?;
    Some((mnt, meta.dev(), meta.ino()))
}

/// The `pod id ranges:` text: `pool`, whether it is husk's `/etc/subuid` entry, and how many
/// pods hold a range (`None`: the pod store cannot be read).
fn pool_line(pool: Pool, subid: bool, taken: Option<usize>) -> String {
    let source = if subid {
        "husk's entries in /etc/subuid and /etc/subgid".to_owned()
    } else {
        format!(
            "the default pool: no matching `{}` entries in /etc/subuid and /etc/subgid",
            ids::SUBID_USER
        )
    };
    let taken = taken.map_or_else(String::new, |n| format!(", {n} taken"));
    format!(
        "{IDS_PER_POD} ids per pod, {} pods from host id {} ({source}){taken}",
        pool.slots, pool.base
    )
}

/// How many pods under `store_root` hold a range; `None` where the pod store cannot be read
/// (`Some(0)` where it does not exist yet).
fn pods_with_ranges(store_root: &Path) -> Option<usize> {
    let dir = store_root.join("pods");
    if !dir.exists() {
        return Some(0);
    }
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .flatten()
            .filter(|e| ids::recorded(&e.path()).is_some())
            .count(),
    )
}

/// The `idmapped mounts:` text for the store at `store_root` (or its nearest existing
/// parent) through `ns`.
fn id_map_line(store_root: &Path, ns: &OwnedFd) -> String {
    let Some(dir) = store_root.ancestors().find(|p| p.is_dir()) else {
        return format!(
            "not checked: no directory of {} exists",
            store_root.display()
        );
    };
    let fs = userns::fs_name(dir);
    let checked = std::fs::File::open(dir).and_then(|d| userns::can_id_map(d.as_fd(), ns.as_fd()));
    id_map_text(
        dir,
        &fs,
        checked.map_err(|e| (e.raw_os_error(), e.to_string())),
    )
}

/// The pure part of [`id_map_line`]: `checked` is the probe's outcome, an errno and its text.
fn id_map_text(dir: &Path, fs: &str, checked: Result<(), (Option<i32>, String)>) -> String {
    let per_volume = "what counts is each host volume's, checked when its pod is made: a pod \
                      with one that cannot be id-mapped (tmpfs before Linux 6.3, 9p, NFS, most \
                      FUSE file systems) runs its VMM in the root jail, with a warning";
    match checked {
        Ok(()) => format!(
            "the store's file system ({fs}, {}) can be id-mapped; {per_volume}",
            dir.display()
        ),
        Err((Some(libc::ENOSYS), _)) => "this kernel has no mount_setattr (Linux 5.12): every \
             pod with a host volume runs its VMM in the root jail, with a warning"
            .into(),
        Err((_, why)) => format!(
            "the store's file system ({fs}, {}) cannot be id-mapped here ({why}); {per_volume}",
            dir.display()
        ),
    }
}

/// The errno of `seccomp(SECCOMP_SET_MODE_FILTER, 0, NULL)`: `EFAULT` where the kernel takes
/// filters (it reads the missing program and fails before installing anything).
fn probe_filter_errno() -> i32 {
    // SAFETY: seccomp with a null program: the kernel fails reading it (EFAULT) or refuses the
    // operation, and installs nothing either way; no memory of ours is touched.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            std::ptr::null::<libc::c_void>(),
        )
    };
    if r == 0 {
        return 0;
    }
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The actions the VMM's filters use: `trap` on a forbidden call, `kill_process` on a call of
/// another architecture ([`crate::seccomp`]).
const ACTIONS: [&str; 2] = ["trap", "kill_process"];

/// Whether the VMM's filters can be installed, from `/proc/self/status`, the probe's errno
/// and `actions_avail` (`None`: the file is missing, before Linux 4.14).
fn seccomp_state(status: &str, filter_errno: i32, actions: Option<&str>) -> Result<String, String> {
    let mode = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim);
    let Some(mode) = mode else {
        return Err("this kernel has no seccomp (CONFIG_SECCOMP)".into());
    };
    match filter_errno {
        libc::EFAULT => {}
        libc::EINVAL | libc::ENOSYS => {
            return Err("this kernel takes no seccomp filters (CONFIG_SECCOMP_FILTER)".into())
        }
        e => {
            return Err(format!(
                "a probe filter was refused ({})",
                std::io::Error::from_raw_os_error(e)
            ))
        }
    }
    let listed: Vec<&str> = actions.map_or_else(Vec::new, |a| a.split_whitespace().collect());
    if actions.is_some() {
        if let Some(missing) = ACTIONS.iter().find(|a| !listed.contains(a)) {
            return Err(format!(
                "the kernel's seccomp has no `{missing}` action, which the VMM's filters use"
            ));
        }
    }
    let log = if actions.is_none() || listed.contains(&"log") {
        ""
    } else {
        " (no `log` action: HUSK_SECCOMP=log does not work here)"
    };
    let outer = if mode == "2" {
        "; husk itself already runs under a seccomp filter (a container runtime's?): the \
         VMM's add to it, and what it refuses the VMM cannot do either"
    } else {
        ""
    };
    Ok(format!(
        "filters available: each VMM thread kind gets its own{log}{outer}"
    ))
}

/// The `jail verdict:` text: as root or not, why a user namespace cannot be made (`None`:
/// it can), and [`seccomp_state`].
fn verdict(root: bool, no_userns: Option<&str>, seccomp: &Result<String, String>) -> String {
    if !root {
        return match no_userns {
            Some(ROOTLESS_OK) => "ready (rootless): each VMM jails itself in a user namespace of \
                its own that maps only this user's ids, so all of this user's pods are one host \
                user; no empty-dir volumes (they need root); a host cgroup only under a subtree \
                delegated to this user"
                .into(),
            _ => "the VMM jail cannot be built as this user: `husk run` and `husk vm` refuse to \
                  start a jailed VMM (--no-jail runs one without it, for debugging)"
                .into(),
        };
    }
    let caps = VMM_CAPS.len();
    let mut text = match no_userns {
        None => format!(
            "ready: each pod's VMM runs jailed in a user namespace of its own id range (in the \
             root jail, uid 0 with {caps} capabilities, if a host volume cannot be id-mapped; \
             husk run says so); husk vm's runs in the root jail"
        ),
        Some(_) => format!(
            "pods' VMMs run in the root jail (uid 0 with {caps} capabilities, the rest of the \
             jail unchanged), not as users of their own: husk run warns once per pod"
        ),
    };
    if let Err(why) = seccomp {
        text.push_str(&format!(
            "; but VMMs cannot install their seccomp filters and fail to start ({why}): \
             --no-seccomp runs them without, for debugging"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userns_hints_name_what_the_host_shows() {
        let chroot = userns_hint(Some(libc::EPERM), Some(100), true).unwrap();
        assert!(chroot.contains("chrooted"), "{chroot}");
        let zero = userns_hint(Some(libc::ENOSPC), Some(0), false).unwrap();
        assert!(zero.contains("user.max_user_namespaces is 0"), "{zero}");
        let full = userns_hint(Some(libc::ENOSPC), Some(5), false).unwrap();
        assert!(full.contains("5 user namespaces"), "{full}");
        let none = userns_hint(Some(libc::EINVAL), None, false).unwrap();
        assert!(none.contains("CONFIG_USER_NS"), "{none}");
        let lsm = userns_hint(Some(libc::EPERM), Some(100), false).unwrap();
        assert!(lsm.contains("security module"), "{lsm}");
        assert_eq!(userns_hint(Some(libc::ENOMEM), Some(100), false), None);
        assert_eq!(userns_hint(None, Some(100), false), None);
    }

    #[test]
    fn a_root_without_a_mount_at_slash_is_a_chroot() {
        let host = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw\n";
        assert!(has_root_mount(host));
        let chroot = "40 38 254:0 /usr /usr rw - ext4 /dev/vda rw\n\
                      41 38 0:21 / /proc rw - proc proc rw\n";
        assert!(!has_root_mount(chroot));
    }

    #[test]
    fn pool_lines_say_where_ranges_come_from() {
        let default = pool_line(Pool::default(), false, Some(2));
        assert_eq!(
            default,
            "65536 ids per pod, 4096 pods from host id 1073741824 (the default pool: no \
             matching `husk` entries in /etc/subuid and /etc/subgid), 2 taken"
        );
        let subid = Pool {
            base: 300_000,
            slots: 3,
        };
        assert_eq!(
            pool_line(subid, true, None),
            "65536 ids per pod, 3 pods from host id 300000 (husk's entries in /etc/subuid and \
             /etc/subgid)"
        );
    }

    #[test]
    fn id_map_lines_are_about_the_store_and_point_at_each_volume() {
        let ok = id_map_text(Path::new("/var/lib"), "ext4", Ok(()));
        assert!(ok.starts_with("the store's file system (ext4, /var/lib) can be id-mapped; what counts is each host volume's"), "{ok}");
        let no = id_map_text(
            Path::new("/srv"),
            "NFS",
            Err((Some(libc::EINVAL), "Invalid argument".into())),
        );
        assert!(
            no.contains("(NFS, /srv) cannot be id-mapped here (Invalid argument)"),
            "{no}"
        );
        assert!(no.contains("root jail"), "{no}");
        let old = id_map_text(
            Path::new("/"),
            "ext4",
            Err((Some(libc::ENOSYS), String::new())),
        );
        assert!(old.contains("Linux 5.12"), "{old}");
    }

    const STATUS: &str = "Name:\thusk\nNoNewPrivs:\t0\nSeccomp:\t0\nSeccomp_filters:\t0\n";
    const ACTIONS_ALL: &str = "kill_process kill_thread trap errno user_notif trace log allow\n";

    #[test]
    fn seccomp_is_usable_where_filters_and_the_actions_are() {
        let ok = seccomp_state(STATUS, libc::EFAULT, Some(ACTIONS_ALL)).unwrap();
        assert_eq!(ok, "filters available: each VMM thread kind gets its own");
        let old = seccomp_state(STATUS, libc::EFAULT, None).unwrap();
        assert_eq!(old, ok, "no actions_avail (before 4.14): assumed");
        let nolog = seccomp_state(STATUS, libc::EFAULT, Some("kill_process trap errno")).unwrap();
        assert!(nolog.contains("HUSK_SECCOMP=log does not work"), "{nolog}");
        let nested = seccomp_state(
            &STATUS.replace("Seccomp:\t0", "Seccomp:\t2"),
            libc::EFAULT,
            Some(ACTIONS_ALL),
        )
        .unwrap();
        assert!(
            nested.contains("already runs under a seccomp filter"),
            "{nested}"
        );
    }

    #[test]
    fn seccomp_says_what_is_missing() {
        let none = seccomp_state("Name:\thusk\n", libc::EINVAL, None).unwrap_err();
        assert!(none.contains("CONFIG_SECCOMP)"), "{none}");
        let nofilter = seccomp_state(STATUS, libc::EINVAL, None).unwrap_err();
        assert!(nofilter.contains("CONFIG_SECCOMP_FILTER"), "{nofilter}");
        let notrap =
            seccomp_state(STATUS, libc::EFAULT, Some("kill_process errno log")).unwrap_err();
        assert!(notrap.contains("no `trap` action"), "{notrap}");
        let refused = seccomp_state(STATUS, libc::EPERM, None).unwrap_err();
        assert!(refused.contains("refused"), "{refused}");
    }

    #[test]
    fn verdicts_follow_root_user_namespaces_and_seccomp() {
        let ok: Result<String, String> = Ok(String::new());
        let ready = verdict(true, None, &ok);
        assert!(
            ready.starts_with("ready: each pod's VMM runs jailed in a user namespace"),
            "{ready}"
        );
        let root_jail = verdict(true, Some("not usable: ..."), &ok);
        assert!(
            root_jail.starts_with("pods' VMMs run in the root jail (uid 0 with 5 capabilities"),
            "{root_jail}"
        );
        let no_filters = verdict(true, None, &Err("no filters".into()));
        assert!(
            no_filters.contains("fail to start (no filters): --no-seccomp"),
            "{no_filters}"
        );
        let user = verdict(false, Some(ROOTLESS_OK), &ok);
        assert!(user.starts_with("ready (rootless)"), "{user}");
        let refused = verdict(false, Some("not usable: ..."), &ok);
        assert!(
            refused.starts_with("the VMM jail cannot be built"),
            "{refused}"
        );
    }
}
