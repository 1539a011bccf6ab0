//! The initramfs: a compressed newc cpio archive with the init binary as `/init`, the
//! module closure of [`crate::modules`] (decompressed: the archive is compressed whole,
//! and the init then needs only `finit_module`), and the mount points the init uses.
//!
//! The init finds what to load in `/usr/lib/modules/<kver>/modules.load-order`: one module
//! path a line, relative to that directory, each after everything it needs. A
//! `modules.dep` for the archive's modules is there too, for `modprobe`-style inits.
//!
//! The output is a function of the inputs only: entries sorted by path, owner root, mtime
//! 0, inode numbers counted from 1.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::modules::{Closure, DEFAULT_MODULES, ModuleIndex, Want};

/// The file listing the modules to load, in order, next to `modules.dep`.
pub const LOAD_ORDER_FILE: &str = "modules.load-order";

/// How the archive is compressed (the kernel must have the matching `CONFIG_RD_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// zstd (Debian, Alpine and Fedora kernels decompress it).
    #[default]
    Zstd,
    /// gzip (every kernel decompresses it).
    Gzip,
    /// A plain cpio archive.
    None,
}

/// What to put in an initramfs.
#[derive(Clone, Debug)]
pub struct InitramfsOptions {
    /// The tree whose kernel modules are used (its `usr/lib/modules/<kver>` or
    /// `lib/modules/<kver>`).
    pub root: PathBuf,
    /// The kernel version; default: the only one the tree has.
    pub kver: Option<String>,
    /// The program to install as `/init` (treeline-boot, normally).
    pub init: PathBuf,
    /// Modules wanted besides [`DEFAULT_MODULES`] (each must exist).
    pub extra_modules: Vec<String>,
    /// Leave out [`DEFAULT_MODULES`].
    pub no_default_modules: bool,
    /// The archive's compression.
    pub compression: Compression,
    /// More files: (source on this machine, path in the archive), e.g. a static busybox
    /// for a debugging shell. Their mode is kept.
    pub files: Vec<(PathBuf, String)>,
}

/// What [`build`] wrote.
#[derive(Clone, Debug)]
pub struct InitramfsReport {
    /// The kernel version whose modules were taken.
    pub kver: String,
    /// The modules, built-ins and absent optional modules.
    pub closure: Closure,
    /// Entries in the archive.
    pub entries: usize,
    /// Size of the archive as written (compressed).
    pub bytes: u64,
}

