//! `Packages` indexes (plain, `.gz`, `.xz`, `.zst`; detected from the content), read as a
//! stream of [`PackageMeta`], and the mapping from control fields to [`PackageMeta`] that
//! `.deb` control files share.
//!
//! ```no_run
//! let packages = treeline_pkg::deb::read_packages("Packages.xz", "amd64")?;
//! println!("{} packages", packages.len());
//! # Ok::<(), treeline_pkg::deb::Error>(())
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::Error;
use super::deb822::{Stanza, StanzaReader};
use super::decompress::{Compression, Decoder};
use super::relation::{Target, parse_atoms, parse_dependencies, parse_provides};
use crate::model::{Family, PackageMeta};

/// Buffer size for index reading: large reads keep the decompressors efficient.
const BUFFER: usize = 256 << 10;

/// Streams the packages of an index; stops after the first error.
pub struct PackagesReader<R> {
    stanzas: StanzaReader<R>,
    target_arch: String,
    failed: bool,
}

impl<R: BufRead> PackagesReader<R> {
    /// Reads an uncompressed index from `reader`; `path` is what errors name, `target_arch`
    /// what relations are evaluated for.
    pub fn new(reader: R, path: impl Into<PathBuf>, target_arch: &str) -> Self {
        PackagesReader {
            stanzas: StanzaReader::new(reader, path),
            target_arch: target_arch.to_owned(),
            failed: false,
        }
    }
}

impl<R: BufRead> Iterator for PackagesReader<R> {
    type Item = Result<PackageMeta, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = match self.stanzas.next()? {
            Ok(Stanza { line, fields }) => {
                meta_from_fields(fields, &self.target_arch).map_err(|(package, error)| {
                    Error::Stanza {
                        path: self.stanzas.path().to_path_buf(),
                        line,
                        package,
                        error: Box::new(error),
                    }
                })
            }
            Err(error) => Err(error),
        };
        self.failed = result.is_err();
        Some(result)
    }
}

/// Opens an index file, plain or compressed (gzip, xz, zstd: detected from its first
/// bytes, so apt's list files and mirror downloads both work).
pub fn open_packages(
    path: impl AsRef<Path>,
    target_arch: &str,
) -> Result<PackagesReader<Box<dyn BufRead>>, Error> {
    let path = path.as_ref();
    let io_error = |error| Error::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut file = BufReader::with_capacity(BUFFER, File::open(path).map_err(io_error)?);
    let compression = Compression::from_magic(file.fill_buf().map_err(io_error)?);
    let reader: Box<dyn BufRead> = match compression {
        Compression::None => Box::new(file),
        other => Box::new(BufReader::with_capacity(
            BUFFER,
            Decoder::new(other, file).map_err(io_error)?,
        )),
    };
    Ok(PackagesReader::new(reader, path, target_arch))
}

/// Reads a whole index (see [`open_packages`]).
pub fn read_packages(path: impl AsRef<Path>, target_arch: &str) -> Result<Vec<PackageMeta>, Error> {
    open_packages(path, target_arch)?.collect()
}

/// Builds a [`PackageMeta`] from a stanza's fields (an index record or a `control` file),
/// relations evaluated for `target_arch`. `Package`, `Version` and `Architecture` are
/// required.
pub fn package_meta(
    fields: Vec<(String, String)>,
    target_arch: &str,
) -> Result<PackageMeta, Error> {
    meta_from_fields(fields, target_arch).map_err(|(_, error)| error)
}

/// [`package_meta`], returning the package name (empty if unknown) with an error.
fn meta_from_fields(
    fields: Vec<(String, String)>,
    target_arch: &str,
) -> Result<PackageMeta, (String, Error)> {
    let mut meta = PackageMeta {
        family: Some(Family::Deb),
        ..PackageMeta::default()
    };
    let target = Target::arch(target_arch);
    let result = fill(&mut meta, &fields, target);
    meta.fields = fields;
    match result {
        Ok(()) => Ok(meta),
        Err(error) => Err((meta.name, error)),
    }
}

