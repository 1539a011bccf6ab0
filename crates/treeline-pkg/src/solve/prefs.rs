//! Which package the real tools pick for a requirement: the candidate order that both the
//! greedy pass and the SAT search follow.

use std::cmp::Ordering;
use std::collections::HashSet;

use super::universe::Universe;
use crate::model::{Atom, Dependency, Family};

/// The tool's preferences for one request: which packages are installed already, and
/// (apk) which names the user named.
pub(crate) struct Preferences<'a> {
    pub universe: &'a Universe,
    pub installed: HashSet<usize>,
    /// apk: names in `world`; a virtual provider without `provider_priority` may only
    /// satisfy a virtual name when its own name is wanted.
    pub wanted_names: HashSet<&'a str>,
}

impl<'a> Preferences<'a> {
    /// The packages that can satisfy `dependency`, most preferred first, without
    /// duplicates.
    pub fn candidates(&self, dependency: &Dependency) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for atom in &dependency.alternatives {
            for id in self.atom_candidates(atom) {
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        if !self.installed.is_empty() {
            // apt tries installed solutions before new ones; apk prefers installed
            // packages over newer ones (`apk add` without `-u`).
            out.sort_by_key(|id| !self.installed.contains(id));
        }
        out
    }

    /// The packages that satisfy one atom, most preferred first.
    pub fn atom_candidates(&self, atom: &Atom) -> Vec<usize> {
        let universe = self.universe;
        let packages = universe.packages();
        let named = universe.named(&atom.name).iter().copied().filter(|&id| {
            packages
                .get(id)
                .is_some_and(|meta| universe.satisfies_by_name(meta, atom))
        });
        match universe.family() {
            Family::Deb => {
                // apt (CompareProviders): the package of that name first, then providers:
                // Essential first, then by Priority (required first), then index order.
                let mut providers: Vec<usize> = universe
                    .providers_of(&atom.name)
                    .iter()
                    .map(|&(id, _)| id)
                    .filter(|&id| {
                        packages.get(id).is_some_and(|meta| {
                            meta.name != atom.name
                                && universe.satisfying_provide(meta, atom).is_some()
                        })
                    })
                    .collect();
                providers.dedup();
                providers.sort_by_key(|&id| {
                    let essential = packages.get(id).is_some_and(|meta| meta.essential);
                    (!essential, universe.priority_rank(id))
                });
                named.chain(providers).collect()
            }
            Family::Apk => {
                // apk (compare_providers): highest provided version (the package's own
                // version for its name), then the higher version of the same package,
                // then the highest provider_priority, then repository order. Unversioned
                // providers are chosen only with a provider_priority, or when their own
                // name is wanted.
                let mut scored: Vec<(usize, Option<&str>)> = named
                    .map(|id| (id, packages.get(id).map(|meta| meta.version.as_str())))
                    .collect();
                for &(id, which) in universe.providers_of(&atom.name) {
                    let Some(meta) = packages.get(id) else {
                        continue;
                    };
                    if meta.name == atom.name || scored.iter().any(|&(other, _)| other == id) {
                        continue;
                    }
                    if universe.satisfying_provide(meta, atom).is_none() {
                        continue;
                    }
                    let version = meta.provides.get(which).and_then(|p| p.version.as_deref());
                    if version.is_none()
                        && meta.provider_priority.unwrap_or(0) == 0
                        && !self.wanted_names.contains(meta.name.as_str())
                    {
                        continue;
                    }
                    scored.push((id, version));
                }
                scored.sort_by(|&(a, va), &(b, vb)| self.apk_order(a, va, b, vb));
                scored.into_iter().map(|(id, _)| id).collect()
            }
        }
    }

    /// apk's provider order; `Less` means `a` is preferred.
    fn apk_order(&self, a: usize, va: Option<&str>, b: usize, vb: Option<&str>) -> Ordering {
        let universe = self.universe;
        let (Some(ma), Some(mb)) = (universe.package(a), universe.package(b)) else {
            return a.cmp(&b);
        };
        let by_provided = match (va, vb) {
            (Some(x), Some(y)) => universe.compare_versions(y, x),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        by_provided
            .then_with(|| {
                if ma.name == mb.name {
                    universe.compare_versions(&mb.version, &ma.version)
                } else {
                    Ordering::Equal
                }
            })
            .then_with(|| {
                mb.provider_priority
                    .unwrap_or(0)
                    .cmp(&ma.provider_priority.unwrap_or(0))
            })
            .then_with(|| a.cmp(&b))
    }
}
