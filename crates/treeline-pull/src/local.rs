//! Pulling between two repositories on the same machine (`pull-local`): any source mode,
//! every object re-verified as it is copied.

use std::collections::HashSet;

use rayon::prelude::*;
use treeline_store::object::{Commit, DirTree};
use treeline_store::progress::Progress;
use treeline_store::refs::RefSpec;
use treeline_store::{Checksum, ObjectName, ObjectType, Repo, Transaction};

use crate::Result;

/// Copy `refs` (names or checksums) and `depth` parents of each from `src` into `dest`,
/// then point the same refs (under `remote:` when given) at them.
pub fn pull_local(
    src: &Repo,
    dest: &Repo,
    refs: &[String],
    depth: i64,
    remote: Option<&str>,
    progress: &dyn Progress,
) -> Result<Vec<(String, Checksum)>> {
    let wanted: Vec<String> = if refs.is_empty() {
        src.list_refs()?.into_keys().collect()
    } else {
        refs.to_vec()
    };
    let mut targets = Vec::new();
    for w in &wanted {
        let c = src.resolve_rev(w)?;
        targets.push((w.parse::<Checksum>().is_err().then(|| w.clone()), c));
    }
    let txn = dest.begin()?;
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    for (_, c) in &targets {
        let mut cur = Some(*c);
        let mut remaining = depth;
        while let Some(c) = cur {
            if !src.has_commit(&c) || !seen.insert(ObjectName::new(c, ObjectType::Commit)) {
                break;
            }
            let commit = copy_commit(src, &txn, &c)?;
            collect_tree(src, &txn, &commit, &mut files, &mut seen)?;
            if remaining == 0 {
                break;
            }
            remaining -= 1;
            cur = commit.parent;
        }
    }
    progress.set_total(files.len() as u64);
    files.par_iter().try_for_each(|c| -> Result<()> {
        let (header, mut content, size) = src.open_file(c)?;
        txn.write_content_expecting(&header, size, &mut content, c)?;
        progress.advance(1, size);
        Ok(())
    })?;
    txn.commit()?;
    let mut out = Vec::new();
    for (name, c) in targets {
        if let Some(name) = name {
            let spec = match remote {
                Some(r) => RefSpec::parse(&format!("{r}:{name}"))?,
                None => RefSpec::parse(name.split_once(':').map(|(_, n)| n).unwrap_or(&name))?,
            };
            dest.set_ref(&spec, Some(&c))?;
            out.push((spec.to_string(), c));
        }
    }
    Ok(out)
}

fn copy_meta(src: &Repo, txn: &Transaction<'_>, name: &ObjectName) -> Result<Vec<u8>> {
    let bytes = src.read_meta_bytes(name)?;
    let actual = Checksum::of(&bytes);
    if actual != name.checksum {
        return Err(treeline_store::Error::Corrupted {
            object: *name,
            actual: actual.to_hex(),
        }
        .into());
    }
    txn.write_meta_as(name, &bytes)?;
    Ok(bytes)
}

fn copy_commit(src: &Repo, txn: &Transaction<'_>, c: &Checksum) -> Result<Commit> {
    let name = ObjectName::new(*c, ObjectType::Commit);
    let bytes = copy_meta(src, txn, &name)?;
    if let Some(meta) = src.read_commitmeta(c)? {
        txn.repo().write_commitmeta(c, &meta)?;
    }
    Commit::from_bytes(&bytes).map_err(|reason| {
        treeline_store::Error::InvalidObject {
            object: name.to_string(),
            reason,
        }
        .into()
    })
}

fn collect_tree(
    src: &Repo,
    txn: &Transaction<'_>,
    commit: &Commit,
    files: &mut Vec<Checksum>,
    seen: &mut HashSet<ObjectName>,
) -> Result<()> {
    let mut stack = vec![(commit.root_tree, commit.root_meta)];
    while let Some((t, m)) = stack.pop() {
        let meta = ObjectName::new(m, ObjectType::DirMeta);
        if seen.insert(meta) && !txn.has_object(&meta) {
            copy_meta(src, txn, &meta)?;
        }
        let tree_name = ObjectName::new(t, ObjectType::DirTree);
        if !seen.insert(tree_name) {
            continue;
        }
        let bytes = copy_meta(src, txn, &tree_name)?;
        let tree =
            DirTree::from_bytes(&bytes).map_err(|reason| treeline_store::Error::InvalidObject {
                object: tree_name.to_string(),
                reason,
            })?;
        for (_, f) in &tree.files {
            let fname = ObjectName::new(*f, ObjectType::File);
            if seen.insert(fname) && !txn.has_object(&fname) {
                files.push(*f);
            }
        }
        stack.extend(tree.dirs.iter().map(|(_, t, m)| (*t, *m)));
    }
    Ok(())
}
