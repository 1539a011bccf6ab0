//! A kernel's module index (`modules.dep`, `modules.builtin`, `modules.alias`,
//! `modules.softdep`, as `depmod` writes them) and the closure of the modules a boot needs,
//! in load order.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// The modules an initramfs needs to find and mount an ext4 root on a virtio or SCSI disk
/// in a VM, and to print on a virtio console. Each is taken if the kernel has it (as a
/// module or built in); a kernel without one simply does without.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_console",
    "sd_mod",
    "ext4",
];

/// One loadable module of the closure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The module's name (`-` written `_`, as the kernel names it).
    pub name: String,
    /// Its file, relative to the `modules/<kver>` directory (as in `modules.dep`).
    pub path: String,
    /// The names of the modules it depends on (`modules.dep`).
    pub deps: Vec<String>,
}

/// What a closure found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Closure {
    /// The modules to load, each after everything it depends on.
    pub modules: Vec<Module>,
    /// Names asked for that are built into the kernel.
    pub builtin: Vec<String>,
    /// Optional names the kernel has in no form.
    pub absent: Vec<String>,
}

/// A module wanted in the closure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    /// A module name or an alias (`crc32c`, `fs-ext4`).
    pub name: String,
    /// Whether the closure fails when the kernel has no such module.
    pub required: bool,
}

impl Want {
    /// Wanted, and an error if absent.
    pub fn required(name: &str) -> Self {
        Want {
            name: name.to_owned(),
            required: true,
        }
    }

    /// Wanted if the kernel has it.
    pub fn optional(name: &str) -> Self {
        Want {
            name: name.to_owned(),
            required: false,
        }
    }
}

/// The module index of one kernel.
#[derive(Clone, Debug, Default)]
pub struct ModuleIndex {
    /// The kernel version.
    pub kver: String,
    /// name -> (path, dependency names), from `modules.dep`.
    modules: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
    /// Exact aliases (no wildcards) -> module names.
    aliases: BTreeMap<String, BTreeSet<String>>,
    /// Module name -> (pre, post) soft dependencies (names or aliases).
    softdeps: BTreeMap<String, (Vec<String>, Vec<String>)>,
}

/// The kernel's name for a module file or name: the file name without `.ko` and a
/// compression suffix, with `-` as `_`.
pub fn module_name(path_or_name: &str) -> String {
    let base = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let base = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|s| base.strip_suffix(s))
        .unwrap_or(base);
    base.replace('-', "_")
}

