//! `APKINDEX.tar.gz`: a cut signature tar (member 1) signing the compressed bytes of
//! member 2, an ordinary tar with `DESCRIPTION` and `APKINDEX`. The `APKINDEX` text has
//! one record per package, `<letter>:<value>` lines, records separated by empty lines.
//!
//! ```no_run
//! # fn main() -> Result<(), treeline_pkg::apk::Error> {
//! use std::path::Path;
//! use treeline_pkg::apk::{ApkIndex, Keys};
//!
//! let keys = Keys::from_dir(Path::new("/etc/apk/keys"))?;
//! let index = ApkIndex::open(Path::new("main/x86_64/APKINDEX.tar.gz"), "x86_64")?;
//! index.verify(&keys)?;
//! for pkg in index.packages() {
//!     println!("{} {} {}", pkg.name, pkg.version, pkg.location);
//! }
//! # Ok(()) }
//! ```

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::archive::{CountingReader, DigestValues, Digests, TarReader, io_error};
use super::atom::{parse_atoms, parse_provides, parse_relations};
use super::keys::Keys;
use super::package::{PkgInfo, Signature, verify_signatures};
use super::{Error, Result};
use crate::model::{Family, PackageMeta};

/// A repository index, read and parsed.
#[derive(Debug, Clone)]
pub struct ApkIndex {
    path: PathBuf,
    signature_member: Option<Range<u64>>,
    index_member: Range<u64>,
    signatures: Vec<Signature>,
    signed: DigestValues,
    description: String,
    packages: Vec<PackageMeta>,
}

/// Size limits for the members' entries.
const MAX_SIGNATURE: u64 = 64 * 1024;
const MAX_DESCRIPTION: u64 = 1 << 20;
const MAX_APKINDEX: u64 = 1 << 30;

/// Letters apk 2.14 knows in an index or installed db; other upper-case letters make
/// the package uninstallable.
const KNOWN_UPPER: &[u8] = b"CPVATUSILDFMRZ";

impl ApkIndex {
    /// Reads an index file. `arch` is the repository's architecture directory (the one
    /// holding `APKINDEX.tar.gz`); it prefixes every package's `location`.
    pub fn open(path: &Path, arch: &str) -> Result<ApkIndex> {
        let io = |error| Error::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = File::open(path).map_err(io)?;
        let mut reader = CountingReader::new(file, 0);
        let head = std::io::BufRead::fill_buf(&mut reader).map_err(io)?;
        if !head.starts_with(&[0x1f, 0x8b]) {
            return Err(Error::NotApk {
                path: path.to_path_buf(),
                reason: "no gzip magic at the start of the index".into(),
            });
        }

        reader.digests = Some(Digests::default());
        let first = read_member(&mut reader, path, "index")?;
        let first_range = 0..reader.pos;
        let first_digests = reader.digests.take().unwrap_or_default();

        let is_signature = first
            .first()
            .is_some_and(|(name, _)| name.starts_with(".SIGN."));
        let (signature_member, signatures, entries, index_member, signed) = if is_signature {
            let signatures = first
                .into_iter()
                .filter_map(|(name, bytes)| super::package::parse_sign_name(&name, bytes))
                .collect();
            let start = reader.pos;
            if reader.at_eof().map_err(io)? {
                return Err(Error::Truncated {
                    path: path.to_path_buf(),
                    what: "no index member after the signature".into(),
                });
            }
            reader.digests = Some(Digests::default());
            let entries = read_member(&mut reader, path, "index")?;
            let digests = reader.digests.take().unwrap_or_default();
            (
                Some(first_range),
                signatures,
                entries,
                start..reader.pos,
                digests.finish(),
            )
        } else {
            (None, Vec::new(), first, first_range, first_digests.finish())
        };
        if !reader.at_eof().map_err(io)? {
            return Err(Error::Format {
                path: path.to_path_buf(),
                what: format!(
                    "unexpected data after the index member (byte {})",
                    reader.pos
                ),
            });
        }

        let mut description = String::new();
        let mut text = None;
        for (name, content) in entries {
            match name.as_str() {
                "DESCRIPTION" => {
                    description = String::from_utf8_lossy(&content).trim_end().to_owned()
                }
                "APKINDEX" => {
                    text = Some(String::from_utf8(content).map_err(|_| Error::Format {
                        path: path.to_path_buf(),
                        what: "APKINDEX is not UTF-8 text".into(),
                    })?)
                }
                _ => {}
            }
        }
        let text = text.ok_or_else(|| Error::Format {
            path: path.to_path_buf(),
            what: "no APKINDEX entry in the index".into(),
        })?;
        let packages = parse_index_text(path, &text, arch)?;
        Ok(ApkIndex {
            path: path.to_path_buf(),
            signature_member,
            index_member,
            signatures,
            signed,
            description,
            packages,
        })
    }

