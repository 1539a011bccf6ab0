//! The host's apt sources: where its Debian mirror is, which suites and components it uses,
//! and which keyring signs them.
//!
//! Reads `etc/apt/sources.list` and `etc/apt/sources.list.d/*.list` (one-line format) and
//! `etc/apt/sources.list.d/*.sources` (deb822 format) under a root directory, as apt does.
//! Only binary sources (`deb`) that are enabled are returned; `deb-src` entries, commented
//! lines and `Enabled: no` stanzas are left out.
//!
//! ```no_run
//! use std::path::Path;
//! use treeline_pkg::deb::sources::read_sources;
//!
//! for source in read_sources(Path::new("/"))? {
//!     println!("{} {:?} {:?}", source.uri, source.suites, source.components);
//! }
//! # Ok::<(), treeline_pkg::deb::sources::Error>(())
//! ```

use std::path::{Path, PathBuf};

/// Errors reading apt source files; each names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// An entry cannot be understood.
    #[error("{path}:{line}: {problem}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number (for deb822 files, the first line of the stanza).
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One binary package source: a repository URI with its suites and components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The repository base, e.g. `http://deb.debian.org/debian`.
    pub uri: String,
    /// Suites (distributions), e.g. `bookworm`, `bookworm-updates`. A suite ending in `/`
    /// is a flat repository path, and then there are no components.
    pub suites: Vec<String>,
    /// Components, e.g. `main`.
    pub components: Vec<String>,
    /// `signed-by` / `Signed-By`: keyring paths or fingerprints, or an inline armored key
    /// (deb822 only), as written.
    pub signed_by: Option<String>,
    /// `arch=` / `Architectures`: empty means apt's default architectures.
    pub architectures: Vec<String>,
    /// The file this came from.
    pub file: PathBuf,
}

/// Reads every enabled binary source configured under `root` (`/` for the host), in apt's
/// order: `etc/apt/sources.list`, then the files of `etc/apt/sources.list.d` sorted by name.
/// Missing files and directories are not errors; apt ignores them too.
pub fn read_sources(root: &Path) -> Result<Vec<Source>> {
    let mut sources = Vec::new();
    let main_list = root.join("etc/apt/sources.list");
    if let Some(text) = read_if_present(&main_list)? {
        sources.extend(parse_one_line(&text, &main_list)?);
    }
    let parts_dir = root.join("etc/apt/sources.list.d");
    let entries = match std::fs::read_dir(&parts_dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(sources),
        Err(error) => {
            return Err(Error::Io {
                path: parts_dir,
                error,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| Error::Io {
            path: parts_dir.clone(),
            error,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if is_part_file_name(name) {
            files.push(entry.path());
        }
    }
    files.sort();
    for path in files {
        let Some(text) = read_if_present(&path)? else {
            continue;
        };
        if path.extension().is_some_and(|ext| ext == "sources") {
            sources.extend(parse_deb822(&text, &path)?);
        } else {
            sources.extend(parse_one_line(&text, &path)?);
        }
    }
    Ok(sources)
}

/// apt reads only `*.list` and `*.sources` parts whose names are letters, digits, `_`, `-`
/// and `.` (so `x.list.disabled`, editor backups and dot files are skipped).
fn is_part_file_name(name: &str) -> bool {
    (name.ends_with(".list") || name.ends_with(".sources"))
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn read_if_present(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Error::Io {
            path: path.to_owned(),
            error,
        }),
    }
}

/// Parses the one-line format: `deb [opt=value ...] uri suite [component ...]`, one entry per
/// line, `#` starting a comment. `file` names the input in errors and in each [`Source`].
pub fn parse_one_line(text: &str, file: &Path) -> Result<Vec<Source>> {
    let mut sources = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let malformed = |problem: String| Error::Malformed {
            path: file.to_owned(),
            line: index + 1,
            problem,
        };
        let line = raw_line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let (kind, rest) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| malformed(format!("incomplete entry {line:?}")))?;
        let rest = rest.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(after) => {
                let (inside, after) = after
                    .split_once(']')
                    .ok_or_else(|| malformed("`[` without `]`".to_owned()))?;
                (Some(inside), after)
            }
            None => (None, rest),
        };
        match kind {
            "deb" => {}
            "deb-src" => continue,
            other => return Err(malformed(format!("unknown type {other:?}"))),
        }
        let mut words = rest.split_whitespace();
        let uri = words.next().ok_or_else(|| malformed("no URI".to_owned()))?;
        let suite = words
            .next()
            .ok_or_else(|| malformed("no suite".to_owned()))?;
        let components: Vec<String> = words.map(str::to_owned).collect();
        check_suite_components(suite, &components).map_err(malformed)?;
        let mut source = Source {
            uri: uri.to_owned(),
            suites: vec![suite.to_owned()],
            components,
            signed_by: None,
            architectures: Vec::new(),
            file: file.to_owned(),
        };
        for option in options.unwrap_or_default().split_whitespace() {
            let (name, value) = option
                .split_once('=')
                .ok_or_else(|| malformed(format!("option without a value: {option:?}")))?;
            match name {
                "arch" => source.architectures = split_list(value, ','),
                "signed-by" => source.signed_by = Some(value.to_owned()),
                _ => {}
            }
        }
        sources.push(source);
    }
    Ok(sources)
}

