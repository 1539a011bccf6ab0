//! Remotes, kept in the repository's config as ostree keeps them: `[remote "NAME"]`
//! groups with `url`, `gpg-verify`, `sign-verify`, `verification-ed25519-key|file`, ...

use std::path::PathBuf;

use treeline_store::Repo;
use treeline_store::keyfile::KeyFile;
use treeline_store::refs::validate_remote_name;
use treeline_store::sign::PublicKeys;

use crate::{Error, Result};

fn group(name: &str) -> String {
    format!("remote \"{name}\"")
}

/// A configured remote.
#[derive(Clone, Debug)]
pub struct Remote {
    /// Name.
    pub name: String,
    /// Base URL (`http://`, `https://` or `file://`) for summary, refs and commits.
    pub url: String,
    /// Base URL for objects and deltas (defaults to `url`).
    pub content_url: String,
    /// Require ed25519 signatures on commits.
    pub sign_verify: bool,
    /// Require an ed25519 signature on the summary.
    pub sign_verify_summary: bool,
    /// Inline base64 public keys.
    pub ed25519_keys: Vec<String>,
    /// Key files.
    pub ed25519_key_files: Vec<PathBuf>,
    /// Whether GPG verification is configured (unsupported: refused at pull time).
    pub gpg_verify: bool,
    /// Branches named at `remote add`.
    pub branches: Vec<String>,
}

fn remote_err(name: &str, message: impl Into<String>) -> Error {
    Error::Remote {
        remote: name.to_owned(),
        message: message.into(),
    }
}

impl Remote {
    /// Read a remote from the repository config.
    pub fn load(repo: &Repo, name: &str) -> Result<Remote> {
        let cfg = repo.config();
        let g = group(name);
        if !cfg.has_group(&g) {
            return Err(remote_err(name, "no such remote (see `remote list`)"));
        }
        let bad = |e: treeline_store::keyfile::KeyFileError| remote_err(name, e.to_string());
        let url = cfg
            .string(&g, "url")
            .map_err(bad)?
            .ok_or_else(|| remote_err(name, "has no url"))?;
        let content_url = cfg
            .string(&g, "contenturl")
            .map_err(bad)?
            .unwrap_or_else(|| url.clone());
        if let Some(state) = cfg.string(&g, "unconfigured-state").map_err(bad)? {
            return Err(remote_err(name, state));
        }
        let sign_verify = match cfg.raw_value(&g, "sign-verify") {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(list) => {
                let engines: Vec<&str> = list
                    .split([',', ';'])
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .collect();
                if let Some(e) = engines.iter().find(|e| **e != "ed25519") {
                    return Err(remote_err(
                        name,
                        format!("signature engine {e:?} is not supported (only ed25519)"),
                    ));
                }
                !engines.is_empty()
            }
        };
        Ok(Remote {
            name: name.to_owned(),
            url,
            content_url,
            sign_verify,
            sign_verify_summary: cfg
                .boolean(&g, "sign-verify-summary")
                .map_err(bad)?
                .unwrap_or(false),
            ed25519_keys: cfg
                .string(&g, "verification-ed25519-key")
                .map_err(bad)?
                .into_iter()
                .collect(),
            ed25519_key_files: cfg
                .string(&g, "verification-ed25519-file")
                .map_err(bad)?
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            gpg_verify: cfg.boolean(&g, "gpg-verify").map_err(bad)?.unwrap_or(true),
            branches: cfg
                .string_list(&g, "branches")
                .map_err(bad)?
                .unwrap_or_default(),
        })
    }

    /// The trusted public keys, when signatures are required.
    pub fn public_keys(&self) -> Result<PublicKeys> {
        let mut keys = PublicKeys::default();
        for k in &self.ed25519_keys {
            keys.add_base64(k)?;
        }
        for f in &self.ed25519_key_files {
            keys.add_file(f)?;
        }
        if (self.sign_verify || self.sign_verify_summary) && keys.is_empty() {
            return Err(remote_err(
                &self.name,
                "sign-verify is set but no verification-ed25519-key or verification-ed25519-file is configured",
            ));
        }
        Ok(keys)
    }
}

