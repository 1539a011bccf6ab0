//! A v2 `.apk` file: three gzip members glued together (signature, optional; control;
//! data).
//!
//! [`ApkPackage::open`] reads the signature and control members (both small), notes the
//! byte range of every member, parses `.PKGINFO` and keeps the install scripts. It never
//! decompresses the data member: [`ApkPackage::verify`] hashes its compressed bytes, and
//! [`ApkPackage::data`] streams its tar entries one by one, checking each file against
//! its `APK-TOOLS.checksum.SHA1` record and refusing entries that could escape the root.
//!
//! ```no_run
//! # fn main() -> Result<(), treeline_pkg::apk::Error> {
//! use std::path::Path;
//! use treeline_pkg::apk::{ApkPackage, Keys};
//!
//! let keys = Keys::from_dir(Path::new("/etc/apk/keys"))?;
//! let pkg = ApkPackage::open(Path::new("busybox-1.36.1-r15.apk"))?;
//! pkg.verify(&keys)?;
//! println!("{} {} {}", pkg.name(), pkg.version(), pkg.identity());
//! let mut walk = pkg.data()?;
//! while let Some(mut entry) = walk.next_entry()? {
//!     let mut content = Vec::new();
//!     std::io::Read::read_to_end(&mut entry, &mut content)
//!         .map_err(|e| treeline_pkg::apk::Error::from_read_error(pkg.path(), e))?;
//!     println!("{} {:?} {}", entry.path, entry.kind, content.len());
//! }
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha1::Digest as _;

use super::archive::{
    CountingReader, DigestValues, Digests, TarEnd, TarError, TarHeader, TarReader,
};
use super::keys::Keys;
use super::{Error, Result, q1_encode, version};
use crate::model::PackageMeta;

/// A signature algorithm named by a `.SIGN.<ALG>.<key>` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// `RSA`: PKCS#1 v1.5 with SHA-1 (what Alpine uses).
    RsaSha1,
    /// `RSA256`: PKCS#1 v1.5 with SHA-256.
    RsaSha256,
    /// `RSA512`: PKCS#1 v1.5 with SHA-512.
    RsaSha512,
    /// `DSA`: recognised but not supported for verification.
    Dsa,
}

/// One `.SIGN.*` entry of the signature member.
#[derive(Debug, Clone)]
pub struct Signature {
    /// The algorithm from the entry name.
    pub algorithm: SignatureAlgorithm,
    /// The key's file name in `/etc/apk/keys`.
    pub key_name: String,
    /// The raw signature bytes.
    pub bytes: Vec<u8>,
}

/// An install script kind, named as in the control member (`.post-install`) and in
/// `scripts.tar` (`post-install`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScriptKind {
    /// `.pre-install`
    PreInstall,
    /// `.post-install`
    PostInstall,
    /// `.pre-upgrade`
    PreUpgrade,
    /// `.post-upgrade`
    PostUpgrade,
    /// `.pre-deinstall`
    PreDeinstall,
    /// `.post-deinstall`
    PostDeinstall,
    /// `.trigger`
    Trigger,
}

impl ScriptKind {
    /// Every kind, in apk's order.
    pub const ALL: [ScriptKind; 7] = [
        ScriptKind::PreInstall,
        ScriptKind::PostInstall,
        ScriptKind::PreDeinstall,
        ScriptKind::PostDeinstall,
        ScriptKind::PreUpgrade,
        ScriptKind::PostUpgrade,
        ScriptKind::Trigger,
    ];

    /// The action name without the dot: `post-install`, `trigger`, …
    pub fn action(self) -> &'static str {
        match self {
            ScriptKind::PreInstall => "pre-install",
            ScriptKind::PostInstall => "post-install",
            ScriptKind::PreUpgrade => "pre-upgrade",
            ScriptKind::PostUpgrade => "post-upgrade",
            ScriptKind::PreDeinstall => "pre-deinstall",
            ScriptKind::PostDeinstall => "post-deinstall",
            ScriptKind::Trigger => "trigger",
        }
    }

    /// The kind for an action name (`post-install`), if it is one.
    pub fn from_action(action: &str) -> Option<ScriptKind> {
        ScriptKind::ALL.into_iter().find(|k| k.action() == action)
    }
}

impl fmt::Display for ScriptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.action())
    }
}

/// An install script from the control member.
#[derive(Debug, Clone)]
pub struct Script {
    /// Which script.
    pub kind: ScriptKind,
    /// Its bytes, exactly as packaged.
    pub bytes: Vec<u8>,
}

