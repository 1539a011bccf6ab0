//! Ed25519 signatures as OSTree's `sign` API writes them: 64-byte signatures in an `aay`
//! under `ostree.sign.ed25519`, over the exact bytes of a commit or summary.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, Verifier};

use crate::checksum::{Checksum, ObjectName, ObjectType};
use crate::error::{Error, IoContext, Result};
use crate::repo::Repo;
use crate::variant::{Metadata, Value};

/// The detached-metadata key holding Ed25519 signatures.
pub const ED25519_KEY: &str = "ostree.sign.ed25519";

fn key_error(what: &str, reason: impl std::fmt::Display) -> Error {
    Error::InvalidObject {
        object: what.to_owned(),
        reason: reason.to_string(),
    }
}

/// A secret key: libsodium's 64 bytes (seed ‖ public key) or a bare 32-byte seed.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// From base64 text.
    pub fn from_base64(text: &str) -> Result<Self> {
        let raw = STANDARD
            .decode(text.trim())
            .map_err(|e| key_error("ed25519 secret key", format!("not base64: {e}")))?;
        match raw.len() {
            64 => {
                let bytes: [u8; 64] = raw
                    .as_slice()
                    .try_into()
                    .map_err(|_| key_error("ed25519 secret key", "bad length"))?;
                ed25519_dalek::SigningKey::from_keypair_bytes(&bytes)
                    .map(SigningKey)
                    .map_err(|e| {
                        key_error(
                            "ed25519 secret key",
                            format!("seed and public key do not match: {e}"),
                        )
                    })
            }
            32 => {
                let bytes: [u8; 32] = raw
                    .as_slice()
                    .try_into()
                    .map_err(|_| key_error("ed25519 secret key", "bad length"))?;
                Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&bytes)))
            }
            n => Err(key_error(
                "ed25519 secret key",
                format!("{n} bytes; expected 64 (seed and public key) or 32"),
            )),
        }
    }

    /// Every key in a file (one base64 key per line).
    pub fn from_file(path: &Path) -> Result<Vec<Self>> {
        let text = std::fs::read_to_string(path).at(path)?;
        let keys = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(SigningKey::from_base64)
            .collect::<Result<Vec<_>>>()
            .map_err(|e| key_error(&format!("key file {}", path.display()), e))?;
        if keys.is_empty() {
            return Err(key_error(
                &format!("key file {}", path.display()),
                "contains no key",
            ));
        }
        Ok(keys)
    }

    /// A new random key, from the kernel's random source.
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        rustix::rand::getrandom(&mut seed, rustix::rand::GetRandomFlags::empty())
            .map_err(|e| key_error("ed25519 key generation", e))?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// The secret key in libsodium's layout, base64.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_keypair_bytes())
    }

    /// The public key, base64 (what `verification-ed25519-key` takes).
    pub fn public_base64(&self) -> String {
        STANDARD.encode(self.0.verifying_key().to_bytes())
    }

    /// Sign bytes.
    pub fn sign(&self, data: &[u8]) -> [u8; 64] {
        self.0.sign(data).to_bytes()
    }
}

/// Trusted public keys.
#[derive(Default, Clone)]
pub struct PublicKeys(Vec<ed25519_dalek::VerifyingKey>);

impl PublicKeys {
    /// Add one base64 public key.
    pub fn add_base64(&mut self, text: &str) -> Result<()> {
        let raw = STANDARD
            .decode(text.trim())
            .map_err(|e| key_error("ed25519 public key", format!("not base64: {e}")))?;
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            key_error(
                "ed25519 public key",
                format!("{} bytes; expected 32", raw.len()),
            )
        })?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|e| key_error("ed25519 public key", e))?;
        self.0.push(key);
        Ok(())
    }

    /// Add every key of a file (one base64 key per line).
    pub fn add_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).at(path)?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            self.add_base64(line)
                .map_err(|e| key_error(&format!("key file {}", path.display()), e))?;
        }
        Ok(())
    }

    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any signature verifies `data` with any key.
    pub fn verify(&self, data: &[u8], signatures: &[Vec<u8>]) -> bool {
        signatures.iter().any(|sig| {
            let Ok(bytes) = <[u8; 64]>::try_from(sig.as_slice()) else {
                return false;
            };
            let sig = ed25519_dalek::Signature::from_bytes(&bytes);
            self.0.iter().any(|k| k.verify(data, &sig).is_ok())
        })
    }

    /// Check a commit's bytes against the signatures in its detached metadata; the error
    /// says whether it was unsigned or signed by no trusted key.
    pub fn verify_commit(
        &self,
        commit: &Checksum,
        commit_bytes: &[u8],
        detached: Option<&Metadata>,
    ) -> Result<()> {
        let sigs = detached
            .and_then(|m| m.get(ED25519_KEY))
            .and_then(Value::as_bytes_array)
            .unwrap_or_default();
        if sigs.is_empty() {
            return Err(Error::Signature(format!(
                "commit {commit} has no ed25519 signature"
            )));
        }
        if self.verify(commit_bytes, &sigs) {
            Ok(())
        } else {
            Err(Error::Signature(format!(
                "commit {commit}: none of its {} ed25519 signature(s) verifies with a trusted key",
                sigs.len()
            )))
        }
    }
}

/// Append a signature by `key` to a commit's detached metadata.
pub fn sign_commit(repo: &Repo, commit: &Checksum, key: &SigningKey) -> Result<()> {
    let bytes = repo.read_meta_bytes(&ObjectName::new(*commit, ObjectType::Commit))?;
    let mut meta = repo.read_commitmeta(commit)?.unwrap_or_default();
    let mut sigs = meta
        .get(ED25519_KEY)
        .and_then(Value::as_bytes_array)
        .unwrap_or_default();
    let sig = key.sign(&bytes).to_vec();
    if !sigs.contains(&sig) {
        sigs.push(sig);
    }
    meta.insert(ED25519_KEY, Value::bytes_array(&sigs));
    repo.write_commitmeta(commit, &meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_with_right_key_only() {
        let k = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let mut good = PublicKeys::default();
        good.add_base64(&k.public_base64()).unwrap();
        let mut bad = PublicKeys::default();
        bad.add_base64(&other.public_base64()).unwrap();
        let sig = k.sign(b"commit bytes").to_vec();
        assert!(good.verify(b"commit bytes", std::slice::from_ref(&sig)));
        assert!(!good.verify(b"other bytes", std::slice::from_ref(&sig)));
        assert!(!bad.verify(b"commit bytes", &[sig]));
    }

    #[test]
    fn secret_key_roundtrips_in_libsodium_layout() {
        let k = SigningKey::generate().unwrap();
        let text = k.to_base64();
        assert_eq!(STANDARD.decode(&text).unwrap().len(), 64);
        let back = SigningKey::from_base64(&text).unwrap();
        assert_eq!(back.public_base64(), k.public_base64());
        assert!(SigningKey::from_base64("AAAA").is_err());
    }
}
