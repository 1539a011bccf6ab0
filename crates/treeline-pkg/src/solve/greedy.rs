//! The greedy pass: installs what is requested the way apt's `MarkInstall` and apk's
//! solver do when nothing goes wrong (depth first, the most preferred candidate that
//! can be added, the package marked before its dependencies), undoing a candidate whose
//! own requirements fail and trying the next one. When it gets stuck, the SAT search
//! takes over; its first failure is what an unsolvable request is explained with.

use std::collections::HashMap;

use super::prefs::Preferences;
use super::universe::Universe;
use crate::model::{Atom, Dependency, Family, VersionOp};

/// How many package installs the greedy pass may try before handing over to the SAT
/// search (backtracking over alternatives can otherwise explode).
const BUDGET: usize = 200_000;

/// Why a requirement could not be met.
#[derive(Debug, Clone)]
pub(crate) enum Why {
    /// No package has that name or provides it.
    Nothing { atom: Box<Atom>, by: Option<usize> },
    /// Packages of that name exist, at other versions.
    Version {
        atom: Box<Atom>,
        by: Option<usize>,
        available: Vec<String>,
    },
    /// apk: only providers of a virtual name without `provider_priority`.
    Virtual {
        atom: Box<Atom>,
        by: Option<usize>,
        providers: Vec<usize>,
    },
    /// `declared` conflicts with (or breaks) `victim` through `atom`.
    Conflict {
        declared: usize,
        victim: usize,
        atom: Box<Atom>,
        /// The package being added (one of the two) and what required it.
        attempted: usize,
        attempted_by: Option<usize>,
    },
    /// The request forbids `package` (apk `!name`), which `by` requires.
    Forbidden {
        package: usize,
        atom: Box<Atom>,
        by: Option<usize>,
    },
    /// Two packages claim the same name (two versions, or an apk versioned provide).
    NameTaken {
        package: usize,
        holder: usize,
        name: String,
    },
    /// The greedy pass gave up.
    Budget,
}

/// The set being built, with what is needed to undo the last additions.
pub(crate) struct Greedy<'a> {
    prefs: &'a Preferences<'a>,
    /// Why each selected package is in (the package that required it; `None` for the
    /// request).
    parent: HashMap<usize, Option<usize>>,
    journal: Vec<usize>,
    /// Names that only one package may hold: real names, and apk versioned provides.
    taken: HashMap<&'a str, usize>,
    /// Every name (own or provided) -> selected packages carrying it.
    carriers: HashMap<&'a str, Vec<usize>>,
    /// Name -> conflict atoms aimed at it, with the declaring package (`None`: request).
    conflicts_on: HashMap<&'a str, Vec<(Option<usize>, &'a Atom)>>,
    include_recommends: bool,
    spent: usize,
}

impl<'a> Greedy<'a> {
    pub fn new(prefs: &'a Preferences<'a>, forbid: &'a [Atom], include_recommends: bool) -> Self {
        let mut greedy = Greedy {
            prefs,
            parent: HashMap::new(),
            journal: Vec::new(),
            taken: HashMap::new(),
            carriers: HashMap::new(),
            conflicts_on: HashMap::new(),
            include_recommends,
            spent: 0,
        };
        for atom in forbid {
            greedy
                .conflicts_on
                .entry(atom.name.as_str())
                .or_default()
                .push((None, atom));
        }
        greedy
    }

