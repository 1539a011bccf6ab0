//! The SAT search (resolvo): used when the greedy pass gets stuck, with the same
//! preferences. Names are real package names; a requirement is a union of version sets,
//! one per package name among its candidates, in preference order; virtual names become
//! the union of their providers. Conflicts and Breaks are `constrains`; apk versioned
//! provides are exclusive through `constrains` too; apk `install_if` is a conditional
//! requirement of the root; a deb Recommends is a union that ends with an "escape"
//! solvable of its own, so it is met when possible and skipped otherwise.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;

use resolvo::utils::{Pool, VersionSet};
use resolvo::{
    Candidates, Condition, ConditionId, ConditionalRequirement, Dependencies, DependencyProvider,
    HintDependenciesAvailable, Interner, KnownDependencies, LogicalOperator, NameId, Problem,
    Requirement, SolvableId, Solver, SolverCache, StringId, UnsolvableOrCancelled, VersionSetId,
    VersionSetUnionId,
};

use super::prefs::Preferences;
use super::universe::Universe;
use crate::model::{Atom, Dependency, Family};

/// A version set: an explicit list of packages of one name that it admits, or that it
/// excludes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Set {
    Among(Box<[usize]>),
    Excluding(Box<[usize]>),
    /// The escape solvable of a Recommends.
    Escape,
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Set::Among(ids) => write!(f, "one of {} candidates", ids.len()),
            Set::Excluding(ids) => write!(f, "none of {} packages", ids.len()),
            Set::Escape => f.write_str("(skipped)"),
        }
    }
}

/// What a solvable stands for.
#[derive(Debug, Clone)]
struct Node {
    package: Option<usize>,
    label: String,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SetOf(Set);

impl VersionSet for SetOf {
    type V = Node;
}

impl fmt::Display for SetOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// resolvo's view of a universe and a request.
struct Provider<'a> {
    prefs: &'a Preferences<'a>,
    favored: &'a HashSet<usize>,
    include_recommends: bool,
    pool: Pool<SetOf, String>,
    solvable_of: RefCell<HashMap<usize, SolvableId>>,
    escapes: RefCell<HashMap<NameId, SolvableId>>,
    escape_count: RefCell<usize>,
}

impl<'a> Provider<'a> {
    fn universe(&self) -> &'a Universe {
        self.prefs.universe
    }

    fn solvable(&self, id: usize) -> Option<SolvableId> {
        if let Some(&solvable) = self.solvable_of.borrow().get(&id) {
            return Some(solvable);
        }
        let universe = self.universe();
        let meta = universe.package(id)?;
        let name = self.pool.intern_package_name(meta.name.as_str());
        let solvable = self.pool.intern_solvable(
            name,
            Node {
                package: Some(id),
                label: super::greedy::label(universe, id),
            },
        );
        self.solvable_of.borrow_mut().insert(id, solvable);
        Some(solvable)
    }

    fn package_of(&self, solvable: SolvableId) -> Option<usize> {
        self.pool.resolve_solvable(solvable).record.package
    }

    /// The package name a package id has.
    fn name_of(&self, id: usize) -> Option<&'a str> {
        self.universe().package(id).map(|m| m.name.as_str())
    }

    /// Groups `ids` (in preference order) by package name, one set per name.
    fn sets(&self, ids: &[usize], make: fn(Box<[usize]>) -> Set) -> Vec<VersionSetId> {
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for &id in ids {
            let Some(name) = self.name_of(id) else {
                continue;
            };
            match groups.iter_mut().find(|(n, _)| *n == name) {
                Some((_, list)) => list.push(id),
                None => groups.push((name, vec![id])),
            }
        }
        groups
            .into_iter()
            .map(|(name, list)| {
                let name = self.pool.intern_package_name(name);
                self.pool
                    .intern_version_set(name, SetOf(make(list.into_boxed_slice())))
            })
            .collect()
    }

    /// The requirement for a dependency; `escape` adds a last resort that satisfies it
    /// without installing anything.
    fn requirement(&self, dependency: &Dependency, escape: bool) -> Option<Requirement> {
        let candidates = self.prefs.candidates(dependency);
        let mut sets = self.sets(&candidates, Set::Among);
        if escape {
            let mut count = self.escape_count.borrow_mut();
            *count += 1;
            let name = self
                .pool
                .intern_package_name(format!("(skip recommends #{count})"));
            let solvable = self.pool.intern_solvable(
                name,
                Node {
                    package: None,
                    label: "(recommends skipped)".to_owned(),
                },
            );
            self.escapes.borrow_mut().insert(name, solvable);
            sets.push(self.pool.intern_version_set(name, SetOf(Set::Escape)));
        }
        if sets.is_empty() {
            // Nothing satisfies it: a set without candidates under the wanted name, so
            // resolvo reports it as such.
            let name = dependency.alternatives.first()?.name.as_str();
            let name = self.pool.intern_package_name(name);
            return Some(Requirement::Single(
                self.pool
                    .intern_version_set(name, SetOf(Set::Among(Box::new([])))),
            ));
        }
        let mut iter = sets.into_iter();
        let first = iter.next()?;
        let rest: Vec<VersionSetId> = iter.collect();
        if rest.is_empty() {
            Some(Requirement::Single(first))
        } else {
            Some(Requirement::Union(
                self.pool.intern_version_set_union(first, rest.into_iter()),
            ))
        }
    }

    /// `constrains` that keep every package matching `atom` (other than `except`) out.
    fn exclusions(&self, atom: &Atom, except: Option<&str>) -> Vec<VersionSetId> {
        let universe = self.universe();
        let mut victims: Vec<usize> = universe
            .named(&atom.name)
            .iter()
            .copied()
            .chain(universe.providers_of(&atom.name).iter().map(|&(id, _)| id))
            .filter(|&id| self.name_of(id) != except && universe.satisfies(id, atom))
            .collect();
        victims.sort_unstable();
        victims.dedup();
        self.sets(&victims, Set::Excluding)
    }

    fn admits(&self, set: &Set, solvable: SolvableId) -> bool {
        let package = self.package_of(solvable);
        match (set, package) {
            (Set::Among(ids), Some(id)) => ids.contains(&id),
            (Set::Excluding(ids), Some(id)) => !ids.contains(&id),
            (Set::Escape, None) => true,
            _ => false,
        }
    }
}