/// `.PKGINFO`: `key = value` lines, every one kept in file order (comments dropped).
#[derive(Debug, Clone, Default)]
pub struct PkgInfo {
    /// Every key and value in order; repeatable keys (`depend`, `provides`, `replaces`,
    /// …) appear once per line.
    pub fields: Vec<(String, String)>,
}

impl PkgInfo {
    /// Parses `.PKGINFO` text. Like apk, lines without ` = ` are ignored (with a
    /// warning) and `#` lines are comments.
    pub fn parse(text: &str) -> PkgInfo {
        let mut fields = Vec::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(" = ") {
                Some((key, value)) => fields.push((key.to_owned(), value.to_owned())),
                None => tracing::warn!(".PKGINFO line without ' = ' ignored: {line:?}"),
            }
        }
        PkgInfo { fields }
    }

    /// The last value of `key` (single-valued keys appear once in practice).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable key, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The values of a repeatable key joined by spaces, as apk's index lines hold them.
    pub fn joined(&self, key: &str) -> String {
        self.get_all(key)
            .flat_map(|v| v.split(' '))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// An opened v2 package: layout, signatures, `.PKGINFO`, scripts and identity.
#[derive(Debug, Clone)]
pub struct ApkPackage {
    path: PathBuf,
    file_size: u64,
    signature_member: Option<Range<u64>>,
    control_member: Range<u64>,
    data_member: Range<u64>,
    signatures: Vec<Signature>,
    pkginfo: PkgInfo,
    scripts: Vec<Script>,
    name: String,
    version: String,
    arch: String,
    datahash: Option<[u8; 32]>,
    /// Digests of the signed bytes: control, or control+data without datahash.
    signed: DigestValues,
    identity: String,
}

/// Entries of the signature and control members are small; refuse absurd ones.
const MAX_CONTROL_ENTRY: u64 = 16 << 20;

fn sign_algorithm(name: &str) -> Option<(SignatureAlgorithm, &str)> {
    let rest = name.strip_prefix(".SIGN.")?;
    let (alg, key) = rest.split_once('.')?;
    let alg = match alg {
        "RSA" => SignatureAlgorithm::RsaSha1,
        "RSA256" => SignatureAlgorithm::RsaSha256,
        "RSA512" => SignatureAlgorithm::RsaSha512,
        "DSA" => SignatureAlgorithm::Dsa,
        _ => return None,
    };
    Some((alg, key))
}

/// The signature a `.SIGN.<ALG>.<key>` entry holds, if its name is one.
pub(crate) fn parse_sign_name(name: &str, bytes: Vec<u8>) -> Option<Signature> {
    let (algorithm, key) = sign_algorithm(name)?;
    Some(Signature {
        algorithm,
        key_name: key.to_owned(),
        bytes,
    })
}

/// One entry of a small member, content in memory.
struct SmallEntry {
    name: String,
    typeflag: u8,
    content: Vec<u8>,
}

/// Reads one gzip member of small entries (signature or control) from `reader`, which
/// must be at the member's first byte. `accept` is asked about every entry name before
/// its content is read, so a data tar is refused without reading it.
fn read_small_member(
    reader: &mut CountingReader<File>,
    path: &Path,
    member: &'static str,
    mut accept: impl FnMut(&str, usize) -> Result<bool>,
) -> Result<Vec<SmallEntry>> {
    let gz = flate2::bufread::GzDecoder::new(&mut *reader);
    let mut tar = TarReader::new(gz);
    let mut entries = Vec::new();
    while let Some(header) = tar.next_header().map_err(|e| e.into_error(path, member))? {
        let name = String::from_utf8_lossy(&header.name).into_owned();
        if !accept(&name, entries.len())? {
            continue;
        }
        let content = tar
            .read_content_to_vec(MAX_CONTROL_ENTRY, &name)
            .map_err(|e| e.into_error(path, member))?;
        entries.push(SmallEntry {
            name,
            typeflag: header.typeflag,
            content,
        });
    }
    if tar.end() == Some(TarEnd::Marker) {
        return Err(Error::Format {
            path: path.to_path_buf(),
            what: format!(
                "{member} member ends with end-of-archive blocks; apk needs it cut (BAD archive)"
            ),
        });
    }
    Ok(entries)
}

impl ApkPackage {
    /// Opens a package: reads its signature and control members and finds where the data
    /// member starts. Errors name the file: not gzip, bad gzip, truncated, control and
    /// data in one member, no `.PKGINFO`, missing `pkgname`/`pkgver`/`arch`, …
    pub fn open(path: &Path) -> Result<ApkPackage> {
        let io = |error| Error::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = File::open(path).map_err(io)?;
        let file_size = file.metadata().map_err(io)?.len();
        let mut reader = CountingReader::new(file, 0);
        check_magic(&mut reader, path)?;

        // The first member is the signature when its entries are `.SIGN.*`; otherwise
        // it is already the control member of an unsigned package.
        let mut first_is_signature = None;
        reader.digests = Some(Digests::default());
        let first = read_small_member(&mut reader, path, "signature", |name, index| {
            let is_sign = name.starts_with(".SIGN.");
            match first_is_signature {
                None if index == 0 => first_is_signature = Some(is_sign),
                Some(first) if first != is_sign => {
                    return Err(Error::Format {
                        path: path.to_path_buf(),
                        what: format!(
                            "first member mixes .SIGN entries with {name}; signature and \
                             control must be separate gzip members"
                        ),
                    });
                }
                _ => {}
            }
            check_control_name(path, name)?;
            Ok(true)
        })?;
        let first_end = reader.pos;
        let first_digests = reader.digests.take().unwrap_or_default();

        let (signature_member, signatures, control_entries, control_member, control_digests) =
            if first_is_signature == Some(true) {
                let signatures = first
                    .into_iter()
                    .filter_map(|e| parse_sign_name(&e.name, e.content))
                    .collect();
                if reader.at_eof().map_err(io)? {
                    return Err(Error::Truncated {
                        path: path.to_path_buf(),
                        what: "no control member after the signature".into(),
                    });
                }
                check_magic(&mut reader, path)?;
                reader.digests = Some(Digests::default());
                let control = read_small_member(&mut reader, path, "control", |name, _| {
                    check_control_name(path, name)?;
                    Ok(true)
                })?;
                let digests = reader.digests.take().unwrap_or_default();
                (
                    Some(0..first_end),
                    signatures,
                    control,
                    first_end..reader.pos,
                    digests,
                )
            } else {
                (None, Vec::new(), first, 0..first_end, first_digests)
            };

        if reader.at_eof().map_err(io)? {
            return Err(Error::Truncated {
                path: path.to_path_buf(),
                what: "no data member after the control member".into(),
            });
        }
        check_magic(&mut reader, path)?;
        let data_member = control_member.end..file_size;

        let mut pkginfo = None;
        let mut scripts = Vec::new();
        for entry in control_entries {
            if entry.typeflag != b'0' && entry.typeflag != 0 && entry.typeflag != b'7' {
                continue;
            }
            if entry.name == ".PKGINFO" {
                let text = String::from_utf8(entry.content).map_err(|_| Error::Format {
                    path: path.to_path_buf(),
                    what: ".PKGINFO is not UTF-8 text".into(),
                })?;
                pkginfo = Some(PkgInfo::parse(&text));
            } else if let Some(kind) = entry
                .name
                .strip_prefix('.')
                .and_then(ScriptKind::from_action)
            {
                scripts.push(Script {
                    kind,
                    bytes: entry.content,
                });
            } else {
                tracing::debug!("{}: ignoring control entry {}", path.display(), entry.name);
            }
        }
        let pkginfo = pkginfo.ok_or_else(|| Error::Format {
            path: path.to_path_buf(),
            what: "control member has no .PKGINFO".into(),
        })?;
        let required = |field: &'static str| -> Result<String> {
            match pkginfo.get(field) {
                Some(v) if !v.is_empty() => Ok(v.to_owned()),
                _ => Err(Error::MissingField {
                    path: path.to_path_buf(),
                    field,
                }),
            }
        };
        let name = required("pkgname")?;
        let version = required("pkgver")?;
        let arch = required("arch")?;
        let invalid = |field: &str, value: &str, reason: &str| Error::InvalidField {
            path: path.to_path_buf(),
            field: field.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if !name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'=' | b'~' | b'@'))
        {
            return Err(invalid("pkgname", &name, "not a valid package name"));
        }
        if !version::is_valid(&version) {
            return Err(invalid("pkgver", &version, "not a valid apk version"));
        }
        let datahash = match pkginfo.get("datahash") {
            None => None,
            Some(text) => {
                let bytes = hex::decode(text)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| invalid("datahash", text, "not 64 hex digits (SHA-256)"))?;
                Some(bytes)
            }
        };

        // Without datahash the signature and the identity cover control and data.
        let signed = if datahash.is_some() {
            control_digests.finish()
        } else {
            tracing::warn!(
                "{}: package without datahash (apk-tools 3 refuses these)",
                path.display()
            );
            let mut digests = control_digests;
            hash_raw_range(path, &data_member, |chunk| digests.update(chunk))?;
            digests.finish()
        };
        let identity = q1_encode(&signed.sha1);

        Ok(ApkPackage {
            path: path.to_path_buf(),
            file_size,
            signature_member,
            control_member,
            data_member,
            signatures,
            pkginfo,
            scripts,
            name,
            version,
            arch,
            datahash,
            signed,
            identity,
        })
    }

    /// The file this package was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the `.apk` file in bytes (the index's `S:`).
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Byte range of the signature member, when the package is signed.
    pub fn signature_member(&self) -> Option<Range<u64>> {
        self.signature_member.clone()
    }

    /// Byte range of the control member.
    pub fn control_member(&self) -> Range<u64> {
        self.control_member.clone()
    }

    /// Byte range of the data member (to the end of the file; extra bytes after the
    /// gzip data make [`verify_datahash`](Self::verify_datahash) and the walk fail).
    pub fn data_member(&self) -> Range<u64> {
        self.data_member.clone()
    }

    /// The `.SIGN.*` entries, in archive order.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// Parsed `.PKGINFO`.
    pub fn pkginfo(&self) -> &PkgInfo {
        &self.pkginfo
    }

    /// The install scripts, in archive order.
    pub fn scripts(&self) -> &[Script] {
        &self.scripts
    }

    /// The script of one kind, if the package has it.
    pub fn script(&self, kind: ScriptKind) -> Option<&Script> {
        self.scripts.iter().find(|s| s.kind == kind)
    }

    /// `pkgname`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `pkgver` (with `-rN`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `arch` as `.PKGINFO` says (may be `noarch`).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// `datahash` from `.PKGINFO`: SHA-256 of the data member.
    pub fn datahash(&self) -> Option<&[u8; 32]> {
        self.datahash.as_ref()
    }

    /// The package identity, `Q1…`: SHA-1 of the control member's compressed bytes
    /// (control and data without datahash). Index `C:` lines hold this.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The identity's 20 raw bytes.
    pub fn identity_sha1(&self) -> [u8; 20] {
        self.signed.sha1
    }

    /// Checks that the identity equals `expected` (an index `C:` value).
    pub fn check_identity(&self, expected: &str) -> Result<()> {
        if expected == self.identity {
            return Ok(());
        }
        Err(Error::IdentityMismatch {
            path: self.path.clone(),
            expected: expected.to_owned(),
            actual: self.identity.clone(),
        })
    }

    /// Full verification: a signature by a trusted key ([`verify_signature`]) and the
    /// datahash ([`verify_datahash`]). The data member's gzip stream and per-file
    /// checksums are checked while walking it ([`data`](Self::data)).
    ///
    /// [`verify_signature`]: Self::verify_signature
    /// [`verify_datahash`]: Self::verify_datahash
    pub fn verify(&self, keys: &Keys) -> Result<()> {
        self.verify_signature(keys)?;
        self.verify_datahash()
    }

    /// Checks the signatures: one from a key in `keys` (looked up by file name) must
    /// match the control member (control and data without datahash). Returns the name
    /// of the key that signed.
    pub fn verify_signature(&self, keys: &Keys) -> Result<&str> {
        verify_signatures(&self.path, &self.signatures, &self.signed, keys)
    }

    /// Checks `datahash` against the SHA-256 of the data member's compressed bytes. A
    /// package without datahash passes (its data is covered by the signature).
    pub fn verify_datahash(&self) -> Result<()> {
        let Some(expected) = self.datahash else {
            return Ok(());
        };
        let mut sha256 = sha2::Sha256::new();
        hash_raw_range(&self.path, &self.data_member, |chunk| sha256.update(chunk))?;
        let actual: [u8; 32] = sha256.finalize().into();
        if actual == expected {
            return Ok(());
        }
        Err(Error::DatahashMismatch {
            path: self.path.clone(),
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        })
    }

    /// Starts a streaming walk over the data member's tar entries.
    pub fn data(&self) -> Result<DataWalk> {
        let io = |error| Error::Io {
            path: self.path.clone(),
            error,
        };
        let mut file = File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(self.data_member.start))
            .map_err(io)?;
        let reader = CountingReader::new(file, self.data_member.start);
        Ok(DataWalk {
            path: self.path.clone(),
            tar: TarReader::new(flate2::bufread::MultiGzDecoder::new(reader)),
            current: None,
            earlier: HashMap::new(),
            symlinks: HashSet::new(),
            dirs: HashSet::new(),
            finished: false,
        })
    }

    /// The package as the solver and `pkg info FILE` see it, with index-style `fields`
    /// (`C P V A S I T U L o m t c k D p i`) built from `.PKGINFO`.
    pub fn package_meta(&self) -> Result<PackageMeta> {
        let location = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        super::index::meta_from_pkginfo(
            &self.path,
            &self.pkginfo,
            &self.identity,
            self.file_size,
            location,
        )
    }
}