/// Parses the deb822 format (`*.sources`): stanzas of `Field: value` lines separated by blank
/// lines; a stanza gives one [`Source`] per URI. `file` names the input in errors and in each
/// [`Source`].
pub fn parse_deb822(text: &str, file: &Path) -> Result<Vec<Source>> {
    let mut sources = Vec::new();
    for stanza in stanzas(text, file)? {
        let malformed = |problem: String| Error::Malformed {
            path: file.to_owned(),
            line: stanza.first_line,
            problem,
        };
        let enabled = stanza
            .get("Enabled")
            .is_none_or(|value| !value.trim().eq_ignore_ascii_case("no"));
        let types = stanza
            .get("Types")
            .ok_or_else(|| malformed("no Types field".to_owned()))?;
        if !enabled || !types.split_whitespace().any(|kind| kind == "deb") {
            continue;
        }
        let uris = split_list(
            stanza
                .get("URIs")
                .ok_or_else(|| malformed("no URIs field".to_owned()))?,
            ' ',
        );
        let suites = split_list(
            stanza
                .get("Suites")
                .ok_or_else(|| malformed("no Suites field".to_owned()))?,
            ' ',
        );
        let components = stanza
            .get("Components")
            .map(|v| split_list(v, ' '))
            .unwrap_or_default();
        if uris.is_empty() || suites.is_empty() {
            return Err(malformed("empty URIs or Suites".to_owned()));
        }
        for suite in &suites {
            check_suite_components(suite, &components).map_err(malformed)?;
        }
        let signed_by = stanza.get("Signed-By").map(|value| value.trim().to_owned());
        let architectures = stanza
            .get("Architectures")
            .map(|v| split_list(v, ' '))
            .unwrap_or_default();
        for uri in uris {
            sources.push(Source {
                uri,
                suites: suites.clone(),
                components: components.clone(),
                signed_by: signed_by.clone(),
                architectures: architectures.clone(),
                file: file.to_owned(),
            });
        }
    }
    Ok(sources)
}

/// A suite ending in `/` is an exact path (no components); any other needs components.
fn check_suite_components(suite: &str, components: &[String]) -> Result<(), String> {
    match (suite.ends_with('/'), components.is_empty()) {
        (true, false) => Err(format!(
            "suite {suite:?} is an exact path and cannot have components"
        )),
        (false, true) => Err(format!("suite {suite:?} has no components")),
        _ => Ok(()),
    }
}