    fn universe(&self) -> &'a Universe {
        self.prefs.universe
    }

    /// The selected packages, in the order they were added.
    pub fn selected(&self) -> &[usize] {
        &self.journal
    }

    /// The package that pulled `id` in (`None`: requested or not selected).
    pub fn parent_of(&self, id: usize) -> Option<usize> {
        self.parent.get(&id).copied().flatten()
    }

    pub fn is_selected(&self, id: usize) -> bool {
        self.parent.contains_key(&id)
    }

    /// Whether some selected package satisfies one of the alternatives.
    pub fn satisfied(&self, dependency: &Dependency) -> bool {
        let universe = self.universe();
        dependency.alternatives.iter().any(|atom| {
            self.carriers
                .get(atom.name.as_str())
                .is_some_and(|ids| ids.iter().any(|&id| universe.satisfies(id, atom)))
        })
    }

    /// Meets the requirement with its most preferred installable candidate.
    pub fn require(&mut self, dependency: &Dependency, by: Option<usize>) -> Result<(), Why> {
        if self.satisfied(dependency) {
            return Ok(());
        }
        let candidates = self.prefs.candidates(dependency);
        if candidates.is_empty() {
            return Err(self.missing(dependency, by));
        }
        let mut first_error = None;
        for candidate in candidates {
            let mark = self.journal.len();
            match self.install(candidate, by) {
                Ok(()) => return Ok(()),
                Err(Why::Budget) => return Err(Why::Budget),
                Err(why) => {
                    self.undo_to(mark);
                    first_error.get_or_insert(why);
                }
            }
        }
        Err(first_error.unwrap_or(Why::Budget))
    }

    /// Selects the most preferred candidate that can be added, without its requirements
    /// (apt marks every requested package first, then installs their dependencies).
    pub fn pick(&mut self, dependency: &Dependency) -> Result<Option<usize>, Why> {
        if self.satisfied(dependency) {
            return Ok(None);
        }
        let candidates = self.prefs.candidates(dependency);
        if candidates.is_empty() {
            return Err(self.missing(dependency, None));
        }
        let mut first_error = None;
        for candidate in candidates {
            match self.can_add(candidate, None) {
                Ok(()) => {
                    self.mark(candidate, None);
                    return Ok(Some(candidate));
                }
                Err(why) => {
                    first_error.get_or_insert(why);
                }
            }
        }
        Err(first_error.unwrap_or(Why::Budget))
    }

    /// Adds `id` and then its requirements, depth first.
    pub fn install(&mut self, id: usize, by: Option<usize>) -> Result<(), Why> {
        if self.is_selected(id) {
            return Ok(());
        }
        self.spent += 1;
        if self.spent > BUDGET {
            return Err(Why::Budget);
        }
        self.can_add(id, by)?;
        self.mark(id, by);
        self.install_requirements(id)
    }

    /// Installs the requirements of an already selected package.
    pub fn install_requirements(&mut self, id: usize) -> Result<(), Why> {
        let Some(meta) = self.universe().package(id) else {
            return Ok(());
        };
        // apt's order: Pre-Depends, Depends, then Recommends (not critical).
        let critical = meta.pre_depends.iter().chain(&meta.depends);
        for dependency in critical {
            self.require(dependency, Some(id))?;
        }
        if self.include_recommends {
            for dependency in &meta.recommends {
                let mark = self.journal.len();
                match self.require(dependency, Some(id)) {
                    Ok(()) => {}
                    Err(Why::Budget) => return Err(Why::Budget),
                    Err(_) => self.undo_to(mark),
                }
            }
        }
        Ok(())
    }

    /// Whether `id` can join the set: no name clash, no conflict either way.
    pub fn can_add(&self, id: usize, by: Option<usize>) -> Result<(), Why> {
        let universe = self.universe();
        let Some(meta) = universe.package(id) else {
            return Err(Why::Budget);
        };
        let apk = universe.family() == Family::Apk;
        let mut exclusive = vec![meta.name.as_str()];
        if apk {
            exclusive.extend(
                meta.provides
                    .iter()
                    .filter(|p| p.version.is_some())
                    .map(|p| p.name.as_str()),
            );
        }
        for name in exclusive {
            if let Some(&holder) = self.taken.get(name)
                && holder != id
            {
                return Err(Why::NameTaken {
                    package: id,
                    holder,
                    name: name.to_owned(),
                });
            }
        }
        let names = std::iter::once(meta.name.as_str())
            .chain(meta.provides.iter().map(|p| p.name.as_str()));
        for name in names {
            for &(declared, atom) in self
                .conflicts_on
                .get(name)
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                if declared == Some(id) || !universe.satisfies(id, atom) {
                    continue;
                }
                return Err(match declared {
                    Some(declared) => Why::Conflict {
                        declared,
                        victim: id,
                        atom: Box::new(atom.clone()),
                        attempted: id,
                        attempted_by: by,
                    },
                    None => Why::Forbidden {
                        package: id,
                        atom: Box::new(atom.clone()),
                        by,
                    },
                });
            }
        }
        for atom in meta.conflicts.iter().chain(&meta.breaks) {
            for &other in self
                .carriers
                .get(atom.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                if other != id && universe.satisfies(other, atom) {
                    return Err(Why::Conflict {
                        declared: id,
                        victim: other,
                        atom: Box::new(atom.clone()),
                        attempted: id,
                        attempted_by: by,
                    });
                }
            }
        }
        Ok(())
    }

    fn mark(&mut self, id: usize, by: Option<usize>) {
        let universe = self.universe();
        let Some(meta) = universe.package(id) else {
            return;
        };
        self.parent.insert(id, by);
        self.journal.push(id);
        self.taken.insert(meta.name.as_str(), id);
        self.carriers
            .entry(meta.name.as_str())
            .or_default()
            .push(id);
        for provide in &meta.provides {
            if universe.family() == Family::Apk && provide.version.is_some() {
                self.taken.entry(provide.name.as_str()).or_insert(id);
            }
            self.carriers
                .entry(provide.name.as_str())
                .or_default()
                .push(id);
        }
        for atom in meta.conflicts.iter().chain(&meta.breaks) {
            self.conflicts_on
                .entry(atom.name.as_str())
                .or_default()
                .push((Some(id), atom));
        }
    }

    /// Removes the packages added after the journal had `len` entries.
    pub fn undo_to(&mut self, len: usize) {
        while self.journal.len() > len {
            let Some(id) = self.journal.pop() else {
                break;
            };
            self.parent.remove(&id);
            let Some(meta) = self.universe().package(id) else {
                continue;
            };
            let names = std::iter::once(meta.name.as_str())
                .chain(meta.provides.iter().map(|p| p.name.as_str()));
            for name in names {
                if self.taken.get(name) == Some(&id) {
                    self.taken.remove(name);
                }
                if let Some(list) = self.carriers.get_mut(name) {
                    list.retain(|&other| other != id);
                }
            }
            for atom in meta.conflicts.iter().chain(&meta.breaks) {
                if let Some(list) = self.conflicts_on.get_mut(atom.name.as_str()) {
                    list.retain(|&(declared, _)| declared != Some(id));
                }
            }
        }
    }

    /// Explains a requirement without any candidate.
    fn missing(&self, dependency: &Dependency, by: Option<usize>) -> Why {
        let universe = self.universe();
        let Some(atom) = dependency.alternatives.first() else {
            return Why::Budget;
        };
        let named = universe.named(&atom.name);
        if !named.is_empty() {
            return Why::Version {
                atom: Box::new(atom.clone()),
                by,
                available: named
                    .iter()
                    .filter_map(|&id| universe.package(id).map(|m| m.version.clone()))
                    .collect(),
            };
        }
        let providers: Vec<usize> = universe
            .providers_of(&atom.name)
            .iter()
            .map(|&(id, _)| id)
            .collect();
        if providers.is_empty() {
            return Why::Nothing {
                atom: Box::new(atom.clone()),
                by,
            };
        }
        let versioned: Vec<String> = providers
            .iter()
            .filter_map(|&id| universe.package(id))
            .flat_map(|meta| &meta.provides)
            .filter(|p| p.name == atom.name)
            .filter_map(|p| p.version.clone())
            .collect();
        if atom.req.is_some() && !versioned.is_empty() {
            return Why::Version {
                atom: Box::new(atom.clone()),
                by,
                available: versioned,
            };
        }
        if atom.req.is_some() {
            return Why::Nothing {
                atom: Box::new(atom.clone()),
                by,
            };
        }
        Why::Virtual {
            atom: Box::new(atom.clone()),
            by,
            providers,
        }
    }

    /// Puts a failure into plain words, with the chain of packages that led to it.
    pub fn explain(&self, why: &Why) -> String {
        let universe = self.universe();
        let label = |id: usize| label(universe, id);
        let family = universe.family();
        let requirer = |by: Option<usize>| match by {
            Some(id) => format!("{} depends on", label(id)),
            None => "the request asks for".to_owned(),
        };
        match why {
            Why::Nothing { atom, by } => format!(
                "nothing provides {} (required by {})",
                atom_text(family, atom),
                by.map(label).unwrap_or_else(|| "the request".to_owned())
            ),
            Why::Version {
                atom,
                by,
                available,
            } => {
                let (verb, list) = match available.as_slice() {
                    [one] => ("is", one.clone()),
                    many => ("are", many.join(", ")),
                };
                format!(
                    "{} {}, but only {} {verb} available",
                    requirer(*by),
                    atom_text(family, atom),
                    list
                )
            }
            Why::Virtual {
                atom,
                by,
                providers,
            } => format!(
                "{} {}, a virtual name that none of its providers ({}) is chosen for \
                 automatically; request one of them",
                requirer(*by),
                atom.name,
                providers
                    .iter()
                    .filter_map(|&id| universe.package(id).map(|m| m.name.clone()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Why::Conflict {
                declared,
                victim,
                atom,
                attempted,
                attempted_by,
            } => {
                let name = |id: usize| {
                    universe
                        .package(id)
                        .map(|m| m.name.clone())
                        .unwrap_or_default()
                };
                let reason = |id: usize| {
                    if id == *attempted {
                        self.reason(*attempted_by)
                    } else {
                        self.reason(self.parent_of(id))
                    }
                };
                let victim_name = name(*victim);
                let target = if atom.name == victim_name || atom.req.is_some() {
                    atom_text(family, atom)
                } else {
                    format!("{} (provided by {victim_name})", atom.name)
                };
                format!(
                    "{} conflicts with {target}; {victim_name} {}, {} {}",
                    label(*declared),
                    reason(*victim),
                    name(*declared),
                    reason(*declared)
                )
            }
            Why::Forbidden { package, atom, by } => format!(
                "{} is forbidden by the request ({}), but {}",
                label(*package),
                atom_text(
                    family,
                    &Atom {
                        name: format!("!{}", atom.name),
                        ..(**atom).clone()
                    }
                ),
                match by {
                    Some(by) => format!("{} depends on it", label(*by)),
                    None => "it is also requested".to_owned(),
                }
            ),
            Why::NameTaken {
                package,
                holder,
                name,
            } => format!(
                "{} and {} both claim {name} and cannot be installed together",
                label(*package),
                label(*holder)
            ),
            Why::Budget => "the search gave up (too many alternatives)".to_owned(),
        }
    }

    /// "is requested" or "is required by X <- Y" (the chain back to the request).
    fn reason(&self, by: Option<usize>) -> String {
        let Some(first) = by else {
            return "is requested".to_owned();
        };
        let universe = self.universe();
        let mut names = vec![label(universe, first)];
        names.extend(self.chain(first).into_iter().map(|id| label(universe, id)));
        format!("is required by {}", names.join(" <- "))
    }

    /// The packages that pulled `id` in, nearest first.
    fn chain(&self, id: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut current = self.parent_of(id);
        while let Some(parent) = current {
            if out.contains(&parent) {
                break;
            }
            out.push(parent);
            current = self.parent_of(parent);
        }
        out
    }
}

/// `name version` (deb) or `name-version` (apk).
pub(crate) fn label(universe: &Universe, id: usize) -> String {
    match universe.package(id) {
        Some(meta) => match universe.family() {
            Family::Deb => format!("{} {}", meta.name, meta.version),
            Family::Apk => format!("{}-{}", meta.name, meta.version),
        },
        None => format!("#{id}"),
    }
}

/// An atom as the family writes it: `libssl3 (>= 3.0.9)`, `so:libz.so.1>=1.3`.
pub(crate) fn atom_text(family: Family, atom: &Atom) -> String {
    let Some(req) = &atom.req else {
        return atom.name.clone();
    };
    let op = match (family, req.op) {
        (Family::Deb, VersionOp::Lt) => "<<",
        (Family::Deb, VersionOp::Gt) => ">>",
        (_, VersionOp::Lt) => "<",
        (_, VersionOp::Gt) => ">",
        (_, VersionOp::Le) => "<=",
        (_, VersionOp::Ge) => ">=",
        (_, VersionOp::Eq) => "=",
        (_, VersionOp::Fuzzy) => "~",
        (_, VersionOp::Identity) => "><",
    };
    match family {
        Family::Deb => format!("{} ({op} {})", atom.name, req.version),
        Family::Apk => format!("{}{op}{}", atom.name, req.version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VersionReq;

    fn atom(name: &str, op: VersionOp, version: &str) -> Atom {
        Atom {
            name: name.to_owned(),
            arch: None,
            tag: None,
            req: Some(VersionReq {
                op,
                version: version.to_owned(),
            }),
        }
    }

    #[test]
    fn atoms_are_written_the_family_way() {
        assert_eq!(
            atom_text(Family::Deb, &atom("libssl3", VersionOp::Ge, "3.0.9")),
            "libssl3 (>= 3.0.9)"
        );
        assert_eq!(
            atom_text(Family::Deb, &atom("libc6", VersionOp::Lt, "2.37")),
            "libc6 (<< 2.37)"
        );
        assert_eq!(
            atom_text(Family::Apk, &atom("so:libz.so.1", VersionOp::Ge, "1.3")),
            "so:libz.so.1>=1.3"
        );
        assert_eq!(
            atom_text(Family::Apk, &atom("python3", VersionOp::Fuzzy, "3.11")),
            "python3~3.11"
        );
    }
}
