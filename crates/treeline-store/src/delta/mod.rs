//! Static deltas: everything needed to go from one commit to another (or from nothing),
//! packed into a superblock and compressed parts, in OSTree's exact on-disk format.
//!
//! A delta lives in `deltas/<mb64(FROM)[..2]>/<mb64(FROM)[2..]>-<mb64(TO)>/` (or, from
//! scratch, `deltas/<mb64(TO)[..2]>/<mb64(TO)[2..]>/`) as a `superblock` and parts `0`,
//! `1`, …. The superblock carries the TO commit itself, the part headers (checksum, sizes
//! and the objects each part produces) and the "fallback" objects that are fetched
//! loose instead. Each part is a small bytecode program over a payload blob that writes
//! objects: whole objects spliced from the payload, or files rebuilt from an object the
//! client already has through a bsdiff patch.
//!
//! * [`generate`] writes a delta into a repository, plus its delta index;
//! * [`apply`] executes one inside a [`Transaction`](crate::Transaction), verifying
//!   every part and every object it writes; [`apply_offline`] applies a delta
//!   directory;
//! * [`list`], [`show`], [`delete`] and [`reindex`] manage the deltas of a repository;
//! * [`Superblock`] and [`DeltaPart`] are the codecs, byte-exact in both directions.
//!
//! ```no_run
//! use treeline_store::{Repo, delta};
//! # fn main() -> treeline_store::Result<()> {
//! let mut repo = Repo::open("repo".as_ref())?;
//! let to = repo.resolve_rev("os/main")?;
//! let from = repo.load_commit(&to)?.parent;
//! let report = delta::generate(&mut repo, from, to, &delta::GenerateOptions::default())?;
//! println!("wrote {} ({} bytes)", report.name, report.total_size());
//! # Ok(())
//! # }
//! ```

mod apply;
mod generate;
mod gv;
mod index;
mod ops;
mod part;
mod superblock;

pub use apply::{ApplyReport, apply, apply_offline};
pub use generate::{GenerateOptions, GenerateReport, generate};
pub use index::{
    DeltaInfo, PartInfo, delete, has_delta, list, read_superblock_file, reindex, show,
};
pub use ops::{Op, OpCounts, decode_ops, encode_ops};
pub use part::{
    Compression, DeltaPart, ModeEntry, PART_DECOMPRESSED_LIMIT, PartLayout, PartTables, XattrSet,
    XzSettings, compress_part, compress_part_xz, decompress_part, part_reader,
};
pub use superblock::{
    Endianness, Fallback, PartHeader, SIGNED_MAGIC, SignedSuperblock, Superblock,
    parse_superblock_file,
};

use std::fmt;
use std::str::FromStr;

use crate::checksum::Checksum;
use crate::error::Error;

/// The key of the superblock metadata naming the byte order of part and fallback sizes.
pub const ENDIANNESS_KEY: &str = "ostree.endianness";

/// The key of delta indexes (and summaries) mapping delta names to superblock checksums.
pub const STATIC_DELTAS_KEY: &str = "ostree.static-deltas";

/// The newest part format version this implementation reads and writes.
pub const PART_VERSION: u32 = 0;

/// A delta's identity: from a commit (or from scratch) to a commit.
///
/// Printed as ostree prints it: `FROM-TO` in hex, or just `TO` for a from-scratch delta.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct DeltaName {
    /// The commit the client must already have; `None` for a from-scratch delta.
    pub from: Option<Checksum>,
    /// The commit the delta produces.
    pub to: Checksum,
}

impl DeltaName {
    /// A delta name.
    pub fn new(from: Option<Checksum>, to: Checksum) -> Self {
        DeltaName { from, to }
    }

    /// The delta's directory relative to the repository, as ostree names it
    /// (`deltas/ZX/k3du…-iqyE…`).
    pub fn relpath(&self) -> String {
        let to = self.to.to_modified_base64();
        match &self.from {
            Some(from) => {
                let from = from.to_modified_base64();
                format!("deltas/{}/{}-{to}", &from[..2], &from[2..])
            }
            None => format!("deltas/{}/{}", &to[..2], &to[2..]),
        }
    }

    /// The relative path of part `index`; also the superblock metadata key of an inline
    /// part.
    pub fn part_relpath(&self, index: usize) -> String {
        format!("{}/{index}", self.relpath())
    }