fn fill(
    meta: &mut PackageMeta,
    fields: &[(String, String)],
    target: Target<'_>,
) -> Result<(), Error> {
    for (name, value) in fields {
        // Index fields are conventionally capitalized exactly; match case-insensitively only
        // when the exact spelling misses, to keep the common path cheap.
        let key = canonical(name);
        match key {
            "Package" => meta.name = value.clone(),
            "Version" => meta.version = value.clone(),
            "Architecture" => meta.arch = value.clone(),
            "Depends" => meta.depends = parse_dependencies(name, value, target)?,
            "Pre-Depends" => meta.pre_depends = parse_dependencies(name, value, target)?,
            "Recommends" => meta.recommends = parse_dependencies(name, value, target)?,
            "Conflicts" => meta.conflicts = parse_atoms(name, value, target)?,
            "Breaks" => meta.breaks = parse_atoms(name, value, target)?,
            "Provides" => meta.provides = parse_provides(name, value, target)?,
            "Essential" => meta.essential = value.eq_ignore_ascii_case("yes"),
            "Priority" => meta.priority = Some(value.clone()),
            "Multi-Arch" => meta.multi_arch = Some(value.clone()),
            "Source" => {
                // `Source: name (version)` when the source version differs.
                let source = value.split_whitespace().next().unwrap_or_default();
                meta.source = Some(source.to_owned());
            }
            "Size" => meta.size = number(name, value)?,
            "Installed-Size" => meta.installed_size = number(name, value)?.saturating_mul(1024),
            "Filename" => meta.location = value.clone(),
            "SHA256" => meta.checksum = value.clone(),
            _ => {}
        }
    }
    for (field, value) in [
        ("Package", &meta.name),
        ("Version", &meta.version),
        ("Architecture", &meta.arch),
    ] {
        if value.is_empty() {
            return Err(Error::Field {
                field: field.into(),
                problem: "missing".into(),
            });
        }
    }
    Ok(())
}

