//! Boot Loader Specification entries (`boot/loader.N/entries/ostree-*.conf`) and kernel
//! arguments.

/// One BLS entry: `key value` lines, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootEntry {
    /// The keys and values, in file order (a key may repeat, e.g. `initrd`).
    pub fields: Vec<(String, String)>,
}

/// Keys written first, in this order, as ostree does.
const KEY_ORDER: &[&str] = &[
    "title",
    "version",
    "options",
    "devicetree",
    "linux",
    "initrd",
];

impl BootEntry {
    /// Parse an entry. Blank lines and `#` comments are skipped; a line is a key, blanks,
    /// and the rest of the line as the value.
    pub fn parse(text: &str) -> Self {
        let fields = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.split_once([' ', '\t']) {
                Some((k, v)) => (k.to_owned(), v.trim_start().to_owned()),
                None => (l.to_owned(), String::new()),
            })
            .collect();
        BootEntry { fields }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Set `key` to one value, replacing every earlier value.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.fields.iter().position(|(k, _)| k == key) {
            Some(i) => {
                self.fields[i].1 = value;
                let mut n = 0;
                self.fields.retain(|(k, _)| {
                    n += usize::from(k == key);
                    k != key || n == 1
                });
            }
            None => self.fields.push((key.to_owned(), value)),
        }
    }

    /// Render with the known keys first (`title, version, options, devicetree, linux,
    /// initrd`), then the others in their order.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let rank = |k: &str| {
            KEY_ORDER
                .iter()
                .position(|o| *o == k)
                .unwrap_or(KEY_ORDER.len())
        };
        let mut sorted: Vec<&(String, String)> = self.fields.iter().collect();
        sorted.sort_by_key(|(k, _)| rank(k));
        for (k, v) in sorted {
            out.push_str(k);
            out.push(' ');
            out.push_str(v);
            out.push('\n');
        }
        out
    }

    /// Parse the `version` key as a number for ordering (`None` when absent or not numeric).
    pub fn version_number(&self) -> Option<u64> {
        self.get("version").and_then(|v| v.trim().parse().ok())
    }
}

/// Kernel arguments, in order. `key=value` or bare `key`; quoting with `"` keeps blanks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kargs(Vec<String>);

impl Kargs {
    /// Split a command line into arguments (blanks outside double quotes separate them).
    pub fn parse(cmdline: &str) -> Self {
        let mut args = Vec::new();
        let mut cur = String::new();
        let mut quoted = false;
        for c in cmdline.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    cur.push(c);
                }
                c if c.is_whitespace() && !quoted => {
                    if !cur.is_empty() {
                        args.push(std::mem::take(&mut cur));
                    }
                }
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            args.push(cur);
        }
        Kargs(args)
    }

    fn key(arg: &str) -> &str {
        arg.split_once('=').map_or(arg, |(k, _)| k)
    }

    /// The value of the first `key=value` argument (or `""` for a bare `key`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|a| Self::key(a) == key)
            .map(|a| a.split_once('=').map_or("", |(_, v)| v))
    }

    /// Replace every argument with the key of `arg` by `arg` (at the place of the first
    /// one), or append it when the key is absent: ostree's `--karg`.
    pub fn replace(&mut self, arg: &str) {
        let key = Self::key(arg).to_owned();
        match self.0.iter().position(|a| Self::key(a) == key) {
            Some(i) => {
                self.0[i] = arg.to_owned();
                let mut n = 0;
                self.0.retain(|a| {
                    let same = Self::key(a) == key;
                    n += usize::from(same);
                    !same || n == 1
                });
            }
            None => self.0.push(arg.to_owned()),
        }
    }

    /// Append an argument even if its key is present: ostree's `--karg-append`.
    pub fn append(&mut self, arg: &str) {
        self.0.push(arg.to_owned());
    }

    /// Remove every argument with this key.
    pub fn remove_key(&mut self, key: &str) {
        self.0.retain(|a| Self::key(a) != key);
    }

    /// The arguments.
    pub fn args(&self) -> &[String] {
        &self.0
    }
}

impl std::fmt::Display for Kargs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips_with_known_keys_first() {
        let text = "linux /ostree/os-abc/vmlinuz-6.1\ntitle T (ostree:0)\noptions a=1 ostree=/x\nversion 2\ninitrd /i\n";
        let e = BootEntry::parse(text);
        assert_eq!(e.get("options"), Some("a=1 ostree=/x"));
        assert_eq!(e.version_number(), Some(2));
        assert_eq!(
            e.to_text(),
            "title T (ostree:0)\nversion 2\noptions a=1 ostree=/x\nlinux /ostree/os-abc/vmlinuz-6.1\ninitrd /i\n"
        );
    }

    #[test]
    fn set_replaces_all_values_of_a_key() {
        let mut e = BootEntry::parse("initrd a\ninitrd b\n");
        e.set("initrd", "c");
        assert_eq!(e.to_text(), "initrd c\n");
    }

    #[test]
    fn karg_replace_and_append_follow_ostree() {
        let mut k = Kargs::parse("root=LABEL=root quiet console=tty0 console=ttyS0");
        k.replace("console=ttyS1");
        assert_eq!(k.to_string(), "root=LABEL=root quiet console=ttyS1");
        k.replace("rw");
        k.append("quiet");
        assert_eq!(
            k.to_string(),
            "root=LABEL=root quiet console=ttyS1 rw quiet"
        );
        assert_eq!(k.get("root"), Some("LABEL=root"));
        k.remove_key("quiet");
        assert_eq!(k.to_string(), "root=LABEL=root console=ttyS1 rw");
    }

    #[test]
    fn kargs_keep_quoted_blanks() {
        let k = Kargs::parse(r#"a="b c"  d"#);
        assert_eq!(k.args(), &[r#"a="b c""#.to_owned(), "d".to_owned()]);
    }
}