fn check_magic(reader: &mut CountingReader<File>, path: &Path) -> Result<()> {
    let head = reader.fill_buf().map_err(|error| Error::Io {
        path: path.to_path_buf(),
        error,
    })?;
    if head.starts_with(&[0x1f, 0x8b]) || head.len() < 2 && head.first() == Some(&0x1f) {
        return Ok(());
    }
    let reason = if head.starts_with(b"ADB") {
        "starts with ADB: an apk v3 file, not supported".to_owned()
    } else if head.starts_with(b"PK") {
        "starts with PK: a zip (Android .apk?)".to_owned()
    } else if head.is_empty() {
        "empty file".to_owned()
    } else if reader.pos == 0 {
        "no gzip magic at the start".to_owned()
    } else {
        format!("no gzip member at byte {}", reader.pos)
    };
    Err(Error::NotApk {
        path: path.to_path_buf(),
        reason,
    })
}

/// Control entries are dot-files without `/`; anything else means control and data
/// share a gzip member, which apk refuses ("BAD signature").
fn check_control_name(path: &Path, name: &str) -> Result<()> {
    if name.starts_with('.') && !name.contains('/') {
        return Ok(());
    }
    Err(Error::Format {
        path: path.to_path_buf(),
        what: format!(
            "data entry {name:?} inside the control member: control and data must be \
             separate gzip members"
        ),
    })
}

