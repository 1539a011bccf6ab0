//! Editing a deployment's kernel arguments (`admin kargs`): the changed list is written as
//! a new boot version, so the edit appears with the same atomic `boot/loader` swap as a
//! deploy, and a crash leaves the old arguments.

use crate::bls::Kargs;
use crate::error::{Error, Result};
use crate::sysroot::Sysroot;

/// One edit of a command line, applied in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KargEdit {
    /// Append the argument even if its key is present.
    Append(String),
    /// `KEY` removes every argument with that key; `KEY=VALUE` only that exact argument.
    Delete(String),
    /// Replace the arguments with this key (or append it when absent).
    Replace(String),
}

impl KargEdit {
    /// Apply the edit to `k`.
    pub fn apply(&self, k: &mut Kargs) {
        match self {
            KargEdit::Append(a) => k.append(a),
            KargEdit::Replace(a) => k.replace(a),
            KargEdit::Delete(a) if a.contains('=') => {
                let kept: Vec<&str> = k
                    .args()
                    .iter()
                    .map(String::as_str)
                    .filter(|x| x != a)
                    .collect();
                *k = Kargs::parse(&kept.join(" "));
            }
            KargEdit::Delete(key) => k.remove_key(key),
        }
    }
}

impl Sysroot {
    /// Apply `edits` to the kernel arguments of the deployment at `index` and write the
    /// deployment list again (a new boot version). Returns the new arguments; nothing is
    /// written when they do not change.
    pub fn edit_kargs(&mut self, index: usize, edits: &[KargEdit]) -> Result<Kargs> {
        self.require_lock()?;
        let mut list = self.deployments().to_vec();
        if self.is_container() {
            return Err(Error::Refused {
                deployment: self.get(index)?.display_id(),
                reason: "a container sysroot boots no kernel, so it has no kernel arguments".into(),
            });
        }
        let old = self.get(index)?.kargs.clone();
        let mut k = old.clone();
        for e in edits {
            e.apply(&mut k);
        }
        if k.args() == old.args() {
            return Ok(k);
        }
        list[index].kargs = k.clone();
        self.write_deployments(list)?;
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_in_order() {
        let mut k = Kargs::parse("root=LABEL=root quiet console=tty0 console=ttyS0");
        for e in [
            KargEdit::Delete("console=tty0".into()),
            KargEdit::Delete("quiet".into()),
            KargEdit::Replace("root=LABEL=sys".into()),
            KargEdit::Append("console=ttyS1".into()),
        ] {
            e.apply(&mut k);
        }
        assert_eq!(
            k.args(),
            ["root=LABEL=sys", "console=ttyS0", "console=ttyS1"]
        );
    }
}
