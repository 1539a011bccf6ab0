//! Release files and their OpenPGP signatures checked against the real thing: the host's
//! bookworm `InRelease` from apt's lists, `Release` + `Release.gpg` from the host's
//! configured mirror (cached), the keyrings in /usr/share/keyrings, and `gpgv` as the oracle.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use base64::Engine;
use sha2::Digest;
use treeline_pkg::deb::release::{self, Keyring, Release, verify_detached, verify_inrelease};
use treeline_pkg::deb::sources::{Source, read_sources};

const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The host's source for bookworm main, from its apt configuration.
fn bookworm_main_source() -> Source {
    read_sources(Path::new("/"))
        .unwrap()
        .into_iter()
        .find(|source| {
            source.suites.iter().any(|suite| suite == "bookworm")
                && source
                    .components
                    .iter()
                    .any(|component| component == "main")
        })
        .expect("the host's apt sources have no bookworm main entry")
}

/// The keyring apt uses for that source.
fn debian_keyring_path() -> PathBuf {
    let source = bookworm_main_source();
    PathBuf::from(source.signed_by.as_deref().unwrap_or(DEBIAN_KEYRING))
}

/// apt's own copy of the bookworm InRelease.
fn listed_inrelease() -> PathBuf {
    common::bookworm_packages_lists();
    let found = std::fs::read_dir("/var/lib/apt/lists")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with("_dists_bookworm_InRelease"))
        });
    found.expect("no bookworm InRelease under /var/lib/apt/lists")
}

/// What gpgv says, read as apt reads it: the fingerprints of the good signatures (VALIDSIG)
/// and whether any signature was bad (BADSIG).
struct GpgvVerdict {
    valid: BTreeSet<String>,
    bad: bool,
}

impl GpgvVerdict {
    /// apt's rule: at least one good signature and no bad one.
    fn accepted(&self) -> bool {
        !self.valid.is_empty() && !self.bad
    }
}

fn gpgv(keyring: &Path, files: &[&Path]) -> GpgvVerdict {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("gpgv")
        .arg("--homedir")
        .arg(home.path())
        .args(["--status-fd", "1", "--keyring"])
        .arg(keyring)
        .args(files)
        .stderr(Stdio::null())
        .output()
        .expect("cannot run gpgv");
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut verdict = GpgvVerdict {
        valid: BTreeSet::new(),
        bad: false,
    };
    for line in status.lines() {
        let mut words = line.split_whitespace().skip(1);
        match words.next() {
            Some("VALIDSIG") => {
                verdict
                    .valid
                    .insert(words.next().unwrap_or_default().to_owned());
            }
            Some("BADSIG") => verdict.bad = true,
            _ => {}
        }
    }
    verdict
}

fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn real_inrelease_verifies_like_gpgv_and_parses() {
    let path = listed_inrelease();
    let bytes = std::fs::read(&path).unwrap();
    let keyring = Keyring::from_file(&debian_keyring_path()).unwrap();
    assert!(keyring.len() > 3, "the Debian keyring holds several keys");

    let verified = verify_inrelease(&bytes, &keyring, "InRelease").unwrap();
    let oracle = gpgv(&debian_keyring_path(), &[&path]);
    assert!(oracle.accepted(), "gpgv rejects the real InRelease");
    let ours: BTreeSet<String> = verified.signers.iter().cloned().collect();
    assert_eq!(ours, oracle.valid, "same good signatures as gpgv");

    let release = Release::parse(&verified.text, "InRelease").unwrap();
    assert_eq!(release.origin.as_deref(), Some("Debian"));
    assert_eq!(release.codename.as_deref(), Some("bookworm"));
    assert!(release.components.iter().any(|c| c == "main"));
    assert!(release.architectures.iter().any(|a| a == "amd64"));
    assert!(release.acquire_by_hash);
    assert!(release.files.len() > 100);
    assert!(release.date_time().is_some());
    // The parsed text is the signed text: the armor and the signature are not in it.
    assert!(!verified.text.contains("PGP"));
    eprintln!(
        "InRelease: {} signatures good ({:?}), {} index files listed",
        verified.signers.len(),
        verified.signers,
        release.files.len()
    );
}

