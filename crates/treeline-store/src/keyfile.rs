//! GLib "key files" (`GKeyFile`): the INI-like format of OSTree's repository `config`,
//! remote `.conf` files and deployment `.origin` files.
//!
//! This module mirrors GLib's `GKeyFile` (as loaded with `G_KEY_FILE_KEEP_COMMENTS |
//! G_KEY_FILE_KEEP_TRANSLATIONS`) instead of using an INI crate, because no crate reads and
//! writes these files the way GLib does: `rust-ini` and `configparser` differ from GLib on
//! escapes (`\s`, `\n`, ...), `;`-separated lists, inline comments, duplicate keys and groups,
//! and `key[locale]` keys.
//!
//! # Format
//!
//! ```text
//! # A comment: only lines whose first non-blank character is '#'.
//! [core]
//! repo_version=1
//! mode=archive-z2
//!
//! [remote "origin"]
//! url=http://127.0.0.1:8080/repo # not a comment: part of the value
//! branches=main;stable\;old;
//! Name[de]=a locale variant, a key of its own
//! ```
//!
//! - A group header is `[name]`; the name may hold anything but `[`, `]` and control
//!   characters (spaces and quotes are fine). Blanks after the `]` are ignored.
//! - In `key=value` the blanks before the key and around the `=` are dropped; blanks at the
//!   end of the value are kept. A line ending in `\r\n` loses the `\r`.
//! - Values are stored as written ([`KeyFile::raw_value`]). Read as a string, `\s`, `\n`, `\t`,
//!   `\r` and `\\` are unescaped and any other escape is an error; read as a list, the value
//!   is split at `;` and `\;` is a literal `;`.
//! - A key given twice in one group keeps the later value (at the place of the first); a group
//!   header given twice continues the first group of that name.
//! - Comments and blank lines are kept, and belong to the key or group header that follows
//!   them (lines after the last key of the file belong to the end of the file), so
//!   [`KeyFile::to_data`] gives back the text it was parsed from, except for the
//!   normalisations above (`key = value` becomes `key=value`, `[g]  ` becomes `[g]`,
//!   `\r\n` becomes `\n`, and the earlier line of a duplicated key is dropped).
//!
//! # Where this differs from GLib
//!
//! - Duplicate keys: GLib keeps both lines (and lists the key twice) but reads the later
//!   value; here the later value replaces the earlier one in place and is written once.
//! - [`KeyFile::remove_group`] also removes the comment block directly above the group's
//!   header (GLib instead removes the comments after the group's last key, which are the ones
//!   above the *next* header) and does not leave a stray blank line at the end of the file.
//! - `ostree` itself loads these files without flags, so GLib drops their comments and the
//!   `key[locale]` keys of other locales; keeping them changes none of the values it reads.
//! - Text containing NUL is rejected; GLib would silently truncate at it.
//! - GLib 2.76 and older added the blank line between groups at write time (even between a
//!   comment and the header it precedes); like GLib 2.77+, this writes the text as it was
//!   read and only adds a blank line before a group that is created by a setter.

use std::mem;

/// Errors from parsing a key file or from reading one of its values as a type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// The text is not a well-formed key file.
    #[error("key file line {line}: {message}")]
    Parse {
        /// The 1-based number of the offending line.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A key exists but its value cannot be read as the type asked for.
    #[error("key file group [{group}] key {key}: {message}")]
    InvalidValue {
        /// The group holding the key.
        group: String,
        /// The key whose value is invalid.
        key: String,
        /// What is wrong with the value.
        message: String,
    },
}

/// A GLib key file: groups of `key=value` pairs, with the comments and layout of the text it
/// was read from.
///
/// Groups and keys keep the order in which they appear; a key set for the first time goes
/// after the last key of its group, a new group goes at the end of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFile {
    /// Comment and blank lines before the first group header.
    preamble: Vec<String>,
    groups: Vec<Group>,
    /// Comment and blank lines after the last key (or header) of the file.
    trailer: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    name: String,
    /// Comment and blank lines just above the header.
    comments: Vec<String>,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    key: String,
    /// The value as written in the file (escapes not processed).
    value: String,
    /// Comment and blank lines just above the key.
    comments: Vec<String>,
}

impl KeyFile {
    /// An empty key file, with no groups.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the text of a key file, as `g_key_file_load_from_data` does.
    ///
    /// Fails on the first line that is not a comment, a blank line, a `[group]` header or a
    /// `key=value` pair, on an invalid group or key name, on a key before the first group,
    /// and (as GLib) on an `Encoding` key other than `UTF-8` in the first group.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut kf = Self::new();
        let mut current: Option<usize> = None;
        let mut pending: Vec<String> = Vec::new();

        for (index, terminated) in text.split_terminator('\n').enumerate() {
            let line_number = index + 1;
            let error = |message: String| KeyFileError::Parse {
                line: line_number,
                message,
            };
            let line = terminated.strip_suffix('\r').unwrap_or(terminated);
            if line.contains('\0') {
                return Err(error("line contains a NUL character".to_owned()));
            }
            let start = line.trim_start_matches(is_glib_space);

            if start.is_empty() || start.starts_with('#') {
                // Comments and blank lines are kept verbatim, indentation included.
                pending.push(line.to_owned());
            } else if let Some(name) = group_header_name(start) {
                if !is_glib_group_name(name) {
                    return Err(error(format!("invalid group name {name:?}")));
                }
                if let Some(existing) = kf.group_index(name) {
                    // A repeated header continues the first group of that name; the
                    // comments above it stay pending for whatever comes next.
                    current = Some(existing);
                } else {
                    let comments = mem::take(&mut pending);
                    if kf.groups.is_empty() {
                        kf.preamble = comments;
                        kf.groups.push(Group::new(name, Vec::new()));
                    } else {
                        kf.groups.push(Group::new(name, comments));
                    }
                    current = Some(kf.groups.len() - 1);
                }
            } else if let Some(eq) = start.find('=').filter(|&eq| eq > 0) {
                let Some(group) = current.and_then(|i| kf.groups.get_mut(i)) else {
                    return Err(error(
                        "key-value pair before the first group header".to_owned(),
                    ));
                };
                let key = start[..eq].trim_end_matches(is_glib_space);
                if !is_glib_key_name(key) {
                    return Err(error(format!("invalid key name {key:?}")));
                }
                let value = start[eq + 1..].trim_start_matches(is_glib_space);
                if current == Some(0) && key == "Encoding" && !value.eq_ignore_ascii_case("UTF-8") {
                    return Err(error(format!("unsupported encoding {value:?}")));
                }
                if let Some(entry) = group.entry_mut(key) {
                    // The later value wins; comments above the later line stay pending.
                    entry.value = value.to_owned();
                } else {
                    group.entries.push(Entry {
                        key: key.to_owned(),
                        value: value.to_owned(),
                        comments: mem::take(&mut pending),
                    });
                }
            } else {
                return Err(error(format!(
                    "{line:?} is not a group header, key=value pair or comment"
                )));
            }
        }