/// Names of the configured remotes.
pub fn list(repo: &Repo) -> Vec<String> {
    repo.config()
        .groups()
        .filter_map(|g| {
            g.strip_prefix("remote \"")?
                .strip_suffix('"')
                .map(str::to_owned)
        })
        .collect()
}

/// Add a remote. `options` are extra `key=value` settings (as `--set`).
pub fn add(
    repo: &mut Repo,
    name: &str,
    url: &str,
    branches: &[String],
    options: &[(String, String)],
    if_not_exists: bool,
) -> Result<()> {
    validate_remote_name(name)?;
    if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("file://")) {
        return Err(remote_err(
            name,
            format!("unsupported URL {url:?}: use http://, https:// or file://"),
        ));
    }
    let mut cfg: KeyFile = repo.config().clone();
    let g = group(name);
    if cfg.has_group(&g) {
        if if_not_exists {
            return Ok(());
        }
        return Err(remote_err(name, "already exists"));
    }
    cfg.set_string(&g, "url", url);
    if !branches.is_empty() {
        cfg.set_string_list(&g, "branches", branches);
    }
    for (k, v) in options {
        cfg.set_string(&g, k, v);
    }
    repo.write_config(cfg)?;
    Ok(())
}

/// Delete a remote and its refs.
pub fn delete(repo: &mut Repo, name: &str, if_exists: bool) -> Result<()> {
    let mut cfg = repo.config().clone();
    if !cfg.remove_group(&group(name)) {
        if if_exists {
            return Ok(());
        }
        return Err(remote_err(name, "no such remote"));
    }
    repo.write_config(cfg)?;
    let refs_dir = repo.path().join("refs/remotes").join(name);
    if refs_dir.exists() {
        std::fs::remove_dir_all(&refs_dir).map_err(|e| treeline_store::Error::Io {
            path: refs_dir,
            error: e,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with(config_tail: &str) -> (tempfile::TempDir, Repo) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::init(dir.path(), treeline_store::RepoMode::Archive).unwrap();
        let text = format!("{}{config_tail}", repo.config().to_data());
        std::fs::write(dir.path().join("config"), text).unwrap();
        let repo = Repo::open(dir.path()).unwrap();
        (dir, repo)
    }

    #[test]
    fn remote_options_are_read_as_ostree_writes_them() {
        let (_d, repo) = repo_with(
            "\n[remote \"origin\"]\nurl=http://127.0.0.1:1/repo\ngpg-verify=false\nsign-verify=ed25519\nverification-ed25519-key=AAAA\nbranches=a;b;\n",
        );
        let r = Remote::load(&repo, "origin").unwrap();
        assert_eq!(r.content_url, "http://127.0.0.1:1/repo");
        assert!(r.sign_verify && !r.gpg_verify);
        assert_eq!(r.branches, ["a", "b"]);
        assert_eq!(list(&repo), ["origin"]);
    }

    #[test]
    fn unsupported_engines_and_missing_remotes_are_named() {
        let (_d, repo) = repo_with("\n[remote \"o\"]\nurl=http://x\nsign-verify=spki\n");
        let e = Remote::load(&repo, "o").unwrap_err().to_string();
        assert!(e.contains("spki") && e.contains("remote o"), "{e}");
        let e = Remote::load(&repo, "nope").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn add_refuses_bad_names_and_urls_and_delete_removes() {
        let (_d, mut repo) = repo_with("");
        assert!(add(&mut repo, "bad name", "http://x", &[], &[], false).is_err());
        assert!(add(&mut repo, "o", "ftp://x", &[], &[], false).is_err());
        add(&mut repo, "o", "http://x", &[], &[], false).unwrap();
        assert!(add(&mut repo, "o", "http://x", &[], &[], false).is_err());
        add(&mut repo, "o", "http://x", &[], &[], true).unwrap();
        delete(&mut repo, "o", false).unwrap();
        assert!(list(&repo).is_empty());
    }
}