fn hash_raw_range(path: &Path, range: &Range<u64>, mut feed: impl FnMut(&[u8])) -> Result<()> {
    let io = |error| Error::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut file = File::open(path).map_err(io)?;
    file.seek(SeekFrom::Start(range.start)).map_err(io)?;
    let mut limited = file.take(range.end.saturating_sub(range.start));
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = limited.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        feed(buf.get(..n).unwrap_or_default());
    }
    Ok(())
}

/// DER DigestInfo prefixes for PKCS#1 v1.5 signatures.
const SHA1_PREFIX: &[u8] = &[
    0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
];
const SHA256_PREFIX: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const SHA512_PREFIX: &[u8] = &[
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// Checks `signatures` over the bytes whose digests are `signed`; shared with indexes.
pub(crate) fn verify_signatures<'s>(
    path: &Path,
    signatures: &'s [Signature],
    signed: &DigestValues,
    keys: &Keys,
) -> Result<&'s str> {
    if signatures.is_empty() {
        return Err(Error::Unsigned {
            path: path.to_path_buf(),
        });
    }
    let mut bad_key = None;
    for signature in signatures {
        let Some(key) = keys.get(&signature.key_name) else {
            continue;
        };
        let (prefix, digest): (&[u8], &[u8]) = match signature.algorithm {
            SignatureAlgorithm::RsaSha1 => (SHA1_PREFIX, &signed.sha1),
            SignatureAlgorithm::RsaSha256 => (SHA256_PREFIX, &signed.sha256),
            SignatureAlgorithm::RsaSha512 => (SHA512_PREFIX, &signed.sha512),
            SignatureAlgorithm::Dsa => continue,
        };
        let scheme = rsa::Pkcs1v15Sign {
            hash_len: Some(digest.len()),
            prefix: prefix.into(),
        };
        match key.verify(scheme, digest, &signature.bytes) {
            Ok(()) => return Ok(&signature.key_name),
            Err(_) => bad_key = Some(signature.key_name.clone()),
        }
    }
    match bad_key {
        Some(key) => Err(Error::BadSignature {
            path: path.to_path_buf(),
            key,
        }),
        None => Err(Error::UntrustedKey {
            path: path.to_path_buf(),
            keys: signatures.iter().map(|s| s.key_name.clone()).collect(),
        }),
    }
}