/// The modules directory of `root` for `kver`, or for the only kernel the tree has.
pub fn find_modules_dir(root: &Path, kver: Option<&str>) -> Result<(String, PathBuf)> {
    let mut found = Vec::new();
    for base in ["usr/lib/modules", "lib/modules"] {
        let dir = root.join(base);
        if let Some(k) = kver {
            let d = dir.join(k);
            if d.is_dir() {
                return Ok((k.to_owned(), d));
            }
            continue;
        }
        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at(dir),
        };
        for e in entries {
            let e = e.at(&dir)?;
            if (e.path().join("modules.dep").is_file() || e.path().join("kernel").is_dir())
                && let Ok(name) = e.file_name().into_string()
            {
                found.push((name, e.path()));
            }
        }
        if !found.is_empty() {
            break;
        }
    }
    found.sort();
    match (found.len(), kver) {
        (_, Some(k)) => Err(Error::NoKernel {
            root: root.to_path_buf(),
            reason: format!("no usr/lib/modules/{k} or lib/modules/{k}"),
        }),
        (1, None) => Ok(found.remove(0)),
        (0, None) => Err(Error::NoKernel {
            root: root.to_path_buf(),
            reason: "no kernel modules in usr/lib/modules or lib/modules".into(),
        }),
        (_, None) => Err(Error::NoKernel {
            root: root.to_path_buf(),
            reason: format!(
                "several kernels ({}): choose one",
                found
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Build the initramfs of `opts` into `out`, replacing it atomically.
pub fn build(opts: &InitramfsOptions, out: &Path) -> Result<InitramfsReport> {
    let (kver, moddir) = find_modules_dir(&opts.root, opts.kver.as_deref())?;
    let index = ModuleIndex::load(&moddir, &kver)?;
    let mut wanted: Vec<Want> = Vec::new();
    if !opts.no_default_modules {
        wanted.extend(DEFAULT_MODULES.iter().map(|m| Want::optional(m)));
    }
    wanted.extend(opts.extra_modules.iter().map(|m| Want::required(m)));
    let closure = index.closure(&wanted)?;
    for a in &closure.absent {
        tracing::info!("kernel {kver} has no module {a}; going without");
    }

    let mut archive = Archive::default();
    for d in ["dev", "proc", "sys", "sysroot", "run", "tmp", "usr/lib"] {
        archive.dir(d);
    }
    archive.symlink("lib", "usr/lib");
    archive.device("dev/console", 0o600, 5, 1);
    archive.device("dev/null", 0o666, 1, 3);
    let init = fs::read(&opts.init).at(&opts.init)?;
    // An ELF init must be static: the archive has no libraries (a script is the
    // caller's business, e.g. with a static busybox from --file).
    if init.starts_with(b"\x7fELF") {
        let bad = |reason: String| Error::BadInit {
            path: opts.init.clone(),
            reason,
        };
        if let Some(interp) = treeline_sysroot::elf_interpreter(&init).map_err(bad)? {
            return Err(bad(format!(
                "dynamically linked (needs {interp}); the initramfs has no libraries: build \
                 treeline-boot static with `RUSTFLAGS='-C target-feature=+crt-static' cargo \
                 build -p treeline-boot --target x86_64-unknown-linux-gnu`"
            )));
        }
    }
    archive.file("init", 0o755, init);
    for (src, dest) in &opts.files {
        let dest = dest.trim_start_matches('/');
        if dest.is_empty()
            || dest
                .split('/')
                .any(|c| c == ".." || c == "." || c.is_empty())
        {
            return Err(Error::Io {
                path: src.clone(),
                error: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("archive path {dest:?} is not a plain relative path"),
                ),
            });
        }
        let md = fs::metadata(src).at(src)?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o7777;
        archive.file(dest, mode, fs::read(src).at(src)?);
    }

    let base = format!("usr/lib/modules/{kver}");
    archive.dir(&base);
    let mut dep = String::new();
    let mut order = String::new();
    for m in &closure.modules {
        let src = moddir.join(&m.path);
        let data = read_module(&src)?;
        let rel = plain_ko(&m.path);
        archive.file(&format!("{base}/{rel}"), 0o644, data);
        let deps: Vec<String> = m
            .deps
            .iter()
            .filter_map(|d| closure.modules.iter().find(|x| &x.name == d))
            .map(|x| plain_ko(&x.path))
            .collect();
        dep.push_str(&format!("{rel}: {}\n", deps.join(" ")));
        order.push_str(&rel);
        order.push('\n');
    }
    archive.file(&format!("{base}/modules.dep"), 0o644, dep.into_bytes());
    archive.file(
        &format!("{base}/{LOAD_ORDER_FILE}"),
        0o644,
        order.into_bytes(),
    );
    let builtin = moddir.join("modules.builtin");
    if builtin.is_file() {
        archive.file(
            &format!("{base}/modules.builtin"),
            0o644,
            fs::read(&builtin).at(&builtin)?,
        );
    }

    let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir).at(dir)?;
    let entries = archive.entries.len();
    {
        let w = io::BufWriter::new(tmp.as_file());
        archive.write(w, opts.compression).at(tmp.path())?;
    }
    tmp.as_file().sync_all().at(tmp.path())?;
    let bytes = tmp.as_file().metadata().at(tmp.path())?.len();
    let mut perm = tmp.as_file().metadata().at(tmp.path())?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
    fs::set_permissions(tmp.path(), perm).at(tmp.path())?;
    tmp.persist(out).map_err(|e| e.error).at(out)?;
    if let Ok(d) = File::open(dir) {
        d.sync_all().at(dir)?;
    }
    Ok(InitramfsReport {
        kver,
        closure,
        entries,
        bytes,
    })
}

/// A module's path with `.ko` as its only suffix (the archive holds it decompressed).
fn plain_ko(path: &str) -> String {
    for s in [".ko.xz", ".ko.zst", ".ko.gz"] {
        if let Some(stem) = path.strip_suffix(s) {
            return format!("{stem}.ko");
        }
    }
    path.to_owned()
}

/// Read a module file, decompressing `.xz`, `.zst` and `.gz`.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let f = File::open(path).at(path)?;
    let name = path.to_string_lossy();
    let mut reader: Box<dyn Read> = if name.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new(f))
    } else if name.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(f).at(path)?)
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut data = Vec::new();
    reader.read_to_end(&mut data).at(path)?;
    Ok(data)
}