impl Interner for Provider<'_> {
    type NameId = NameId;
    type SolvableId = SolvableId;

    fn display_solvable(&self, solvable: SolvableId) -> impl fmt::Display + '_ {
        self.pool.resolve_solvable(solvable).record.label.clone()
    }

    fn display_name(&self, name: NameId) -> impl fmt::Display + '_ {
        self.pool.resolve_package_name(name).clone()
    }

    fn display_version_set(&self, version_set: VersionSetId) -> impl fmt::Display + '_ {
        self.pool.resolve_version_set(version_set).to_string()
    }

    fn display_string(&self, string_id: StringId) -> impl fmt::Display + '_ {
        self.pool.resolve_string(string_id).to_owned()
    }

    fn version_set_name(&self, version_set: VersionSetId) -> NameId {
        self.pool.resolve_version_set_package_name(version_set)
    }

    fn solvable_name(&self, solvable: SolvableId) -> NameId {
        self.pool.resolve_solvable(solvable).name
    }

    fn version_sets_in_union(
        &self,
        version_set_union: VersionSetUnionId,
    ) -> impl Iterator<Item = VersionSetId> {
        self.pool.resolve_version_set_union(version_set_union)
    }

    fn resolve_condition(&self, condition: ConditionId) -> Condition {
        self.pool.resolve_condition(condition).clone()
    }
}

impl DependencyProvider for Provider<'_> {
    async fn filter_candidates(
        &self,
        candidates: &[SolvableId],
        version_set: VersionSetId,
        inverse: bool,
    ) -> Vec<SolvableId> {
        let set = &self.pool.resolve_version_set(version_set).0;
        candidates
            .iter()
            .copied()
            .filter(|&solvable| self.admits(set, solvable) != inverse)
            .collect()
    }

    async fn get_candidates(&self, name: NameId) -> Option<Candidates<SolvableId>> {
        if let Some(&escape) = self.escapes.borrow().get(&name) {
            return Some(Candidates {
                candidates: vec![escape],
                hint_dependencies_available: HintDependenciesAvailable::All,
                ..Candidates::default()
            });
        }
        let universe = self.universe();
        let text = self.pool.resolve_package_name(name).clone();
        let ids = universe.named(&text);
        let mut candidates = Vec::with_capacity(ids.len());
        let mut favored = None;
        for &id in ids {
            let solvable = self.solvable(id)?;
            if favored.is_none() && self.favored.contains(&id) {
                favored = Some(solvable);
            }
            candidates.push(solvable);
        }
        Some(Candidates {
            candidates,
            favored,
            hint_dependencies_available: HintDependenciesAvailable::All,
            ..Candidates::default()
        })
    }

    async fn sort_candidates(&self, _solver: &SolverCache<Self>, solvables: &mut [SolvableId]) {
        // Same name: installed first, then the universe's order (highest version first).
        let universe = self.universe();
        let rank = |solvable: SolvableId| {
            let id = self.package_of(solvable);
            let installed = id.is_some_and(|id| self.prefs.installed.contains(&id));
            let position = id
                .and_then(|id| {
                    let name = self.name_of(id)?;
                    universe.named(name).iter().position(|&other| other == id)
                })
                .unwrap_or(usize::MAX);
            (!installed, position)
        };
        solvables.sort_by_key(|&solvable| rank(solvable));
    }

    async fn get_dependencies(&self, solvable: SolvableId) -> Dependencies {
        let Some(id) = self.package_of(solvable) else {
            return Dependencies::Known(KnownDependencies::default());
        };
        let universe = self.universe();
        let Some(meta) = universe.package(id) else {
            return Dependencies::Known(KnownDependencies::default());
        };
        let mut known = KnownDependencies::default();
        for dependency in meta.pre_depends.iter().chain(&meta.depends) {
            if let Some(requirement) = self.requirement(dependency, false) {
                known.requirements.push(requirement.into());
            }
        }
        if self.include_recommends {
            for dependency in &meta.recommends {
                if let Some(requirement) = self.requirement(dependency, true) {
                    known.requirements.push(requirement.into());
                }
            }
        }
        for atom in meta.conflicts.iter().chain(&meta.breaks) {
            known
                .constrains
                .extend(self.exclusions(atom, Some(meta.name.as_str())));
        }
        if universe.family() == Family::Apk {
            // A versioned provide makes the name this package's alone.
            for provide in meta.provides.iter().filter(|p| p.version.is_some()) {
                let rivals: Vec<usize> = universe
                    .named(&provide.name)
                    .iter()
                    .copied()
                    .chain(
                        universe
                            .providers_of(&provide.name)
                            .iter()
                            .filter(|&&(other, which)| {
                                universe
                                    .package(other)
                                    .and_then(|m| m.provides.get(which))
                                    .is_some_and(|p| p.version.is_some())
                            })
                            .map(|&(other, _)| other),
                    )
                    .filter(|&other| self.name_of(other) != Some(meta.name.as_str()))
                    .collect();
                known.constrains.extend(self.sets(&rivals, Set::Excluding));
            }
        }
        Dependencies::Known(known)
    }
}