#[test]
fn flipped_byte_in_signed_text_fails_like_gpgv() {
    let path = listed_inrelease();
    let mut bytes = std::fs::read(&path).unwrap();
    let keyring = Keyring::from_file(&debian_keyring_path()).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    // One hex digit of the SHA256 line for main's Packages.xz.
    let line_start = text.find("main/binary-amd64/Packages.xz\n").unwrap();
    let sha_line = text[..line_start].rfind("\n ").unwrap() + 2;
    bytes[sha_line] = if bytes[sha_line] == b'0' { b'1' } else { b'0' };

    let err = verify_inrelease(&bytes, &keyring, "tampered InRelease").unwrap_err();
    assert!(matches!(err, release::Error::BadSignature { .. }), "{err}");
    assert!(err.to_string().contains("tampered InRelease"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let tampered = write_temp(dir.path(), "InRelease", &bytes);
    assert!(!gpgv(&debian_keyring_path(), &[&tampered]).accepted());
}

/// The armored signature block of an InRelease, re-armored (without the optional CRC line)
/// after `change` has had its way with the decoded packets.
fn rearmor_signature(in_release: &str, change: impl FnOnce(&mut Vec<u8>)) -> String {
    let begin = in_release.find("-----BEGIN PGP SIGNATURE-----").unwrap();
    let block = &in_release[begin..];
    let body_start = block.find("\n\n").unwrap() + 2;
    let body: String = block[body_start..]
        .lines()
        .take_while(|line| !line.starts_with('=') && !line.starts_with("-----"))
        .collect();
    let mut packets = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    change(&mut packets);
    let encoded = base64::engine::general_purpose::STANDARD.encode(&packets);
    let mut armored = String::from("-----BEGIN PGP SIGNATURE-----\n\n");
    for chunk in encoded.as_bytes().chunks(64) {
        armored.push_str(std::str::from_utf8(chunk).unwrap());
        armored.push('\n');
    }
    armored.push_str("-----END PGP SIGNATURE-----\n");
    format!("{}{armored}", &in_release[..begin])
}

#[test]
fn flipped_byte_in_signature_fails_like_gpgv() {
    let text = std::fs::read_to_string(listed_inrelease()).unwrap();
    let keyring = Keyring::from_file(&debian_keyring_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Control: re-armoring alone keeps it valid, for us and for gpgv.
    let same = rearmor_signature(&text, |_| {});
    verify_inrelease(same.as_bytes(), &keyring, "re-armored").unwrap();
    let same_path = write_temp(dir.path(), "same", same.as_bytes());
    assert!(gpgv(&debian_keyring_path(), &[&same_path]).accepted());

    // A byte near the end lies in the last signature's value.
    let flipped = rearmor_signature(&text, |packets| {
        let at = packets.len() - 10;
        packets[at] ^= 0x01;
    });
    let err = verify_inrelease(flipped.as_bytes(), &keyring, "flipped").unwrap_err();
    assert!(matches!(err, release::Error::BadSignature { .. }), "{err}");
    let flipped_path = write_temp(dir.path(), "flipped", flipped.as_bytes());
    let oracle = gpgv(&debian_keyring_path(), &[&flipped_path]);
    assert!(oracle.bad && !oracle.accepted());

    // Garbage where the signature should be is a malformed-signature error.
    let garbage = rearmor_signature(&text, |packets| packets.truncate(20));
    let err = verify_inrelease(garbage.as_bytes(), &keyring, "truncated").unwrap_err();
    assert!(
        matches!(
            err,
            release::Error::MalformedSignature { .. } | release::Error::UnknownSigner { .. }
        ),
        "{err}"
    );
}

#[test]
fn every_system_keyring_accepts_or_rejects_like_gpgv() {
    let path = listed_inrelease();
    let bytes = std::fs::read(&path).unwrap();
    let mut keyrings: Vec<PathBuf> = std::fs::read_dir("/usr/share/keyrings")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "gpg"))
        .collect();
    keyrings.sort();
    let (mut accepted, mut rejected) = (0, 0);
    for keyring_path in &keyrings {
        let oracle = gpgv(keyring_path, &[&path]);
        let ours = Keyring::from_file(keyring_path)
            .and_then(|keyring| verify_inrelease(&bytes, &keyring, "InRelease"));
        match &ours {
            Ok(verified) => {
                let signers: BTreeSet<String> = verified.signers.iter().cloned().collect();
                assert_eq!(signers, oracle.valid, "{}", keyring_path.display());
                accepted += 1;
            }
            Err(err) => {
                assert!(
                    oracle.valid.is_empty(),
                    "{}: gpgv found good signatures {:?}, we said {err}",
                    keyring_path.display(),
                    oracle.valid
                );
                assert!(
                    matches!(err, release::Error::UnknownSigner { .. }),
                    "{}: {err}",
                    keyring_path.display()
                );
                rejected += 1;
            }
        }
    }
    eprintln!("{accepted} keyrings accept the bookworm InRelease, {rejected} reject it, as gpgv");
    assert!(
        accepted >= 1 && rejected >= 1,
        "both outcomes must be exercised"
    );
}

#[test]
fn armored_keyring_reads_like_the_binary_one() {
    let binary = std::fs::read(debian_keyring_path()).unwrap();
    let mut armored = String::from("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n");
    let encoded = base64::engine::general_purpose::STANDARD.encode(&binary);
    for chunk in encoded.as_bytes().chunks(64) {
        armored.push_str(std::str::from_utf8(chunk).unwrap());
        armored.push('\n');
    }
    armored.push_str("-----END PGP PUBLIC KEY BLOCK-----\n");
    let from_binary = Keyring::from_bytes(&binary, "binary").unwrap();
    let from_armor = Keyring::from_bytes(armored.as_bytes(), "armored").unwrap();
    assert_eq!(from_binary.fingerprints(), from_armor.fingerprints());
    let bytes = std::fs::read(listed_inrelease()).unwrap();
    verify_inrelease(&bytes, &from_armor, "InRelease").unwrap();
}

#[test]
fn detached_release_signature_from_the_mirror_verifies_like_gpgv() {
    let source = bookworm_main_source();
    let base = format!("{}/dists/bookworm", source.uri.trim_end_matches('/'));
    // Both halves are fetched together, once, so they belong to the same archive state.
    let release_path = common::test_cache_dir().join("bookworm-Release");
    let signature_path = common::test_cache_dir().join("bookworm-Release.gpg");
    if !release_path.exists() || !signature_path.exists() {
        let _ = std::fs::remove_file(&release_path);
        let _ = std::fs::remove_file(&signature_path);
        common::download_cached(&format!("{base}/Release"), "bookworm-Release");
        common::download_cached(&format!("{base}/Release.gpg"), "bookworm-Release.gpg");
    }
    let release_bytes = std::fs::read(&release_path).unwrap();
    let signature = std::fs::read(&signature_path).unwrap();
    let keyring = Keyring::from_file(&debian_keyring_path()).unwrap();

    let verified = verify_detached(&release_bytes, &signature, &keyring, "Release").unwrap();
    let oracle = gpgv(&debian_keyring_path(), &[&signature_path, &release_path]);
    assert!(oracle.accepted());
    let ours: BTreeSet<String> = verified.signers.iter().cloned().collect();
    assert_eq!(ours, oracle.valid);
    let release = Release::parse(&verified.text, "Release").unwrap();
    assert_eq!(release.codename.as_deref(), Some("bookworm"));
    assert!(
        release
            .index_file("main/binary-amd64/Packages.xz")
            .is_some()
    );

    let mut tampered = release_bytes.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    let err = verify_detached(&tampered, &signature, &keyring, "Release").unwrap_err();
    assert!(matches!(err, release::Error::BadSignature { .. }), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let tampered_path = write_temp(dir.path(), "Release", &tampered);
    assert!(!gpgv(&debian_keyring_path(), &[&signature_path, &tampered_path]).accepted());

    // Release.gpg is armored: flip a bit of the last signature's value, not of the armor.
    let signature_text = String::from_utf8(signature.clone()).unwrap();
    let same = rearmor_signature(&signature_text, |_| {});
    verify_detached(&release_bytes, same.as_bytes(), &keyring, "Release").unwrap();
    let bad_signature = rearmor_signature(&signature_text, |packets| {
        let at = packets.len() - 10;
        packets[at] ^= 0x01;
    });
    let err = verify_detached(
        &release_bytes,
        bad_signature.as_bytes(),
        &keyring,
        "Release",
    )
    .unwrap_err();
    assert!(matches!(err, release::Error::BadSignature { .. }), "{err}");
    let bad_signature_path = write_temp(dir.path(), "Release.gpg", bad_signature.as_bytes());
    assert!(
        !gpgv(
            &debian_keyring_path(),
            &[&bad_signature_path, &release_path]
        )
        .accepted()
    );

    let other = Keyring::from_file(Path::new(
        "/usr/share/keyrings/debian-archive-removed-keys.gpg",
    ))
    .unwrap();
    let err = verify_detached(&release_bytes, &signature, &other, "Release").unwrap_err();
    assert!(matches!(err, release::Error::UnknownSigner { .. }), "{err}");
}

#[test]
fn packages_index_checksum_matches_the_signed_release() {
    let keyring = Keyring::from_file(&debian_keyring_path()).unwrap();
    let verified = verify_inrelease(
        &std::fs::read(listed_inrelease()).unwrap(),
        &keyring,
        "InRelease",
    )
    .unwrap();
    let release = Release::parse(&verified.text, "InRelease").unwrap();
    let list = common::bookworm_packages_lists().remove(0);
    let arch = list
        .to_string_lossy()
        .split("_binary-")
        .nth(1)
        .and_then(|rest| rest.split('_').next())
        .unwrap()
        .to_owned();
    let expected = *release
        .index_file(&format!("main/binary-{arch}/Packages"))
        .expect("the Release lists the uncompressed Packages index");

    // apt keeps the list in its own compression; stream its uncompressed form.
    let mut child = Command::new("/usr/lib/apt/apt-helper")
        .arg("cat-file")
        .arg(&list)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = stdout.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(size, expected.size, "size of {}", list.display());
    assert_eq!(
        hasher.finalize().as_slice(),
        expected.sha256.unwrap(),
        "sha256"
    );
    let xz = release
        .index_file(&format!("main/binary-{arch}/Packages.xz"))
        .unwrap();
    assert!(xz.sha256.is_some() && xz.md5.is_some() && xz.size < expected.size);
    eprintln!(
        "main/binary-{arch}/Packages: {size} bytes, sha256 {} matches the signed Release",
        hex::encode(expected.sha256.unwrap())
    );
}

#[test]
fn security_release_valid_until_is_checked() {
    let keyring = Keyring::from_file(&debian_keyring_path()).unwrap();
    let path = std::fs::read_dir("/var/lib/apt/lists")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.to_string_lossy()
                .ends_with("_dists_bookworm-security_InRelease")
        });
    let Some(path) = path else {
        panic!("no bookworm-security InRelease under /var/lib/apt/lists (run apt-get update)");
    };
    let verified = verify_inrelease(&std::fs::read(&path).unwrap(), &keyring, "security").unwrap();
    let release = Release::parse(&verified.text, "security InRelease").unwrap();
    let date = release.date_time().unwrap();
    let limit = release
        .valid_until_time()
        .expect("security suites carry Valid-Until");
    assert!(limit > date);
    release.check_valid_until(date).unwrap();
    release.check_valid_until(limit).unwrap();
    let err = release
        .check_valid_until(limit + Duration::from_secs(1))
        .unwrap_err();
    assert!(matches!(err, release::Error::Expired { .. }), "{err}");
    assert!(err.to_string().contains("security InRelease"), "{err}");
    // Whether it is still valid now depends on when apt last updated; both are fine, but
    // the answer must follow the clock.
    assert_eq!(
        release.check_valid_until(SystemTime::now()).is_ok(),
        SystemTime::now() <= limit
    );
}

#[test]
fn host_apt_configuration_has_the_bookworm_main_source() {
    let source = bookworm_main_source();
    assert!(
        source.uri.starts_with("http://") || source.uri.starts_with("https://"),
        "{}",
        source.uri
    );
    assert!(source.file.starts_with("/etc/apt"));
    let keyring = debian_keyring_path();
    assert!(keyring.exists(), "{}", keyring.display());
    // apt itself lists the same URI for bookworm.
    let apt_uris =
        common::run_ok(Command::new("apt-get").args(["indextargets", "--format", "$(REPO_URI)"]));
    let uri = format!("{}/", source.uri.trim_end_matches('/'));
    assert!(
        apt_uris.lines().any(|line| line == uri),
        "apt-get indextargets does not list {uri}:\n{apt_uris}"
    );
}
