//! What `status` reports about each deployment.

use crate::deployment::Deployment;
use crate::error::Result;
use crate::sysroot::Sysroot;

/// One deployment as `status` shows it.
#[derive(Clone, Debug)]
pub struct DeploymentStatus {
    /// Position in the boot order (0 boots by default); 0 for the staged deployment,
    /// which is not in the boot order yet (see `staged`).
    pub index: usize,
    /// The deployment itself.
    pub deployment: Deployment,
    /// The running system.
    pub booted: bool,
    /// Will boot next instead of the booted one (the first of the stateroot before it).
    pub pending: bool,
    /// What `rollback` switches to (the first of the stateroot after the booted one).
    pub rollback: bool,
    /// Never garbage-collected.
    pub pinned: bool,
    /// The commit's `version` metadata.
    pub version: Option<String>,
    /// The commit's timestamp (seconds since the epoch), if the commit is in the repo.
    pub timestamp: Option<u64>,
    /// The staged deployment ([`Sysroot::stage`]), made the default at shutdown.
    pub staged: bool,
}

impl Sysroot {
    /// Every deployment with its state, default first. As in `ostree admin status`,
    /// pending and rollback are relative to the booted deployment, so a sysroot with
    /// nothing booted (an image) has neither.
    pub fn status(&self) -> Result<Vec<DeploymentStatus>> {
        let repo = self.repo().ok();
        let (pending, rollback) = match self.booted() {
            Some(b) => self.pending_and_rollback(&b.stateroot),
            None => (None, None),
        };
        let mut out = Vec::with_capacity(self.deployments().len());
        for (i, d) in self.deployments().iter().enumerate() {
            let commit = repo.as_ref().and_then(|r| r.load_commit(&d.checksum).ok());
            out.push(DeploymentStatus {
                index: i,
                deployment: d.clone(),
                booted: self.booted_index() == Some(i),
                pending: pending == Some(i),
                rollback: rollback == Some(i),
                pinned: d.is_pinned(),
                version: commit.as_ref().and_then(|c| c.version()),
                timestamp: commit.as_ref().map(|c| c.timestamp),
                staged: false,
            });
        }
        Ok(out)
    }

    /// The staged deployment as `status` shows it (listed first, as ostree does).
    pub fn staged_status(&self) -> Result<Option<DeploymentStatus>> {
        let Some(d) = self.staged()? else {
            return Ok(None);
        };
        let commit = self
            .repo()
            .ok()
            .and_then(|r| r.load_commit(&d.checksum).ok());
        Ok(Some(DeploymentStatus {
            index: 0,
            pinned: d.is_pinned(),
            version: commit.as_ref().and_then(|c| c.version()),
            timestamp: commit.as_ref().map(|c| c.timestamp),
            deployment: d,
            booted: false,
            pending: false,
            rollback: false,
            staged: true,
        }))
    }
}
