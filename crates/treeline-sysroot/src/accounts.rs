//! Merging the user and group databases at deploy time.
//!
//! A new tree's `/usr/etc/passwd` and `/usr/etc/group` were made when the image was built,
//! and their numeric IDs may differ from those already given out on the machine (a user
//! added locally, or a package whose system user got another UID in this build). Files on
//! the machine keep their numbers, so the running system's entries win: every user and
//! group of the previous deployment's `/etc` keeps its name and ID, and only the names
//! that are new in the tree are added. A new name whose ID is already taken gets the next
//! free ID in the same range (system below 1000, regular above) and is reported. Group
//! member lists are the union of both. `shadow` and `gshadow` gain the new names' lines.
//! No NSS module is involved, so this works with musl as with glibc.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use crate::error::{IoContext, Result};

/// What the account merge did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountsReport {
    /// Users added from the new tree.
    pub users_added: Vec<String>,
    /// Groups added from the new tree.
    pub groups_added: Vec<String>,
    /// New names whose ID was taken: `(file, name, id in the tree, id given)`.
    pub renumbered: Vec<(String, String, u32, u32)>,
    /// Files of the new deployment given the machine's IDs instead of the tree's
    /// ([`IdChanges`], applied by deploy).
    pub owners_changed: usize,
}

/// How the new tree's numeric IDs translate to the machine's: every user or group of the
/// tree whose ID differs after the merge (an existing name keeps the machine's ID, a new
/// name whose ID was taken is renumbered). Files the tree owns by the old number must get
/// the new one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdChanges {
    /// Tree UID → machine UID.
    pub uids: BTreeMap<u32, u32>,
    /// Tree GID → machine GID.
    pub gids: BTreeMap<u32, u32>,
}

impl IdChanges {
    /// No ID changes.
    pub fn is_empty(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }
}

/// First ID of the regular (non-system) range.
const FIRST_REGULAR_ID: u32 = 1000;

struct Merged {
    text: String,
    added: Vec<String>,
    renumbered: Vec<(String, u32, u32)>,
    /// Final ID of every name in the result.
    ids: HashMap<String, u32>,
}

fn name_of(line: &str) -> Option<&str> {
    let l = line.trim_start();
    if l.is_empty() || l.starts_with('#') {
        return None;
    }
    line.split(':').next()
}

fn id_of(line: &str) -> Option<u32> {
    line.split(':').nth(2)?.parse().ok()
}

