//! User specs (`name`, `uid`, `name:group`, `uid:gid`) to numeric ids,
//! looked up in a (possibly untrusted) root file system's /etc/passwd and
//! /etc/group, the way container runtimes do.

use std::io;
use std::path::Path;

use crate::rooted::Root;
use crate::supervise::Ids;

/// Largest passwd/group file read (they are tiny in practice).
const MAX_DB: u64 = 4 << 20;

/// A user spec that cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {0:?} not found in /etc/passwd")]
    NoUser(String),
    #[error("group {0:?} not found in /etc/group")]
    NoGroup(String),
    #[error("cannot read {file}")]
    Read {
        file: &'static str,
        #[source]
        source: io::Error,
    },
}

fn read_db(root: Option<&Root>, file: &'static str) -> Result<String, UserError> {
    let Some(root) = root else {
        return Ok(String::new());
    };
    match root.read_file(Path::new(file), MAX_DB) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(UserError::Read { file, source }),
    }
}

/// Resolves `spec` against the databases under `root` (None: no databases,
/// numeric ids only).
pub fn resolve(root: Option<&Root>, spec: &str) -> Result<Ids, UserError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_db(root, "etc/passwd")?;
    let entry = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let uid: u32 = f[2].parse().ok()?;
        let gid: u32 = f[3].parse().ok()?;
        (f[0] == user || (user.parse() == Ok(uid))).then(|| (f[0].to_owned(), uid, gid))
    });
    let (name, uid, mut gid) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => e,
        (None, Ok(uid)) => (String::new(), uid, 0),
        (None, Err(_)) if user.is_empty() => (String::new(), 0, 0),
        (None, Err(_)) => return Err(UserError::NoUser(user.to_owned())),
    };
    let groups_db = read_db(root, "etc/group")?;
    let groups: Vec<(String, u32, Vec<String>)> = groups_db
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let members = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            Some((f[0].to_owned(), f[2].parse().ok()?, members))
        })
        .collect();
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        gid = match groups.iter().find(|(n, _, _)| n == g) {
            Some((_, id, _)) => *id,
            None => g.parse().map_err(|_| UserError::NoGroup(g.to_owned()))?,
        };
    }
    let mut supplementary = vec![gid];
    if !name.is_empty() {
        for (_, id, members) in &groups {
            if members.contains(&name) && !supplementary.contains(id) {
                supplementary.push(*id);
            }
        }
    }
    Ok(Ids {
        uid,
        gid,
        groups: supplementary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_resolve_against_the_databases() {
        let dir = std::env::temp_dir().join(format!("husk-users-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/group"),
            "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\n",
        )
        .unwrap();
        let root = Root::open(&dir).unwrap();
        let r = |s| resolve(Some(&root), s);
        assert_eq!(
            r("").unwrap(),
            Ids {
                uid: 0,
                gid: 0,
                groups: vec![0]
            }
        );
        assert_eq!(
            r("alice").unwrap(),
            Ids {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 10]
            }
        );
        assert_eq!(r("1000:wheel").unwrap().gid, 10);
        assert_eq!(
            r("4242:77").unwrap(),
            Ids {
                uid: 4242,
                gid: 77,
                groups: vec![77]
            }
        );
        assert!(matches!(r("mallory"), Err(UserError::NoUser(_))));
        assert!(matches!(r("alice:nogroup"), Err(UserError::NoGroup(_))));
        assert_eq!(resolve(None, "5:6").unwrap().uid, 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