enum Node {
    Dir,
    File(u32, Vec<u8>),
    Symlink(String),
    Device(u32, u32, u32),
}

/// The archive's entries by path; parents are added with their children.
#[derive(Default)]
struct Archive {
    entries: BTreeMap<String, Node>,
}

impl Archive {
    fn parents(&mut self, path: &str) {
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            self.entries.entry(parent.to_owned()).or_insert(Node::Dir);
            p = parent;
        }
    }

    fn dir(&mut self, path: &str) {
        self.parents(path);
        self.entries.insert(path.to_owned(), Node::Dir);
    }

    fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.parents(path);
        self.entries.insert(path.to_owned(), Node::File(mode, data));
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.entries
            .insert(path.to_owned(), Node::Symlink(target.to_owned()));
    }

    fn device(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        self.parents(path);
        self.entries
            .insert(path.to_owned(), Node::Device(mode, major, minor));
    }

    fn write(&self, w: impl Write, compression: Compression) -> io::Result<()> {
        match compression {
            Compression::None => {
                let mut w = self.write_cpio(w)?;
                w.flush()
            }
            Compression::Gzip => {
                let enc = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(w, flate2::Compression::best());
                self.write_cpio(enc)?.finish()?.flush()
            }
            Compression::Zstd => {
                let enc = zstd::stream::write::Encoder::new(w, 15)?;
                self.write_cpio(enc)?.finish()?.flush()
            }
        }
    }

    fn write_cpio<W: Write>(&self, mut w: W) -> io::Result<W> {
        let mut entries: Vec<(&str, &Node)> = vec![(".", &Node::Dir)];
        entries.extend(self.entries.iter().map(|(k, v)| (k.as_str(), v)));
        for (i, (path, node)) in entries.into_iter().enumerate() {
            let ino = u32::try_from(i + 1).map_err(io::Error::other)?;
            let b = cpio::NewcBuilder::new(path).ino(ino).uid(0).gid(0).mtime(0);
            let (b, data): (_, &[u8]) = match node {
                Node::Dir => (b.mode(0o040755).nlink(2), &[]),
                Node::File(mode, data) => (b.mode(0o100000 | mode).nlink(1), data),
                Node::Symlink(t) => (b.mode(0o120777).nlink(1), t.as_bytes()),
                Node::Device(mode, major, minor) => (
                    b.mode(0o020000 | mode)
                        .nlink(1)
                        .rdev_major(*major)
                        .rdev_minor(*minor),
                    &[],
                ),
            };
            let len = u32::try_from(data.len()).map_err(io::Error::other)?;
            let mut fw = b.write(w, len);
            fw.write_all(data)?;
            w = fw.finish()?;
        }
        cpio::newc::trailer(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) {
        let m = dir.join("usr/lib/modules/6.1.0-t");
        fs::create_dir_all(m.join("kernel/fs")).unwrap();
        fs::write(
            m.join("modules.dep"),
            "kernel/fs/ext4.ko.zst: kernel/fs/jbd2.ko.zst\nkernel/fs/jbd2.ko.zst:\n",
        )
        .unwrap();
        for (n, body) in [("ext4", "ext4 module"), ("jbd2", "jbd2 module")] {
            let data = zstd::encode_all(body.as_bytes(), 3).unwrap();
            fs::write(m.join(format!("kernel/fs/{n}.ko.zst")), data).unwrap();
        }
        fs::write(dir.join("init"), "#!/bin/sh\n").unwrap();
    }

    fn opts(dir: &Path) -> InitramfsOptions {
        InitramfsOptions {
            root: dir.to_path_buf(),
            kver: None,
            init: dir.join("init"),
            extra_modules: vec![],
            no_default_modules: false,
            compression: Compression::None,
            files: vec![],
        }
    }

    fn read_entries(path: &Path) -> Vec<(String, u32, Vec<u8>)> {
        let mut r = File::open(path).unwrap();
        let mut out = Vec::new();
        loop {
            let mut rd = cpio::NewcReader::new(r).unwrap();
            if rd.entry().is_trailer() {
                break;
            }
            let name = rd.entry().name().to_owned();
            let mode = rd.entry().mode();
            let mut data = Vec::new();
            rd.read_to_end(&mut data).unwrap();
            out.push((name, mode, data));
            r = rd.finish().unwrap();
        }
        out
    }

    #[test]
    fn archive_holds_init_decompressed_modules_and_their_load_order() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let out = dir.path().join("initramfs.img");
        let r = build(&opts(dir.path()), &out).unwrap();
        assert_eq!(r.kver, "6.1.0-t");
        let e = read_entries(&out);
        let get = |n: &str| e.iter().find(|(p, _, _)| p == n).map(|(_, m, d)| (*m, d));
        assert_eq!(get("init").unwrap(), (0o100755, &b"#!/bin/sh\n".to_vec()));
        let m = "usr/lib/modules/6.1.0-t";
        assert_eq!(
            get(&format!("{m}/kernel/fs/ext4.ko")).unwrap().1,
            b"ext4 module"
        );
        assert_eq!(
            get(&format!("{m}/{LOAD_ORDER_FILE}")).unwrap().1,
            b"kernel/fs/jbd2.ko\nkernel/fs/ext4.ko\n"
        );
        assert_eq!(
            get(&format!("{m}/modules.dep")).unwrap().1,
            b"kernel/fs/jbd2.ko: \nkernel/fs/ext4.ko: kernel/fs/jbd2.ko\n"
        );
        assert_eq!(get("dev/console").unwrap().0, 0o020600);
        for d in ["dev", "proc", "sys", "sysroot", "run"] {
            assert_eq!(get(d).unwrap().0, 0o040755, "{d}");
        }
        let names: Vec<&str> = e.iter().map(|(p, _, _)| p.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names[0], ".");
        assert_eq!(names, sorted, "entries sorted");
        assert_eq!(r.closure.absent.len(), DEFAULT_MODULES.len() - 1);
    }

    #[test]
    fn dynamically_linked_init_is_refused_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let mut o = opts(dir.path());
        // The host's own programs are dynamically linked.
        o.init = PathBuf::from("/bin/true");
        let out = dir.path().join("initramfs.img");
        let e = build(&o, &out).unwrap_err().to_string();
        assert!(
            e.starts_with("init /bin/true: dynamically linked (needs /lib"),
            "{e}"
        );
        assert!(!out.exists());
    }

    #[test]
    fn same_inputs_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let mut o = opts(dir.path());
        o.compression = Compression::Zstd;
        build(&o, &dir.path().join("a")).unwrap();
        // Another mtime on the inputs changes nothing.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(dir.path().join("init"), "#!/bin/sh\n").unwrap();
        build(&o, &dir.path().join("b")).unwrap();
        assert_eq!(
            fs::read(dir.path().join("a")).unwrap(),
            fs::read(dir.path().join("b")).unwrap()
        );
        let plain = zstd::decode_all(File::open(dir.path().join("a")).unwrap()).unwrap();
        assert!(plain.starts_with(b"070701"));
    }

    #[test]
    fn a_missing_extra_module_or_kernel_is_named() {
        let dir = tempfile::tempdir().unwrap();
        tree(dir.path());
        let mut o = opts(dir.path());
        o.extra_modules = vec!["btrfs".into()];
        let e = build(&o, &dir.path().join("x")).unwrap_err();
        assert!(e.to_string().contains("\"btrfs\""), "{e}");
        assert!(!dir.path().join("x").exists());
        o.kver = Some("5.0".into());
        let e = build(&o, &dir.path().join("x")).unwrap_err();
        assert!(e.to_string().contains("lib/modules/5.0"), "{e}");
    }
}
