//! The container deployment list (`ostree/container-deployments` in the sysroot): which
//! deployments a container sysroot has, default first. Its presence marks a sysroot as
//! container mode. Format (docs/container.md): UTF-8 text, one `STATEROOT/CHECKSUM.SERIAL`
//! per line; blank lines and lines starting with `#` are ignored. Written whole (temporary
//! file, fsync, rename), so a reader sees the old list or the new one.

use std::fmt;

/// The list's path, relative to the sysroot.
pub const PATH: &str = "ostree/container-deployments";

/// The first line written, for humans who open the file.
pub const HEADER: &str = "# treeline container deployments, default first (docs/container.md)";

/// One line of the list: a deployment by stateroot and directory name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The stateroot (`ostree/deploy/<stateroot>`).
    pub stateroot: String,
    /// `<checksum>.<serial>`, the deployment directory's name.
    pub name: String,
}

impl Entry {
    /// A checked entry: the stateroot one path component of `[A-Za-z0-9._-]` not starting
    /// with `.`, the name `<64 lowercase hex>.<decimal serial>`.
    pub fn new(stateroot: &str, name: &str) -> Result<Entry, String> {
        let stateroot_ok = !stateroot.is_empty()
            && !stateroot.starts_with('.')
            && stateroot.bytes().all(is_name_char);
        if !stateroot_ok {
            return Err(format!("invalid stateroot {stateroot:?}"));
        }
        let name_ok = name.split_once('.').is_some_and(|(c, s)| {
            c.len() == 64
                && c.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                && !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
        });
        if !name_ok {
            return Err(format!(
                "invalid deployment name {name:?} (expected CHECKSUM.SERIAL)"
            ));
        }
        Ok(Entry {
            stateroot: stateroot.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The deployment directory, relative to the sysroot.
    pub fn relpath(&self) -> String {
        format!("ostree/deploy/{}/deploy/{}", self.stateroot, self.name)
    }

    /// The stateroot's shared `/var`, relative to the sysroot.
    pub fn var_relpath(&self) -> String {
        format!("ostree/deploy/{}/var", self.stateroot)
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stateroot, self.name)
    }
}

/// A line that is not `STATEROOT/CHECKSUM.SERIAL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Parse the list, default first.
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| ParseError {
            line: i + 1,
            reason,
        };
        let (stateroot, name) = line
            .split_once('/')
            .ok_or_else(|| bad(format!("{line:?} is not STATEROOT/CHECKSUM.SERIAL")))?;
        out.push(Entry::new(stateroot, name).map_err(bad)?);
    }
    Ok(out)
}

/// The file's text for `entries`, default first.
pub fn format(entries: &[Entry]) -> String {
    let mut s = String::from(HEADER);
    s.push('\n');
    for e in entries {
        s.push_str(&e.to_string());
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_round_trips_and_skips_comments() {
        let a = Entry {
            stateroot: "alpine".into(),
            name: format!("{}.0", "ab".repeat(32)),
        };
        let b = Entry {
            stateroot: "alpine".into(),
            name: format!("{}.12", "cd".repeat(32)),
        };
        let text = format(&[a.clone(), b.clone()]);
        assert!(text.starts_with("# "));
        assert_eq!(parse(&text).unwrap(), vec![a, b]);
        assert_eq!(parse(&format(&[])).unwrap(), vec![]);
    }

    #[test]
    fn bad_lines_are_named() {
        let c = "ab".repeat(32);
        for (text, line) in [
            (format!("# x\n\n../etc/{c}.0\n"), 3),
            (format!("alpine/{c}\n"), 1),
            (format!("alpine/{c}.x\n"), 1),
            ("alpine/abc.0\n".to_owned(), 1),
            (format!("{c}.0\n"), 1),
            (format!("alpine/{}.0\n", "AB".repeat(32)), 1),
        ] {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
    }
}