/// A per-file checksum from the pax header (`APK-TOOLS.checksum.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checksum {
    /// `APK-TOOLS.checksum.SHA1` (every current package).
    Sha1([u8; 20]),
    /// `APK-TOOLS.checksum.MD5` (legacy).
    Md5([u8; 16]),
}

impl fmt::Display for Checksum {
    /// The installed-db `Z:` form: `Q1…` for SHA-1, 32 hex digits for MD5.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksum::Sha1(d) => f.write_str(&q1_encode(d)),
            Checksum::Md5(d) => f.write_str(&hex::encode(d)),
        }
    }
}

/// The kind of a data entry. Device nodes and fifos are refused, so there are four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file; its content is read through the entry.
    File,
    /// A symbolic link; `link_target` holds its target.
    Symlink,
    /// A hard link to an earlier entry of the same package (`link_target`).
    Hardlink,
}

/// A running content hash for the entry being read.
enum ContentHasher {
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
}

struct ContentCheck {
    entry: String,
    expected: Checksum,
    hasher: ContentHasher,
}

impl ContentCheck {
    fn new(entry: &str, expected: Checksum) -> ContentCheck {
        let hasher = match expected {
            Checksum::Sha1(_) => ContentHasher::Sha1(sha1::Sha1::new()),
            Checksum::Md5(_) => ContentHasher::Md5(md5::Md5::new()),
        };
        ContentCheck {
            entry: entry.to_owned(),
            expected,
            hasher,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match &mut self.hasher {
            ContentHasher::Sha1(h) => h.update(bytes),
            ContentHasher::Md5(h) => h.update(bytes),
        }
    }

    fn finish(self, path: &Path) -> Result<()> {
        let actual = match self.hasher {
            ContentHasher::Sha1(h) => Checksum::Sha1(h.finalize().into()),
            ContentHasher::Md5(h) => Checksum::Md5(h.finalize().into()),
        };
        if actual == self.expected {
            return Ok(());
        }
        Err(Error::ChecksumMismatch {
            path: path.to_path_buf(),
            entry: self.entry,
            expected: self.expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

/// A streaming walk over a package's data tar, in archive order.
///
/// Call [`next_entry`](Self::next_entry) until it returns `None`. Each regular file's
/// content is hashed as it is read (or skipped) and compared with its pax checksum;
/// a mismatch is an error from `read` or from the next `next_entry`. Entries apk would
/// refuse as malicious are errors here, not skips. At the end the gzip stream must end
/// cleanly with nothing after it.
pub struct DataWalk {
    path: PathBuf,
    tar: TarReader<flate2::bufread::MultiGzDecoder<CountingReader<File>>>,
    current: Option<ContentCheck>,
    /// Earlier non-directory entries with their checksums, for hard links.
    earlier: HashMap<String, (EntryKind, Option<Checksum>)>,
    symlinks: HashSet<String>,
    dirs: HashSet<String>,
    finished: bool,
}

/// One entry of the data tar.
pub struct DataEntry<'a> {
    /// Path relative to the root, without leading `/` or trailing `/` (`usr/bin/foo`).
    pub path: String,
    /// Directory, file, symlink or hard link.
    pub kind: EntryKind,
    /// Permission bits (`& 0o7777`, including setuid/setgid/sticky).
    pub mode: u32,
    /// Owner name; apk resolves it in the target's `/etc/passwd` first.
    pub uname: String,
    /// Group name; resolved in the target's `/etc/group` first.
    pub gname: String,
    /// Numeric uid from the tar, used only when the name is unknown in the target.
    pub uid: u64,
    /// Numeric gid from the tar, likewise.
    pub gid: u64,
    /// Content size in bytes (0 for directories and links).
    pub size: u64,
    /// Modification time from the tar (seconds since the epoch).
    pub mtime: u64,
    /// Symlink target, or the path of a hard link's target entry.
    pub link_target: Option<String>,
    /// Extended attributes from `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// The installed-db checksum: the file's pax `APK-TOOLS.checksum`, the SHA-1 of a
    /// symlink's target, or for a hard link its target's checksum. `None` for
    /// directories and for files packaged without one.
    pub checksum: Option<Checksum>,
    walk: &'a mut DataWalk,
}

impl fmt::Debug for DataEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataEntry")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("uname", &self.uname)
            .field("gname", &self.gname)
            .field("size", &self.size)
            .field("link_target", &self.link_target)
            .field("checksum", &self.checksum.map(|c| c.to_string()))
            .finish()
    }
}

impl Read for DataEntry<'_> {
    /// Reads file content; at its end the checksum is compared. Failures wrap the
    /// [`Error`] ([`Error::ChecksumMismatch`], [`Error::Truncated`], …), which
    /// [`Error::from_read_error`] recovers.
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.walk.read_content(out).map_err(|e| match e {
            Error::Io { error, .. } => error,
            Error::Truncated { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, e),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        })
    }
}

