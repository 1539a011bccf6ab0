//! Unsolvable requests explained in plain words, the SAT search behind the greedy pass,
//! and install order (Pre-Depends strictly first, cycles broken by name). Small indexes
//! written here; the real-tool comparisons of the search live beside them (apt-get on a
//! local repository made of the same index).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use treeline_pkg::Family;
use treeline_pkg::deb::PackagesReader;
use treeline_pkg::solve::{Request, Universe, solve};

fn deb_universe(text: &str) -> Universe {
    let packages = PackagesReader::new(text.as_bytes(), "test Packages", "amd64")
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    Universe::new(Family::Deb, packages)
}

fn apk_universe(text: &str) -> Universe {
    let packages =
        treeline_pkg::apk::index::parse_index_text(Path::new("test APKINDEX"), text, "x86_64")
            .unwrap();
    Universe::new(Family::Apk, packages)
}

fn names(universe: &Universe, order: &[usize]) -> Vec<String> {
    order
        .iter()
        .map(|&id| universe.package(id).unwrap().name.clone())
        .collect()
}

const DEB_SSL: &str = "\
Package: openssh-server
Version: 1:9.2p1-2
Architecture: amd64
Depends: libssl3 (>= 3.0.9), openssh-client

Package: openssh-client
Version: 1:9.2p1-2
Architecture: amd64

Package: libssl3
Version: 3.0.2
Architecture: amd64
";

#[test]
fn deb_version_too_old_names_requirement_and_available_version() {
    let universe = deb_universe(DEB_SSL);
    let error = solve(&universe, &Request::names(["openssh-server"])).unwrap_err();
    assert_eq!(
        error.to_string(),
        "openssh-server 1:9.2p1-2 depends on libssl3 (>= 3.0.9), but only 3.0.2 is available"
    );
}

#[test]
fn apk_missing_soname_names_requirer() {
    let universe = apk_universe(
        "C:Q1AAAAAAAAAAAAAAAAAAAAAAAAAAA=\nP:bar\nV:1.0-r0\nA:x86_64\nS:1\nI:1\nD:so:libfoo.so.1\n\n",
    );
    let request = Request::from_apk_world("bar").unwrap();
    assert_eq!(
        solve(&universe, &request).unwrap_err().to_string(),
        "nothing provides so:libfoo.so.1 (required by bar-1.0-r0)"
    );
}

#[test]
fn apk_virtual_without_priority_is_not_chosen_unless_named() {
    let index = "\
P:ifupdown-a\nV:1-r0\nA:x86_64\nS:1\nI:1\np:ifupdown-any\n\n\
P:ifupdown-b\nV:1-r0\nA:x86_64\nS:1\nI:1\np:ifupdown-any\n\n\
P:base\nV:1-r0\nA:x86_64\nS:1\nI:1\nD:ifupdown-any\n\n";
    let universe = apk_universe(index);
    let text = solve(&universe, &Request::from_apk_world("base").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("base-1-r0 depends on ifupdown-any, a virtual name")
            && text.contains("ifupdown-a, ifupdown-b"),
        "{text}"
    );
    let solution = solve(
        &universe,
        &Request::from_apk_world("base ifupdown-b").unwrap(),
    )
    .unwrap();
    let chosen: BTreeSet<String> = names(&universe, &solution.install_order)
        .into_iter()
        .collect();
    assert_eq!(
        chosen,
        BTreeSet::from(["base".to_owned(), "ifupdown-b".to_owned()])
    );
}

