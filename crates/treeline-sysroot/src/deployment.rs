//! A deployment: one checked-out commit in a stateroot, with its boot configuration and
//! origin.

use std::path::PathBuf;
use std::str::FromStr;

use treeline_store::Checksum;
use treeline_store::keyfile::KeyFile;

use crate::bls::Kargs;

/// The origin group and keys ostree uses.
pub const ORIGIN_GROUP: &str = "origin";
/// Group stripped when an origin is carried to a new deployment.
pub const TRANSIENT_GROUP: &str = "libostree-transient";

/// One deployment of the sysroot.
#[derive(Clone, Debug)]
pub struct Deployment {
    /// The stateroot ("osname") it belongs to.
    pub stateroot: String,
    /// The deployed commit.
    pub checksum: Checksum,
    /// Distinguishes several deployments of one commit (`.0`, `.1`, ...).
    pub serial: u32,
    /// SHA-256 naming its kernel directory, `/boot/ostree/<stateroot>-<bootcsum>`.
    pub bootcsum: String,
    /// Kernel arguments, without `ostree=` (added when boot entries are written).
    pub kargs: Kargs,
    /// BLS lines naming the boot files (`linux`, `initrd`, `devicetree`, `fdtdir`, and
    /// any others the entry carried), without `title`, `version` and `options`.
    pub boot_files: Vec<(String, String)>,
    /// The `.origin` key file, if the deployment has one.
    pub origin: Option<KeyFile>,
}

impl Deployment {
    /// `<checksum>.<serial>`, the name of its directory.
    pub fn name(&self) -> String {
        format!("{}.{}", self.checksum, self.serial)
    }

    /// Its directory, relative to the sysroot.
    pub fn relpath(&self) -> PathBuf {
        PathBuf::from("ostree/deploy")
            .join(&self.stateroot)
            .join("deploy")
            .join(self.name())
    }

    /// Its origin file, relative to the sysroot.
    pub fn origin_relpath(&self) -> PathBuf {
        PathBuf::from("ostree/deploy")
            .join(&self.stateroot)
            .join("deploy")
            .join(format!("{}.origin", self.name()))
    }

    /// Whether `[libostree-transient] pinned=true` keeps it from garbage collection.
    pub fn is_pinned(&self) -> bool {
        self.origin
            .as_ref()
            .and_then(|o| o.boolean(TRANSIENT_GROUP, "pinned").ok().flatten())
            .unwrap_or(false)
    }

    /// `[origin] refspec`, if any.
    pub fn origin_refspec(&self) -> Option<String> {
        self.origin
            .as_ref()
            .and_then(|o| o.string(ORIGIN_GROUP, "refspec").ok().flatten())
    }

    /// Same stateroot, commit and serial.
    pub fn same(&self, other: &Deployment) -> bool {
        self.stateroot == other.stateroot
            && self.checksum == other.checksum
            && self.serial == other.serial
    }

    /// `<stateroot>/<checksum>.<serial>`, for messages.
    pub fn display_id(&self) -> String {
        format!("{}/{}", self.stateroot, self.name())
    }
}

/// Parse a deployment directory name `<checksum>.<serial>`.
pub fn parse_deploy_name(name: &str) -> Option<(Checksum, u32)> {
    let (c, s) = name.split_once('.')?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((Checksum::from_str(c).ok()?, s.parse().ok()?))
}

/// A new origin for `refspec`, as `ostree admin deploy REFSPEC` writes it.
pub fn origin_for_refspec(refspec: &str) -> KeyFile {
    let mut k = KeyFile::new();
    k.set_string(ORIGIN_GROUP, "refspec", refspec);
    k
}

/// Whether a stateroot name can be used: one path component, no leading dot.
pub fn valid_stateroot(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_names_parse_only_checksum_dot_serial() {
        let c = "ab".repeat(32);
        assert_eq!(parse_deploy_name(&format!("{c}.3")).unwrap().1, 3);
        assert!(parse_deploy_name(&format!("{c}.origin")).is_none());
        assert!(parse_deploy_name(&format!("{c}.0.origin")).is_none());
        assert!(parse_deploy_name("xyz.0").is_none());
    }

    #[test]
    fn stateroot_names_are_single_components() {
        assert!(valid_stateroot("debian-12"));
        assert!(!valid_stateroot("a/b"));
        assert!(!valid_stateroot(".."));
        assert!(!valid_stateroot(""));
    }
}