impl DataWalk {
    fn tar_error(&self, e: TarError) -> Error {
        e.into_error(&self.path, "data")
    }

    fn hostile(&self, entry: &str, reason: impl Into<String>) -> Error {
        Error::HostileEntry {
            path: self.path.clone(),
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }

    fn read_content(&mut self, out: &mut [u8]) -> Result<usize> {
        let n = self.tar.read_content(out).map_err(|e| self.tar_error(e))?;
        if let Some(check) = &mut self.current {
            check.update(out.get(..n).unwrap_or_default());
        }
        if self.tar.remaining() == 0
            && let Some(check) = self.current.take()
        {
            check.finish(&self.path)?;
        }
        Ok(n)
    }

    /// Reads (and checks) what the caller left unread of the previous entry.
    fn finish_current(&mut self) -> Result<()> {
        let mut scratch = vec![0u8; 64 * 1024];
        while self.current.is_some() && self.tar.remaining() > 0 {
            self.read_content(&mut scratch)?;
        }
        if let Some(check) = self.current.take() {
            check.finish(&self.path)?;
        }
        Ok(())
    }

    /// The next entry in archive order, or `None` after the last one. Skips top-level
    /// dot entries (apk ignores them in the data part) and `.keep_*` files.
    pub fn next_entry(&mut self) -> Result<Option<DataEntry<'_>>> {
        if self.finished {
            return Ok(None);
        }
        self.finish_current()?;
        loop {
            let Some(header) = self.tar.next_header().map_err(|e| self.tar_error(e))? else {
                self.tar.finish().map_err(|e| self.tar_error(e))?;
                self.finished = true;
                return Ok(None);
            };
            if let Some(entry) = self.admit(header)? {
                return Ok(Some(DataEntry {
                    path: entry.path,
                    kind: entry.kind,
                    mode: entry.mode,
                    uname: entry.uname,
                    gname: entry.gname,
                    uid: entry.uid,
                    gid: entry.gid,
                    size: entry.size,
                    mtime: entry.mtime,
                    link_target: entry.link_target,
                    xattrs: entry.xattrs,
                    checksum: entry.checksum,
                    walk: self,
                }));
            }
        }
    }

