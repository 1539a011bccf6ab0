//! Relation fields (`Depends`, `Pre-Depends`, `Recommends`, `Conflicts`, `Breaks`,
//! `Provides`, `Replaces`, ...) as Debian policy §7.1 writes them:
//! `a (>= 1) | b:any, c [amd64 !i386] <!nocheck>`.
//!
//! Architecture restrictions and build-profile formulas are evaluated here for a
//! [`Target`]: an alternative that does not apply is dropped, and a requirement whose
//! alternatives are all dropped disappears. Qualifiers (`:any`, `:native`, `:amd64`) are
//! kept on the [`Atom`].

use crate::model::{Atom, Dependency, Provide, VersionOp, VersionReq};

use super::Error;

/// What relations are evaluated for: the architecture packages are installed on, and the
/// active build profiles (usually none).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The target architecture (`amd64`, `arm64`, `hurd-i386`, ...).
    pub arch: &'a str,
    /// Active build profiles (`nocheck`, `stage1`, ...); empty means none is active.
    pub profiles: &'a [&'a str],
}

impl<'a> Target<'a> {
    /// A target architecture with no active build profile.
    pub fn arch(arch: &'a str) -> Self {
        Target {
            arch,
            profiles: &[],
        }
    }
}

/// Parses a field of requirements with alternatives (`Depends`, `Pre-Depends`,
/// `Recommends`, `Suggests`, `Build-Depends`, ...).
pub fn parse_dependencies(
    field: &str,
    text: &str,
    target: Target<'_>,
) -> Result<Vec<Dependency>, Error> {
    let mut dependencies = Vec::new();
    for requirement in split_list(text) {
        let mut alternatives = Vec::new();
        for alternative in requirement.split('|') {
            if let Some(atom) = parse_atom(field, text, alternative, target)? {
                alternatives.push(atom);
            }
        }
        if !alternatives.is_empty() {
            dependencies.push(Dependency { alternatives });
        }
    }
    Ok(dependencies)
}

/// Parses a field of names without alternatives (`Conflicts`, `Breaks`, `Replaces`).
pub fn parse_atoms(field: &str, text: &str, target: Target<'_>) -> Result<Vec<Atom>, Error> {
    let mut atoms = Vec::new();
    for item in split_list(text) {
        if item.contains('|') {
            return Err(relation_error(
                field,
                text,
                format!("alternatives (|) are not allowed in {item:?}"),
            ));
        }
        if let Some(atom) = parse_atom(field, text, item, target)? {
            atoms.push(atom);
        }
    }
    Ok(atoms)
}

/// Parses a `Provides` field: names with an optional exact version `(= 1.0)`.
pub fn parse_provides(field: &str, text: &str, target: Target<'_>) -> Result<Vec<Provide>, Error> {
    let mut provides = Vec::new();
    for atom in parse_atoms(field, text, target)? {
        if atom.arch.is_some() {
            return Err(relation_error(
                field,
                text,
                format!(
                    "{}: an architecture qualifier is not allowed here",
                    atom.name
                ),
            ));
        }
        let version = match atom.req {
            None => None,
            Some(VersionReq {
                op: VersionOp::Eq,
                version,
            }) => Some(version),
            Some(_) => {
                return Err(relation_error(
                    field,
                    text,
                    format!("{}: only (= version) is allowed here", atom.name),
                ));
            }
        };
        provides.push(Provide {
            name: atom.name,
            version,
        });
    }
    Ok(provides)
}

/// The comma-separated items of a field, trimmed; empty items (a trailing comma, as apt
/// tolerates) are skipped.
fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn relation_error(field: &str, text: &str, problem: String) -> Error {
    Error::Relation {
        field: field.to_owned(),
        text: text.to_owned(),
        problem,
    }
}

/// Characters that end a package name.
fn ends_name(c: char) -> bool {
    c.is_whitespace() || matches!(c, ':' | '(' | ')' | '[' | ']' | '<' | '>' | ',' | '|')
}