        if kf.groups.is_empty() {
            kf.preamble = pending;
        } else {
            kf.trailer = pending;
        }
        Ok(kf)
    }

    /// Serialises the key file, as `g_key_file_to_data` does: each comment line, `[group]`
    /// header and `key=value` pair on a line of its own, each line ending in `\n`.
    pub fn to_data(&self) -> String {
        fn push_lines(out: &mut String, lines: &[String]) {
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
        }

        let mut out = String::new();
        push_lines(&mut out, &self.preamble);
        for group in &self.groups {
            push_lines(&mut out, &group.comments);
            out.push('[');
            out.push_str(&group.name);
            out.push_str("]\n");
            for entry in &group.entries {
                push_lines(&mut out, &entry.comments);
                out.push_str(&entry.key);
                out.push('=');
                out.push_str(&entry.value);
                out.push('\n');
            }
        }
        push_lines(&mut out, &self.trailer);
        out
    }

    /// The names of the groups, in file order.
    pub fn groups(&self) -> impl Iterator<Item = &str> + use<'_> {
        self.groups.iter().map(|g| g.name.as_str())
    }

    /// Whether the file has a group of this name.
    pub fn has_group(&self, group: &str) -> bool {
        self.group_index(group).is_some()
    }

    /// Whether `group` has a key named exactly `key` (a `key[locale]` variant does not count).
    pub fn has_key(&self, group: &str, key: &str) -> bool {
        self.raw_value(group, key).is_some()
    }

    /// The keys of `group` in file order, `key[locale]` variants included verbatim; nothing if
    /// there is no such group.
    pub fn keys<'a>(&'a self, group: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        self.group(group)
            .into_iter()
            .flat_map(|g| g.entries.iter().map(|e| e.key.as_str()))
    }

    /// The value of `key` in `group` exactly as written in the file, escapes not processed
    /// (`g_key_file_get_value`); `None` if the group or key is missing.
    pub fn raw_value(&self, group: &str, key: &str) -> Option<&str> {
        self.group(group)?
            .entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    }

    /// The value of `key` in `group` with escapes processed (`g_key_file_get_string`);
    /// `Ok(None)` if the group or key is missing.
    ///
    /// `\s`, `\n`, `\t`, `\r` and `\\` are unescaped. Any other escape, `\;` included (as in
    /// GLib, `\;` is only valid in lists), and a `\` ending the value are errors.
    pub fn string(&self, group: &str, key: &str) -> Result<Option<String>, KeyFileError> {
        let Some(raw) = self.raw_value(group, key) else {
            return Ok(None);
        };
        let mut pieces = unescape(raw, false).map_err(|m| invalid(group, key, m))?;
        Ok(Some(pieces.pop().unwrap_or_default()))
    }

    /// The value of `key` in `group` as a boolean (`g_key_file_get_boolean`): `true` or `1`,
    /// `false` or `0`, blanks at the end ignored; `Ok(None)` if the group or key is missing.
    pub fn boolean(&self, group: &str, key: &str) -> Result<Option<bool>, KeyFileError> {
        let Some(raw) = self.raw_value(group, key) else {
            return Ok(None);
        };
        match raw.trim_end_matches(is_glib_space) {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            _ => Err(invalid(
                group,
                key,
                format!("value {raw:?} is not a boolean (true, false, 1 or 0)"),
            )),
        }
    }

    /// The value of `key` in `group` as a decimal integer with an optional sign, blanks
    /// around it ignored; `Ok(None)` if the group or key is missing.
    ///
    /// Unlike `g_key_file_get_integer` (32 bits, and anything after a blank ignored) the
    /// range is that of `i64` and the whole value must be the number.
    pub fn integer(&self, group: &str, key: &str) -> Result<Option<i64>, KeyFileError> {
        let Some(raw) = self.raw_value(group, key) else {
            return Ok(None);
        };
        raw.trim_matches(is_glib_space)
            .parse::<i64>()
            .map(Some)
            .map_err(|e| {
                invalid(
                    group,
                    key,
                    format!("value {raw:?} is not a 64-bit decimal integer: {e}"),
                )
            })
    }

    /// The value of `key` in `group` as a `;`-separated list (`g_key_file_get_string_list`);
    /// `Ok(None)` if the group or key is missing.
    ///
    /// `\;` is a literal `;` and the escapes of [`KeyFile::string`] apply to each element.
    /// A `;` ending the value ends the last element rather than starting an empty one, so
    /// `a;b\;c;d;` and `a;b\;c;d` are both `["a", "b;c", "d"]`, and an empty value is an
    /// empty list.
    pub fn string_list(&self, group: &str, key: &str) -> Result<Option<Vec<String>>, KeyFileError> {
        let Some(raw) = self.raw_value(group, key) else {
            return Ok(None);
        };
        unescape(raw, true)
            .map(Some)
            .map_err(|m| invalid(group, key, m))
    }

    /// Sets `key` in `group` to the string `value`, escaped as `g_key_file_set_string` does:
    /// `\`, newline and carriage return always, spaces and tabs only at the start of the
    /// value (as `\s` and `\t`).
    ///
    /// The group is created if missing. Nothing is changed if the group or key name is
    /// invalid (see [`KeyFile::is_valid_group_name`] and [`KeyFile::is_valid_key_name`]) or
    /// the value contains NUL.
    pub fn set_string(&mut self, group: &str, key: &str, value: &str) {
        if !value.contains('\0') {
            self.set_raw_value(group, key, &escape(value, false));
        }
    }

    /// Sets `key` in `group` to `value` written verbatim (`g_key_file_set_value`); the value
    /// should already be escaped, and blanks at its start would be lost on re-reading.
    ///
    /// An existing key keeps its place; a new key goes after the last key of its group; a
    /// missing group is created at the end of the file, after a blank line unless the file
    /// already ends with a comment or blank line. Nothing is changed if the group or key name
    /// is invalid (see [`KeyFile::is_valid_group_name`] and [`KeyFile::is_valid_key_name`])
    /// or the value contains a line break or NUL (which GLib would write, corrupting the file).
    pub fn set_raw_value(&mut self, group: &str, key: &str, value: &str) {
        if !Self::is_valid_group_name(group)
            || !Self::is_valid_key_name(key)
            || value.contains(['\n', '\r', '\0'])
        {
            return;
        }
        let group = self.group_or_create(group);
        if let Some(entry) = group.entry_mut(key) {
            value.clone_into(&mut entry.value);
        } else {
            group.entries.push(Entry {
                key: key.to_owned(),
                value: value.to_owned(),
                comments: Vec::new(),
            });
        }
    }

    /// Sets `key` in `group` to `true` or `false`, like [`KeyFile::set_raw_value`].
    pub fn set_boolean(&mut self, group: &str, key: &str, value: bool) {
        self.set_raw_value(group, key, if value { "true" } else { "false" });
    }

    /// Sets `key` in `group` to `value` in decimal, like [`KeyFile::set_raw_value`].
    pub fn set_integer(&mut self, group: &str, key: &str, value: i64) {
        self.set_raw_value(group, key, &value.to_string());
    }

    /// Sets `key` in `group` to a list, as `g_key_file_set_string_list` does: each element
    /// escaped as by [`KeyFile::set_string`] with `;` as `\;`, and followed by `;`
    /// (`["a", "b;c", "d"]` is written `a;b\;c;d;`, an empty list as an empty value).
    ///
    /// Nothing is changed if the group or key name is invalid or an element contains NUL.
    pub fn set_string_list(&mut self, group: &str, key: &str, values: &[impl AsRef<str>]) {
        let mut raw = String::new();
        for value in values {
            let value = value.as_ref();
            if value.contains('\0') {
                return;
            }
            raw.push_str(&escape(value, true));
            raw.push(';');
        }
        self.set_raw_value(group, key, &raw);
    }

    /// Removes `key` from `group`; returns whether it was there.
    ///
    /// As in GLib, the comments above the key are kept (they end up above whatever followed
    /// the key).
    pub fn remove_key(&mut self, group: &str, key: &str) -> bool {
        let Some(gi) = self.group_index(group) else {
            return false;
        };
        let (removed, following) = {
            let (before, after) = self.groups.split_at_mut(gi + 1);
            let Some(this) = before.last_mut() else {
                return false;
            };
            let Some(ki) = this.entries.iter().position(|e| e.key == key) else {
                return false;
            };
            let removed = this.entries.remove(ki);
            let following = match this.entries.get_mut(ki) {
                Some(next) => &mut next.comments,
                None => match after.first_mut() {
                    Some(next_group) => &mut next_group.comments,
                    None => &mut self.trailer,
                },
            };
            (removed, following)
        };
        following.splice(0..0, removed.comments);
        true
    }

    /// Removes `group` and all its keys; returns whether it was there.
    ///
    /// The comment block directly above the group's header goes with it, together with the
    /// blank lines separating that block from what precedes it; comments further up (after
    /// the previous group's last key) are kept.
    pub fn remove_group(&mut self, group: &str) -> bool {
        let Some(gi) = self.group_index(group) else {
            return false;
        };
        let mut removed = self.groups.remove(gi);
        // Keep the comments that precede the header's own block and the blank lines above it.
        let mut end = removed.comments.len();
        while end > 0 && !is_blank_line(&removed.comments[end - 1]) {
            end -= 1;
        }
        while end > 0 && is_blank_line(&removed.comments[end - 1]) {
            end -= 1;
        }
        removed.comments.truncate(end);

        let following = match self.groups.get_mut(gi) {
            Some(next) => &mut next.comments,
            None => &mut self.trailer,
        };
        following.splice(0..0, removed.comments);
        // What now directly follows the preamble needs no blank line separating it from a
        // group that is gone, unless the preamble is a comment that should stay apart.
        if gi == 0 && self.preamble.last().is_none_or(|l| is_blank_line(l)) {
            let blanks = following.iter().take_while(|l| is_blank_line(l)).count();
            following.drain(..blanks);
        }
        true
    }

    /// Whether [`KeyFile::set_raw_value`] and the other setters accept `name` as a group name:
    /// not empty, and without `[`, `]` or control characters (as GLib).
    pub fn is_valid_group_name(name: &str) -> bool {
        is_glib_group_name(name)
    }

    /// Whether [`KeyFile::set_raw_value`] and the other setters accept `key` as a key name:
    /// not empty, without `=`, `[` or `]` except for a `[locale]` suffix of letters, digits
    /// and `-_.@`, and not starting or ending with a space (as GLib); moreover not starting
    /// with `#` and without control characters, which GLib accepts but cannot read back.
    pub fn is_valid_key_name(key: &str) -> bool {
        is_glib_key_name(key) && !key.starts_with('#') && !key.chars().any(|c| c.is_ascii_control())
    }

    fn group_index(&self, name: &str) -> Option<usize> {
        self.groups.iter().position(|g| g.name == name)
    }

    fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The group called `name`, created at the end of the file if missing. As GLib does for
    /// a created group, a blank line separates it from the previous group unless the file
    /// already ends with a comment or blank line (which then sits above the new header).
    fn group_or_create(&mut self, name: &str) -> &mut Group {
        let index = match self.group_index(name) {
            Some(index) => index,
            None => {
                let mut comments = mem::take(&mut self.trailer);
                if comments.is_empty() && !self.groups.is_empty() {
                    comments.push(String::new());
                }
                self.groups.push(Group::new(name, comments));
                self.groups.len() - 1
            }
        };
        &mut self.groups[index]
    }
}

