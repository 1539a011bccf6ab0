//! Dependency solving for both families: which packages a request installs, and in
//! which order, choosing what apk 2.14 and apt (bookworm) choose.
//!
//! ```no_run
//! use treeline_pkg::solve::{Request, Universe, solve};
//! let packages = treeline_pkg::apk::ApkIndex::open("APKINDEX.tar.gz".as_ref(), "x86_64")?
//!     .into_packages();
//! let universe = Universe::new(treeline_pkg::Family::Apk, packages);
//! let request = Request::from_apk_world("alpine-base openssh !vlan")?;
//! let solution = solve(&universe, &request)?;
//! for package in solution.packages(&universe) {
//!     println!("{}-{}", package.name, package.version);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! How: a greedy pass that installs depth first, the way apt's `MarkInstall` does, with
//! each tool's preferences ([`Universe`] documents which candidates take part; the
//! preferred alternative, provider and version are those of apt's `CompareProviders` and
//! apk's `compare_providers`). When that pass gets stuck (a choice made early conflicts
//! with one made later), a CDCL SAT search (resolvo) with the same preferences takes
//! over, as apt's problem resolver would. A request neither can meet is explained from
//! the greedy pass's first failure, in plain words.

mod greedy;
mod order;
mod prefs;
mod sat;
mod universe;

use std::collections::HashSet;

pub use universe::Universe;

use crate::model::{Atom, Dependency, Family, PackageMeta};
use greedy::{Greedy, Why};
use prefs::Preferences;

/// A request that cannot be satisfied, explained.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No consistent set exists; the text says which requirement fails and why.
    #[error("{0}")]
    Unsolvable(String),
    /// The request itself is malformed (an atom that does not parse).
    #[error("bad request {input:?}: {reason}")]
    BadRequest {
        /// The offending text.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What to install, and the policy to follow.
#[derive(Debug, Clone)]
pub struct Request {
    /// Requirements to meet, in order (apk `world` atoms; `apt-get install` arguments).
    pub install: Vec<Dependency>,
    /// Packages that may not be installed (apk `!name` world atoms).
    pub forbid: Vec<Atom>,
    /// Packages (universe ids) already installed: preferred over other candidates.
    pub installed: Vec<usize>,
    /// deb: follow Recommends (apt's default: true). apk has none.
    pub install_recommends: bool,
    /// deb: also install every `Essential: yes` package.
    pub add_essential: bool,
    /// deb: also install every `Priority: required` package (debootstrap's minbase set).
    pub add_required: bool,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            install: Vec::new(),
            forbid: Vec::new(),
            installed: Vec::new(),
            install_recommends: true,
            add_essential: false,
            add_required: false,
        }
    }
}

impl Request {
    /// A request for the given package names, any version, with apt's defaults.
    pub fn names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Request {
        Request {
            install: names
                .into_iter()
                .map(|name| Dependency {
                    alternatives: vec![Atom {
                        name: name.as_ref().to_owned(),
                        arch: None,
                        tag: None,
                        req: None,
                    }],
                })
                .collect(),
            ..Request::default()
        }
    }

    /// A request from apk `world` text: atoms separated by spaces or newlines
    /// (`openssh`, `busybox>=1.36`, `!vlan`).
    pub fn from_apk_world(world: &str) -> Result<Request, Error> {
        let mut request = Request::default();
        for parsed in crate::apk::atom::parse_atoms(world).map_err(|e| Error::BadRequest {
            input: world.to_owned(),
            reason: e.to_string(),
        })? {
            if parsed.conflict {
                request.forbid.push(parsed.atom);
            } else {
                request.install.push(Dependency {
                    alternatives: vec![parsed.atom],
                });
            }
        }
        Ok(request)
    }
}

/// A complete, consistent set of packages in install order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solution {
    /// Universe ids: dependencies before dependents, Pre-Depends strictly before.
    pub install_order: Vec<usize>,
    /// Whether the SAT search was needed (the greedy pass got stuck).
    pub searched: bool,
}

impl Solution {
    /// The packages, in install order.
    pub fn packages<'u>(&self, universe: &'u Universe) -> impl Iterator<Item = &'u PackageMeta> {
        self.install_order
            .iter()
            .filter_map(move |&id| universe.package(id))
    }
}

