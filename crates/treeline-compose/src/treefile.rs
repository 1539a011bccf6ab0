//! The treefile: a short TOML description of an OS tree (see docs/treefile.md).
//!
//! Parsing is strict: unknown keys are errors, and every error names the file, line and
//! column (from the TOML parser's spans), so a typo is reported where it is.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors reading a treefile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The treefile.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The TOML is malformed or does not match the schema.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The treefile.
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// Which package family the tree is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Alpine Linux (apk).
    Alpine,
}

/// A file copied from the host into the tree.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddFile {
    /// Host path; relative paths are relative to the treefile's directory.
    pub src: PathBuf,
    /// Absolute path inside the tree.
    pub dest: String,
    /// Permission bits, as an octal string (`"0644"`); default: the source's.
    pub mode: Option<String>,
}

/// A parsed treefile. Relative paths in it are already resolved against its directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Treefile {
    /// The ref the commit goes on (`alpine/3.19/x86_64/base`).
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// The version recorded in the commit's `version` metadata.
    pub version: Option<String>,
    /// The package family.
    pub distribution: Distribution,
    /// Target architecture (`x86_64`).
    #[serde(default = "default_arch")]
    pub arch: String,
    /// apk repository bases: directories or URLs, as lines of /etc/apk/repositories.
    pub repositories: Vec<String>,
    /// Directory of trusted apk keys (file name = key name).
    pub keys: Option<PathBuf>,
    /// Requested packages (apk world atoms: `openssh`, `busybox>=1.36`, `!vlan`).
    pub packages: Vec<String>,
    /// A rootfs tarball unpacked before any package.
    pub base: Option<PathBuf>,
    /// Files copied into the tree after the packages and their scripts.
    #[serde(default)]
    pub files: Vec<AddFile>,
    /// Written to /etc/hostname.
    pub hostname: Option<String>,
    /// Extra string metadata on the commit.
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

fn default_arch() -> String {
    "x86_64".to_owned()
}

impl Treefile {
    /// Reads and checks a treefile.
    pub fn load(path: &Path) -> Result<Treefile, Error> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::Io {
            path: path.to_owned(),
            error,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Treefile::parse(&text, path, dir)
    }

    /// Parses treefile text; `origin` names it in errors, `dir` anchors relative paths.
    pub fn parse(text: &str, origin: &Path, dir: &Path) -> Result<Treefile, Error> {
        let invalid = |span: Option<std::ops::Range<usize>>, message: String| {
            let offset = span.map(|s| s.start).unwrap_or(0).min(text.len());
            let before = &text[..offset];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            Error::Invalid {
                path: origin.to_owned(),
                line,
                column,
                message,
            }
        };
        let mut tf: Treefile =
            toml::from_str(text).map_err(|e| invalid(e.span(), e.message().to_owned()))?;
        // Semantic checks point at the key's line.
        let span_of = |key: &str| -> Option<std::ops::Range<usize>> {
            let needle = format!("\n{key}");
            text.find(&needle)
                .map(|i| i + 1..i + 1 + key.len())
                .or_else(|| text.starts_with(key).then_some(0..key.len()))
        };
        if tf.ref_name.is_empty() || tf.ref_name.starts_with('/') || tf.ref_name.contains("..") {
            return Err(invalid(
                span_of("ref"),
                format!("ref {:?} is not a valid ref name", tf.ref_name),
            ));
        }
        if tf.repositories.is_empty() {
            return Err(invalid(
                span_of("repositories"),
                "at least one repository is needed".to_owned(),
            ));
        }
        if tf.packages.is_empty() {
            return Err(invalid(
                span_of("packages"),
                "at least one package is needed".to_owned(),
            ));
        }
        for f in &tf.files {
            if !f.dest.starts_with('/') || f.dest.split('/').any(|c| c == "..") {
                return Err(invalid(
                    span_of("[[files]]"),
                    format!(
                        "files: dest {:?} must be an absolute path without ..",
                        f.dest
                    ),
                ));
            }
            if let Some(m) = &f.mode
                && u32::from_str_radix(m, 8).map_or(true, |m| m > 0o7777)
            {
                return Err(invalid(
                    span_of("[[files]]"),
                    format!("files: mode {m:?} is not an octal permission (\"0644\")"),
                ));
            }
        }
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        if let Some(k) = tf.keys.as_mut() {
            anchor(k);
        }
        if let Some(b) = tf.base.as_mut() {
            anchor(b);
        }
        for f in &mut tf.files {
            anchor(&mut f.src);
        }
        for r in &mut tf.repositories {
            if !r.contains("://") && !r.starts_with('/') {
                *r = dir.join(&*r).display().to_string();
            }
        }
        Ok(tf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Treefile, Error> {
        Treefile::parse(text, Path::new("t.toml"), Path::new("/tf"))
    }

    #[test]
    fn minimal_treefile_parses_and_anchors_relative_paths() {
        let tf = parse(
            "ref = \"a/b\"\ndistribution = \"alpine\"\nrepositories = [\"repo\", \"https://x/y\"]\n\
             keys = \"keys\"\npackages = [\"alpine-base\"]\n[[files]]\nsrc = \"motd\"\ndest = \"/etc/motd\"\n",
        )
        .unwrap();
        assert_eq!(tf.ref_name, "a/b");
        assert_eq!(tf.arch, "x86_64");
        assert_eq!(tf.repositories, ["/tf/repo", "https://x/y"]);
        assert_eq!(tf.keys.as_deref(), Some(Path::new("/tf/keys")));
        assert_eq!(tf.files[0].src, Path::new("/tf/motd"));
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let err = parse(
            "ref = \"a\"\ndistribution = \"alpine\"\nrepositories = [\"r\"]\npackages = [\"x\"]\npackags = []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("t.toml:5:"), "{err}");
        assert!(err.contains("packags"), "{err}");
    }

    #[test]
    fn unknown_distribution_names_its_line() {
        let err = parse("ref = \"a\"\ndistribution = \"gentoo\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.toml:2:"), "{err}");
    }

    #[test]
    fn empty_package_list_is_refused() {
        let err = parse(
            "ref = \"a\"\ndistribution = \"alpine\"\nrepositories = [\"r\"]\npackages = []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("t.toml:4:"), "{err}");
    }

    #[test]
    fn example_treefile_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let tf = Treefile::load(&dir.join("alpine-minimal.toml")).unwrap();
        assert_eq!(tf.packages, ["alpine-base", "openssh"]);
        assert_eq!(tf.files[0].src, dir.join("motd"));
        assert!(tf.files[0].src.is_file());
        assert_eq!(tf.metadata["org.example.variant"], "minimal");
    }
}