    /// The superblock metadata key under which the TO commit's detached metadata travels.
    pub fn commitmeta_key(&self) -> String {
        format!("{}/commitmeta", self.relpath())
    }

    /// Parse the two path components under `deltas/` back into a name.
    pub fn from_dir_names(first: &str, second: &str) -> Option<Self> {
        let joined = format!("{first}{second}");
        match joined.split_once('-') {
            Some((from, to)) => Some(DeltaName {
                from: Some(checksum_from_modified_base64(from)?),
                to: checksum_from_modified_base64(to)?,
            }),
            None => Some(DeltaName {
                from: None,
                to: checksum_from_modified_base64(&joined)?,
            }),
        }
    }
}

impl fmt::Display for DeltaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.from {
            Some(from) => write!(f, "{from}-{}", self.to),
            None => write!(f, "{}", self.to),
        }
    }
}

impl FromStr for DeltaName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.split_once('-') {
            Some((from, to)) => Ok(DeltaName {
                from: Some(from.parse()?),
                to: to.parse()?,
            }),
            None => Ok(DeltaName {
                from: None,
                to: s.parse()?,
            }),
        }
    }
}

/// The delta index path of a target commit, relative to the repository
/// (`delta-indexes/<mb64(TO)[..2]>/<mb64(TO)[2..]>.index`).
pub fn index_relpath(to: &Checksum) -> String {
    let b = to.to_modified_base64();
    format!("delta-indexes/{}/{}.index", &b[..2], &b[2..])
}

/// Decode OSTree's modified base64 (43 characters, `_` for `/`, no padding), accepting
/// only the canonical encoding (so a name maps to one delta).
pub fn checksum_from_modified_base64(s: &str) -> Option<Checksum> {
    Checksum::from_modified_base64(s).filter(|c| c.to_modified_base64() == s)
}

/// Sizes as GLib's `g_format_size` prints them (`173 bytes`, `4.5 MB` with a no-break
/// space), for `show`.
pub fn format_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 1000 {
        return if n == 1 {
            "1 byte".into()
        } else {
            format!("{n} bytes")
        };
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    // GLib puts a no-break space between number and unit.
    format!("{value:.1}\u{a0}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_ostree_layout() {
        // The example from the format notes: FROM 0a a4 40 …, layout only.
        let from = Checksum([0xff; 32]);
        let to = Checksum([0; 32]);
        let n = DeltaName::new(Some(from), to);
        assert_eq!(
            n.relpath(),
            format!("deltas/__/{}8-{}", "_".repeat(40), "A".repeat(43))
        );
        assert_eq!(
            DeltaName::new(None, to).relpath(),
            format!("deltas/AA/{}", "A".repeat(41))
        );
        assert_eq!(
            index_relpath(&to),
            format!("delta-indexes/AA/{}.index", "A".repeat(41))
        );
        assert!(n.part_relpath(3).ends_with("/3"));
    }

    #[test]
    fn names_roundtrip_through_text_and_dirs() {
        let a = Checksum::of(b"a");
        let b = Checksum::of(b"b");
        for n in [DeltaName::new(Some(a), b), DeltaName::new(None, b)] {
            assert_eq!(n.to_string().parse::<DeltaName>().unwrap(), n);
            let rel = n.relpath();
            let mut parts = rel.split('/').skip(1);
            let (x, y) = (parts.next().unwrap(), parts.next().unwrap());
            assert_eq!(DeltaName::from_dir_names(x, y), Some(n));
        }
        assert!("zz".parse::<DeltaName>().is_err());
        assert!(DeltaName::from_dir_names("ab", "c").is_none());
    }

    #[test]
    fn modified_base64_decodes_what_it_encodes() {
        for seed in 0..50u8 {
            let c = Checksum::of(&[seed]);
            assert_eq!(
                checksum_from_modified_base64(&c.to_modified_base64()),
                Some(c)
            );
        }
        assert_eq!(checksum_from_modified_base64("A/"), None);
        let mut bad = Checksum([0; 32]).to_modified_base64();
        bad.replace_range(42.., "B");
        assert_eq!(checksum_from_modified_base64(&bad), None);
    }

    #[test]
    fn sizes_print_like_glib() {
        assert_eq!(format_size(0), "0 bytes");
        assert_eq!(format_size(173), "173 bytes");
        assert_eq!(format_size(1500), "1.5\u{a0}kB");
        assert_eq!(format_size(4_478_288), "4.5\u{a0}MB");
    }
}
