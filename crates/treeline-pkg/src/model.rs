//! The family-neutral package model: what the solver and the importer need to know about a
//! package, whichever format it came from.
//!
//! Both apk and deb packages map onto it. Fields that only one family has are documented
//! as such and left empty by the other.

use std::fmt;

/// The packaging family: versions, relations and databases follow its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Alpine's apk (v2 packages, APKINDEX).
    Apk,
    /// Debian's dpkg/apt (.deb, Packages).
    Deb,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Apk => "apk",
            Family::Deb => "deb",
        })
    }
}

/// A version comparison operator in a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum VersionOp {
    /// `<` (apk) or `<<` (deb).
    Lt,
    /// `<=`.
    Le,
    /// `=`.
    Eq,
    /// `>=`.
    Ge,
    /// `>` (apk) or `>>` (deb).
    Gt,
    /// apk `~`: the version starts with the given one at a component boundary.
    Fuzzy,
    /// apk `><`: exactly the package with this identity (`Q1...`); the requirement's
    /// `version` holds the identity, not a version.
    Identity,
}

/// A constraint on the version of what an [`Atom`] names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct VersionReq {
    /// How to compare.
    pub op: VersionOp,
    /// The version (or identity for [`VersionOp::Identity`]) to compare with.
    pub version: String,
}

/// One name a relation refers to, with optional qualifiers: `name`, `name>=1.2`,
/// `so:libc.musl-x86_64.so.1`, `libc6 (>= 2.36)`, `python3:any`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Atom {
    /// The package or virtual name (apk namespaced names such as `so:…`, `cmd:…`, `pc:…`
    /// and `/bin/sh` are plain names here).
    pub name: String,
    /// deb only: the `:arch` qualifier (`any`, `native`, or an architecture).
    pub arch: Option<String>,
    /// apk only: the `@tag` repository pin.
    pub tag: Option<String>,
    /// The version constraint, if any.
    pub req: Option<VersionReq>,
}

/// A requirement: one of the alternatives must be installed (`a | b` in deb; apk has
/// exactly one alternative).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Dependency {
    /// Never empty.
    pub alternatives: Vec<Atom>,
}

/// A name a package provides besides its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Provide {
    /// The provided name.
    pub name: String,
    /// The provided version (`p:so:libz.so.1=1.3`, deb `Provides: foo (= 1.0)`); `None`
    /// for a purely virtual provide.
    pub version: Option<String>,
}

/// A package as the solver and the importer see it: one candidate from one repository.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PackageMeta {
    /// apk or deb; decides the version rules.
    pub family: Option<Family>,
    /// Package name.
    pub name: String,
    /// Full version (apk with `-rN`; deb with epoch and revision).
    pub version: String,
    /// Architecture as the index says (`x86_64`, `amd64`, `all`, `noarch`).
    pub arch: String,
    /// Requirements (apk `D:` atoms without `!`; deb `Depends`).
    pub depends: Vec<Dependency>,
    /// deb only: `Pre-Depends`.
    pub pre_depends: Vec<Dependency>,
    /// deb only: `Recommends` (apt installs them by default).
    pub recommends: Vec<Dependency>,
    /// Packages that may not be installed with this one (apk `!name` atoms; deb
    /// `Conflicts`).
    pub conflicts: Vec<Atom>,
    /// deb only: `Breaks` (for a fresh install, the same as conflicts).
    pub breaks: Vec<Atom>,
    /// Names this package also satisfies (apk `p:`; deb `Provides`).
    pub provides: Vec<Provide>,
    /// apk only: installed automatically once all of these are satisfied (`i:`).
    pub install_if: Vec<Atom>,
    /// apk only: the `!name` atoms of `i:`: the automatic install also requires that none
    /// of these is installed.
    pub install_if_absent: Vec<Atom>,
    /// apk only: `k:`, preference among providers of the same virtual name.
    pub provider_priority: Option<i64>,
    /// deb only: `Essential: yes`.
    pub essential: bool,
    /// deb only: `Priority` (`required`, `important`, `standard`, `optional`, `extra`).
    pub priority: Option<String>,
    /// deb only: apt's pin priority of the repository the package came from (see
    /// [`crate::deb::release::Release::default_pin`]); `None` is apt's plain default, 500.
    pub pin_priority: Option<i32>,
    /// deb only: `Multi-Arch` (`same`, `foreign`, `allowed`).
    pub multi_arch: Option<String>,
    /// apk `o:` origin or deb `Source` (name only).
    pub source: Option<String>,
    /// Size of the package file in bytes.
    pub size: u64,
    /// Installed size in bytes (deb's KiB figure times 1024).
    pub installed_size: u64,
    /// Path of the package file relative to the repository base (apk:
    /// `x86_64/name-ver.apk`; deb: the `Filename` field).
    pub location: String,
    /// What pins the file's bytes: apk identity (`Q1…`, SHA-1 of the control member) or
    /// deb SHA-256 of the .deb (hex).
    pub checksum: String,
    /// Every field of the index record, in order, exactly as read (letters for apk,
    /// field names for deb), so databases can be written faithfully.
    pub fields: Vec<(String, String)>,
}
