//! apk dependency atoms: `[!]name[@tag][op version]`, as found in `D:`, `p:`, `i:`
//! lines, `.PKGINFO` `depend`/`provides`/`install_if` and `/etc/apk/world`.
//!
//! Operators: `=`, `<`, `>`, `<=`, `>=`, `~` (fuzzy, also written `~=` or `=~`), and `><`
//! followed by a package identity (`Q1…`). The version after any other operator must be
//! a valid apk version. Atoms are separated by spaces or newlines.

use std::fmt;

use super::{Error, Result, version};
use crate::model::{Atom, Dependency, Provide, VersionOp, VersionReq};

/// One parsed atom: the model [`Atom`] plus whether it was a `!` conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAtom {
    /// `!name…`: no matching package may be installed.
    pub conflict: bool,
    /// Name, optional `@tag` and version constraint.
    pub atom: Atom,
}

/// A dependency list split the way the solver wants it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relations {
    /// Atoms without `!`, each a [`Dependency`] with one alternative.
    pub depends: Vec<Dependency>,
    /// The `!` atoms.
    pub conflicts: Vec<Atom>,
}

fn bad(atom: &str, reason: impl Into<String>) -> Error {
    Error::BadAtom {
        atom: atom.to_owned(),
        reason: reason.into(),
    }
}

fn is_operator_char(c: char) -> bool {
    matches!(c, '<' | '>' | '=' | '~')
}

/// Parses one atom such as `so:libc.musl-x86_64.so.1`, `!vlan`, `busybox=1.36.1-r15`,
/// `python3~3.11`, `name@edge` or `musl><Q1…`.
pub fn parse_atom(text: &str) -> Result<ParsedAtom> {
    if text.is_empty() {
        return Err(bad(text, "empty atom"));
    }
    if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(text, format!("contains {c:?}")));
    }
    let (conflict, rest) = match text.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (name_tag, req) = match rest.find(is_operator_char) {
        None => (rest, None),
        Some(at) => {
            let (name_tag, op_version) = rest.split_at(at);
            let op_len = op_version
                .find(|c: char| !is_operator_char(c))
                .unwrap_or(op_version.len());
            let (op_text, version_text) = op_version.split_at(op_len);
            let op = match op_text {
                "=" => VersionOp::Eq,
                "<" => VersionOp::Lt,
                ">" => VersionOp::Gt,
                "<=" | "=<" => VersionOp::Le,
                ">=" | "=>" => VersionOp::Ge,
                "~" | "~=" | "=~" => VersionOp::Fuzzy,
                "><" | "<>" => VersionOp::Identity,
                other => {
                    return Err(bad(text, format!("unsupported operator {other:?}")));
                }
            };
            if version_text.is_empty() {
                return Err(bad(text, format!("no version after {op_text:?}")));
            }
            if op == VersionOp::Identity {
                if super::q1_decode(version_text).is_none() {
                    return Err(bad(
                        text,
                        format!("{version_text:?} is not a package identity (Q1…)"),
                    ));
                }
            } else if !version::is_valid(version_text) {
                return Err(bad(text, format!("invalid version {version_text:?}")));
            }
            (
                name_tag,
                Some(VersionReq {
                    op,
                    version: version_text.to_owned(),
                }),
            )
        }
    };
    let (name, tag) = match name_tag.split_once('@') {
        Some((name, tag)) => {
            if tag.is_empty() || tag.contains('@') {
                return Err(bad(text, "bad @tag"));
            }
            (name, Some(tag.to_owned()))
        }
        None => (name_tag, None),
    };
    if name.is_empty() {
        return Err(bad(text, "no package name"));
    }
    if name.starts_with('!') {
        return Err(bad(text, "doubled '!'"));
    }
    Ok(ParsedAtom {
        conflict,
        atom: Atom {
            name: name.to_owned(),
            arch: None,
            tag,
            req,
        },
    })
}

/// Parses a space- (or newline-) separated list of atoms, keeping their order.
pub fn parse_atoms(list: &str) -> Result<Vec<ParsedAtom>> {
    list.split([' ', '\n'])
        .filter(|s| !s.is_empty())
        .map(parse_atom)
        .collect()
}

/// Parses a `D:` / `depend` list into requirements and conflicts, each kept in order.
pub fn parse_relations(list: &str) -> Result<Relations> {
    let mut relations = Relations::default();
    for parsed in parse_atoms(list)? {
        if parsed.conflict {
            relations.conflicts.push(parsed.atom);
        } else {
            relations.depends.push(Dependency {
                alternatives: vec![parsed.atom],
            });
        }
    }
    Ok(relations)
}

/// Parses one `p:` / `provides` item: `name` or `name=version`.
pub fn parse_provide(text: &str) -> Result<Provide> {
    let parsed = parse_atom(text)?;
    if parsed.conflict || parsed.atom.tag.is_some() {
        return Err(bad(text, "a provide is a plain name or name=version"));
    }
    match parsed.atom.req {
        None => Ok(Provide {
            name: parsed.atom.name,
            version: None,
        }),
        Some(VersionReq {
            op: VersionOp::Eq,
            version,
        }) => Ok(Provide {
            name: parsed.atom.name,
            version: Some(version),
        }),
        Some(_) => Err(bad(text, "a provide may only use '='")),
    }
}

