//! A Debian archive's `Release` file: what a suite is, and the size and checksums of every
//! index it lists, as signed by the archive's OpenPGP key.
//!
//! Verification comes first and parsing second: [`verify_inrelease`] and [`verify_detached`]
//! check the signature against a [`Keyring`] and hand back the signed text, and only that text
//! is given to [`Release::parse`]. Text outside the signed part of an `InRelease` never reaches
//! the parser.
//!
//! ```no_run
//! use std::path::Path;
//! use treeline_pkg::deb::release::{verify_inrelease, Keyring, Release};
//!
//! let keyring = Keyring::from_file(Path::new("/usr/share/keyrings/debian-archive-keyring.gpg"))?;
//! let in_release = std::fs::read("InRelease")?;
//! let verified = verify_inrelease(&in_release, &keyring, "InRelease")?;
//! let release = Release::parse(&verified.text, "InRelease")?;
//! release.check_valid_until(std::time::SystemTime::now())?;
//! let packages = release.index_file("main/binary-amd64/Packages.xz");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::KeyDetails;

/// Errors reading, verifying or checking a Release file or a keyring; each names its input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A keyring holds no usable OpenPGP public key.
    #[error("{source_name}: no usable OpenPGP public key in this keyring{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    EmptyKeyring {
        /// The keyring.
        source_name: String,
        /// Why the keys in it could not be read, when something was there.
        detail: Option<String>,
    },
    /// The signed file or its signature is not well-formed OpenPGP.
    #[error("{source_name}: malformed OpenPGP data: {detail}")]
    MalformedSignature {
        /// The file.
        source_name: String,
        /// What the OpenPGP parser said.
        detail: String,
    },
    /// A signature made by a key of the keyring does not match the signed text.
    #[error("{source_name}: BAD signature from key {key} ({detail})")]
    BadSignature {
        /// The file.
        source_name: String,
        /// The fingerprint of the key, in upper-case hex.
        key: String,
        /// What the verifier said.
        detail: String,
    },
    /// No signature was made by a key of the keyring.
    #[error("{source_name}: no signature by a key of the keyring (signed by: {issuers})")]
    UnknownSigner {
        /// The file.
        source_name: String,
        /// The issuers named by the signatures, or "nobody" when there were none.
        issuers: String,
    },
    /// The signed text is not UTF-8.
    #[error("{source_name}: the signed text is not UTF-8")]
    NotUtf8 {
        /// The file.
        source_name: String,
    },
    /// A line of the Release file cannot be understood.
    #[error("{source_name}: line {line}: {problem}")]
    Syntax {
        /// The file.
        source_name: String,
        /// 1-based line number within the signed text.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// A date field cannot be read.
    #[error("{source_name}: field {field}: cannot read date {value:?}")]
    BadDate {
        /// The file.
        source_name: String,
        /// `Date` or `Valid-Until`.
        field: &'static str,
        /// The text of the field.
        value: String,
    },
    /// The Release file is past its `Valid-Until` date: a replay of an old archive state.
    #[error("{source_name}: expired: Valid-Until {valid_until} is before now")]
    Expired {
        /// The file.
        source_name: String,
        /// The text of the `Valid-Until` field.
        valid_until: String,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The parsed content of a `Release` file (or of the signed part of an `InRelease`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `Origin`, e.g. `Debian`.
    pub origin: Option<String>,
    /// `Label`.
    pub label: Option<String>,
    /// `Suite`, e.g. `stable`.
    pub suite: Option<String>,
    /// `Codename`, e.g. `bookworm`.
    pub codename: Option<String>,
    /// `Version`, e.g. `12.8`.
    pub version: Option<String>,
    /// `Date`, as written.
    pub date: Option<String>,
    /// `Valid-Until`, as written.
    pub valid_until: Option<String>,
    /// `Architectures`.
    pub architectures: Vec<String>,
    /// `Components`.
    pub components: Vec<String>,
    /// `Acquire-By-Hash: yes`: indexes may be fetched as `by-hash/SHA256/<digest>`.
    pub acquire_by_hash: bool,
    /// `NotAutomatic: yes` (experimental, backports): apt installs from it only when asked.
    pub not_automatic: bool,
    /// `ButAutomaticUpgrades: yes` (backports): upgrades of what came from it are taken.
    pub but_automatic_upgrades: bool,
    /// Every index listed under `SHA256` or `MD5Sum`, by path relative to the suite directory.
    pub files: BTreeMap<String, IndexFile>,
    date_time: Option<SystemTime>,
    valid_until_time: Option<SystemTime>,
    /// The input's name, for errors found after parsing.
    source_name: String,
}

/// What a Release file says about one index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexFile {
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 digest, when the `SHA256` list has the file.
    pub sha256: Option<[u8; 32]>,
    /// MD5 digest, when the `MD5Sum` list has the file (not a security check on its own).
    pub md5: Option<[u8; 16]>,
}

impl Release {
    /// Parses Release text (verified text: see [`verify_inrelease`] and [`verify_detached`]).
    /// `source_name` names the input in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Release> {
        let syntax = |line: usize, problem: String| Error::Syntax {
            source_name: source_name.to_owned(),
            line,
            problem,
        };
        let mut release = Release {
            origin: None,
            label: None,
            suite: None,
            codename: None,
            version: None,
            date: None,
            valid_until: None,
            architectures: Vec::new(),
            components: Vec::new(),
            acquire_by_hash: false,
            not_automatic: false,
            but_automatic_upgrades: false,
            files: BTreeMap::new(),
            date_time: None,
            valid_until_time: None,
            source_name: source_name.to_owned(),
        };
        // The field whose continuation lines we are in, if it is a checksum list.
        let mut list: Option<ChecksumList> = None;
        let mut seen_fields: Vec<String> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.trim().is_empty() {
                // One paragraph only; apt ignores what might follow a blank line, so do we.
                if !seen_fields.is_empty() {
                    break;
                }
                continue;
            }
            if line.starts_with([' ', '\t']) {
                let Some(kind) = list else {
                    continue;
                };
                release.add_checksum_line(kind, line, number, source_name)?;
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| syntax(number, format!("not a field: {line:?}")))?;
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(syntax(number, format!("bad field name {name:?}")));
            }
            if seen_fields
                .iter()
                .any(|seen| seen.eq_ignore_ascii_case(name))
            {
                return Err(syntax(number, format!("field {name} appears twice")));
            }
            seen_fields.push(name.to_owned());
            let value = value.trim();
            list = None;
            match name.to_ascii_lowercase().as_str() {
                "origin" => release.origin = Some(value.to_owned()),
                "label" => release.label = Some(value.to_owned()),
                "suite" => release.suite = Some(value.to_owned()),
                "codename" => release.codename = Some(value.to_owned()),
                "version" => release.version = Some(value.to_owned()),
                "date" => {
                    release.date_time = Some(parse_date(value, "Date", source_name)?);
                    release.date = Some(value.to_owned());
                }
                "valid-until" => {
                    release.valid_until_time = Some(parse_date(value, "Valid-Until", source_name)?);
                    release.valid_until = Some(value.to_owned());
                }
                "architectures" => release.architectures = words(value),
                "components" => release.components = words(value),
                "acquire-by-hash" => release.acquire_by_hash = value.eq_ignore_ascii_case("yes"),
                "notautomatic" => release.not_automatic = value.eq_ignore_ascii_case("yes"),
                "butautomaticupgrades" => {
                    release.but_automatic_upgrades = value.eq_ignore_ascii_case("yes")
                }
                "sha256" => list = Some(ChecksumList::Sha256),
                "md5sum" => list = Some(ChecksumList::Md5),
                _ => {}
            }
            if list.is_some() && !value.is_empty() {
                return Err(syntax(
                    number,
                    format!("{name} must start on the next line"),
                ));
            }
        }
        Ok(release)
    }

    /// The size and digests of an index, by its path relative to the suite directory
    /// (`main/binary-amd64/Packages.xz`).
    pub fn index_file(&self, path: &str) -> Option<&IndexFile> {
        self.files.get(path)
    }

    /// The pin priority apt gives this suite's packages without a preferences file: 1 for
    /// `NotAutomatic` (experimental), 100 when it also has `ButAutomaticUpgrades`
    /// (backports), 500 otherwise. apt's candidate for a name is its version of highest
    /// pin priority, then highest version, so backports never win over the release.
    pub fn default_pin(&self) -> i32 {
        match (self.not_automatic, self.but_automatic_upgrades) {
            (true, true) => 100,
            (true, false) => 1,
            (false, _) => 500,
        }
    }

    /// `Date` as a point in time.
    pub fn date_time(&self) -> Option<SystemTime> {
        self.date_time
    }

    /// `Valid-Until` as a point in time.
    pub fn valid_until_time(&self) -> Option<SystemTime> {
        self.valid_until_time
    }

    /// Fails with [`Error::Expired`] when `now` is past `Valid-Until`. A Release without
    /// `Valid-Until` never expires (Debian's stable suites have none; security suites do).
    pub fn check_valid_until(&self, now: SystemTime) -> Result<()> {
        match (self.valid_until_time, &self.valid_until) {
            (Some(limit), Some(text)) if now > limit => Err(Error::Expired {
                source_name: self.source_name.clone(),
                valid_until: text.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn add_checksum_line(
        &mut self,
        kind: ChecksumList,
        line: &str,
        number: usize,
        source_name: &str,
    ) -> Result<()> {
        let syntax = |problem: String| Error::Syntax {
            source_name: source_name.to_owned(),
            line: number,
            problem,
        };
        let mut parts = line.split_whitespace();
        let (Some(digest), Some(size), Some(path), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(syntax(format!(
                "checksum line is not `digest size path`: {line:?}"
            )));
        };
        let size: u64 = size
            .parse()
            .map_err(|_| syntax(format!("bad size {size:?} for {path}")))?;
        if !is_relative_clean(path) {
            return Err(syntax(format!("unsafe index path {path:?}")));
        }
        let entry = self.files.entry(path.to_owned()).or_insert(IndexFile {
            size,
            sha256: None,
            md5: None,
        });
        if entry.size != size {
            return Err(syntax(format!(
                "{path} is listed with two sizes, {} and {size}",
                entry.size
            )));
        }
        let bad_digest = || syntax(format!("bad {} digest {digest:?} for {path}", kind.name()));
        match kind {
            ChecksumList::Sha256 => {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(digest, &mut bytes).map_err(|_| bad_digest())?;
                entry.sha256 = Some(bytes);
            }
            ChecksumList::Md5 => {
                let mut bytes = [0u8; 16];
                hex::decode_to_slice(digest, &mut bytes).map_err(|_| bad_digest())?;
                entry.md5 = Some(bytes);
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum ChecksumList {
    Sha256,
    Md5,
}

impl ChecksumList {
    fn name(self) -> &'static str {
        match self {
            ChecksumList::Sha256 => "SHA256",
            ChecksumList::Md5 => "MD5Sum",
        }
    }
}

fn words(value: &str) -> Vec<String> {
    value.split_whitespace().map(str::to_owned).collect()
}

/// A path that stays inside the suite directory: relative, no `..`, no empty or `.` parts.
fn is_relative_clean(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Reads an RFC 2822 date as Release files write it: `Sat, 11 Jan 2025 10:03:17 UTC`
/// (the day name is optional; the zone is `UTC`, `GMT`, `Z` or `+hhmm`/`-hhmm`).
fn parse_date(value: &str, field: &'static str, source_name: &str) -> Result<SystemTime> {
    let bad = || Error::BadDate {
        source_name: source_name.to_owned(),
        field,
        value: value.to_owned(),
    };
    let rest = match value.split_once(',') {
        Some((_day_name, rest)) => rest,
        None => value,
    };
    let mut parts = rest.split_whitespace();
    let (Some(day), Some(month), Some(year), Some(clock), zone, None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    let day: u32 = day.parse().map_err(|_| bad())?;
    let month = MONTHS
        .iter()
        .position(|name| name.eq_ignore_ascii_case(month))
        .ok_or_else(bad)?;
    let year: i64 = year.parse().map_err(|_| bad())?;
    let mut clock_parts = clock.split(':');
    let (Some(hour), Some(minute), Some(second), None) = (
        clock_parts.next(),
        clock_parts.next(),
        clock_parts.next(),
        clock_parts.next(),
    ) else {
        return Err(bad());
    };
    let hour: i64 = hour.parse().map_err(|_| bad())?;
    let minute: i64 = minute.parse().map_err(|_| bad())?;
    let second: i64 = second.parse().map_err(|_| bad())?;
    let offset = match zone {
        None | Some("UTC" | "GMT" | "Z" | "UT") => 0,
        Some(zone) => parse_zone_offset(zone).ok_or_else(bad)?,
    };
    if !(1..=days_in_month(year, month as u32 + 1)).contains(&day)
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0..=60).contains(&second)
    {
        return Err(bad());
    }
    let days = days_since_epoch(year, month as u32 + 1, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let seconds = u64::try_from(seconds).map_err(|_| bad())?;
    UNIX_EPOCH
        .checked_add(Duration::from_secs(seconds))
        .ok_or_else(bad)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `+hhmm` or `-hhmm` as seconds east of UTC.
fn parse_zone_offset(zone: &str) -> Option<i64> {
    let (sign, digits) = match zone.as_bytes().first()? {
        b'+' => (1, zone.get(1..)?),
        b'-' => (-1, zone.get(1..)?),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = digits.get(..2)?.parse().ok()?;
    let minutes: i64 = digits.get(2..)?.parse().ok()?;
    Some(sign * (hours * 3600 + minutes * 60))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_since_epoch(year: i64, month: u32, day: u32) -> i64 {
    // Count from 1 March so that the leap day is the last day of the counting year.
    let (year, month) = if month <= 2 {
        (year - 1, i64::from(month) + 9)
    } else {
        (year, i64::from(month) - 3)
    };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    // 719468 days separate 0000-03-01 from 1970-01-01.
    era * 146_097 + day_of_era - 719_468
}

/// A set of trusted OpenPGP public keys (an apt `Signed-By` keyring or
/// `/usr/share/keyrings/debian-archive-keyring.gpg`).
#[derive(Debug, Clone)]
pub struct Keyring {
    /// Each certificate with the keys of it that may sign: the primary key, and the subkeys
    /// whose binding to it verifies.
    certificates: Vec<Certificate>,
}

#[derive(Debug, Clone)]
struct Certificate {
    primary: SignedPublicKey,
    /// Indexes into `primary.public_subkeys` of the subkeys with a good binding.
    bound_subkeys: Vec<usize>,
}

const ARMOR_BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";

impl Keyring {
    /// Reads a keyring file: binary (`.gpg`, several keys one after the other) or armored
    /// (`.asc`, one or more `BEGIN PGP PUBLIC KEY BLOCK` sections).
    pub fn from_file(path: &Path) -> Result<Keyring> {
        let bytes = std::fs::read(path).map_err(|error| Error::Io {
            path: path.to_owned(),
            error,
        })?;
        Keyring::from_bytes(&bytes, &path.display().to_string())
    }

    /// Reads a keyring from memory; `source_name` names it in errors.
    pub fn from_bytes(bytes: &[u8], source_name: &str) -> Result<Keyring> {
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        let text = std::str::from_utf8(bytes).ok();
        match text.filter(|text| text.trim_start().starts_with("-----BEGIN ")) {
            Some(text) => {
                for block in text.split(ARMOR_BEGIN).skip(1) {
                    let armored = format!("{ARMOR_BEGIN}{block}");
                    match SignedPublicKey::from_armor_many(armored.as_bytes()) {
                        Ok((parsed, _headers)) => collect_keys(parsed, &mut keys, &mut problems),
                        Err(error) => problems.push(error.to_string()),
                    }
                }
            }
            None => match SignedPublicKey::from_bytes_many(bytes) {
                Ok(parsed) => collect_keys(parsed, &mut keys, &mut problems),
                Err(error) => problems.push(error.to_string()),
            },
        }
        for problem in &problems {
            tracing::warn!("{source_name}: skipping an unreadable key: {problem}");
        }
        let certificates: Vec<Certificate> = keys
            .into_iter()
            .map(|primary| {
                let bound_subkeys = primary
                    .public_subkeys
                    .iter()
                    .enumerate()
                    .filter(|(_, subkey)| subkey.verify_bindings(&primary.primary_key).is_ok())
                    .map(|(index, _)| index)
                    .collect();
                Certificate {
                    primary,
                    bound_subkeys,
                }
            })
            .collect();
        if certificates.is_empty() {
            return Err(Error::EmptyKeyring {
                source_name: source_name.to_owned(),
                detail: problems.first().cloned(),
            });
        }
        Ok(Keyring { certificates })
    }

    /// Number of certificates (primary keys) in the keyring.
    pub fn len(&self) -> usize {
        self.certificates.len()
    }

    /// Whether the keyring is empty (never true for one that was read successfully).
    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }

    /// Fingerprints of the primary keys, in upper-case hex.
    pub fn fingerprints(&self) -> Vec<String> {
        self.certificates
            .iter()
            .map(|cert| format!("{:X}", cert.primary.primary_key.fingerprint()))
            .collect()
    }

    /// Checks one data signature against every key of the keyring that it names as issuer.
    /// `Ok(Some(fingerprint))` for a good signature, `Ok(None)` when no key of the keyring
    /// made it, an error when one did but the signature does not match.
    fn check(
        &self,
        signature: &Signature,
        data: &[u8],
        source_name: &str,
    ) -> Result<Option<String>> {
        if !matches!(
            signature.typ(),
            Some(SignatureType::Binary | SignatureType::Text)
        ) {
            return Ok(None);
        }
        for cert in &self.certificates {
            let primary = &cert.primary.primary_key;
            let subkeys = cert
                .bound_subkeys
                .iter()
                .filter_map(|&index| cert.primary.public_subkeys.get(index))
                .map(|subkey| &subkey.key);
            let candidates =
                std::iter::once(KeyRef::Primary(primary)).chain(subkeys.map(KeyRef::Sub));
            for key in candidates {
                if !names_issuer(signature, &key) {
                    continue;
                }
                let fingerprint = format!("{:X}", key.fingerprint());
                return match key.verify_signature(signature, data) {
                    Ok(()) => Ok(Some(fingerprint)),
                    Err(error) => Err(Error::BadSignature {
                        source_name: source_name.to_owned(),
                        key: fingerprint,
                        detail: error.to_string(),
                    }),
                };
            }
        }
        Ok(None)
    }
}

fn collect_keys(
    parsed: impl Iterator<Item = pgp::errors::Result<SignedPublicKey>>,
    keys: &mut Vec<SignedPublicKey>,
    problems: &mut Vec<String>,
) {
    for key in parsed {
        match key {
            Ok(key) => keys.push(key),
            Err(error) => problems.push(error.to_string()),
        }
    }
}

/// A key that may have made a signature: a primary key or a bound subkey.
enum KeyRef<'a> {
    Primary(&'a pgp::packet::PublicKey),
    Sub(&'a pgp::packet::PublicSubkey),
}

impl KeyRef<'_> {
    fn fingerprint(&self) -> pgp::types::Fingerprint {
        match self {
            KeyRef::Primary(key) => key.fingerprint(),
            KeyRef::Sub(key) => key.fingerprint(),
        }
    }

    fn legacy_key_id(&self) -> pgp::types::KeyId {
        match self {
            KeyRef::Primary(key) => key.legacy_key_id(),
            KeyRef::Sub(key) => key.legacy_key_id(),
        }
    }

    fn verify_signature(&self, signature: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        match self {
            KeyRef::Primary(key) => signature.verify(*key, data),
            KeyRef::Sub(key) => signature.verify(*key, data),
        }
    }
}

/// Whether the signature names `key` as its issuer (by key id or fingerprint). A signature
/// naming no issuer at all names nobody: it cannot be attributed, so it never counts.
fn names_issuer(signature: &Signature, key: &KeyRef<'_>) -> bool {
    let key_id = key.legacy_key_id();
    let fingerprint = key.fingerprint();
    signature
        .issuer_key_id()
        .into_iter()
        .any(|id| *id == key_id)
        || signature
            .issuer_fingerprint()
            .into_iter()
            .any(|fp| *fp == fingerprint)
}

/// Text whose signature verified, and who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed text, with `\n` line ends, exactly as covered by the signature (for
    /// `InRelease`, dash-escaping undone and trailing white space of lines removed, as the
    /// cleartext signature framework hashes it).
    pub text: String,
    /// Fingerprints (upper-case hex) of the keys whose signatures verified.
    pub signers: Vec<String>,
}

/// Verifies a clearsigned `InRelease` against `keyring` and returns its signed text.
///
/// Succeeds only when at least one signature was made by a key of the keyring and verifies;
/// fails when any signature by a key of the keyring does not verify (as apt does with a bad
/// signature). Signatures by other keys are ignored.
pub fn verify_inrelease(
    in_release: &[u8],
    keyring: &Keyring,
    source_name: &str,
) -> Result<Verified> {
    let malformed = |detail: String| Error::MalformedSignature {
        source_name: source_name.to_owned(),
        detail,
    };
    let text = std::str::from_utf8(in_release).map_err(|_| Error::NotUtf8 {
        source_name: source_name.to_owned(),
    })?;
    let (message, _headers) =
        CleartextSignedMessage::from_string(text).map_err(|error| malformed(error.to_string()))?;
    let signed = message.signed_text();
    let signers = check_all(
        message.signatures(),
        signed.as_bytes(),
        keyring,
        source_name,
    )?;
    Ok(Verified {
        text: signed.replace("\r\n", "\n"),
        signers,
    })
}

/// Verifies a `Release` file against its detached signature `Release.gpg` (binary or
/// armored) and returns the Release text. The same rules as [`verify_inrelease`] apply.
pub fn verify_detached(
    release: &[u8],
    signature: &[u8],
    keyring: &Keyring,
    source_name: &str,
) -> Result<Verified> {
    let malformed = |detail: String| Error::MalformedSignature {
        source_name: source_name.to_owned(),
        detail,
    };
    let armored = signature
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .and_then(|start| signature.get(start..))
        .is_some_and(|rest| rest.starts_with(b"-----BEGIN PGP SIGNATURE-----"));
    let parsed: Vec<DetachedSignature> = if armored {
        let (signatures, _headers) = DetachedSignature::from_armor_many(signature)
            .map_err(|error| malformed(error.to_string()))?;
        signatures.collect::<pgp::errors::Result<_>>()
    } else {
        DetachedSignature::from_bytes_many(signature)
            .map_err(|error| malformed(error.to_string()))?
            .collect::<pgp::errors::Result<_>>()
    }
    .map_err(|error| malformed(error.to_string()))?;
    let signatures: Vec<Signature> = parsed
        .into_iter()
        .map(|detached| detached.signature)
        .collect();
    let signers = check_all(&signatures, release, keyring, source_name)?;
    let text = String::from_utf8(release.to_vec()).map_err(|_| Error::NotUtf8 {
        source_name: source_name.to_owned(),
    })?;
    Ok(Verified { text, signers })
}

fn check_all(
    signatures: &[Signature],
    data: &[u8],
    keyring: &Keyring,
    source_name: &str,
) -> Result<Vec<String>> {
    let mut signers = Vec::new();
    for signature in signatures {
        if let Some(fingerprint) = keyring.check(signature, data, source_name)? {
            signers.push(fingerprint);
        }
    }
    if signers.is_empty() {
        let issuers: Vec<String> = signatures
            .iter()
            .flat_map(|signature| {
                let fingerprints = signature
                    .issuer_fingerprint()
                    .into_iter()
                    .map(|fp| format!("{fp:X}"));
                let ids = signature
                    .issuer_key_id()
                    .into_iter()
                    .map(|id| hex::encode_upper(id.as_ref()));
                fingerprints.chain(ids).collect::<Vec<_>>()
            })
            .collect();
        return Err(Error::UnknownSigner {
            source_name: source_name.to_owned(),
            issuers: if issuers.is_empty() {
                "nobody".to_owned()
            } else {
                issuers.join(", ")
            },
        });
    }
    Ok(signers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Origin: Debian
Label: Debian
Suite: stable
Version: 12.8
Codename: bookworm
Date: Sat, 09 Nov 2024 10:03:17 UTC
Valid-Until: Sat, 16 Nov 2024 10:03:17 UTC
Acquire-By-Hash: yes
Architectures: all amd64 arm64
Components: main contrib
Description: Debian 12.8 Released 09 November 2024
MD5Sum:
 0ed6d4c8891eb86358b94bb35d9e4da4  1484322 contrib/Contents-all
 b838d31986207780a596ce3e8010f90f  8790396 main/binary-amd64/Packages.xz
SHA256:
 9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5  8790396 main/binary-amd64/Packages.xz
";

    fn unix(time: SystemTime) -> u64 {
        time.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    #[test]
    fn default_pin_follows_notautomatic_like_apt() {
        assert_eq!(Release::parse(SAMPLE, "stable").unwrap().default_pin(), 500);
        let experimental = format!("NotAutomatic: yes\n{SAMPLE}");
        assert_eq!(Release::parse(&experimental, "x").unwrap().default_pin(), 1);
        let backports = format!("NotAutomatic: yes\nButAutomaticUpgrades: yes\n{SAMPLE}");
        assert_eq!(
            Release::parse(&backports, "bpo").unwrap().default_pin(),
            100
        );
    }

    #[test]
    fn parses_fields_and_checksum_lists() {
        let release = Release::parse(SAMPLE, "sample").unwrap();
        assert_eq!(release.origin.as_deref(), Some("Debian"));
        assert_eq!(release.suite.as_deref(), Some("stable"));
        assert_eq!(release.codename.as_deref(), Some("bookworm"));
        assert_eq!(release.architectures, ["all", "amd64", "arm64"]);
        assert_eq!(release.components, ["main", "contrib"]);
        assert!(release.acquire_by_hash);
        let xz = release.index_file("main/binary-amd64/Packages.xz").unwrap();
        assert_eq!(xz.size, 8_790_396);
        assert_eq!(
            hex::encode(xz.sha256.unwrap()),
            "9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5"
        );
        assert_eq!(
            hex::encode(xz.md5.unwrap()),
            "b838d31986207780a596ce3e8010f90f"
        );
        let contents = release.index_file("contrib/Contents-all").unwrap();
        assert_eq!((contents.size, contents.sha256), (1_484_322, None));
        assert!(release.index_file("main/binary-amd64/Packages").is_none());
    }

    #[test]
    fn dates_are_read_as_utc() {
        let release = Release::parse(SAMPLE, "sample").unwrap();
        // date -u -d 'Sat, 09 Nov 2024 10:03:17 UTC' +%s
        assert_eq!(unix(release.date_time().unwrap()), 1_731_146_597);
        assert_eq!(unix(release.valid_until_time().unwrap()), 1_731_751_397);
        let east = parse_date("Sat, 09 Nov 2024 12:03:17 +0200", "Date", "t").unwrap();
        assert_eq!(unix(east), 1_731_146_597);
        let leap = parse_date("Thu, 29 Feb 2024 00:00:00 UTC", "Date", "t").unwrap();
        assert_eq!(unix(leap), 1_709_164_800);
        assert!(parse_date("Thu, 30 Feb 2024 00:00:00 UTC", "Date", "t").is_err());
        assert!(parse_date("yesterday", "Date", "t").is_err());
    }

    #[test]
    fn valid_until_is_enforced() {
        let release = Release::parse(SAMPLE, "sample").unwrap();
        let before = UNIX_EPOCH + Duration::from_secs(1_731_751_000);
        let after = UNIX_EPOCH + Duration::from_secs(1_731_751_400);
        assert!(release.check_valid_until(before).is_ok());
        let err = release.check_valid_until(after).unwrap_err();
        assert!(matches!(err, Error::Expired { .. }), "{err}");
        assert!(err.to_string().contains("16 Nov 2024"), "{err}");
        assert!(err.to_string().starts_with("sample: "), "{err}");
    }

    #[test]
    fn bad_lines_are_named() {
        let bad_size = "SHA256:\n 9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5 big main/x\n";
        let err = Release::parse(bad_size, "r").unwrap_err();
        assert!(matches!(err, Error::Syntax { line: 2, .. }), "{err}");
        let bad_digest = "SHA256:\n 9e0b 12 main/x\n";
        assert!(
            Release::parse(bad_digest, "r")
                .unwrap_err()
                .to_string()
                .contains("digest")
        );
        let hostile = "SHA256:\n 9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5 12 ../../etc/passwd\n";
        assert!(
            Release::parse(hostile, "r")
                .unwrap_err()
                .to_string()
                .contains("unsafe")
        );
        let two_sizes = "MD5Sum:\n b838d31986207780a596ce3e8010f90f 1 a\nSHA256:\n 9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5 2 a\n";
        assert!(
            Release::parse(two_sizes, "r")
                .unwrap_err()
                .to_string()
                .contains("two sizes")
        );
        assert!(Release::parse("no colon here\n", "r").is_err());
        assert!(Release::parse("Suite: a\nSuite: b\n", "r").is_err());
        let bad_date = Release::parse("Date: soon\n", "r").unwrap_err();
        assert!(
            matches!(bad_date, Error::BadDate { field: "Date", .. }),
            "{bad_date}"
        );
    }

    #[test]
    fn garbage_keyrings_and_signatures_are_errors() {
        let err = Keyring::from_bytes(b"not a key", "junk.gpg").unwrap_err();
        assert!(matches!(err, Error::EmptyKeyring { .. }), "{err}");
        assert!(err.to_string().contains("junk.gpg"));
        let err = Keyring::from_bytes(b"", "empty.gpg").unwrap_err();
        assert!(matches!(err, Error::EmptyKeyring { .. }), "{err}");
    }
}
