//! The packages a request is solved against, indexed by name and by provided name.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::model::{Atom, Family, PackageMeta, VersionOp};
use crate::version::compare;

/// The packages of one family (several repositories' indexes concatenated, earlier
/// repositories first), indexed so that the solver finds what satisfies a name quickly.
///
/// A package is referred to by its index in [`Universe::packages`]. Duplicates (same
/// name and version from two repositories) keep the first copy, as both tools do.
///
/// For deb, only apt's *candidate* of each name takes part in solving: its version of
/// highest pin priority (see [`PackageMeta::pin_priority`]), then highest version. apk considers every version and prefers the highest.
#[derive(Debug)]
pub struct Universe {
    family: Family,
    packages: Vec<PackageMeta>,
    /// Real name -> candidate packages, best first (version descending, then repository
    /// order).
    by_name: HashMap<String, Vec<usize>>,
    /// Provided name -> (package, index into its `provides`), candidates only, in
    /// package order.
    providers: HashMap<String, Vec<(usize, usize)>>,
    /// deb `Priority` rank per package (lower is more important), cached for provider
    /// sorting.
    priority_rank: Vec<u8>,
}

impl Universe {
    /// Indexes `packages`, which must all be of `family` (a package whose `family` is
    /// set to the other one is left out: its versions would compare wrongly).
    pub fn new(family: Family, packages: Vec<PackageMeta>) -> Universe {
        let mut kept: Vec<PackageMeta> = Vec::with_capacity(packages.len());
        let mut seen: HashMap<(String, String), ()> = HashMap::with_capacity(packages.len());
        for meta in packages {
            if meta.family.is_some_and(|f| f != family) {
                tracing::warn!(
                    "{} {}: {} package left out of a {family} universe",
                    meta.name,
                    meta.version,
                    meta.family.map(|f| f.to_string()).unwrap_or_default()
                );
                continue;
            }
            match seen.entry((meta.name.clone(), meta.version.clone())) {
                Entry::Occupied(_) => continue,
                Entry::Vacant(slot) => {
                    slot.insert(());
                }
            }
            kept.push(meta);
        }
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::with_capacity(kept.len());
        for (index, meta) in kept.iter().enumerate() {
            by_name.entry(meta.name.clone()).or_default().push(index);
        }
        for list in by_name.values_mut() {
            // Stable sort: equal versions keep repository order. deb: apt's candidate is
            // the version of highest pin priority first, then the highest version.
            list.sort_by(|&a, &b| {
                pin(&kept[b])
                    .cmp(&pin(&kept[a]))
                    .then_with(|| compare(family, &kept[b].version, &kept[a].version))
            });
            if family == Family::Deb {
                list.truncate(1);
            }
        }
        let mut providers: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        let mut candidate_flags = vec![false; kept.len()];
        for list in by_name.values() {
            for &index in list {
                if let Some(flag) = candidate_flags.get_mut(index) {
                    *flag = true;
                }
            }
        }
        for (index, meta) in kept.iter().enumerate() {
            if !candidate_flags.get(index).copied().unwrap_or(false) {
                continue;
            }
            for (which, provide) in meta.provides.iter().enumerate() {
                providers
                    .entry(provide.name.clone())
                    .or_default()
                    .push((index, which));
            }
        }
        let priority_rank = kept
            .iter()
            .map(|meta| priority_rank(meta.priority.as_deref()))
            .collect();
        Universe {
            family,
            packages: kept,
            by_name,
            providers,
            priority_rank,
        }
    }

    /// The family whose rules apply.
    pub fn family(&self) -> Family {
        self.family
    }

    /// All packages, indexed by the ids the solver uses.
    pub fn packages(&self) -> &[PackageMeta] {
        &self.packages
    }

    /// One package, if `id` is valid.
    pub fn package(&self, id: usize) -> Option<&PackageMeta> {
        self.packages.get(id)
    }