/// Parses one alternative; `None` when its restrictions exclude it for `target`.
fn parse_atom(
    field: &str,
    text: &str,
    alternative: &str,
    target: Target<'_>,
) -> Result<Option<Atom>, Error> {
    let fail = |problem: &str| {
        relation_error(
            field,
            text,
            format!("{problem} in {:?}", alternative.trim()),
        )
    };
    let rest = alternative.trim_start();
    // Byte scanning: every delimiter is ASCII, so the split lands on a char boundary.
    let name_end = rest
        .bytes()
        .position(|b| ends_name(char::from(b)))
        .unwrap_or(rest.len());
    let (name, mut rest) = rest.split_at(name_end);
    if name.is_empty() {
        return Err(fail("missing package name"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.' | b'_'))
    {
        return Err(fail("invalid package name"));
    }
    let mut arch = None;
    if let Some(after) = rest.strip_prefix(':') {
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(after.len());
        let (qualifier, after) = after.split_at(end);
        if qualifier.is_empty() {
            return Err(fail("empty architecture qualifier"));
        }
        arch = Some(qualifier.to_owned());
        rest = after;
    }
    rest = rest.trim_start();
    let mut req = None;
    if let Some(after) = rest.strip_prefix('(') {
        let Some((inside, after)) = after.split_once(')') else {
            return Err(fail("unclosed '('"));
        };
        let inside = inside.trim();
        // Longest operators first; bare `<` and `>` are the obsolete <= and >=.
        let (op, version) = [
            ("<<", VersionOp::Lt),
            ("<=", VersionOp::Le),
            (">>", VersionOp::Gt),
            (">=", VersionOp::Ge),
            ("=", VersionOp::Eq),
            ("<", VersionOp::Le),
            (">", VersionOp::Ge),
        ]
        .into_iter()
        .find_map(|(token, op)| inside.strip_prefix(token).map(|version| (op, version)))
        .ok_or_else(|| fail("missing or unknown version operator"))?;
        let version = version.trim();
        if version.is_empty() {
            return Err(fail("missing version"));
        }
        if version.contains(|c: char| c.is_whitespace() || c == '(') {
            return Err(fail("invalid version"));
        }
        req = Some(VersionReq {
            op,
            version: version.to_owned(),
        });
        rest = after.trim_start();
    }
    let mut applies = true;
    if let Some(after) = rest.strip_prefix('[') {
        let Some((inside, after)) = after.split_once(']') else {
            return Err(fail("unclosed '['"));
        };
        applies = arch_list_matches(inside, target.arch).map_err(&fail)?;
        rest = after.trim_start();
    }
    // Build-profile restriction formulas: `<a !b> <c>` applies when any group holds.
    let mut any_group = false;
    let mut group_holds = false;
    while let Some(after) = rest.strip_prefix('<') {
        let Some((inside, after)) = after.split_once('>') else {
            return Err(fail("unclosed '<'"));
        };
        let mut terms = inside.split_whitespace().peekable();
        if terms.peek().is_none() {
            return Err(fail("empty build-profile formula"));
        }
        let holds = terms.all(|term| match term.strip_prefix('!') {
            Some(profile) => !target.profiles.contains(&profile),
            None => target.profiles.contains(&term),
        });
        any_group = true;
        group_holds |= holds;
        rest = after.trim_start();
    }
    if any_group && !group_holds {
        applies = false;
    }
    if !rest.is_empty() {
        return Err(fail(&format!("unexpected {rest:?}")));
    }
    Ok(applies.then(|| Atom {
        name: name.to_owned(),
        arch,
        tag: None,
        req,
    }))
}

/// Evaluates `amd64 !i386 linux-any` for `target`: a list of only positive entries holds
/// when one matches, a list of only negated entries when none matches.
fn arch_list_matches(list: &str, target: &str) -> Result<bool, &'static str> {
    let mut positive = false;
    let mut negative = false;
    let mut matched = false;
    for entry in list.split_whitespace() {
        let (negated, pattern) = match entry.strip_prefix('!') {
            Some(pattern) => (true, pattern),
            None => (false, entry),
        };
        if pattern.is_empty() {
            return Err("empty architecture in restriction list");
        }
        positive |= !negated;
        negative |= negated;
        matched |= arch_matches(target, pattern);
    }
    match (positive, negative) {
        (false, false) => Err("empty architecture restriction list"),
        (true, true) => Err("mixed positive and negated architectures"),
        (true, false) => Ok(matched),
        (false, true) => Ok(!matched),
    }
}

/// Whether architecture `arch` matches `pattern`, which may be a wildcard (`any`,
/// `linux-any`, `any-amd64`, `gnu-any-any`).
pub fn arch_matches(arch: &str, pattern: &str) -> bool {
    if arch == pattern || pattern == "any" {
        return true;
    }
    let (abi, os, cpu) = arch_triplet(arch, "gnu");
    let (want_abi, want_os, want_cpu) = arch_triplet(pattern, "any");
    let part = |want: &str, have: &str| want == "any" || want == have;
    part(want_abi, abi) && part(want_os, os) && part(want_cpu, cpu)
}

/// Splits a Debian architecture name into (abi, os, cpu); a missing abi is `default_abi`
/// (`gnu` for real architectures, `any` for wildcards), a missing os is `linux` (or `any`
/// for the bare wildcard).
fn arch_triplet<'a>(name: &'a str, default_abi: &'a str) -> (&'a str, &'a str, &'a str) {
    let mut parts = name.splitn(3, '-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(abi), Some(os), Some(cpu)) => (abi, os, cpu),
        (Some(os), Some(cpu), None) => (default_abi, os, cpu),
        (Some("any"), None, None) => ("any", "any", "any"),
        (Some(cpu), None, None) => (default_abi, "linux", cpu),
        _ => (default_abi, "linux", name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMD64: Target<'static> = Target {
        arch: "amd64",
        profiles: &[],
    };

    fn atom(name: &str, arch: Option<&str>, req: Option<(VersionOp, &str)>) -> Atom {
        Atom {
            name: name.into(),
            arch: arch.map(Into::into),
            tag: None,
            req: req.map(|(op, version)| VersionReq {
                op,
                version: version.into(),
            }),
        }
    }

    #[test]
    fn alternatives_versions_and_qualifiers() {
        let deps = parse_dependencies(
            "Depends",
            "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0, python3:any (<< 3.12~),perl:native,foo(=1:2.0-1)",
            AMD64,
        )
        .unwrap();
        assert_eq!(deps.len(), 5);
        assert_eq!(
            deps[0].alternatives,
            vec![atom("libc6", None, Some((VersionOp::Ge, "2.34")))]
        );
        assert_eq!(
            deps[1].alternatives,
            vec![
                atom("debconf", None, Some((VersionOp::Ge, "0.5"))),
                atom("debconf-2.0", None, None)
            ]
        );
        assert_eq!(
            deps[2].alternatives,
            vec![atom("python3", Some("any"), Some((VersionOp::Lt, "3.12~")))]
        );
        assert_eq!(
            deps[3].alternatives,
            vec![atom("perl", Some("native"), None)]
        );
        assert_eq!(
            deps[4].alternatives,
            vec![atom("foo", None, Some((VersionOp::Eq, "1:2.0-1")))]
        );
    }

    #[test]
    fn obsolete_operators_mean_or_equal() {
        let deps =
            parse_dependencies("Depends", "a (< 1), b (> 2), c (>> 3), d (<<4)", AMD64).unwrap();
        let ops: Vec<_> = deps
            .iter()
            .map(|d| d.alternatives[0].req.as_ref().unwrap().op)
            .collect();
        assert_eq!(
            ops,
            vec![VersionOp::Le, VersionOp::Ge, VersionOp::Gt, VersionOp::Lt]
        );
    }

    #[test]
    fn architecture_restrictions_drop_what_does_not_apply() {
        let text =
            "a [amd64], b [!amd64], c [i386 arm64] | d, e [linux-any], f [any-i386], g [!hurd-any]";
        let names = |deps: Vec<Dependency>| {
            deps.into_iter()
                .map(|d| {
                    d.alternatives
                        .into_iter()
                        .map(|a| a.name)
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(parse_dependencies("Build-Depends", text, AMD64).unwrap()),
            vec!["a", "d", "e", "g"]
        );
        assert_eq!(
            names(parse_dependencies("Build-Depends", text, Target::arch("i386")).unwrap()),
            vec!["b", "c|d", "e", "f", "g"]
        );
        assert_eq!(
            names(parse_dependencies("Build-Depends", text, Target::arch("hurd-i386")).unwrap()),
            // `i386` means linux-i386: a hurd target does not match it.
            vec!["b", "d", "f"]
        );
    }

    #[test]
    fn build_profiles_with_none_active() {
        let deps = parse_dependencies(
            "Build-Depends",
            "a <!nocheck>, b <nocheck>, c <stage1> <!cross>, d <stage1 !cross>",
            AMD64,
        )
        .unwrap();
        let names: Vec<_> = deps
            .iter()
            .map(|d| d.alternatives[0].name.as_str())
            .collect();
        assert_eq!(names, vec!["a", "c"]);
        let profiles = ["nocheck"];
        let with = Target {
            arch: "amd64",
            profiles: &profiles,
        };
        let deps = parse_dependencies("Build-Depends", "a <!nocheck>, b <nocheck>", with).unwrap();
        assert_eq!(deps.len(), 1);
        assert_eq!(deps[0].alternatives[0].name, "b");
    }

    #[test]
    fn provides_and_conflicts() {
        let provides = parse_provides(
            "Provides",
            "awk, libfoo-abi-2 (= 2.1-3), mail-transport-agent",
            AMD64,
        )
        .unwrap();
        assert_eq!(
            provides,
            vec![
                Provide {
                    name: "awk".into(),
                    version: None
                },
                Provide {
                    name: "libfoo-abi-2".into(),
                    version: Some("2.1-3".into())
                },
                Provide {
                    name: "mail-transport-agent".into(),
                    version: None
                },
            ]
        );
        let err = parse_provides("Provides", "a (>= 1)", AMD64).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Provides: a: only (= version) is allowed here in \"a (>= 1)\""
        );
        let conflicts = parse_atoms("Conflicts", "a (<< 2), b:any", AMD64).unwrap();
        assert_eq!(
            conflicts,
            vec![
                atom("a", None, Some((VersionOp::Lt, "2"))),
                atom("b", Some("any"), None)
            ]
        );
        let err = parse_atoms("Breaks", "a | b", AMD64).unwrap_err();
        assert!(err.to_string().starts_with("Breaks: alternatives"), "{err}");
    }

    #[test]
    fn errors_name_field_and_text() {
        for (text, problem) in [
            (
                "a (~ 1)",
                "missing or unknown version operator in \"a (~ 1)\"",
            ),
            ("a (>= 1", "unclosed '(' in \"a (>= 1\""),
            ("a (>= )", "missing version in \"a (>= )\""),
            ("a, | b", "missing package name in \"\""),
            ("a [amd64", "unclosed '[' in \"a [amd64\""),
            (
                "a [amd64 !i386]",
                "mixed positive and negated architectures in \"a [amd64 !i386]\"",
            ),
            ("a b", "unexpected \"b\" in \"a b\""),
            ("a:", "empty architecture qualifier in \"a:\""),
            ("a$", "invalid package name in \"a$\""),
            ("a <>", "empty build-profile formula in \"a <>\""),
        ] {
            let err = parse_dependencies("Depends", text, AMD64).unwrap_err();
            assert_eq!(err.to_string(), format!("Depends: {problem} in {text:?}"));
        }
        assert!(parse_dependencies("Depends", "a, b,", AMD64).is_ok());
        assert!(parse_dependencies("Depends", "", AMD64).unwrap().is_empty());
    }
}