impl ModuleIndex {
    /// Read the index files of `dir` (a `modules/<kver>` directory). `modules.dep` is
    /// required (run `depmod` on the tree first); the others may be missing.
    pub fn load(dir: &Path, kver: &str) -> Result<Self> {
        let read = |name: &str, required: bool| -> Result<(PathBuf, String)> {
            let p = dir.join(name);
            match fs::read_to_string(&p) {
                Ok(t) => Ok((p, t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                    Ok((p, String::new()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NoKernel {
                    root: dir.to_path_buf(),
                    reason: format!(
                        "no {name} (the kernel's module index: run `depmod -b ROOT {kver}` on the tree)"
                    ),
                }),
                Err(e) => Err(e).at(p),
            }
        };
        let mut index = ModuleIndex {
            kver: kver.to_owned(),
            ..Default::default()
        };
        let (p, t) = read("modules.dep", true)?;
        index.parse_dep(&p, &t)?;
        let (_, t) = read("modules.builtin", false)?;
        index.parse_builtin(&t);
        let (p, t) = read("modules.alias", false)?;
        index.parse_alias(&p, &t)?;
        let (p, t) = read("modules.softdep", false)?;
        index.parse_softdep(&p, &t)?;
        Ok(index)
    }

    /// Add the lines of a `modules.dep` (`path: dep-path dep-path ...`).
    pub fn parse_dep(&mut self, path: &Path, text: &str) -> Result<()> {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((module, deps)) = line.split_once(':') else {
                return Err(Error::ModuleIndex {
                    path: path.to_path_buf(),
                    line: i + 1,
                    reason: format!("no ':' in {line:?}"),
                });
            };
            let module = module.trim();
            if module.is_empty() || module.starts_with('/') || module.contains("..") {
                return Err(Error::ModuleIndex {
                    path: path.to_path_buf(),
                    line: i + 1,
                    reason: format!(
                        "module path {module:?} is not relative to the kernel's modules directory"
                    ),
                });
            }
            let deps = deps.split_whitespace().map(module_name).collect();
            self.modules
                .insert(module_name(module), (module.to_owned(), deps));
        }
        Ok(())
    }

    /// Add the lines of a `modules.builtin` (one module path a line).
    pub fn parse_builtin(&mut self, text: &str) {
        self.builtin.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(module_name),
        );
    }

    /// Add the exact aliases of a `modules.alias` (`alias NAME MODULE`); patterns with
    /// wildcards (device IDs) are of no use without devices and are skipped.
    pub fn parse_alias(&mut self, path: &Path, text: &str) -> Result<()> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut f = line.split_whitespace();
            match (f.next(), f.next(), f.next()) {
                (Some("alias"), Some(alias), Some(module)) => {
                    if !alias.contains(['*', '?', '[']) {
                        self.aliases
                            .entry(alias.replace('-', "_"))
                            .or_default()
                            .insert(module_name(module));
                    }
                }
                _ => {
                    return Err(Error::ModuleIndex {
                        path: path.to_path_buf(),
                        line: i + 1,
                        reason: format!("expected `alias NAME MODULE`, found {line:?}"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Add the lines of a `modules.softdep` (`softdep MODULE pre: A B post: C`).
    pub fn parse_softdep(&mut self, path: &Path, text: &str) -> Result<()> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut f = line.split_whitespace();
            let (Some("softdep"), Some(module)) = (f.next(), f.next()) else {
                return Err(Error::ModuleIndex {
                    path: path.to_path_buf(),
                    line: i + 1,
                    reason: format!("expected `softdep MODULE pre: ... post: ...`, found {line:?}"),
                });
            };
            let entry = self.softdeps.entry(module_name(module)).or_default();
            let mut post = false;
            for w in f {
                match w {
                    "pre:" => post = false,
                    "post:" => post = true,
                    name if post => entry.1.push(name.to_owned()),
                    name => entry.0.push(name.to_owned()),
                }
            }
        }
        Ok(())
    }

    /// The module files a name stands for: the module itself, else every module with that
    /// alias. Empty when it is built in or unknown.
    fn resolve(&self, name: &str) -> Vec<String> {
        let n = module_name(name);
        if self.modules.contains_key(&n) {
            return vec![n];
        }
        self.aliases
            .get(&n)
            .map(|set| {
                set.iter()
                    .filter(|m| self.modules.contains_key(*m))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn is_builtin(&self, name: &str) -> bool {
        let n = module_name(name);
        self.builtin.contains(&n)
            || self
                .aliases
                .get(&n)
                .is_some_and(|s| s.iter().any(|m| self.builtin.contains(m)))
    }

    /// Every module the wanted ones need, each after its dependencies and `pre:` soft
    /// dependencies, with `post:` soft dependencies after it. Soft dependencies the
    /// kernel lacks are skipped, as modprobe does.
    pub fn closure(&self, wanted: &[Want]) -> Result<Closure> {
        let mut out = Closure::default();
        let mut done = BTreeSet::new();
        for w in wanted {
            let found = self.resolve(&w.name);
            if found.is_empty() {
                if self.is_builtin(&w.name) {
                    out.builtin.push(module_name(&w.name));
                } else if w.required {
                    return Err(Error::NoSuchModule {
                        kver: self.kver.clone(),
                        name: w.name.clone(),
                    });
                } else {
                    out.absent.push(w.name.clone());
                }
            }
            for m in found {
                self.visit(&m, &mut done, &mut BTreeSet::new(), &mut out.modules);
            }
        }
        Ok(out)
    }

    /// Depth-first, dependencies first; `active` breaks cycles (which depmod refuses, but
    /// an index is input).
    fn visit(
        &self,
        name: &str,
        done: &mut BTreeSet<String>,
        active: &mut BTreeSet<String>,
        out: &mut Vec<Module>,
    ) {
        if done.contains(name) || !active.insert(name.to_owned()) {
            return;
        }
        let Some((path, deps)) = self.modules.get(name) else {
            return;
        };
        let (pre, post) = self.softdeps.get(name).cloned().unwrap_or_default();
        for d in deps {
            self.visit(d, done, active, out);
        }
        for s in &pre {
            for m in self.resolve(s) {
                self.visit(&m, done, active, out);
            }
        }
        active.remove(name);
        if done.insert(name.to_owned()) {
            out.push(Module {
                name: name.to_owned(),
                path: path.clone(),
                deps: deps.clone(),
            });
        }
        for s in &post {
            for m in self.resolve(s) {
                self.visit(&m, done, active, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic index shaped like Debian 6.1's: ext4 needs crc16, mbcache and jbd2 and
    /// softly crc32c (two providers); virtio_blk needs virtio and virtio_ring.
    fn index() -> ModuleIndex {
        let mut ix = ModuleIndex {
            kver: "6.1.0-test".into(),
            ..Default::default()
        };
        let p = Path::new("modules.dep");
        ix.parse_dep(
            p,
            "kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz\n\
             kernel/lib/crc16.ko.xz:\n\
             kernel/fs/mbcache.ko.xz:\n\
             kernel/fs/jbd2/jbd2.ko.xz:\n\
             kernel/crypto/crc32c_generic.ko.xz:\n\
             kernel/arch/x86/crypto/crc32c-intel.ko.xz:\n\
             kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz\n\
             kernel/drivers/virtio/virtio_ring.ko.xz:\n\
             kernel/drivers/virtio/virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz\n\
             kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz\n\
             kernel/drivers/misc/unrelated.ko.xz:\n",
        )
        .unwrap();
        ix.parse_builtin("kernel/drivers/scsi/sd_mod.ko\n");
        ix.parse_alias(
            Path::new("modules.alias"),
            "# Aliases extracted from modules themselves.\n\
             alias crypto-crc32c crc32c_generic\n\
             alias crypto-crc32c crc32c_intel\n\
             alias fs-ext4 ext4\n\
             alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n",
        )
        .unwrap();
        ix.parse_softdep(
            Path::new("modules.softdep"),
            "# Soft dependencies extracted from modules themselves.\nsoftdep ext4 pre: crypto-crc32c\n",
        )
        .unwrap();
        ix
    }

    fn names(c: &Closure) -> Vec<&str> {
        c.modules.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn closure_loads_dependencies_and_soft_pre_dependencies_first() {
        let c = index().closure(&[Want::required("ext4")]).unwrap();
        assert_eq!(
            names(&c),
            [
                "crc16",
                "mbcache",
                "jbd2",
                "crc32c_generic",
                "crc32c_intel",
                "ext4"
            ]
        );
        assert_eq!(c.modules[5].path, "kernel/fs/ext4/ext4.ko.xz");
        assert_eq!(c.modules[5].deps, ["crc16", "mbcache", "jbd2"]);
    }

    #[test]
    fn closure_takes_each_module_once_in_a_valid_order() {
        let c = index()
            .closure(&[
                Want::required("virtio_blk"),
                Want::required("virtio-pci"),
                Want::required("fs-ext4"),
            ])
            .unwrap();
        let order = names(&c);
        assert_eq!(
            order.iter().collect::<BTreeSet<_>>().len(),
            order.len(),
            "{order:?}"
        );
        for (i, m) in c.modules.iter().enumerate() {
            for d in &m.deps {
                let at = order.iter().position(|n| n == d).unwrap();
                assert!(at < i, "{d} must load before {}: {order:?}", m.name);
            }
        }
        assert!(!order.contains(&"unrelated"));
        assert_eq!(&order[..3], ["virtio_ring", "virtio", "virtio_blk"]);
    }

    #[test]
    fn builtin_and_absent_modules_are_reported_not_loaded() {
        let c = index()
            .closure(&[Want::optional("sd_mod"), Want::optional("virtio_scsi")])
            .unwrap();
        assert!(c.modules.is_empty());
        assert_eq!(c.builtin, ["sd_mod"]);
        assert_eq!(c.absent, ["virtio_scsi"]);
    }

    #[test]
    fn a_required_unknown_module_is_an_error_naming_it() {
        let e = index()
            .closure(&[Want::required("no_such_fs")])
            .unwrap_err();
        assert!(e.to_string().contains("\"no_such_fs\""), "{e}");
        assert!(e.to_string().contains("6.1.0-test"), "{e}");
    }

    #[test]
    fn a_dependency_cycle_does_not_loop() {
        let mut ix = ModuleIndex::default();
        ix.parse_dep(Path::new("d"), "a.ko: b.ko\nb.ko: a.ko\n")
            .unwrap();
        let c = ix.closure(&[Want::required("a")]).unwrap();
        assert_eq!(names(&c), ["b", "a"]);
    }

    #[test]
    fn bad_index_lines_name_the_file_and_line() {
        let mut ix = ModuleIndex::default();
        let e = ix
            .parse_dep(Path::new("x/modules.dep"), "a.ko:\nno colon here\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "x/modules.dep:2: no ':' in \"no colon here\""
        );
        let e = ix
            .parse_dep(Path::new("x/modules.dep"), "/abs/a.ko:\n")
            .unwrap_err();
        assert!(e.to_string().contains("not relative"), "{e}");
        assert!(
            ix.parse_alias(Path::new("a"), "alias onlyone\n").is_err(),
            "short alias line accepted"
        );
    }

    #[test]
    fn module_names_drop_suffixes_and_dashes() {
        assert_eq!(
            module_name("kernel/arch/x86/crypto/crc32c-intel.ko.zst"),
            "crc32c_intel"
        );
        assert_eq!(module_name("ext4.ko"), "ext4");
        assert_eq!(module_name("virtio-pci"), "virtio_pci");
    }
}