    /// The package called `name` at exactly `version`, if the universe has it.
    pub fn find(&self, name: &str, version: &str) -> Option<usize> {
        self.packages
            .iter()
            .position(|meta| meta.name == name && meta.version == version)
    }

    /// The candidates called `name` (not providers), best first.
    pub fn named(&self, name: &str) -> &[usize] {
        self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every candidate that provides `name`, with the index of the matching provide.
    pub fn providers_of(&self, name: &str) -> &[(usize, usize)] {
        self.providers.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether package `id` satisfies `atom`: by its own name and version, or by one of
    /// its provides (a versioned requirement needs a versioned provide).
    pub fn satisfies(&self, id: usize, atom: &Atom) -> bool {
        let Some(meta) = self.packages.get(id) else {
            return false;
        };
        self.satisfies_by_name(meta, atom) || self.satisfying_provide(meta, atom).is_some()
    }

    /// Whether `meta` is the package `atom` names, at a matching version.
    pub(crate) fn satisfies_by_name(&self, meta: &PackageMeta, atom: &Atom) -> bool {
        meta.name == atom.name
            && match &atom.req {
                None => true,
                Some(req) if req.op == VersionOp::Identity => meta.checksum == req.version,
                Some(req) => req.matches(self.family, &meta.version),
            }
    }

    /// The first of `meta`'s provides that satisfies `atom`.
    pub(crate) fn satisfying_provide(&self, meta: &PackageMeta, atom: &Atom) -> Option<usize> {
        meta.provides.iter().position(|provide| {
            provide.name == atom.name
                && match (&atom.req, &provide.version) {
                    (None, _) => true,
                    (Some(req), Some(version)) if req.op != VersionOp::Identity => {
                        req.matches(self.family, version)
                    }
                    _ => false,
                }
        })
    }

    /// deb `Priority` rank of a package: 1 required .. 5 extra, 6 unknown.
    pub(crate) fn priority_rank(&self, id: usize) -> u8 {
        self.priority_rank.get(id).copied().unwrap_or(6)
    }

    /// Compares two versions under this family's rules.
    pub(crate) fn compare_versions(&self, a: &str, b: &str) -> Ordering {
        compare(self.family, a, b)
    }
}

/// apt's order of `Priority` values (its internal enum: required first).
fn priority_rank(priority: Option<&str>) -> u8 {
    match priority {
        Some("required") => 1,
        Some("important") => 2,
        Some("standard") => 3,
        Some("optional") => 4,
        Some("extra") => 5,
        _ => 6,
    }
}

/// apt's pin priority of a package (500 unless its repository said otherwise).
fn pin(meta: &PackageMeta) -> i32 {
    meta.pin_priority.unwrap_or(500)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deb(name: &str, version: &str, pin: Option<i32>) -> PackageMeta {
        PackageMeta {
            family: Some(Family::Deb),
            name: name.to_owned(),
            version: version.to_owned(),
            pin_priority: pin,
            ..PackageMeta::default()
        }
    }

    #[test]
    fn deb_candidate_is_highest_pin_then_highest_version() {
        let universe = Universe::new(
            Family::Deb,
            vec![
                deb("e2fsprogs", "1.47.0-2", None),
                deb("e2fsprogs", "1.47.2-3~bpo12+1", Some(100)),
                deb("sl", "5.02-1", Some(100)),
                deb("sl", "5.05-1", Some(100)),
            ],
        );
        let candidate = |name: &str| {
            let ids = universe.named(name);
            assert_eq!(ids.len(), 1, "{name}: one candidate");
            universe.package(ids[0]).unwrap().version.clone()
        };
        // Backports (pin 100) lose to the release (500) even with a higher version, but
        // a package only in backports is still a candidate.
        assert_eq!(candidate("e2fsprogs"), "1.47.0-2");
        assert_eq!(candidate("sl"), "5.05-1");
    }
}