/// The outcome of the SAT search.
pub(crate) enum SatOutcome {
    Solved(Vec<usize>),
    Unsolvable(String),
}

/// Solves with resolvo. `favored` are the greedy pass's picks, tried first per name.
pub(crate) fn solve(
    prefs: &Preferences<'_>,
    requested: &[Dependency],
    forbid: &[Atom],
    include_recommends: bool,
    favored: &HashSet<usize>,
) -> SatOutcome {
    let provider = Provider {
        prefs,
        favored,
        include_recommends,
        pool: Pool::new(),
        solvable_of: RefCell::new(HashMap::new()),
        escapes: RefCell::new(HashMap::new()),
        escape_count: RefCell::new(0),
    };
    let mut requirements: Vec<ConditionalRequirement> = requested
        .iter()
        .filter_map(|dependency| provider.requirement(dependency, false))
        .map(ConditionalRequirement::from)
        .collect();
    let constraints: Vec<VersionSetId> = forbid
        .iter()
        .flat_map(|atom| provider.exclusions(atom, None))
        .collect();
    let universe = prefs.universe;
    if universe.family() == Family::Apk {
        // install_if: once every atom is satisfied, the package is required.
        for meta_id in 0..universe.packages().len() {
            let Some(meta) = universe.package(meta_id) else {
                continue;
            };
            if meta.install_if.is_empty() || !universe.named(&meta.name).contains(&meta_id) {
                continue;
            }
            let mut condition: Option<ConditionId> = None;
            for atom in &meta.install_if {
                let dependency = Dependency {
                    alternatives: vec![atom.clone()],
                };
                let sets = provider.sets(&prefs.candidates(&dependency), Set::Among);
                let mut atom_condition: Option<ConditionId> = None;
                for set in sets {
                    let leaf = provider.pool.intern_condition(Condition::Requirement(set));
                    atom_condition = Some(match atom_condition {
                        None => leaf,
                        Some(previous) => provider.pool.intern_condition(Condition::Binary(
                            LogicalOperator::Or,
                            previous,
                            leaf,
                        )),
                    });
                }
                let Some(atom_condition) = atom_condition else {
                    // An atom nothing can satisfy: never triggers.
                    condition = None;
                    break;
                };
                condition = Some(match condition {
                    None => atom_condition,
                    Some(previous) => provider.pool.intern_condition(Condition::Binary(
                        LogicalOperator::And,
                        previous,
                        atom_condition,
                    )),
                });
            }
            let Some(condition) = condition else {
                continue;
            };
            let target = provider.sets(&[meta_id], Set::Among);
            if let Some(&set) = target.first() {
                requirements.push(Requirement::Single(set).with_condition(condition));
            }
        }
    }
    let problem = Problem::new()
        .requirements(requirements)
        .constraints(constraints);
    let mut solver = Solver::new(provider);
    match solver.solve(problem) {
        Ok(solvables) => {
            let provider = solver.provider();
            SatOutcome::Solved(
                solvables
                    .into_iter()
                    .filter_map(|solvable| provider.package_of(solvable))
                    .collect(),
            )
        }
        Err(UnsolvableOrCancelled::Unsolvable(conflict)) => {
            SatOutcome::Unsolvable(conflict.display_user_friendly(&solver).to_string())
        }
        Err(UnsolvableOrCancelled::Cancelled(_)) => {
            SatOutcome::Unsolvable("the search was cancelled".to_owned())
        }
    }
}