/// The canonical spelling of the fields [`fill`] uses, for any capitalization (dpkg
/// compares field names case-insensitively). Matching on the length first keeps this to
/// one or two comparisons per field.
fn canonical(name: &str) -> &str {
    let candidates: &[&'static str] = match name.len() {
        4 => &["Size"],
        6 => &["Source", "Breaks", "SHA256"],
        7 => &["Package", "Version", "Depends"],
        8 => &["Priority", "Provides", "Filename"],
        9 => &["Conflicts", "Essential"],
        10 => &["Recommends", "Multi-Arch"],
        11 => &["Pre-Depends"],
        12 => &["Architecture"],
        14 => &["Installed-Size"],
        _ => &[],
    };
    candidates
        .iter()
        .find(|known| known.eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or(name)
}

fn number(field: &str, value: &str) -> Result<u64, Error> {
    value.trim().parse().map_err(|_| Error::Field {
        field: field.into(),
        problem: format!("not a number: {value:?}"),
    })
}

/// Reads an index from any reader (e.g. a download), detecting compression.
pub fn packages_from_reader<R: Read + 'static>(
    reader: R,
    path: impl Into<PathBuf>,
    target_arch: &str,
) -> Result<PackagesReader<Box<dyn BufRead>>, Error> {
    let path = path.into();
    let mut buffered = BufReader::with_capacity(BUFFER, reader);
    let head = buffered.fill_buf().map_err(|error| Error::Io {
        path: path.clone(),
        error,
    })?;
    let compression = Compression::from_magic(head);
    let reader: Box<dyn BufRead> = match compression {
        Compression::None => Box::new(buffered),
        other => Box::new(BufReader::with_capacity(
            BUFFER,
            Decoder::new(other, buffered).map_err(|error| Error::Io {
                path: path.clone(),
                error,
            })?,
        )),
    };
    Ok(PackagesReader::new(reader, path, target_arch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VersionOp;

    const INDEX: &str = "\
Package: foo
Source: foo-src (1.0-1)
Version: 1.0-1+b1
Installed-Size: 12
Maintainer: Someone <a@b.c>
Architecture: amd64
Depends: libc6 (>= 2.34), bar | baz
Pre-Depends: dpkg (>= 1.19)
Breaks: old (<< 1)
Provides: virt (= 1.0)
Description: a package
 with a long description
 .
 of lines
Multi-Arch: same
Priority: optional
Essential: yes
Filename: pool/main/f/foo/foo_1.0-1+b1_amd64.deb
Size: 4242
SHA256: abcd

Package: bar
Version: 2
Architecture: all
";

    #[test]
    fn index_records_map_to_package_meta() {
        let packages: Vec<_> = PackagesReader::new(INDEX.as_bytes(), "Packages", "amd64")
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(packages.len(), 2);
        let foo = &packages[0];
        assert_eq!(foo.family, Some(Family::Deb));
        assert_eq!(
            (foo.name.as_str(), foo.version.as_str(), foo.arch.as_str()),
            ("foo", "1.0-1+b1", "amd64")
        );
        assert_eq!(foo.source.as_deref(), Some("foo-src"));
        assert_eq!(foo.installed_size, 12 * 1024);
        assert_eq!(foo.size, 4242);
        assert_eq!(foo.location, "pool/main/f/foo/foo_1.0-1+b1_amd64.deb");
        assert_eq!(foo.checksum, "abcd");
        assert!(foo.essential);
        assert_eq!(foo.multi_arch.as_deref(), Some("same"));
        assert_eq!(foo.priority.as_deref(), Some("optional"));
        assert_eq!(foo.depends.len(), 2);
        assert_eq!(foo.depends[1].alternatives.len(), 2);
        assert_eq!(foo.pre_depends[0].alternatives[0].name, "dpkg");
        assert_eq!(foo.breaks[0].req.as_ref().unwrap().op, VersionOp::Lt);
        assert_eq!(foo.provides[0].version.as_deref(), Some("1.0"));
        assert_eq!(foo.fields.len(), 17);
        assert_eq!(foo.fields[1], ("Source".into(), "foo-src (1.0-1)".into()));
        assert_eq!(
            foo.fields[10].1,
            "a package\n with a long description\n .\n of lines"
        );
        assert!(!packages[1].essential);
        assert_eq!(packages[1].source, None);
    }

    #[test]
    fn errors_name_file_stanza_and_field() {
        let text = "Package: a\nVersion: 1\nArchitecture: all\n\nPackage: b\nVersion: 1\nArchitecture: all\nDepends: x (>= 1\n";
        let err = PackagesReader::new(text.as_bytes(), "Packages", "amd64")
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "Packages: stanza at line 5 (package \"b\"): Depends: unclosed '(' in \"x (>= 1\" in \"x (>= 1\""
        );
        let err = PackagesReader::new("Package: a\nArchitecture: all\n".as_bytes(), "P", "amd64")
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "P: stanza at line 1 (package \"a\"): field Version: missing"
        );
        let err = PackagesReader::new(
            "Package: a\nVersion: 1\nArchitecture: all\nSize: x\n".as_bytes(),
            "P",
            "amd64",
        )
        .next()
        .unwrap()
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "P: stanza at line 1 (package \"a\"): field Size: not a number: \"x\""
        );
    }

    #[test]
    fn compressed_indexes_are_detected() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(INDEX.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(INDEX.as_bytes()).unwrap();
        let xz = xz.finish().unwrap();
        for data in [gz, xz, INDEX.as_bytes().to_vec()] {
            let packages: Vec<_> = packages_from_reader(std::io::Cursor::new(data), "P", "amd64")
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(packages.len(), 2);
        }
        let mut bad = vec![0x1f, 0x8b];
        bad.extend_from_slice(b"garbage garbage garbage");
        let err = packages_from_reader(std::io::Cursor::new(bad), "Packages.gz", "amd64")
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("Packages.gz: "), "{err}");
    }
}