impl Group {
    fn new(name: &str, comments: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            comments,
            entries: Vec::new(),
        }
    }

    fn entry_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.key == key)
    }
}

fn invalid(group: &str, key: &str, message: String) -> KeyFileError {
    KeyFileError::InvalidValue {
        group: group.to_owned(),
        key: key.to_owned(),
        message,
    }
}

/// `g_ascii_isspace`: unlike `char::is_ascii_whitespace` it includes vertical tab.
fn is_glib_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

fn is_blank_line(line: &str) -> bool {
    line.chars().all(is_glib_space)
}

/// The name in a `[name]` header line (leading blanks already removed), if it is one: the
/// text up to the first `]`, which may only be followed by spaces and tabs.
fn group_header_name(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let close = rest.find(']')?;
    rest[close + 1..]
        .chars()
        .all(|c| c == ' ' || c == '\t')
        .then(|| &rest[..close])
}

/// `g_key_file_is_group_name`.
fn is_glib_group_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '[' || c == ']' || c.is_ascii_control())
}

/// `g_key_file_is_key_name`: a non-empty base without `=`, `[`, `]` or a space at either end,
/// optionally followed by `[locale]`.
fn is_glib_key_name(key: &str) -> bool {
    let base_end = key.find(['=', '[', ']']).unwrap_or(key.len());
    let (base, rest) = key.split_at(base_end);
    if base.is_empty() || base.starts_with(' ') || base.ends_with(' ') {
        return false;
    }
    if rest.is_empty() {
        return true;
    }
    let Some(locale) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return false;
    };
    locale
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// `g_key_file_parse_value_as_string`: processes escapes, and with `list` splits at unescaped
/// `;` (a final `;` does not start an empty element). Without `list` the result is a single
/// string.
fn unescape(raw: &str, list: bool) -> Result<Vec<String>, String> {
    let mut pieces = Vec::new();
    let mut current = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('s') => current.push(' '),
                Some('n') => current.push('\n'),
                Some('t') => current.push('\t'),
                Some('r') => current.push('\r'),
                Some('\\') => current.push('\\'),
                Some(';') if list => current.push(';'),
                Some(other) => {
                    return Err(format!(
                        "value {raw:?} contains invalid escape sequence \"\\{other}\""
                    ));
                }
                None => return Err(format!("value {raw:?} ends with an escape character")),
            },
            ';' if list => pieces.push(mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    if !list || !current.is_empty() {
        pieces.push(current);
    }
    Ok(pieces)
}

