//! Trusted signing keys, as in `/etc/apk/keys`: PEM public keys whose **file name** is the
//! key id that `.SIGN.RSA.<name>` entries refer to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rsa::RsaPublicKey;
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::pkcs8::DecodePublicKey as _;

use super::{Error, Result};

/// The keys a signature may come from, by file name.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: BTreeMap<String, RsaPublicKey>,
}

/// Key files are a few hundred bytes; anything large is not a key.
const MAX_KEY_FILE: u64 = 64 * 1024;

impl Keys {
    /// No trusted keys: every signature is untrusted.
    pub fn new() -> Self {
        Keys::default()
    }

    /// Loads every key file of a directory such as `/etc/apk/keys`. Files that are not
    /// PEM RSA public keys are skipped with a warning (apk only opens the keys that
    /// signatures name, so a stray file there does no harm).
    pub fn from_dir(dir: &Path) -> Result<Keys> {
        let io = |error| Error::Io {
            path: dir.to_path_buf(),
            error,
        };
        let mut keys = Keys::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!("{}: key file name is not UTF-8, skipped", path.display());
                continue;
            };
            match read_key(&path) {
                Ok(key) => {
                    keys.keys.insert(name, key);
                }
                Err(e) => tracing::warn!("skipping key: {e}"),
            }
        }
        Ok(keys)
    }

    /// Loads the keys of an unpacked root: `<root>/etc/apk/keys`.
    pub fn from_root(root: &Path) -> Result<Keys> {
        Keys::from_dir(&root.join("etc/apk/keys"))
    }

    /// Loads one key file and trusts it under its file name.
    pub fn add_file(&mut self, path: &Path) -> Result<()> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Key {
                path: path.to_path_buf(),
                what: "key file has no UTF-8 file name".into(),
            })?
            .to_owned();
        let key = read_key(path)?;
        self.keys.insert(name, key);
        Ok(())
    }

    /// Trusts a PEM public key (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`) under
    /// `name`; `origin` only names the key in errors.
    pub fn add_pem(&mut self, name: &str, pem: &str, origin: &Path) -> Result<()> {
        let key = parse_pem(pem, origin)?;
        self.keys.insert(name.to_owned(), key);
        Ok(())
    }

    /// The key trusted under `name`.
    pub fn get(&self, name: &str) -> Option<&RsaPublicKey> {
        self.keys.get(name)
    }

    /// The trusted key names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn read_key(path: &Path) -> Result<RsaPublicKey> {
    let io = |error| Error::Io {
        path: path.to_path_buf(),
        error,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_KEY_FILE {
        return Err(Error::Key {
            path: path.to_path_buf(),
            what: format!("{size} bytes is too large for a public key"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse_pem(&text, path)
}

fn parse_pem(text: &str, origin: &Path) -> Result<RsaPublicKey> {
    RsaPublicKey::from_public_key_pem(text.trim())
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(text.trim()))
        .map_err(|e| Error::Key {
            path: PathBuf::from(origin),
            what: format!("not a PEM RSA public key: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_key_is_an_error_naming_the_file() {
        let err = parse_pem("hello", Path::new("/k/x.rsa.pub")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/k/x.rsa.pub") && text.contains("PEM"),
            "{text}"
        );
    }
}
