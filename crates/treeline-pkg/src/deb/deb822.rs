//! The deb822 control-file syntax (`control`, `Packages`, `status`): stanzas of
//! `Name: value` fields separated by blank lines, continuation lines indented.
//!
//! Values are kept exactly as read so databases can be written back faithfully: the first
//! line's value is trimmed, and each continuation line follows after a `\n` with its
//! leading whitespace intact (so `Description` keeps its ` .` lines). A field whose value
//! starts on the next line (`Conffiles:`) has a value beginning with `\n`.
//!
//! This is our own parser rather than deb822-fast's: that one strips continuation lines'
//! indentation and reports errors without line numbers.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::Error;

/// One stanza (paragraph): its fields in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stanza {
    /// 1-based line of the stanza's first field.
    pub line: usize,
    /// `(name, value)` in order, as read (see the module docs for the value form).
    pub fields: Vec<(String, String)>,
}

impl Stanza {
    /// The value of a field; names compare case-insensitively as dpkg does.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Reads stanzas one at a time from a buffered reader; errors name the file and line.
pub struct StanzaReader<R> {
    reader: R,
    path: PathBuf,
    line_no: usize,
    line: Vec<u8>,
    done: bool,
}

impl<R: BufRead> StanzaReader<R> {
    /// Reads from `reader`; `path` is what errors name.
    pub fn new(reader: R, path: impl Into<PathBuf>) -> Self {
        StanzaReader {
            reader,
            path: path.into(),
            line_no: 0,
            line: Vec::with_capacity(256),
            done: false,
        }
    }

    /// The file errors name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn syntax(&self, problem: impl Into<String>) -> Error {
        Error::Syntax {
            path: self.path.clone(),
            line: self.line_no,
            problem: problem.into(),
        }
    }

    fn next_stanza(&mut self) -> Result<Option<Stanza>, Error> {
        let mut stanza = Stanza::default();
        loop {
            self.line.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut self.line)
                .map_err(|error| Error::from_io(&self.path, error))?;
            if read == 0 {
                self.done = true;
                return Ok((!stanza.fields.is_empty()).then_some(stanza));
            }
            self.line_no += 1;
            let mut bytes = self.line.as_slice();
            if let Some(rest) = bytes.strip_suffix(b"\n") {
                bytes = rest;
            }
            if let Some(rest) = bytes.strip_suffix(b"\r") {
                bytes = rest;
            }
            let Ok(text) = std::str::from_utf8(bytes) else {
                return Err(self.syntax("not valid UTF-8"));
            };
            // Only an empty or indented line can be blank: test the cheap case first.
            let indented = text.starts_with([' ', '\t']);
            if text.is_empty() || (indented && text.trim().is_empty()) {
                if stanza.fields.is_empty() {
                    continue;
                }
                return Ok(Some(stanza));
            }
            if text.starts_with('#') {
                continue;
            }
            if indented {
                let Some((_, value)) = stanza.fields.last_mut() else {
                    return Err(self.syntax("continuation line before any field"));
                };
                value.push('\n');
                value.push_str(text.trim_end());
                continue;
            }
            let Some((name, value)) = text.split_once(':') else {
                return Err(self.syntax(format!("no ':' in field line {text:?}")));
            };
            if name.is_empty() || name.contains(|c: char| c.is_whitespace()) {
                return Err(self.syntax(format!("invalid field name {name:?}")));
            }
            if stanza
                .fields
                .iter()
                .any(|(seen, _)| seen.eq_ignore_ascii_case(name))
            {
                return Err(self.syntax(format!("duplicate field {name}")));
            }
            if stanza.fields.is_empty() {
                stanza.line = self.line_no;
                // Index stanzas have 15 to 25 fields: avoid regrowing the vector.
                stanza.fields.reserve(24);
            }
            stanza
                .fields
                .push((name.to_owned(), value.trim().to_owned()));
        }
    }
}

impl<R: BufRead> Iterator for StanzaReader<R> {
    type Item = Result<Stanza, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_stanza() {
            Ok(Some(stanza)) => Some(Ok(stanza)),
            Ok(None) => None,
            Err(error) => {
                // A syntax error leaves the reader mid-stanza: stop rather than resync.
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

/// Parses text that must hold exactly one stanza (a package's `control` file).
pub fn parse_single(text: &[u8], path: impl Into<PathBuf>) -> Result<Stanza, Error> {
    let mut reader = StanzaReader::new(text, path);
    let Some(first) = reader.next() else {
        return Err(Error::Syntax {
            path: reader.path.clone(),
            line: reader.line_no,
            problem: "no fields".into(),
        });
    };
    let first = first?;
    if let Some(second) = reader.next() {
        let second = second?;
        return Err(Error::Syntax {
            path: reader.path.clone(),
            line: second.line,
            problem: "more than one stanza".into(),
        });
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanzas(text: &str) -> Result<Vec<Stanza>, Error> {
        StanzaReader::new(text.as_bytes(), "test").collect()
    }

    #[test]
    fn values_keep_continuation_indentation_and_order() {
        let parsed = stanzas(
            "Package: a\nDescription: short\n long\n .\n   verbatim\nConffiles:\n /etc/a 123\n\n\nPackage: b\n",
        )
        .unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].line, 1);
        assert_eq!(
            parsed[0].fields,
            vec![
                ("Package".to_owned(), "a".to_owned()),
                (
                    "Description".to_owned(),
                    "short\n long\n .\n   verbatim".to_owned()
                ),
                ("Conffiles".to_owned(), "\n /etc/a 123".to_owned()),
            ]
        );
        assert_eq!(parsed[1].line, 10);
        assert_eq!(parsed[1].get("package"), Some("b"));
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = stanzas("Package: a\nbroken line\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "test: line 2: no ':' in field line \"broken line\"");
        let err = stanzas(" cont\n").unwrap_err().to_string();
        assert!(
            err.contains("line 1: continuation line before any field"),
            "{err}"
        );
        let err = stanzas("A: 1\na: 2\n").unwrap_err().to_string();
        assert!(err.contains("line 2: duplicate field a"), "{err}");
        let err = StanzaReader::new(&b"A: \xff\n"[..], "f")
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert_eq!(err, "f: line 1: not valid UTF-8");
    }

    #[test]
    fn single_stanza_is_enforced() {
        assert!(parse_single(b"A: 1\n\n", "c").is_ok());
        let err = parse_single(b"A: 1\n\nB: 2\n", "c")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "c: line 3: more than one stanza");
        assert!(parse_single(b"\n\n", "c").is_err());
    }
}