    /// Checks that a key in `keys` signed the index member; returns that key's name.
    pub fn verify(&self, keys: &Keys) -> Result<&str> {
        verify_signatures(&self.path, &self.signatures, &self.signed, keys)
    }

    /// The file this index was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `DESCRIPTION` (e.g. `v3.19.1-643-gec825d20535`), trailing whitespace removed.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The `.SIGN.*` entries.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// Byte range of the signature member, if signed.
    pub fn signature_member(&self) -> Option<Range<u64>> {
        self.signature_member.clone()
    }

    /// Byte range of the member holding `DESCRIPTION` and `APKINDEX`.
    pub fn index_member(&self) -> Range<u64> {
        self.index_member.clone()
    }

    /// The installable packages, in index order (records with unknown upper-case
    /// letters are left out, as apk does).
    pub fn packages(&self) -> &[PackageMeta] {
        &self.packages
    }

    /// Takes the packages.
    pub fn into_packages(self) -> Vec<PackageMeta> {
        self.packages
    }
}

/// Reads one gzip member's tar entries fully (they are small) and drains the member so
/// its compressed bytes are all counted.
fn read_member(
    reader: &mut CountingReader<File>,
    path: &Path,
    member: &'static str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let gz = flate2::bufread::GzDecoder::new(&mut *reader);
    let mut tar = TarReader::new(gz);
    let mut entries = Vec::new();
    while let Some(header) = tar.next_header().map_err(|e| e.into_error(path, member))? {
        let name = String::from_utf8_lossy(&header.name).into_owned();
        let limit = match name.as_str() {
            "APKINDEX" => MAX_APKINDEX,
            "DESCRIPTION" => MAX_DESCRIPTION,
            n if n.starts_with(".SIGN.") => MAX_SIGNATURE,
            _ => continue,
        };
        let content = tar
            .read_content_to_vec(limit, &name)
            .map_err(|e| e.into_error(path, member))?;
        entries.push((name, content));
    }
    tar.finish().map_err(|e| e.into_error(path, member))?;
    // Whatever the tar left (gzip trailer) must be consumed for the member digest.
    let mut rest = tar.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| io_error(path, member, e))?;
    Ok(entries)
}

/// Parses `APKINDEX` text into packages. `path` names the index in errors; `arch` is
/// the repository's architecture directory used for `location`.
pub fn parse_index_text(path: &Path, text: &str, arch: &str) -> Result<Vec<PackageMeta>> {
    let mut packages = Vec::new();
    let mut record: Vec<(String, String)> = Vec::new();
    let mut lines: Vec<usize> = Vec::new();
    for (index, line) in text.split('\n').enumerate() {
        let number = index + 1;
        if line.is_empty() {
            if !record.is_empty() {
                if let Some(meta) = build_record(path, &record, &lines, arch)? {
                    packages.push(meta);
                }
                record.clear();
                lines.clear();
            }
            continue;
        }
        let bytes = line.as_bytes();
        if bytes.len() < 2 || bytes[1] != b':' || !bytes[0].is_ascii_alphabetic() {
            return Err(Error::IndexLine {
                path: path.to_path_buf(),
                line: number,
                what: format!("expected <letter>:<value>, found {line:?}"),
            });
        }
        record.push((line[..1].to_owned(), line[2..].to_owned()));
        lines.push(number);
    }
    if !record.is_empty()
        && let Some(meta) = build_record(path, &record, &lines, arch)?
    {
        packages.push(meta);
    }
    Ok(packages)
}

