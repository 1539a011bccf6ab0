//! The solver against the real apk 2.14.4 (Alpine 3.19.4 minirootfs, in a chroot) on the
//! full v3.19 main and community indexes: same packages, same versions, same refusals.

mod common;

use std::collections::BTreeSet;

use treeline_pkg::Family;
use treeline_pkg::apk::ApkIndex;
use treeline_pkg::solve::{Request, Solution, Universe, solve};

fn v319_indexes() -> Vec<std::path::PathBuf> {
    vec![
        common::data_file("alpine/indexes/v3.19-main-x86_64-APKINDEX.tar.gz"),
        common::data_file("alpine/indexes/v3.19-community-x86_64-APKINDEX.tar.gz"),
    ]
}

fn universe(indexes: &[std::path::PathBuf]) -> Universe {
    let mut packages = Vec::new();
    for index in indexes {
        packages.extend(ApkIndex::open(index, "x86_64").unwrap().into_packages());
    }
    Universe::new(Family::Apk, packages)
}

fn pairs(universe: &Universe, solution: &Solution) -> BTreeSet<(String, String)> {
    solution
        .packages(universe)
        .map(|p| (p.name.clone(), p.version.clone()))
        .collect()
}

/// Every requirement of every package is met by the set, by a package placed earlier
/// unless the two depend on each other (a cycle).
fn assert_complete_and_ordered(universe: &Universe, solution: &Solution, what: &str) {
    let order = &solution.install_order;
    let position = |id: usize| order.iter().position(|&x| x == id);
    let reaches = |from: usize, to: usize| {
        let mut seen = vec![from];
        let mut stack = vec![from];
        while let Some(node) = stack.pop() {
            if node == to {
                return true;
            }
            let Some(meta) = universe.package(node) else {
                continue;
            };
            for dependency in meta.pre_depends.iter().chain(&meta.depends) {
                for &next in order {
                    if dependency
                        .alternatives
                        .iter()
                        .any(|a| universe.satisfies(next, a))
                        && !seen.contains(&next)
                    {
                        seen.push(next);
                        stack.push(next);
                    }
                }
            }
        }
        false
    };
    for (at, &id) in order.iter().enumerate() {
        let meta = universe.package(id).unwrap();
        for dependency in meta.pre_depends.iter().chain(&meta.depends) {
            let satisfiers: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&other| {
                    dependency
                        .alternatives
                        .iter()
                        .any(|a| universe.satisfies(other, a))
                })
                .collect();
            assert!(
                !satisfiers.is_empty(),
                "{what}: {} {}: requirement {:?} not met",
                meta.name,
                meta.version,
                dependency.alternatives
            );
            let earlier = satisfiers
                .iter()
                .any(|&s| s == id || position(s).is_some_and(|p| p < at));
            assert!(
                earlier || satisfiers.iter().any(|&s| reaches(s, id)),
                "{what}: {} placed before what it needs ({:?})",
                meta.name,
                dependency.alternatives
            );
        }
        for atom in &meta.conflicts {
            for &other in order {
                assert!(
                    other == id || !universe.satisfies(other, atom),
                    "{what}: {} conflicts with {atom:?}, both selected",
                    meta.name
                );
            }
        }
    }
}

#[test]
fn apk_requests_match_real_apk_on_v319_main_and_community() {
    let scratch = tempfile::tempdir().unwrap();
    let indexes = v319_indexes();
    common::apk_solver_root(scratch.path(), &indexes);
    let universe = universe(&indexes);
    let requests: &[&[&str]] = &[
        &["alpine-base"],
        &["alpine-base", "openssh"],
        &["nginx"],
        &["python3"],
        // A virtual name chosen by provider_priority (busybox-binsh, k:100).
        &["/bin/sh"],
        // install_if: openssh + openrc bring the -openrc subpackages.
        &["openssh", "openrc"],
        // install_if: docs brings the -doc subpackages.
        &["docs", "openssh", "curl"],
        &["busybox>=1.36"],
        // vlan conflicts with ifupdown-ng, so ifupdown-any goes to busybox-ifupdown.
        &["alpine-base", "vlan"],
        &["git", "bash", "coreutils"],
        &["docker"],
        &["py3-pip", "gcc", "musl-dev"],
    ];
    let mut checked = 0;
    for atoms in requests {
        let expected = common::apk_simulate_add(scratch.path(), indexes.len(), atoms)
            .unwrap_or_else(|e| panic!("apk refused {atoms:?}:\n{e}"));
        let request = Request::from_apk_world(&atoms.join(" ")).unwrap();
        let solution = solve(&universe, &request).unwrap_or_else(|e| {
            panic!(
                "{atoms:?}: apk installs {} packages, we fail: {e}",
                expected.len()
            )
        });
        let ours = pairs(&universe, &solution);
        assert_eq!(
            ours.difference(&expected).collect::<Vec<_>>(),
            expected.difference(&ours).collect::<Vec<_>>(),
            "{atoms:?}: ours minus apk's (left) vs apk's minus ours (right)"
        );
        assert!(!ours.is_empty());
        assert_complete_and_ordered(&universe, &solution, &atoms.join(" "));
        checked += ours.len();
    }
    assert!(checked > 200, "only {checked} packages compared");
}

#[test]
fn apk_conflict_fails_like_real_apk_and_says_why() {
    let scratch = tempfile::tempdir().unwrap();
    let indexes = v319_indexes();
    common::apk_solver_root(scratch.path(), &indexes);
    let universe = universe(&indexes);
    let cases: [(&[&str], &str); 3] = [
        (
            &["ifupdown-ng", "vlan"],
            "ifupdown-ng-0.12.1-r4 conflicts with vlan; vlan is requested, ifupdown-ng is requested",
        ),
        (
            &["alpine-base", "ifupdown-ng", "vlan"],
            "ifupdown-ng-0.12.1-r4 conflicts with vlan; vlan is requested, ifupdown-ng is requested",
        ),
        (
            &["alpine-base", "!busybox-mdev-openrc"],
            "busybox-mdev-openrc-1.36.1-r19 is forbidden by the request (!busybox-mdev-openrc), \
             but alpine-base-3.19.2-r0 depends on it",
        ),
    ];
    for (atoms, expected) in cases {
        let refusal = common::apk_simulate_add(scratch.path(), indexes.len(), atoms)
            .expect_err("apk accepted a conflicting request");
        assert!(refusal.contains("unable to select packages"), "{refusal}");
        let request = Request::from_apk_world(&atoms.join(" ")).unwrap();
        let error = solve(&universe, &request).expect_err("solver accepted a conflict");
        let text = error.to_string();
        assert!(text.contains(expected), "{atoms:?}: {text}");
    }
}

#[test]
fn apk_missing_versions_and_names_are_explained() {
    let indexes = v319_indexes();
    let scratch = tempfile::tempdir().unwrap();
    common::apk_solver_root(scratch.path(), &indexes);
    let universe = universe(&indexes);
    for (atoms, expected) in [
        (
            &["busybox>=9"][..],
            "the request asks for busybox>=9, but only 1.36.1-r19 is available",
        ),
        (
            &["no-such-package"][..],
            "nothing provides no-such-package (required by the request)",
        ),
    ] {
        common::apk_simulate_add(scratch.path(), indexes.len(), atoms)
            .expect_err("apk accepted an impossible request");
        let request = Request::from_apk_world(&atoms.join(" ")).unwrap();
        let text = solve(&universe, &request).unwrap_err().to_string();
        assert!(text.contains(expected), "{atoms:?}: {text}");
    }
}