/// `g_key_file_parse_string_as_value`: escapes `\`, newline and carriage return everywhere,
/// spaces and tabs while no other character has been written yet (in a list element: since
/// the element's start or the last `\;`), and with `list` the `;` separator.
fn escape(value: &str, list: bool) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    let mut leading = true;
    for c in value.chars() {
        match c {
            ' ' if leading => out.push_str("\\s"),
            '\t' if leading => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' => {
                out.push_str("\\\\");
                leading = false;
            }
            ';' if list => {
                out.push_str("\\;");
                leading = true;
            }
            _ => {
                out.push(c);
                leading = false;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OSTREE_CONFIG: &str = "[core]\nrepo_version=1\nmode=archive-z2\n\n[remote \"origin\"]\nurl=http://127.0.0.1:8080/repo\ngpg-verify=false\n";

    fn parse(text: &str) -> KeyFile {
        match KeyFile::parse(text) {
            Ok(kf) => kf,
            Err(e) => panic!("failed to parse {text:?}: {e}"),
        }
    }

    fn parse_error_line(text: &str) -> usize {
        match KeyFile::parse(text) {
            Err(KeyFileError::Parse { line, .. }) => line,
            other => panic!("expected a parse error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn group_names_may_contain_spaces_and_quotes() {
        let kf = parse("[remote \"origin\"]\nurl=http://x/repo\n[a b  c]\nk=v\n");
        assert_eq!(
            kf.groups().collect::<Vec<_>>(),
            ["remote \"origin\"", "a b  c"]
        );
        assert!(kf.has_group("remote \"origin\""));
        assert_eq!(
            kf.raw_value("remote \"origin\"", "url"),
            Some("http://x/repo")
        );
    }

    #[test]
    fn blanks_after_group_header_are_ignored() {
        let kf = parse("  [core] \t\nmode=bare\n");
        assert_eq!(kf.groups().collect::<Vec<_>>(), ["core"]);
        assert_eq!(kf.to_data(), "[core]\nmode=bare\n");
    }

    #[test]
    fn blanks_before_key_and_around_equals_are_trimmed() {
        let kf = parse("[g]\n  \tkey \t=  \tvalue\n");
        assert_eq!(kf.keys("g").collect::<Vec<_>>(), ["key"]);
        assert_eq!(kf.raw_value("g", "key"), Some("value"));
        assert_eq!(kf.to_data(), "[g]\nkey=value\n");
    }

    #[test]
    fn trailing_blanks_of_value_are_kept() {
        let kf = parse("[g]\nkey=value   \nempty=\n");
        assert_eq!(kf.raw_value("g", "key"), Some("value   "));
        assert_eq!(kf.string("g", "key"), Ok(Some("value   ".to_owned())));
        assert_eq!(kf.raw_value("g", "empty"), Some(""));
    }

    #[test]
    fn value_may_contain_equals_signs() {
        let kf = parse("[g]\nurl=http://x/?a=b&c==d\n");
        assert_eq!(kf.raw_value("g", "url"), Some("http://x/?a=b&c==d"));
    }

    #[test]
    fn hash_after_value_is_not_a_comment() {
        let kf = parse("[g]\nurl=http://x/repo # x\n");
        assert_eq!(kf.raw_value("g", "url"), Some("http://x/repo # x"));
    }

    #[test]
    fn only_lines_starting_with_hash_are_comments() {
        let kf = parse("# top\n[g]\n   # indented comment\n;not a comment=1\n");
        assert_eq!(kf.keys("g").collect::<Vec<_>>(), [";not a comment"]);
        assert_eq!(parse_error_line("[g]\n; ini-style comment\n"), 2);
    }

    #[test]
    fn round_trip_preserves_comments_and_blank_lines() {
        let text = "# Generated file\n\n[core]\n# the version\nrepo_version=1\n\n   # indented\nmode=bare\n  \t \n# about origin\n[remote \"origin\"]\nurl=http://x/repo # not a comment\n\n# at the end\n";
        assert_eq!(parse(text).to_data(), text);
    }

    #[test]
    fn comment_directly_above_group_header_is_kept_as_is() {
        let text = "[a]\nx=1\n# about b\n[b]\ny=2\n";
        assert_eq!(parse(text).to_data(), text);
    }

    #[test]
    fn round_trip_of_ostree_config_is_exact() {
        let kf = parse(OSTREE_CONFIG);
        assert_eq!(kf.to_data(), OSTREE_CONFIG);
        assert_eq!(kf.string("core", "mode"), Ok(Some("archive-z2".to_owned())));
        assert_eq!(kf.integer("core", "repo_version"), Ok(Some(1)));
        assert_eq!(
            kf.boolean("remote \"origin\"", "gpg-verify"),
            Ok(Some(false))
        );
    }

    #[test]
    fn ostree_config_built_from_scratch_serialises_exactly() {
        let mut kf = KeyFile::new();
        kf.set_integer("core", "repo_version", 1);
        kf.set_string("core", "mode", "archive-z2");
        kf.set_string("remote \"origin\"", "url", "http://127.0.0.1:8080/repo");
        kf.set_boolean("remote \"origin\"", "gpg-verify", false);
        assert_eq!(kf.to_data(), OSTREE_CONFIG);
    }

    #[test]
    fn new_file_serialises_without_extra_blank_lines() {
        let mut kf = KeyFile::new();
        assert_eq!(kf.to_data(), "");
        kf.set_string("core", "repo_version", "1");
        kf.set_string("core", "mode", "bare");
        assert_eq!(kf.to_data(), "[core]\nrepo_version=1\nmode=bare\n");
    }

    #[test]
    fn order_of_groups_and_keys_is_kept() {
        let kf = parse("[z]\nb=1\na=2\nc=3\n[a]\nz=1\n[m]\n");
        assert_eq!(kf.groups().collect::<Vec<_>>(), ["z", "a", "m"]);
        assert_eq!(kf.keys("z").collect::<Vec<_>>(), ["b", "a", "c"]);
        assert_eq!(kf.keys("m").count(), 0);
    }

    #[test]
    fn setting_existing_key_replaces_value_in_place() {
        let mut kf = parse("[core]\n# version\nrepo_version=1\nmode=bare\n");
        kf.set_string("core", "repo_version", "2");
        assert_eq!(
            kf.to_data(),
            "[core]\n# version\nrepo_version=2\nmode=bare\n"
        );
    }

    #[test]
    fn new_key_goes_after_last_key_of_its_group() {
        let mut kf = parse(OSTREE_CONFIG);
        kf.set_string("core", "min-free-space-percent", "3");
        assert_eq!(
            kf.to_data(),
            "[core]\nrepo_version=1\nmode=archive-z2\nmin-free-space-percent=3\n\n[remote \"origin\"]\nurl=http://127.0.0.1:8080/repo\ngpg-verify=false\n"
        );
        kf.set_string("remote \"origin\"", "branches", "main;");
        assert!(kf.to_data().ends_with("gpg-verify=false\nbranches=main;\n"));
    }

    #[test]
    fn new_key_goes_before_comments_that_end_the_file() {
        let mut kf = parse("[a]\nx=1\n\n# the end\n");
        kf.set_string("a", "y", "2");
        assert_eq!(kf.to_data(), "[a]\nx=1\ny=2\n\n# the end\n");
    }

    #[test]
    fn new_group_is_appended_after_a_blank_line() {
        let mut kf = parse("[core]\nmode=bare\n");
        kf.set_string("remote \"a\"", "url", "http://a");
        kf.set_string("remote \"b\"", "url", "http://b");
        assert_eq!(
            kf.to_data(),
            "[core]\nmode=bare\n\n[remote \"a\"]\nurl=http://a\n\n[remote \"b\"]\nurl=http://b\n"
        );
    }

    #[test]
    fn new_group_after_trailing_comment_adds_no_blank_line() {
        let mut kf = parse("[core]\nmode=bare\n\n");
        kf.set_string("new", "k", "v");
        assert_eq!(kf.to_data(), "[core]\nmode=bare\n\n[new]\nk=v\n");

        let mut kf = parse("# only a comment\n");
        kf.set_string("new", "k", "v");
        assert_eq!(kf.to_data(), "# only a comment\n[new]\nk=v\n");
    }

    #[test]
    fn string_unescapes_s_n_t_r_and_backslash() {
        let kf = parse("[g]\nk=\\sa\\tb\\nc\\rd\\\\e\\s\n");
        assert_eq!(kf.string("g", "k"), Ok(Some(" a\tb\nc\rd\\e ".to_owned())));
        assert_eq!(kf.raw_value("g", "k"), Some("\\sa\\tb\\nc\\rd\\\\e\\s"));
    }

    #[test]
    fn string_rejects_unknown_escape_naming_group_and_key() {
        let kf = parse("[g]\nk=a\\qb\nend=a\\\n");
        match kf.string("g", "k") {
            Err(KeyFileError::InvalidValue {
                group,
                key,
                message,
            }) => {
                assert_eq!((group.as_str(), key.as_str()), ("g", "k"));
                assert!(message.contains("\\q"), "{message}");
            }
            other => panic!("expected an invalid value error, got {other:?}"),
        }
        assert!(matches!(
            kf.string("g", "end"),
            Err(KeyFileError::InvalidValue { .. })
        ));
    }

    #[test]
    fn string_rejects_escaped_list_separator_like_glib() {
        let kf = parse("[g]\nk=a\\;b\n");
        assert!(matches!(
            kf.string("g", "k"),
            Err(KeyFileError::InvalidValue { .. })
        ));
        assert_eq!(kf.string_list("g", "k"), Ok(Some(vec!["a;b".to_owned()])));
    }

    #[test]
    fn string_keeps_unescaped_semicolons() {
        let kf = parse("[g]\nk=a;b;\n");
        assert_eq!(kf.string("g", "k"), Ok(Some("a;b;".to_owned())));
    }

    #[test]
    fn set_string_escapes_like_glib() {
        let mut kf = KeyFile::new();
        kf.set_string("g", "lead", "  two spaces");
        kf.set_string("g", "inner", "a b  c\td ");
        kf.set_string("g", "tab", "\t x");
        kf.set_string("g", "ctl", "back\\slash\nnew\rcr");
        kf.set_string("g", "semi", "a;b");
        assert_eq!(kf.raw_value("g", "lead"), Some("\\s\\stwo spaces"));
        assert_eq!(kf.raw_value("g", "inner"), Some("a b  c\td "));
        assert_eq!(kf.raw_value("g", "tab"), Some("\\t\\sx"));
        assert_eq!(kf.raw_value("g", "ctl"), Some("back\\\\slash\\nnew\\rcr"));
        assert_eq!(kf.raw_value("g", "semi"), Some("a;b"));
    }

    #[test]
    fn set_string_round_trips_through_text() {
        let values = [
            "",
            " ",
            " lead",
            "trail ",
            "\t\ttabs\t",
            "multi\nline\r\n",
            "back\\slash\\",
            "semi;colon;",
            "ünïcödé ☃",
            "# not a comment",
            "=eq",
        ];
        let mut kf = KeyFile::new();
        for (i, value) in values.iter().enumerate() {
            kf.set_string("g", &format!("k{i}"), value);
        }
        let reread = parse(&kf.to_data());
        for (i, value) in values.iter().enumerate() {
            assert_eq!(
                reread.string("g", &format!("k{i}")),
                Ok(Some((*value).to_owned()))
            );
        }
    }

    #[test]
    fn string_list_splits_at_unescaped_semicolons() {
        let kf = parse(
            "[g]\nbranches=a;b\\;c;d;\nnotrail=a;b\nempty=\nholes=a;;b;\nlone=;\nesc=\\sx;y\\n;\n",
        );
        let list = |key: &str| kf.string_list("g", key);
        assert_eq!(
            list("branches"),
            Ok(Some(vec!["a".into(), "b;c".into(), "d".into()]))
        );
        assert_eq!(list("notrail"), Ok(Some(vec!["a".into(), "b".into()])));
        assert_eq!(list("empty"), Ok(Some(vec![])));
        assert_eq!(
            list("holes"),
            Ok(Some(vec!["a".into(), String::new(), "b".into()]))
        );
        assert_eq!(list("lone"), Ok(Some(vec![String::new()])));
        assert_eq!(list("esc"), Ok(Some(vec![" x".into(), "y\n".into()])));
        assert_eq!(list("missing"), Ok(None));
    }

    #[test]
    fn string_list_rejects_unknown_escape() {
        let kf = parse("[g]\nk=a;b\\x;\n");
        assert!(matches!(
            kf.string_list("g", "k"),
            Err(KeyFileError::InvalidValue { .. })
        ));
    }

    #[test]
    fn set_string_list_writes_trailing_separator_after_every_element() {
        let mut kf = KeyFile::new();
        kf.set_string_list("g", "branches", &["a", "b;c", "d"]);
        kf.set_string_list("g", "none", &[] as &[&str]);
        kf.set_string_list("g", "spaces", &[" a", "b; c"]);
        assert_eq!(
            kf.to_data(),
            "[g]\nbranches=a;b\\;c;d;\nnone=\nspaces=\\sa;b\\;\\sc;\n"
        );
    }

    #[test]
    fn string_list_round_trips_through_text() {
        let lists: [&[&str]; 5] = [
            &["a", "b;c", "d"],
            &[""],
            &["", "x", ""],
            &[" lead", "trail ", "new\nline", "back\\slash", ";"],
            &[],
        ];
        let mut kf = KeyFile::new();
        for (i, list) in lists.iter().enumerate() {
            kf.set_string_list("g", &format!("k{i}"), list);
        }
        let reread = parse(&kf.to_data());
        for (i, list) in lists.iter().enumerate() {
            let expected: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(
                reread.string_list("g", &format!("k{i}")),
                Ok(Some(expected))
            );
        }
    }

    #[test]
    fn booleans_accept_true_false_1_0() {
        let kf = parse("[g]\na=true\nb=false\nc=1\nd=0\ne=true  \n");
        assert_eq!(kf.boolean("g", "a"), Ok(Some(true)));
        assert_eq!(kf.boolean("g", "b"), Ok(Some(false)));
        assert_eq!(kf.boolean("g", "c"), Ok(Some(true)));
        assert_eq!(kf.boolean("g", "d"), Ok(Some(false)));
        assert_eq!(kf.boolean("g", "e"), Ok(Some(true)));
        assert_eq!(kf.boolean("g", "missing"), Ok(None));
        assert_eq!(kf.boolean("missing", "a"), Ok(None));
    }

    #[test]
    fn other_boolean_values_are_errors_naming_group_and_key() {
        for value in ["yes", "True", "TRUE", "", "2", "truex", "tru"] {
            let kf = parse(&format!("[remote \"o\"]\ngpg-verify={value}\n"));
            match kf.boolean("remote \"o\"", "gpg-verify") {
                Err(e @ KeyFileError::InvalidValue { .. }) => {
                    let text = e.to_string();
                    assert!(
                        text.contains("remote \"o\"") && text.contains("gpg-verify"),
                        "{text}"
                    );
                }
                other => panic!("{value:?}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn set_boolean_writes_true_or_false() {
        let mut kf = KeyFile::new();
        kf.set_boolean("g", "t", true);
        kf.set_boolean("g", "f", false);
        assert_eq!(kf.to_data(), "[g]\nt=true\nf=false\n");
    }

    #[test]
    fn integers_parse_as_decimal_i64() {
        let kf =
            parse("[g]\na=1\nb=-42\nc=+7\nd=9223372036854775807\ne=-9223372036854775808\nf=12  \n");
        assert_eq!(kf.integer("g", "a"), Ok(Some(1)));
        assert_eq!(kf.integer("g", "b"), Ok(Some(-42)));
        assert_eq!(kf.integer("g", "c"), Ok(Some(7)));
        assert_eq!(kf.integer("g", "d"), Ok(Some(i64::MAX)));
        assert_eq!(kf.integer("g", "e"), Ok(Some(i64::MIN)));
        assert_eq!(kf.integer("g", "f"), Ok(Some(12)));
        assert_eq!(kf.integer("g", "missing"), Ok(None));
    }

    #[test]
    fn invalid_integers_are_errors_naming_group_and_key() {
        for value in [
            "",
            "x",
            "1.5",
            "0x10",
            "9223372036854775808",
            "12 abc",
            "1_000",
        ] {
            let kf = parse(&format!("[core]\nrepo_version={value}\n"));
            match kf.integer("core", "repo_version") {
                Err(KeyFileError::InvalidValue { group, key, .. }) => {
                    assert_eq!((group.as_str(), key.as_str()), ("core", "repo_version"));
                }
                other => panic!("{value:?}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn set_integer_writes_decimal() {
        let mut kf = KeyFile::new();
        kf.set_integer("g", "n", -12);
        kf.set_integer("g", "max", i64::MAX);
        assert_eq!(kf.integer("g", "n"), Ok(Some(-12)));
        assert_eq!(kf.to_data(), "[g]\nn=-12\nmax=9223372036854775807\n");
    }

    #[test]
    fn duplicate_key_later_value_wins_in_place_of_first() {
        let kf = parse("[g]\na=1\nb=2\n# about a again\na=3\nc=4\n");
        assert_eq!(kf.raw_value("g", "a"), Some("3"));
        assert_eq!(kf.keys("g").collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(kf.to_data(), "[g]\na=3\nb=2\n# about a again\nc=4\n");
    }

    #[test]
    fn duplicate_group_headers_merge_into_first_occurrence() {
        let kf = parse("[a]\nx=1\n\n[b]\ny=1\n\n[a]\nx=2\nz=1\n");
        assert_eq!(kf.groups().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(kf.keys("a").collect::<Vec<_>>(), ["x", "z"]);
        assert_eq!(kf.raw_value("a", "x"), Some("2"));
        assert_eq!(kf.to_data(), "[a]\nx=2\n\nz=1\n\n[b]\ny=1\n");
    }

    #[test]
    fn locale_keys_are_distinct_keys_stored_verbatim() {
        let kf = parse("[g]\nName[de_DE.UTF-8@euro]=Hallo\nName=Hello\nName[fr]=Bonjour\n");
        assert_eq!(kf.raw_value("g", "Name"), Some("Hello"));
        assert_eq!(kf.raw_value("g", "Name[fr]"), Some("Bonjour"));
        assert_eq!(kf.raw_value("g", "Name[de_DE.UTF-8@euro]"), Some("Hallo"));
        assert_eq!(
            kf.keys("g").collect::<Vec<_>>(),
            ["Name[de_DE.UTF-8@euro]", "Name", "Name[fr]"]
        );

        let kf = parse("[g]\nName[fr]=Bonjour\n");
        assert_eq!(kf.raw_value("g", "Name"), None);
        assert!(!kf.has_key("g", "Name"));
        assert!(kf.has_key("g", "Name[fr]"));
    }

    #[test]
    fn invalid_key_names_are_parse_errors_with_line_number() {
        assert_eq!(parse_error_line("[g]\nok=1\na]b=1\n"), 3);
        assert_eq!(parse_error_line("[g]\na[b=1\n"), 2);
        assert_eq!(parse_error_line("[g]\nName[fr]x=1\n"), 2);
        assert_eq!(parse_error_line("[g]\nName[f r]=1\n"), 2);
        assert_eq!(parse_error_line("[g]\nName[fr][de]=1\n"), 2);
        assert_eq!(parse_error_line("[g]\n=value\n"), 2);
        assert_eq!(parse_error_line("[g]\n  = value\n"), 2);
    }

    #[test]
    fn lines_that_are_nothing_known_are_parse_errors() {
        assert_eq!(parse_error_line("[g]\nk=v\njust text\n"), 3);
        assert_eq!(parse_error_line("[g]\n[unterminated\n"), 2);
        assert_eq!(parse_error_line("[g] trailing\n"), 1);
        assert_eq!(parse_error_line("[g]\nk=v\r\nbad\r\n"), 3);
        match KeyFile::parse("[g]\n\nnonsense") {
            Err(e @ KeyFileError::Parse { .. }) => {
                assert!(e.to_string().contains("line 3"), "{e}");
                assert!(e.to_string().contains("nonsense"), "{e}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn invalid_group_names_are_parse_errors() {
        assert_eq!(parse_error_line("[]\n"), 1);
        assert_eq!(parse_error_line("[g]\n[a[b]\n"), 2);
        assert_eq!(parse_error_line("[a\tb]\n"), 1);
    }

    #[test]
    fn key_before_any_group_is_a_parse_error() {
        assert_eq!(parse_error_line("# comment\nk=v\n[g]\n"), 2);
    }

    #[test]
    fn nul_characters_are_parse_errors() {
        assert_eq!(parse_error_line("[g]\nk=a\0b\n"), 2);
    }

    #[test]
    fn encoding_other_than_utf8_in_first_group_is_rejected() {
        assert_eq!(
            parse_error_line("[Desktop Entry]\nEncoding=ISO-8859-1\n"),
            2
        );
        let kf = parse("[Desktop Entry]\nEncoding=utf-8\n[other]\nEncoding=latin1\n");
        assert_eq!(kf.raw_value("other", "Encoding"), Some("latin1"));
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        let kf = parse("[core]\r\nmode=bare\r\n\r\n[b]\r\nk=v \r\n");
        assert_eq!(kf.raw_value("core", "mode"), Some("bare"));
        assert_eq!(kf.raw_value("b", "k"), Some("v "));
        assert_eq!(kf.to_data(), "[core]\nmode=bare\n\n[b]\nk=v \n");
    }

    #[test]
    fn last_line_without_newline_is_parsed() {
        let kf = parse("[g]\nk=v");
        assert_eq!(kf.raw_value("g", "k"), Some("v"));
        assert_eq!(kf.to_data(), "[g]\nk=v\n");
    }

    #[test]
    fn missing_group_or_key_reads_as_none() {
        let kf = parse(OSTREE_CONFIG);
        assert!(!kf.has_group("nope"));
        assert_eq!(kf.keys("nope").count(), 0);
        assert_eq!(kf.raw_value("nope", "mode"), None);
        assert_eq!(kf.string("core", "nope"), Ok(None));
        assert_eq!(kf.integer("nope", "nope"), Ok(None));
        assert_eq!(kf.string_list("core", "nope"), Ok(None));
    }

    #[test]
    fn remove_key_keeps_surrounding_comments() {
        let mut kf = parse("[g]\na=1\n\n# section two\nb=2\nc=3\n");
        assert!(kf.remove_key("g", "b"));
        assert!(!kf.remove_key("g", "b"));
        assert!(!kf.remove_key("nope", "a"));
        assert_eq!(kf.to_data(), "[g]\na=1\n\n# section two\nc=3\n");
        assert!(kf.remove_key("g", "c"));
        assert_eq!(kf.to_data(), "[g]\na=1\n\n# section two\n");
        kf.set_string("g", "d", "4");
        assert_eq!(kf.to_data(), "[g]\na=1\nd=4\n\n# section two\n");
    }

    #[test]
    fn remove_group_removes_its_keys_and_header_comment() {
        let text = "[core]\nmode=bare\n\n# origin remote\n[remote \"origin\"]\nurl=x\n\n[remote \"other\"]\nurl=y\n";
        let mut kf = parse(text);
        assert!(kf.remove_group("remote \"origin\""));
        assert!(!kf.remove_group("remote \"origin\""));
        assert_eq!(kf.raw_value("remote \"origin\"", "url"), None);
        assert_eq!(
            kf.to_data(),
            "[core]\nmode=bare\n\n[remote \"other\"]\nurl=y\n"
        );
        assert!(kf.remove_group("remote \"other\""));
        assert_eq!(kf.to_data(), "[core]\nmode=bare\n");
        assert!(kf.remove_group("core"));
        assert_eq!(kf.to_data(), "");
    }

    #[test]
    fn remove_group_keeps_comments_ending_the_previous_group() {
        let mut kf = parse("[a]\nx=1\n# y=2\n\n# about b\n[b]\nz=1\n\n[c]\n");
        assert!(kf.remove_group("b"));
        assert_eq!(kf.to_data(), "[a]\nx=1\n# y=2\n\n[c]\n");
    }

    #[test]
    fn remove_first_group_leaves_no_leading_blank_line() {
        let mut kf = parse(OSTREE_CONFIG);
        assert!(kf.remove_group("core"));
        assert_eq!(
            kf.to_data(),
            "[remote \"origin\"]\nurl=http://127.0.0.1:8080/repo\ngpg-verify=false\n"
        );

        // A comment heading the file stays apart from what follows it.
        let mut kf = parse("# header\n[a]\nx=1\n\n[b]\ny=1\n");
        assert!(kf.remove_group("a"));
        assert_eq!(kf.to_data(), "# header\n\n[b]\ny=1\n");

        let mut kf = parse("# header\n\n[a]\nx=1\n\n[b]\ny=1\n");
        assert!(kf.remove_group("a"));
        assert_eq!(kf.to_data(), "# header\n\n[b]\ny=1\n");
    }

    #[test]
    fn re_adding_removed_group_goes_to_the_end() {
        let mut kf = parse(OSTREE_CONFIG);
        assert!(kf.remove_group("remote \"origin\""));
        kf.set_string("remote \"origin\"", "url", "http://127.0.0.1:8080/repo");
        kf.set_boolean("remote \"origin\"", "gpg-verify", false);
        assert_eq!(kf.to_data(), OSTREE_CONFIG);
    }

    #[test]
    fn setters_ignore_invalid_names_and_values() {
        let mut kf = KeyFile::new();
        kf.set_string("", "k", "v");
        kf.set_string("a]b", "k", "v");
        kf.set_string("a\nb", "k", "v");
        kf.set_string("g", "", "v");
        kf.set_string("g", "a=b", "v");
        kf.set_string("g", " k", "v");
        kf.set_string("g", "k ", "v");
        kf.set_string("g", "#k", "v");
        kf.set_string("g", "k\n", "v");
        kf.set_string("g", "k[fr", "v");
        kf.set_string("g", "k", "nul\0");
        kf.set_raw_value("g", "k", "line\nbreak");
        kf.set_string_list("g", "k", &["ok", "nul\0"]);
        assert_eq!(kf.to_data(), "");
        assert!(!kf.has_group("g"));

        kf.set_string("g", "k[sr@latin]", "v");
        kf.set_string("g", "with space", "v");
        assert_eq!(kf.to_data(), "[g]\nk[sr@latin]=v\nwith space=v\n");
    }

    #[test]
    fn name_validation_helpers_match_setters() {
        assert!(KeyFile::is_valid_group_name("remote \"origin\""));
        assert!(!KeyFile::is_valid_group_name(""));
        assert!(!KeyFile::is_valid_group_name("[x]"));
        assert!(KeyFile::is_valid_key_name("gpg-verify"));
        assert!(KeyFile::is_valid_key_name("Name[de_DE]"));
        assert!(!KeyFile::is_valid_key_name("Name[de]x"));
        assert!(!KeyFile::is_valid_key_name("#x"));
    }

    #[test]
    fn set_raw_value_is_written_verbatim() {
        let mut kf = KeyFile::new();
        kf.set_raw_value("g", "k", "a\\sb;c\\;");
        assert_eq!(kf.raw_value("g", "k"), Some("a\\sb;c\\;"));
        assert_eq!(kf.to_data(), "[g]\nk=a\\sb;c\\;\n");
    }
}