#[test]
fn deb_conflict_explanation_names_both_sides_and_their_requirers() {
    let universe = deb_universe(
        "Package: web\nVersion: 1\nArchitecture: all\nDepends: mta\n\n\
         Package: mta\nVersion: 1\nArchitecture: all\nConflicts: legacy\n\n\
         Package: legacy\nVersion: 2\nArchitecture: all\n",
    );
    let text = solve(&universe, &Request::names(["legacy", "web"]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        text,
        "mta 1 conflicts with legacy; legacy is requested, mta is required by web 1"
    );
}

/// Pre-Depends, a plain Depends, a two-package cycle and a Pre-Depends inside a cycle.
#[test]
fn install_order_puts_pre_depends_first_and_breaks_cycles_by_name() {
    let universe = deb_universe(
        "Package: app\nVersion: 1\nArchitecture: all\nDepends: lib, cyc-b\nPre-Depends: pre\n\n\
         Package: lib\nVersion: 1\nArchitecture: all\n\n\
         Package: pre\nVersion: 1\nArchitecture: all\nDepends: lib\n\n\
         Package: cyc-b\nVersion: 1\nArchitecture: all\nDepends: cyc-a\n\n\
         Package: cyc-a\nVersion: 1\nArchitecture: all\nDepends: cyc-b\n\n\
         Package: z-first\nVersion: 1\nArchitecture: all\nPre-Depends: a-second\n\n\
         Package: a-second\nVersion: 1\nArchitecture: all\nDepends: z-first\n",
    );
    let solution = solve(&universe, &Request::names(["app", "z-first"])).unwrap();
    let order = names(&universe, &solution.install_order);
    let at = |name: &str| order.iter().position(|n| n == name).unwrap();
    assert!(at("lib") < at("pre") && at("pre") < at("app"), "{order:?}");
    assert!(
        at("cyc-a") < at("cyc-b") && at("cyc-b") < at("app"),
        "{order:?}"
    );
    // The Pre-Depends edge decides inside the cycle, against name order.
    assert!(at("a-second") < at("z-first"), "{order:?}");
    // Same input, same order.
    let again = solve(&universe, &Request::names(["app", "z-first"])).unwrap();
    assert_eq!(again.install_order, solution.install_order);
}

/// `a` depends on `b | c`; the greedy pass takes `b`, and only later meets `d` (through
/// `e`), which conflicts with `b`. The search finds {a, c, d, e}; so does apt (its
/// problem resolver), run on the same index as a local repository.
const STUCK: &str = "\
Package: a\nVersion: 1\nArchitecture: all\nDepends: b | c\nFilename: a.deb\nSize: 1\n\n\
Package: b\nVersion: 1\nArchitecture: all\nFilename: b.deb\nSize: 1\n\n\
Package: c\nVersion: 1\nArchitecture: all\nFilename: c.deb\nSize: 1\n\n\
Package: e\nVersion: 1\nArchitecture: all\nDepends: d\nFilename: e.deb\nSize: 1\n\n\
Package: d\nVersion: 1\nArchitecture: all\nConflicts: b\nFilename: d.deb\nSize: 1\n";

#[test]
fn search_recovers_when_greedy_choice_conflicts_later_like_apt() {
    let universe = deb_universe(STUCK);
    let solution = solve(&universe, &Request::names(["a", "e"])).unwrap();
    assert!(
        solution.searched,
        "the greedy pass was expected to get stuck"
    );
    let ours: BTreeSet<(String, String)> = solution
        .packages(&universe)
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect();
    let expected = apt_on_local_repository(STUCK, &["a", "e"]);
    assert_eq!(ours, expected);
    assert!(ours.contains(&("c".to_owned(), "1".to_owned())));
}

/// Runs `apt-get install --simulate` against `packages` served as a local flat
/// repository, with nothing else configured and nothing installed.
fn apt_on_local_repository(packages: &str, names: &[&str]) -> BTreeSet<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("Packages"), packages).unwrap();
    let sources = dir.path().join("sources.list");
    std::fs::write(
        &sources,
        format!("deb [trusted=yes] file:{} ./\n", repo.display()),
    )
    .unwrap();
    for sub in ["lists/partial", "cache/archives/partial", "state"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    std::fs::write(dir.path().join("state/status"), b"").unwrap();
    let options = |cmd: &mut Command| {
        cmd.arg(format!("-oDir::Etc::SourceList={}", sources.display()))
            .arg("-oDir::Etc::SourceParts=/nonexistent")
            .arg(format!(
                "-oDir::State::Lists={}",
                dir.path().join("lists").display()
            ))
            .arg(format!(
                "-oDir::State::status={}",
                dir.path().join("state/status").display()
            ))
            .arg(format!(
                "-oDir::State::extended_states={}",
                dir.path().join("state/extended_states").display()
            ))
            .arg(format!(
                "-oDir::Cache={}",
                dir.path().join("cache").display()
            ))
            .arg("-oDebug::NoLocking=1")
            .arg("-oAPT::Architecture=amd64")
            .env("LC_ALL", "C");
    };
    let mut update = Command::new("apt-get");
    update.args(["update", "-q"]);
    options(&mut update);
    common::run_ok(&mut update);
    let mut install = Command::new("apt-get");
    install.args(["install", "--simulate", "-q"]);
    options(&mut install);
    let stdout = common::run_ok(install.args(names));
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("Inst "))
        .filter_map(|rest| {
            let (name, rest) = rest.split_once(" (")?;
            Some((name.to_owned(), rest.split(' ').next()?.to_owned()))
        })
        .collect()
}