    /// Validates one header; `Ok(None)` for entries apk skips.
    fn admit(&mut self, header: TarHeader) -> Result<Option<PendingEntry>> {
        let raw_name = String::from_utf8_lossy(&header.name).into_owned();
        let name = String::from_utf8(header.name.clone())
            .map_err(|_| self.hostile(&raw_name, "name is not UTF-8"))?;
        let kind = match header.typeflag {
            b'0' | 0 | b'7' => EntryKind::File,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'5' => EntryKind::Dir,
            b'3' | b'4' => return Err(self.hostile(&name, "device node")),
            b'6' => return Err(self.hostile(&name, "fifo")),
            other => {
                return Err(self.hostile(
                    &name,
                    format!("unsupported tar entry type {:?}", char::from(other)),
                ));
            }
        };
        let path = match name.strip_suffix('/') {
            Some(stripped) if kind == EntryKind::Dir => stripped.to_owned(),
            Some(_) => return Err(self.hostile(&name, "non-directory name ends with '/'")),
            None => name.clone(),
        };
        self.check_path(&name, &path)?;
        // apk ignores data entries whose name starts with a dot (`.dummy`).
        if path.starts_with('.') {
            return Ok(None);
        }
        let basename = path.rsplit('/').next().unwrap_or(&path);
        if kind != EntryKind::Dir && basename.starts_with(".keep_") {
            return Ok(None);
        }
        if let Some((parent, _)) = path.rsplit_once('/')
            && !self.dirs.contains(parent)
        {
            tracing::warn!(
                "{}: {path}: no directory entry for {parent} earlier in the archive",
                self.path.display()
            );
        }

        let mut checksum = None;
        for (key, value) in &header.pax {
            let Some(alg) = key.strip_prefix("APK-TOOLS.checksum.") else {
                continue;
            };
            let bytes = std::str::from_utf8(value)
                .ok()
                .and_then(|t| hex::decode(t).ok());
            let parsed = match (alg, bytes) {
                ("SHA1", Some(b)) => <[u8; 20]>::try_from(b).ok().map(Checksum::Sha1),
                ("MD5", Some(b)) => <[u8; 16]>::try_from(b).ok().map(Checksum::Md5),
                _ => None,
            };
            // SHA-1 is stronger than MD5; keep the strongest.
            match (checksum, parsed) {
                (_, Some(c @ Checksum::Sha1(_))) | (None, Some(c)) => checksum = Some(c),
                _ => {}
            }
        }
        let xattrs: Vec<(String, Vec<u8>)> = header
            .pax
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("SCHILY.xattr.")
                    .map(|n| (n.to_owned(), v.clone()))
            })
            .collect();

        let link_target = match kind {
            EntryKind::Symlink => {
                let target = String::from_utf8(header.link.clone())
                    .map_err(|_| self.hostile(&name, "symlink target is not UTF-8"))?;
                if target.is_empty() {
                    return Err(self.hostile(&name, "symlink without target"));
                }
                if let Some(expected) = checksum {
                    let mut check = ContentCheck::new(&path, expected);
                    check.update(target.as_bytes());
                    check.finish(&self.path)?;
                }
                Some(target)
            }
            EntryKind::Hardlink => {
                let target = String::from_utf8(header.link.clone())
                    .map_err(|_| self.hostile(&name, "hard link target is not UTF-8"))?;
                match self.earlier.get(&target) {
                    Some((EntryKind::Dir, _)) | None => {
                        return Err(self.hostile(
                            &name,
                            format!(
                                "hard link target {target:?} is not an earlier file of this package"
                            ),
                        ));
                    }
                    Some((_, target_checksum)) => checksum = *target_checksum,
                }
                Some(target)
            }
            // Old abuild packs a binary digest into a regular file's linkname: ignore it.
            EntryKind::File | EntryKind::Dir => None,
        };

        match kind {
            EntryKind::Dir => {
                checksum = None;
                self.dirs.insert(path.clone());
            }
            EntryKind::Symlink => {
                self.symlinks.insert(path.clone());
                self.earlier.insert(path.clone(), (kind, checksum));
            }
            EntryKind::File | EntryKind::Hardlink => {
                self.earlier.insert(path.clone(), (kind, checksum));
            }
        }
        if kind == EntryKind::File
            && let Some(expected) = checksum
        {
            let check = ContentCheck::new(&path, expected);
            if header.size == 0 {
                check.finish(&self.path)?;
            } else {
                self.current = Some(check);
            }
        }
        Ok(Some(PendingEntry {
            path,
            kind,
            mode: header.mode,
            uname: header.uname,
            gname: header.gname,
            uid: header.uid,
            gid: header.gid,
            size: if kind == EntryKind::File {
                header.size
            } else {
                0
            },
            mtime: header.mtime,
            link_target,
            xattrs,
            checksum,
        }))
    }

    /// apk's sanity rules plus one more: no absolute path, no `.`/`..`/empty segment, no
    /// control character, and no path through a symlink this package made earlier.
    fn check_path(&self, name: &str, path: &str) -> Result<()> {
        if path.is_empty() {
            return Err(self.hostile(name, "empty name"));
        }
        if path.starts_with('/') {
            return Err(self.hostile(name, "absolute path"));
        }
        if path.chars().any(|c| c.is_control()) {
            return Err(self.hostile(name, "control character in name"));
        }
        for segment in path.split('/') {
            match segment {
                "" => return Err(self.hostile(name, "empty path segment")),
                "." | ".." => {
                    return Err(self.hostile(name, format!("'{segment}' path segment")));
                }
                _ => {}
            }
        }
        for (at, _) in path.match_indices('/') {
            let ancestor = path.get(..at).unwrap_or_default();
            if self.symlinks.contains(ancestor) {
                return Err(self.hostile(
                    name,
                    format!("goes through {ancestor}, a symlink earlier in this package"),
                ));
            }
        }
        Ok(())
    }
}

