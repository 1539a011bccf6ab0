//! The partition layout of a disk image (docs/image.md): a boot partition, an optional
//! swap partition and the root partition, last so it can be grown.
//!
//! ```toml
//! [boot]
//! size = "128M"
//! [swap]
//! size = "64M"
//! [root]
//! size = "auto"     # or "2G"; with a disk size, the rest of the disk
//! label = "root"
//! ```

use serde::Deserialize;

use crate::error::{Error, Result};

const MIB: u64 = 1 << 20;

/// Partition sizes and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The whole disk, in bytes; `None`: the sum of the partitions.
    pub disk_size: Option<u64>,
    /// The boot partition (ext3: what extlinux reads reliably; the kernels and BLS entries).
    pub boot: Part,
    /// The swap partition, if any.
    pub swap: Option<Part>,
    /// The root partition (ext4: the sysroot with the repository and deployments).
    pub root: Part,
}

/// One partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// Size in bytes (a multiple of 1 MiB); `None` for the root: automatic.
    pub size: Option<u64>,
    /// File system (and GPT partition) label.
    pub label: String,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            disk_size: None,
            boot: Part {
                size: Some(128 * MIB),
                label: "boot".into(),
            },
            swap: None,
            root: Part {
                size: None,
                label: "root".into(),
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutFile {
    disk: Option<DiskFile>,
    boot: Option<PartFile>,
    swap: Option<PartFile>,
    root: Option<PartFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskFile {
    size: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartFile {
    size: Option<String>,
    label: Option<String>,
}

/// Parse a size: a number of bytes, or with a `K`, `M`, `G` or `T` suffix (powers of
/// 1024; `MiB`-style spellings too), rounded up to whole MiB.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return None,
    };
    let bytes = n.checked_mul(mult)?;
    (bytes > 0).then(|| bytes.div_ceil(MIB) * MIB)
}

impl Layout {
    /// Parse a layout file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Layout> {
        let bad = |reason: String| Error::Layout {
            origin: origin.to_owned(),
            reason,
        };
        let f: LayoutFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut l = Layout::default();
        let size = |what: &str, s: &str| {
            parse_size(s).ok_or_else(|| bad(format!("{what}.size {s:?}: expected e.g. 512M or 2G")))
        };
        if let Some(d) = f.disk
            && let Some(s) = d.size
        {
            l.disk_size = Some(size("disk", &s)?);
        }
        if let Some(b) = f.boot {
            if let Some(s) = b.size {
                l.boot.size = Some(size("boot", &s)?);
            }
            if let Some(x) = b.label {
                l.boot.label = x;
            }
        }
        if let Some(sw) = f.swap {
            let s = sw
                .size
                .ok_or_else(|| bad("swap: a size is needed (or no [swap] at all)".into()))?;
            l.swap = Some(Part {
                size: Some(size("swap", &s)?),
                label: sw.label.unwrap_or_else(|| "swap".into()),
            });
        }
        if let Some(r) = f.root {
            if let Some(s) = r.size
                && s != "auto"
            {
                l.root.size = Some(size("root", &s)?);
            }
            if let Some(x) = r.label {
                l.root.label = x;
            }
        }
        l.check(origin)?;
        Ok(l)
    }

    /// Labels must be usable as ext4 labels (16 bytes) and `LABEL=` arguments.
    pub fn check(&self, origin: &str) -> Result<()> {
        let parts = [Some(&self.boot), self.swap.as_ref(), Some(&self.root)];
        let mut seen = Vec::new();
        for p in parts.into_iter().flatten() {
            let ok = !p.label.is_empty()
                && p.label.len() <= 16
                && p.label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(Error::Layout {
                    origin: origin.to_owned(),
                    reason: format!(
                        "label {:?}: use 1 to 16 letters, digits, '-' or '_'",
                        p.label
                    ),
                });
            }
            if seen.contains(&&p.label) {
                return Err(Error::Layout {
                    origin: origin.to_owned(),
                    reason: format!("label {:?} is used twice", p.label),
                });
            }
            seen.push(&p.label);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_and_round_up_to_mib() {
        assert_eq!(parse_size("512M"), Some(512 * MIB));
        assert_eq!(parse_size("2G"), Some(2048 * MIB));
        assert_eq!(parse_size("1500K"), Some(2 * MIB));
        assert_eq!(parse_size("64MiB"), Some(64 * MIB));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("12X"), None);
        assert_eq!(parse_size("M"), None);
    }

    #[test]
    fn layout_file_overrides_the_defaults() {
        let l = Layout::parse(
            "[disk]\nsize = \"1G\"\n[boot]\nsize = \"64M\"\n[swap]\nsize = \"32M\"\n[root]\nlabel = \"sys\"\n",
            "l.toml",
        )
        .unwrap();
        assert_eq!(l.disk_size, Some(1024 * MIB));
        assert_eq!(l.boot.size, Some(64 * MIB));
        assert_eq!(l.boot.label, "boot");
        assert_eq!(
            l.swap,
            Some(Part {
                size: Some(32 * MIB),
                label: "swap".into()
            })
        );
        assert_eq!(l.root.size, None);
        assert_eq!(l.root.label, "sys");
    }

    #[test]
    fn bad_layouts_are_named() {
        let e = Layout::parse("[boot]\nsize = \"big\"\n", "l.toml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("layout l.toml: boot.size \"big\""),
            "{e}"
        );
        let e = Layout::parse("[root]\nlabel = \"boot\"\n", "l.toml").unwrap_err();
        assert!(e.to_string().contains("used twice"), "{e}");
        let e = Layout::parse("[rot]\n", "l.toml").unwrap_err();
        assert!(e.to_string().contains("rot"), "{e}");
        let e = Layout::parse("[swap]\nlabel = \"s\"\n", "l.toml").unwrap_err();
        assert!(e.to_string().contains("swap: a size is needed"), "{e}");
    }
}