fn split_list(value: &str, separator: char) -> Vec<String> {
    value
        .split(|c: char| c == separator || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One deb822 stanza: fields in order, values with continuation lines joined by `\n`.
struct Stanza {
    first_line: usize,
    fields: Vec<(String, String)>,
}

impl Stanza {
    /// Field names are case-insensitive.
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

fn stanzas(text: &str, file: &Path) -> Result<Vec<Stanza>> {
    let mut stanzas = Vec::new();
    let mut current: Option<Stanza> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            stanzas.extend(current.take());
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = current.as_mut().and_then(|stanza| stanza.fields.last_mut())
            else {
                return Err(Error::Malformed {
                    path: file.to_owned(),
                    line: number,
                    problem: "continuation line outside a field".to_owned(),
                });
            };
            // A lone `.` stands for an empty line inside a multi-line value (inline keys).
            let continued = line.trim();
            value.push('\n');
            if continued != "." {
                value.push_str(continued);
            }
            continue;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| Error::Malformed {
            path: file.to_owned(),
            line: number,
            problem: format!("not a field: {line:?}"),
        })?;
        let stanza = current.get_or_insert_with(|| Stanza {
            first_line: number,
            fields: Vec::new(),
        });
        stanza
            .fields
            .push((name.trim().to_owned(), value.trim().to_owned()));
    }
    stanzas.extend(current);
    Ok(stanzas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_entries_with_options_and_comments() {
        let text = "\
# the main archive
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.example.org/debian bookworm main contrib # trailing
deb-src http://deb.example.org/debian bookworm main
#deb http://deb.example.org/debian bookworm-backports main
deb [ trusted=yes ] file:/srv/repo ./

deb http://security.example.org/debian-security bookworm-security main
";
        let sources = parse_one_line(text, Path::new("sources.list")).unwrap();
        assert_eq!(sources.len(), 3);
        let first = &sources[0];
        assert_eq!(first.uri, "http://deb.example.org/debian");
        assert_eq!(first.suites, ["bookworm"]);
        assert_eq!(first.components, ["main", "contrib"]);
        assert_eq!(first.architectures, ["amd64", "arm64"]);
        assert_eq!(
            first.signed_by.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        assert_eq!(sources[1].uri, "file:/srv/repo");
        assert_eq!(sources[1].suites, ["./"]);
        assert!(sources[1].components.is_empty());
        assert_eq!(sources[2].suites, ["bookworm-security"]);
        assert_eq!(sources[2].signed_by, None);
    }

    #[test]
    fn one_line_errors_name_file_and_line() {
        let err = parse_one_line("\ndeb http://x/debian\n", Path::new("a.list")).unwrap_err();
        assert_eq!(err.to_string(), "a.list:2: no suite");
        let err =
            parse_one_line("deb http://x/debian bookworm\n", Path::new("a.list")).unwrap_err();
        assert!(err.to_string().contains("no components"), "{err}");
        let err = parse_one_line(
            "deb [arch=amd64 http://x bookworm main\n",
            Path::new("a.list"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("without `]`"), "{err}");
        let err = parse_one_line("rpm http://x bookworm main\n", Path::new("a.list")).unwrap_err();
        assert!(err.to_string().contains("unknown type"), "{err}");
    }

    #[test]
    fn deb822_stanzas() {
        let text = "\
Types: deb deb-src
# a comment inside the stanza
URIs: http://deb.example.org/debian http://mirror.example.net/debian
Suites: bookworm bookworm-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
Architectures: amd64

Types: deb-src
URIs: http://deb.example.org/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://disabled.example.org/debian
Suites: bookworm
Components: main
Enabled: no

types: deb
uris: http://inline.example.org/repo
suites: stable
components: main
signed-by:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBF...
 -----END PGP PUBLIC KEY BLOCK-----
";
        let sources = parse_deb822(text, Path::new("debian.sources")).unwrap();
        let uris: Vec<&str> = sources.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(
            uris,
            [
                "http://deb.example.org/debian",
                "http://mirror.example.net/debian",
                "http://inline.example.org/repo"
            ]
        );
        assert_eq!(sources[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(sources[0].components, ["main", "non-free-firmware"]);
        assert_eq!(sources[0].architectures, ["amd64"]);
        assert_eq!(sources[1].suites, sources[0].suites);
        let inline = sources[2].signed_by.as_deref().unwrap();
        assert!(
            inline.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF"),
            "{inline}"
        );
    }

    #[test]
    fn deb822_errors_name_the_stanza() {
        let err = parse_deb822(
            "Types: deb\nSuites: x\nComponents: main\n",
            Path::new("b.sources"),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "b.sources:1: no URIs field");
        let err = parse_deb822(" orphan\n", Path::new("b.sources")).unwrap_err();
        assert!(err.to_string().contains("continuation"), "{err}");
    }

    #[test]
    fn reads_list_and_sources_files_under_a_root_in_apt_order() {
        let root = tempfile::tempdir().unwrap();
        let apt = root.path().join("etc/apt");
        std::fs::create_dir_all(apt.join("sources.list.d")).unwrap();
        std::fs::write(
            apt.join("sources.list"),
            "deb http://a/debian bookworm main\n",
        )
        .unwrap();
        std::fs::write(
            apt.join("sources.list.d/b.sources"),
            "Types: deb\nURIs: http://b/debian\nSuites: bookworm\nComponents: main\n",
        )
        .unwrap();
        std::fs::write(
            apt.join("sources.list.d/a.list"),
            "deb http://c/debian bookworm main\n",
        )
        .unwrap();
        std::fs::write(
            apt.join("sources.list.d/x.list.disabled"),
            "deb http://ignored/debian bookworm main\n",
        )
        .unwrap();
        let sources = read_sources(root.path()).unwrap();
        let uris: Vec<&str> = sources.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(
            uris,
            ["http://a/debian", "http://c/debian", "http://b/debian"]
        );
        assert_eq!(sources[2].file, apt.join("sources.list.d/b.sources"));

        let empty = tempfile::tempdir().unwrap();
        assert!(read_sources(empty.path()).unwrap().is_empty());
    }
}