/// Solves `request` against `universe`.
pub fn solve(universe: &Universe, request: &Request) -> Result<Solution, Error> {
    let family = universe.family();
    let mut wanted: Vec<Dependency> = request.install.clone();
    if family == Family::Deb && (request.add_essential || request.add_required) {
        let mut extra: Vec<&PackageMeta> = universe
            .packages()
            .iter()
            .enumerate()
            .filter(|&(id, meta)| {
                universe.named(&meta.name).first() == Some(&id)
                    && ((request.add_essential && meta.essential)
                        || (request.add_required && meta.priority.as_deref() == Some("required")))
            })
            .map(|(_, meta)| meta)
            .collect();
        extra.sort_by(|a, b| a.name.cmp(&b.name));
        wanted.extend(extra.into_iter().map(|meta| Dependency {
            alternatives: vec![Atom {
                name: meta.name.clone(),
                arch: None,
                tag: None,
                req: None,
            }],
        }));
    }
    let include_recommends = family == Family::Deb && request.install_recommends;
    let prefs = Preferences {
        universe,
        installed: request.installed.iter().copied().collect(),
        wanted_names: wanted
            .iter()
            .flat_map(|d| &d.alternatives)
            .map(|atom| atom.name.as_str())
            .collect(),
    };
    let mut greedy = Greedy::new(&prefs, &request.forbid, include_recommends);
    let outcome = run_greedy(&mut greedy, &prefs, &wanted);
    let (selected, searched) = match outcome {
        Ok(()) => (greedy.selected().to_vec(), false),
        Err(why) => {
            let favored: HashSet<usize> = greedy.selected().iter().copied().collect();
            match sat::solve(
                &prefs,
                &wanted,
                &request.forbid,
                include_recommends,
                &favored,
            ) {
                sat::SatOutcome::Solved(selected) => (selected, true),
                sat::SatOutcome::Unsolvable(search) => {
                    let text = match why {
                        Why::Budget => search,
                        why => greedy.explain(&why),
                    };
                    return Err(Error::Unsolvable(text));
                }
            }
        }
    };
    Ok(Solution {
        install_order: order::install_order(universe, &selected),
        searched,
    })
}

/// The greedy pass: requested packages first (apt marks them all before any
/// dependency), then their requirements in order, then (apk) install_if to a fixpoint.
fn run_greedy(
    greedy: &mut Greedy<'_>,
    prefs: &Preferences<'_>,
    wanted: &[Dependency],
) -> Result<(), Why> {
    let mut picked = Vec::with_capacity(wanted.len());
    for dependency in wanted {
        if let Some(id) = greedy.pick(dependency)? {
            picked.push(id);
        }
    }
    for id in picked {
        greedy.install_requirements(id)?;
    }
    for dependency in wanted {
        greedy.require(dependency, None)?;
    }
    if prefs.universe.family() == Family::Apk {
        install_if_fixpoint(greedy, prefs)?;
    }
    Ok(())
}

/// apk: adds every package whose `install_if` atoms are all satisfied by the set, until
/// nothing changes. Per name, the most preferred triggered version wins.
fn install_if_fixpoint(greedy: &mut Greedy<'_>, prefs: &Preferences<'_>) -> Result<(), Why> {
    let universe = prefs.universe;
    let mut triggers: Vec<&str> = universe
        .packages()
        .iter()
        .filter(|meta| !meta.install_if.is_empty())
        .map(|meta| meta.name.as_str())
        .collect();
    triggers.sort_unstable();
    triggers.dedup();
    loop {
        let mut changed = false;
        for &name in &triggers {
            let candidates = universe.named(name);
            if candidates.iter().any(|&id| greedy.is_selected(id)) {
                continue;
            }
            let triggered = candidates.iter().copied().find(|&id| {
                universe.package(id).is_some_and(|meta| {
                    !meta.install_if.is_empty()
                        && meta.install_if.iter().all(|atom| {
                            greedy.satisfied(&Dependency {
                                alternatives: vec![atom.clone()],
                            })
                        })
                })
            });
            let Some(id) = triggered else {
                continue;
            };
            let mark = greedy.selected().len();
            match greedy.install(id, None) {
                Ok(()) => changed = true,
                Err(Why::Budget) => return Err(Why::Budget),
                // apk leaves out an install_if package that cannot be installed.
                Err(_) => greedy.undo_to(mark),
            }
        }
        if !changed {
            return Ok(());
        }
    }
}