/// Builds a package from one record's `(letter, value)` fields. `lines` gives each
/// field's line number for errors (0 when the fields came from `.PKGINFO`). Returns
/// `None` for a record apk would mark uninstallable.
fn build_record(
    path: &Path,
    fields: &[(String, String)],
    lines: &[usize],
    arch: &str,
) -> Result<Option<PackageMeta>> {
    let fail = |i: usize, what: String| -> Error {
        let line = lines.get(i).copied().unwrap_or(0);
        if line == 0 {
            Error::Format {
                path: path.to_path_buf(),
                what: format!(".PKGINFO: {what}"),
            }
        } else {
            Error::IndexLine {
                path: path.to_path_buf(),
                line,
                what,
            }
        }
    };
    let number = |i: usize, letter: &str, value: &str| -> Result<u64> {
        value
            .parse()
            .map_err(|_| fail(i, format!("{letter}:{value:?} is not a number")))
    };
    let mut meta = PackageMeta {
        family: Some(Family::Apk),
        fields: fields.to_vec(),
        ..PackageMeta::default()
    };
    for (i, (letter, value)) in fields.iter().enumerate() {
        let atoms_error = |e: Error| fail(i, format!("{letter}: {e}"));
        match letter.as_str() {
            "C" => meta.checksum = value.clone(),
            "P" => meta.name = value.clone(),
            "V" => meta.version = value.clone(),
            "A" => meta.arch = value.clone(),
            "S" => meta.size = number(i, letter, value)?,
            "I" => meta.installed_size = number(i, letter, value)?,
            "o" => meta.source = Some(value.clone()),
            "k" => {
                let k = number(i, letter, value)?;
                meta.provider_priority = i64::try_from(k).ok();
            }
            "D" => {
                let relations = parse_relations(value).map_err(atoms_error)?;
                meta.depends.extend(relations.depends);
                meta.conflicts.extend(relations.conflicts);
            }
            "p" => meta
                .provides
                .extend(parse_provides(value).map_err(atoms_error)?),
            "i" => {
                let parsed = parse_atoms(value).map_err(atoms_error)?;
                // `!name` in install_if means "and name is not installed"; the model has
                // no place for that, so such a package is never auto-installed (the
                // safe side) until it does. The raw line stays in `fields`.
                if let Some(negated) = parsed.iter().find(|a| a.conflict) {
                    tracing::warn!(
                        "{}: line {}: install_if with {negated} is not supported; \
                         package will not be installed automatically",
                        path.display(),
                        lines.get(i).copied().unwrap_or(0)
                    );
                    meta.install_if.clear();
                } else {
                    meta.install_if.extend(parsed.into_iter().map(|a| a.atom));
                }
            }
            l if l.bytes().all(|b| b.is_ascii_uppercase())
                && !KNOWN_UPPER.contains(&l.as_bytes()[0]) =>
            {
                tracing::warn!(
                    "{}: line {}: unknown field {l}: makes {} uninstallable, skipped",
                    path.display(),
                    lines.get(i).copied().unwrap_or(0),
                    fields
                        .iter()
                        .find(|(k, _)| k == "P")
                        .map(|(_, v)| v.as_str())
                        .unwrap_or("a package")
                );
                return Ok(None);
            }
            // T U L m t c and unknown lower-case letters: kept in `fields` only.
            _ => {}
        }
    }
    if meta.name.is_empty() {
        return Err(fail(0, "package record without P: (name)".into()));
    }
    if meta.version.is_empty() {
        return Err(fail(
            0,
            format!("package {} without V: (version)", meta.name),
        ));
    }
    meta.location = format!("{arch}/{}-{}.apk", meta.name, meta.version);
    Ok(Some(meta))
}

