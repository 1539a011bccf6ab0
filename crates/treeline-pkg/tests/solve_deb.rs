//! The solver against the host's apt (bookworm) on the same lists apt uses, from an empty
//! dpkg status: same packages and versions, with and without Recommends.

mod common;

use std::collections::BTreeSet;

use treeline_pkg::Family;
use treeline_pkg::solve::{Request, Universe, solve};

#[test]
fn deb_requests_match_apt_get_simulate_on_host_lists() {
    let scratch = tempfile::tempdir().unwrap();
    let lists = common::apt_packages_lists_plain(&scratch.path().join("lists"));
    let mut packages = Vec::new();
    for (list, pin) in &lists {
        packages.extend(
            treeline_pkg::deb::read_packages(list, "amd64")
                .unwrap()
                .into_iter()
                .map(|mut meta| {
                    meta.pin_priority = Some(*pin);
                    meta
                }),
        );
    }
    let universe = Universe::new(Family::Deb, packages);

    // debootstrap's minbase asks for every Priority: required package.
    let mut required: Vec<String> = universe
        .packages()
        .iter()
        .enumerate()
        .filter(|&(id, meta)| {
            universe.named(&meta.name).first() == Some(&id)
                && meta.priority.as_deref() == Some("required")
        })
        .map(|(_, meta)| meta.name.clone())
        .collect();
    required.sort();
    assert!(
        required.len() > 20,
        "only {} required packages",
        required.len()
    );

    let mut checked = 0;
    for recommends in [true, false] {
        let requests: Vec<(Vec<String>, bool)> = vec![
            (Vec::new(), true),
            (vec!["openssh-server".into()], false),
            (vec!["nginx".into()], false),
            (vec!["systemd".into()], false),
            (vec!["postfix".into(), "mutt".into()], false),
        ];
        for (names, minimal) in requests {
            let apt_names: Vec<&str> = if minimal {
                required.iter().map(String::as_str).collect()
            } else {
                names.iter().map(String::as_str).collect()
            };
            let expected =
                common::apt_simulate_install(&scratch.path().join("apt"), &apt_names, recommends)
                    .unwrap_or_else(|e| panic!("apt refused {names:?}:\n{e}"));
            let mut request = Request::names(&names);
            request.add_required = minimal;
            request.install_recommends = recommends;
            let what = format!(
                "{} (recommends: {recommends})",
                if minimal {
                    "minimal system".to_owned()
                } else {
                    names.join(" ")
                }
            );
            let solution = solve(&universe, &request).unwrap_or_else(|e| panic!("{what}: {e}"));
            let ours: BTreeSet<(String, String)> = solution
                .packages(&universe)
                .map(|p| (p.name.clone(), p.version.clone()))
                .collect();
            assert_eq!(
                ours.difference(&expected).collect::<Vec<_>>(),
                expected.difference(&ours).collect::<Vec<_>>(),
                "{what}: ours minus apt's (left) vs apt's minus ours (right)"
            );
            assert_pre_depends_first(&universe, &solution.install_order, &what);
            checked += ours.len();
        }
    }
    assert!(checked > 500, "only {checked} packages compared");
}

/// Every Pre-Depends is met by a package placed earlier.
fn assert_pre_depends_first(universe: &Universe, order: &[usize], what: &str) {
    for (at, &id) in order.iter().enumerate() {
        let meta = universe.package(id).unwrap();
        for dependency in &meta.pre_depends {
            let earlier = order[..at].iter().any(|&other| {
                dependency
                    .alternatives
                    .iter()
                    .any(|a| universe.satisfies(other, a))
            });
            assert!(
                earlier,
                "{what}: {} pre-depends on {:?}, not installed before it",
                meta.name, dependency.alternatives
            );
        }
    }
}
