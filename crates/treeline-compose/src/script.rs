//! Running maintainer scripts and triggers inside the root being assembled.
//!
//! The sandbox is bubblewrap when it is installed: the root bound at `/`, fresh `/dev`
//! and `/proc`, no network, IPC, UTS or PID sharing with the host, and the caller's
//! user (root, so scripts can `chown`). Without bubblewrap, `chroot(8)`. As apk does
//! (apk-format.md §4.4), the script is written to `/lib/apk/exec/NAME-VERSION.ACTION`,
//! run from `/` with only `PATH` set, and removed afterwards.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apk::InstalledPackage;

/// A script failed or could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The script exited unsuccessfully.
    #[error("{script} of {package} failed ({status}){}", if output.is_empty() { String::new() } else { format!(":\n{output}") })]
    Failed {
        /// `name-version`.
        package: String,
        /// `post-install`, `trigger`, …
        script: String,
        /// The exit status.
        status: std::process::ExitStatus,
        /// The script's output (the end of it, when long).
        output: String,
    },
    /// The sandbox could not be started or the script written.
    #[error("{script} of {package}: {error}")]
    Io {
        /// `name-version`.
        package: String,
        /// The script.
        script: String,
        /// The error.
        error: std::io::Error,
    },
}

const SCRIPT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// How scripts are confined.
#[derive(Debug, Clone)]
pub enum Sandbox {
    /// bubblewrap at this path.
    Bwrap(PathBuf),
    /// `chroot(8)`.
    Chroot,
}

impl Sandbox {
    /// bubblewrap if it is on `PATH`, else chroot.
    pub fn detect() -> Sandbox {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        std::env::split_paths(&path)
            .map(|d| d.join("bwrap"))
            .find(|p| p.is_file())
            .map_or(Sandbox::Chroot, Sandbox::Bwrap)
    }

    /// Runs the package's `action` script (`pre-install`, `post-install`) if it has one,
    /// with the new version as its argument.
    pub fn run_install_script(
        &self,
        root: &Path,
        pkg: &InstalledPackage,
        action: &str,
    ) -> Result<(), Error> {
        match pkg.script(action) {
            Some(script) => self.run(
                root,
                pkg,
                action,
                script,
                std::slice::from_ref(&pkg.meta.version),
            ),
            None => Ok(()),
        }
    }

    /// Runs the package's trigger with the matched directories as arguments.
    pub fn run_trigger(
        &self,
        root: &Path,
        pkg: &InstalledPackage,
        dirs: &[String],
    ) -> Result<(), Error> {
        match pkg.script("trigger") {
            Some(script) => self.run(root, pkg, "trigger", script, dirs),
            None => Ok(()),
        }
    }

    fn run(
        &self,
        root: &Path,
        pkg: &InstalledPackage,
        action: &str,
        script: &[u8],
        args: &[String],
    ) -> Result<(), Error> {
        let name = format!("{}.{action}", pkg.label());
        self.run_script(
            root,
            &pkg.label(),
            action,
            &format!("/lib/apk/exec/{name}"),
            script,
            args,
        )
    }

    /// Runs `script` in the sandbox, written to `inside` (an absolute path in the root,
    /// removed afterwards); `owner` and `action` name it in errors.
    pub fn run_script(
        &self,
        root: &Path,
        owner: &str,
        action: &str,
        inside: &str,
        script: &[u8],
        args: &[String],
    ) -> Result<(), Error> {
        let io = |error| Error::Io {
            package: owner.to_owned(),
            script: action.to_owned(),
            error,
        };
        let host_path = root.join(inside.trim_start_matches('/'));
        if let Some(dir) = host_path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(&host_path, script).map_err(io)?;
        std::fs::set_permissions(&host_path, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        let result = self.exec(root, owner, action, inside, args, &[]);
        let _ = std::fs::remove_file(&host_path);
        result
    }

    /// Runs the program at `inside` (an absolute path in the root, already there) in the
    /// sandbox with `args`, `PATH` and `env` as its environment; `owner` and `action`
    /// name it in errors, which carry the end of its output.
    pub fn exec(
        &self,
        root: &Path,
        owner: &str,
        action: &str,
        inside: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<(), Error> {
        let io = |error| Error::Io {
            package: owner.to_owned(),
            script: action.to_owned(),
            error,
        };
        // The sandbox runs from `/`: a relative root would be taken from there.
        let root = std::path::absolute(root).map_err(io)?;
        let root = root.as_path();
        let mut cmd = match self {
            Sandbox::Bwrap(bwrap) => {
                let mut c = Command::new(bwrap);
                c.arg("--bind")
                    .arg(root)
                    .arg("/")
                    .args(["--dev", "/dev", "--proc", "/proc"])
                    .args(["--unshare-net", "--unshare-ipc", "--unshare-uts"])
                    .args(["--unshare-pid", "--die-with-parent", "--chdir", "/"])
                    .arg(inside);
                c
            }
            Sandbox::Chroot => {
                let mut c = Command::new("chroot");
                c.arg(root).arg(inside);
                c
            }
        };
        cmd.args(args)
            .env_clear()
            .env("PATH", SCRIPT_PATH)
            .envs(env.iter().copied())
            .current_dir("/");
        let output = cmd.output().map_err(io)?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        let text = text.trim_end();
        let tail = text
            .char_indices()
            .rev()
            .nth(2000)
            .map_or(text, |(i, _)| &text[i..]);
        Err(Error::Failed {
            package: owner.to_owned(),
            script: action.to_owned(),
            status: output.status,
            output: tail.to_owned(),
        })
    }
}