/// A [`PackageMeta`] for a package file, from its `.PKGINFO`: `fields` hold the index
/// letters apk would write for it (`C P V A S I T U L o m t c k D p i`), with `A` as
/// `.PKGINFO` says (no noarch rewrite) and `S` the file size. `location` is stored as
/// given.
pub fn meta_from_pkginfo(
    path: &Path,
    pkginfo: &PkgInfo,
    identity: &str,
    file_size: u64,
    location: String,
) -> Result<PackageMeta> {
    let get = |key: &str| pkginfo.get(key).unwrap_or_default().to_owned();
    let mut fields: Vec<(String, String)> = vec![
        ("C".into(), identity.to_owned()),
        ("P".into(), get("pkgname")),
        ("V".into(), get("pkgver")),
        ("A".into(), get("arch")),
        ("S".into(), file_size.to_string()),
        ("I".into(), pkginfo.get("size").unwrap_or("0").to_owned()),
        ("T".into(), get("pkgdesc")),
        ("U".into(), get("url")),
        ("L".into(), get("license")),
    ];
    for (letter, key) in [("o", "origin"), ("m", "maintainer")] {
        if let Some(v) = pkginfo.get(key) {
            fields.push((letter.into(), v.to_owned()));
        }
    }
    if let Some(t) = pkginfo.get("builddate").filter(|t| *t != "0") {
        fields.push(("t".into(), t.to_owned()));
    }
    if let Some(c) = pkginfo.get("commit") {
        fields.push(("c".into(), c.to_owned()));
    }
    if let Some(k) = pkginfo.get("provider_priority").filter(|k| *k != "0") {
        fields.push(("k".into(), k.to_owned()));
    }
    for (letter, key) in [("D", "depend"), ("p", "provides"), ("i", "install_if")] {
        let joined = pkginfo.joined(key);
        if !joined.is_empty() {
            fields.push((letter.into(), joined));
        }
    }
    let lines = vec![0; fields.len()];
    let mut meta = build_record(path, &fields, &lines, "")?.ok_or_else(|| Error::Format {
        path: path.to_path_buf(),
        what: ".PKGINFO describes an uninstallable package".into(),
    })?;
    meta.location = location;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VersionOp;

    const TEXT: &str = "C:Q1AYNx2pLOAHRYZQgv3nM8TNtvRWY=\nP:busybox\nV:1.36.1-r15\nA:x86_64\nS:506796\nI:957033\nT:Size optimized toolbox\nU:https://busybox.net/\nL:GPL-2.0-only\no:busybox\nm:Sören Tempel <soeren+alpine@soeren-tempel.net>\nt:1699383196\nc:abc\nk:5\nD:so:libc.musl-x86_64.so.1 !vlan\np:cmd:busybox=1.36.1-r15 /bin/sh\ni:busybox=1.36.1-r15 libssl3\n\nC:Q1AAAAAAAAAAAAAAAAAAAAAAAAAAA=\nP:future\nV:1.0-r0\nX:something new\n\n";

    #[test]
    fn parses_a_record_and_skips_unknown_upper_case() {
        let pkgs = parse_index_text(Path::new("idx"), TEXT, "x86_64").unwrap();
        assert_eq!(pkgs.len(), 1);
        let p = &pkgs[0];
        assert_eq!(p.name, "busybox");
        assert_eq!(p.location, "x86_64/busybox-1.36.1-r15.apk");
        assert_eq!(p.size, 506796);
        assert_eq!(p.installed_size, 957033);
        assert_eq!(p.provider_priority, Some(5));
        assert_eq!(p.depends.len(), 1);
        assert_eq!(p.conflicts[0].name, "vlan");
        assert_eq!(p.provides[0].version.as_deref(), Some("1.36.1-r15"));
        assert_eq!(p.provides[1].version, None);
        assert_eq!(p.install_if.len(), 2);
        assert_eq!(
            p.install_if[0].req.as_ref().map(|r| r.op),
            Some(VersionOp::Eq)
        );
        assert_eq!(p.fields.len(), 17);
        assert_eq!(p.fields[10].0, "m");
        assert_eq!(p.source.as_deref(), Some("busybox"));
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let err =
            parse_index_text(Path::new("/r/APKINDEX"), "P:a\nV:1\nnonsense\n", "x").unwrap_err();
        assert!(matches!(err, Error::IndexLine { line: 3, .. }), "{err}");
        assert!(err.to_string().contains("/r/APKINDEX: line 3"), "{err}");
        let err = parse_index_text(Path::new("i"), "P:a\nV:1\nS:big\n", "x").unwrap_err();
        assert!(matches!(err, Error::IndexLine { line: 3, .. }), "{err}");
        let err = parse_index_text(Path::new("i"), "P:a\nV:1\nD:foo=\n", "x").unwrap_err();
        assert!(err.to_string().contains("foo="), "{err}");
        let err = parse_index_text(Path::new("i"), "V:1\n\n", "x").unwrap_err();
        assert!(err.to_string().contains("without P:"), "{err}");
    }
}