/// Merge `passwd` (`member_field` None) or `group` (`member_field` Some(3)) text: every
/// line of `old` as it is, then the new names of `new`. `fix_line` may rewrite an added
/// line before it is appended (the passwd merge maps primary GIDs with it).
fn merge_ids(
    old: &str,
    new: &str,
    member_field: Option<usize>,
    fix_line: &dyn Fn(Vec<String>) -> Vec<String>,
) -> Merged {
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    for line in old.lines() {
        if let (Some(n), Some(id)) = (name_of(line), id_of(line)) {
            ids.insert(n.to_owned(), id);
            taken.insert(id);
        }
    }
    let new_members: HashMap<&str, Vec<&str>> = match member_field {
        Some(f) => new
            .lines()
            .filter_map(|l| {
                let n = name_of(l)?;
                let m = l.split(':').nth(f)?;
                Some((n, m.split(',').filter(|s| !s.is_empty()).collect()))
            })
            .collect(),
        None => HashMap::new(),
    };
    let mut out = String::new();
    for line in old.lines() {
        let mut line = line.to_owned();
        if let (Some(f), Some(n)) = (member_field, name_of(&line).map(str::to_owned))
            && let Some(extra) = new_members.get(n.as_str())
        {
            let mut fields: Vec<String> = line.split(':').map(str::to_owned).collect();
            if fields.len() > f {
                let mut members: Vec<String> = fields[f]
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                for m in extra {
                    if !members.iter().any(|x| x == m) {
                        members.push((*m).to_owned());
                    }
                }
                fields[f] = members.join(",");
                line = fields.join(":");
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    let mut added = Vec::new();
    let mut renumbered = Vec::new();
    for line in new.lines() {
        let Some(n) = name_of(line) else { continue };
        if ids.contains_key(n) {
            continue;
        }
        let mut fields: Vec<String> = line.split(':').map(str::to_owned).collect();
        if let Some(id) = id_of(line) {
            let mut given = id;
            if taken.contains(&id) {
                given = next_free(&taken, id);
                renumbered.push((n.to_owned(), id, given));
            }
            fields[2] = given.to_string();
            taken.insert(given);
            ids.insert(n.to_owned(), given);
        }
        let fields = fix_line(fields);
        out.push_str(&fields.join(":"));
        out.push('\n');
        added.push(n.to_owned());
    }
    Merged {
        text: out,
        added,
        renumbered,
        ids,
    }
}

/// The lowest free ID above `id` in its range (system IDs stay below 1000), else the
/// lowest free one at all in that range.
fn next_free(taken: &BTreeSet<u32>, id: u32) -> u32 {
    let (lo, hi) = if id < FIRST_REGULAR_ID {
        (1, FIRST_REGULAR_ID)
    } else {
        (FIRST_REGULAR_ID, 60000)
    };
    (id + 1..hi)
        .chain(lo..id)
        .find(|i| !taken.contains(i))
        .unwrap_or(id)
}

/// Add the lines of `new` whose name `old` lacks (for shadow and gshadow).
fn merge_names(old: &str, new: &str) -> String {
    let known: BTreeSet<&str> = old.lines().filter_map(name_of).collect();
    let mut out = String::new();
    for line in old.lines() {
        out.push_str(line);
        out.push('\n');
    }
    for line in new.lines() {
        if name_of(line).is_some_and(|n| !known.contains(n)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The ID changes [`merge`] makes for the same inputs, without writing anything.
pub fn id_changes(old_etc: &Path, new_defaults: &Path) -> Result<IdChanges> {
    let mut out = IdChanges::default();
    for (name, map) in [("group", &mut out.gids), ("passwd", &mut out.uids)] {
        let (Some(old), Some(new)) = (
            read_lossy(&old_etc.join(name))?,
            read_lossy(&new_defaults.join(name))?,
        ) else {
            continue;
        };
        let m = merge_ids(&old, &new, None, &|f| f);
        for line in new.lines() {
            if let (Some(n), Some(id)) = (name_of(line), id_of(line))
                && let Some(final_id) = m.ids.get(n)
                && *final_id != id
            {
                // The first name with a number decides (duplicates such as toor:0).
                map.entry(id).or_insert(*final_id);
            }
        }
    }
    Ok(out)
}

fn read_lossy(p: &Path) -> Result<Option<String>> {
    match fs::read(p) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(p),
    }
}

/// Merge the account databases of a new deployment: `old_etc` is the previous
/// deployment's `/etc`, `new_defaults` the new tree's `/usr/etc`, and the results are
/// written into `new_etc` (the files there keep their mode and owner). Files missing on
/// either side are left as the `/etc` merge made them.
pub fn merge(old_etc: &Path, new_defaults: &Path, new_etc: &Path) -> Result<AccountsReport> {
    let read = read_lossy;
    let pair = |name: &str| -> Result<Option<(String, String)>> {
        Ok(
            match (read(&old_etc.join(name))?, read(&new_defaults.join(name))?) {
                (Some(o), Some(n)) => Some((o, n)),
                _ => None,
            },
        )
    };
    let write = |name: &str, text: &str| -> Result<()> {
        let p = new_etc.join(name);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&p).at(&p)?;
        }
        fs::write(&p, text).at(&p)
    };
    let mut report = AccountsReport::default();

    // Groups first: a new user's primary GID follows its group's final GID.
    let mut group_ids: HashMap<u32, u32> = HashMap::new();
    if let Some((old, new)) = pair("group")? {
        let m = merge_ids(&old, &new, Some(3), &|f| f);
        for line in new.lines() {
            if let (Some(n), Some(id)) = (name_of(line), id_of(line))
                && let Some(final_id) = m.ids.get(n)
            {
                group_ids.insert(id, *final_id);
            }
        }
        write("group", &m.text)?;
        report.groups_added = m.added;
        report.renumbered.extend(
            m.renumbered
                .into_iter()
                .map(|(n, a, b)| ("group".into(), n, a, b)),
        );
    }
    if let Some((old, new)) = pair("passwd")? {
        let fix = |mut f: Vec<String>| {
            if let Some(g) = f.get(3).and_then(|g| g.parse::<u32>().ok())
                && let Some(to) = group_ids.get(&g)
            {
                f[3] = to.to_string();
            }
            f
        };
        let m = merge_ids(&old, &new, None, &fix);
        write("passwd", &m.text)?;
        report.users_added = m.added;
        report.renumbered.extend(
            m.renumbered
                .into_iter()
                .map(|(n, a, b)| ("passwd".into(), n, a, b)),
        );
    }
    for name in ["shadow", "gshadow"] {
        if let Some((old, new)) = pair(name)? {
            write(name, &merge_names(&old, &new))?;
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_ids_win_new_names_are_added_and_collisions_renumbered() {
        let old = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nsvc:x:101:101::/:/sbin/nologin\n";
        let new = "root:x:0:0:root:/root:/bin/sh\nsvc:x:105:105::/:/sbin/nologin\nnewd:x:101:102::/:/sbin/nologin\n";
        let m = merge_ids(old, new, None, &|f| f);
        assert_eq!(
            m.text,
            format!("{old}newd:x:102:102::/:/sbin/nologin\n"),
            "svc keeps 101, newd (101 taken) gets 102"
        );
        assert_eq!(m.added, vec!["newd"]);
        assert_eq!(m.renumbered, vec![("newd".to_owned(), 101, 102)]);
    }

    #[test]
    fn id_changes_map_tree_ids_to_the_machine_ones() {
        let d = tempfile::tempdir().unwrap();
        let (old, new) = (d.path().join("o"), d.path().join("n"));
        fs::create_dir(&old).unwrap();
        fs::create_dir(&new).unwrap();
        fs::write(
            old.join("passwd"),
            "root:x:0:0::/:/bin/sh\nsvc:x:101:101::/:/bin/false\nalice:x:1000:1000::/:/bin/sh\n",
        )
        .unwrap();
        fs::write(old.join("group"), "root:x:0:\nsvc:x:101:\nalice:x:1000:\n").unwrap();
        fs::write(
            new.join("passwd"),
            "root:x:0:0::/:/bin/sh\nsvc:x:105:105::/:/bin/false\nmsg:x:1000:1000::/:/bin/false\n",
        )
        .unwrap();
        fs::write(new.join("group"), "root:x:0:\nsvc:x:105:\nmsg:x:1000:\n").unwrap();
        let c = id_changes(&old, &new).unwrap();
        assert_eq!(c.uids, BTreeMap::from([(105, 101), (1000, 1001)]));
        assert_eq!(c.gids, BTreeMap::from([(105, 101), (1000, 1001)]));
    }

    #[test]
    fn group_members_are_united() {
        let old = "wheel:x:10:alice\naudio:x:29:\n";
        let new = "wheel:x:10:bob\naudio:x:29:pulse,alice\nnet:x:30:\n";
        let m = merge_ids(old, new, Some(3), &|f| f);
        assert_eq!(
            m.text,
            "wheel:x:10:alice,bob\naudio:x:29:pulse,alice\nnet:x:30:\n"
        );
    }

    #[test]
    fn merge_writes_passwd_group_and_shadow() {
        let d = tempfile::tempdir().unwrap();
        let (old, new, out) = (d.path().join("o"), d.path().join("n"), d.path().join("e"));
        for p in [&old, &new, &out] {
            fs::create_dir(p).unwrap();
        }
        fs::write(
            old.join("passwd"),
            "root:x:0:0::/root:/bin/sh\nlocal:x:1000:1000::/h:/bin/sh\n",
        )
        .unwrap();
        fs::write(old.join("group"), "root:x:0:\nlocal:x:1000:\n").unwrap();
        fs::write(old.join("shadow"), "root:*:1::::::\nlocal:$6$x:1::::::\n").unwrap();
        fs::write(
            new.join("passwd"),
            "root:x:0:0::/root:/bin/sh\nmsg:x:1000:1000::/:/bin/false\n",
        )
        .unwrap();
        fs::write(new.join("group"), "root:x:0:\nmsg:x:1000:\n").unwrap();
        fs::write(new.join("shadow"), "root:*:1::::::\nmsg:!:1::::::\n").unwrap();
        let r = merge(&old, &new, &out).unwrap();
        assert_eq!(r.users_added, vec!["msg"]);
        assert_eq!(r.groups_added, vec!["msg"]);
        assert_eq!(
            fs::read_to_string(out.join("passwd")).unwrap(),
            "root:x:0:0::/root:/bin/sh\nlocal:x:1000:1000::/h:/bin/sh\nmsg:x:1001:1001::/:/bin/false\n"
        );
        assert_eq!(
            fs::read_to_string(out.join("group")).unwrap(),
            "root:x:0:\nlocal:x:1000:\nmsg:x:1001:\n"
        );
        assert_eq!(
            fs::read_to_string(out.join("shadow")).unwrap(),
            "root:*:1::::::\nlocal:$6$x:1::::::\nmsg:!:1::::::\n"
        );
    }
}