/// A validated entry before it is tied to the walk.
struct PendingEntry {
    path: String,
    kind: EntryKind,
    mode: u32,
    uname: String,
    gname: String,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link_target: Option<String>,
    xattrs: Vec<(String, Vec<u8>)>,
    checksum: Option<Checksum>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkginfo_keeps_repeatable_keys_in_order() {
        let info = PkgInfo::parse(
            "# comment\npkgname = foo\npkgver = 1.0-r0\ndepend = a\ndepend = b c\nbroken\nurl = \n",
        );
        assert_eq!(info.get("pkgname"), Some("foo"));
        assert_eq!(info.get_all("depend").collect::<Vec<_>>(), ["a", "b c"]);
        assert_eq!(info.joined("depend"), "a b c");
        assert_eq!(info.get("url"), Some(""));
        assert_eq!(info.fields.len(), 5);
    }

    #[test]
    fn script_kinds_round_trip() {
        for kind in ScriptKind::ALL {
            assert_eq!(ScriptKind::from_action(kind.action()), Some(kind));
        }
        assert_eq!(ScriptKind::from_action("INSTALL"), None);
    }

    #[test]
    fn sign_entry_names() {
        assert_eq!(
            sign_algorithm(".SIGN.RSA.alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"),
            Some((
                SignatureAlgorithm::RsaSha1,
                "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"
            ))
        );
        assert_eq!(
            sign_algorithm(".SIGN.RSA256.k").map(|s| s.0),
            Some(SignatureAlgorithm::RsaSha256)
        );
        assert_eq!(sign_algorithm(".SIGN.XYZ.k"), None);
        assert_eq!(sign_algorithm(".PKGINFO"), None);
    }
}