/// Parses a `p:` list.
pub fn parse_provides(list: &str) -> Result<Vec<Provide>> {
    list.split([' ', '\n'])
        .filter(|s| !s.is_empty())
        .map(parse_provide)
        .collect()
}

/// Writes an atom back in apk's text form (`!name@tag>=1.0`).
pub struct AtomDisplay<'a> {
    /// Whether to prefix `!`.
    pub conflict: bool,
    /// The atom.
    pub atom: &'a Atom,
}

impl fmt::Display for AtomDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.conflict {
            f.write_str("!")?;
        }
        f.write_str(&self.atom.name)?;
        if let Some(tag) = &self.atom.tag {
            write!(f, "@{tag}")?;
        }
        if let Some(req) = &self.atom.req {
            let op = match req.op {
                VersionOp::Lt => "<",
                VersionOp::Le => "<=",
                VersionOp::Eq => "=",
                VersionOp::Ge => ">=",
                VersionOp::Gt => ">",
                VersionOp::Fuzzy => "~",
                VersionOp::Identity => "><",
            };
            write!(f, "{op}{}", req.version)?;
        }
        Ok(())
    }
}

impl fmt::Display for ParsedAtom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        AtomDisplay {
            conflict: self.conflict,
            atom: &self.atom,
        }
        .fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: VersionOp, v: &str) -> Option<VersionReq> {
        Some(VersionReq {
            op,
            version: v.into(),
        })
    }

    #[test]
    fn parses_every_operator() {
        let cases = [
            ("busybox", None),
            ("busybox=1.36.1-r15", req(VersionOp::Eq, "1.36.1-r15")),
            ("musl<2", req(VersionOp::Lt, "2")),
            ("musl>1.2", req(VersionOp::Gt, "1.2")),
            ("musl<=1.2", req(VersionOp::Le, "1.2")),
            ("musl>=1.2", req(VersionOp::Ge, "1.2")),
            ("python3~3.11", req(VersionOp::Fuzzy, "3.11")),
            ("python3=~3.11", req(VersionOp::Fuzzy, "3.11")),
            (
                "musl><Q1AYNx2pLOAHRYZQgv3nM8TNtvRWY=",
                req(VersionOp::Identity, "Q1AYNx2pLOAHRYZQgv3nM8TNtvRWY="),
            ),
        ];
        for (text, expected) in cases {
            let parsed = parse_atom(text).unwrap();
            assert!(!parsed.conflict);
            assert_eq!(parsed.atom.req, expected, "{text}");
            assert_eq!(
                parsed.to_string().replace("=~", "~"),
                text.replace("=~", "~")
            );
        }
    }

    #[test]
    fn namespaced_names_tags_and_conflicts() {
        let a = parse_atom("so:libc.musl-x86_64.so.1").unwrap();
        assert_eq!(a.atom.name, "so:libc.musl-x86_64.so.1");
        let a = parse_atom("/bin/sh").unwrap();
        assert_eq!(a.atom.name, "/bin/sh");
        let a = parse_atom("!vlan").unwrap();
        assert!(a.conflict);
        assert_eq!(a.atom.name, "vlan");
        let a = parse_atom("foo@edge>=2").unwrap();
        assert_eq!(a.atom.tag.as_deref(), Some("edge"));
        assert_eq!(a.atom.req, req(VersionOp::Ge, "2"));
        assert_eq!(a.to_string(), "foo@edge>=2");
    }

    #[test]
    fn relations_split_depends_and_conflicts_in_order() {
        let rel = parse_relations("a !b c>=1 so:libz.so.1").unwrap();
        let names: Vec<_> = rel
            .depends
            .iter()
            .map(|d| d.alternatives[0].name.as_str())
            .collect();
        assert_eq!(names, ["a", "c", "so:libz.so.1"]);
        assert_eq!(rel.conflicts.len(), 1);
        assert_eq!(rel.conflicts[0].name, "b");
        assert!(parse_relations("").unwrap().depends.is_empty());
    }

    #[test]
    fn provides() {
        let p = parse_provide("so:libz.so.1=1.3.1").unwrap();
        assert_eq!(p.version.as_deref(), Some("1.3.1"));
        assert_eq!(parse_provide("/bin/sh").unwrap().version, None);
        assert!(parse_provide("foo>=1").is_err());
        assert!(parse_provide("!foo").is_err());
    }

    #[test]
    fn rejects_malformed_atoms() {
        for text in [
            "", "=1.0", "foo=", "foo<>=1", "foo><bar", "foo@", "!!x", "a b",
        ] {
            let err = parse_atom(text).unwrap_err();
            assert!(matches!(err, Error::BadAtom { .. }), "{text}: {err}");
        }
    }
}
