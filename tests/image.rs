//! `treeline image`: the initramfs of a real Debian kernel, read back with the real `cpio`
//! and checked against the real `modinfo`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::*;

/// The archive decompressed by the real zstd, beside it (`NAME.cpio`).
fn decompressed(archive: &Path) -> fs::File {
    let plain = archive.with_extension("cpio");
    run_ok(
        tool("zstd")
            .args(["-d", "-q", "-f"])
            .arg(archive)
            .arg("-o")
            .arg(&plain),
    );
    fs::File::open(plain).unwrap()
}

/// `cpio -t`: the archive's paths.
fn cpio_list(archive: &Path) -> Vec<String> {
    let out = run_ok(
        tool("cpio")
            .args(["-t", "--quiet"])
            .stdin(decompressed(archive)),
    );
    out.lines().map(str::to_owned).collect()
}

/// Unpack the archive into `dest` with the real cpio.
fn cpio_extract(archive: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    run_ok(
        tool("cpio")
            .args(["-id", "--quiet", "--no-absolute-filenames"])
            .stdin(decompressed(archive))
            .current_dir(dest),
    );
}

fn modinfo_depends(file: &Path) -> Vec<String> {
    let out = run_ok(tool("modinfo").args(["-F", "depends"]).arg(file));
    out.trim()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect()
}

#[test]
fn initramfs_of_debian_kernel_has_the_virtio_ext4_closure_in_load_order() {
    let (kernel, kver) = debian_kernel();
    let scratch = tempfile::tempdir().unwrap();
    let init = scratch.path().join("init");
    write_file(
        scratch.path(),
        "init",
        b"#!/bin/sh\necho placeholder\n",
        0o755,
    );
    let out = scratch.path().join("initramfs.img");
    let json = run_ok(
        treeline()
            .args(["image", "initramfs", "--json", "--module", "vfat", "--root"])
            .arg(&kernel)
            .arg("--init")
            .arg(&init)
            .arg("--out")
            .arg(&out),
    );
    let summary: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(summary["kver"], kver.as_str());

    let listed = cpio_list(&out);
    let listed_set: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    let base = format!("usr/lib/modules/{kver}");
    for p in [
        "init",
        "dev",
        "dev/console",
        "proc",
        "sys",
        "sysroot",
        &format!("{base}/modules.dep"),
        &format!("{base}/modules.load-order"),
    ] {
        assert!(listed_set.contains(p), "{p} not in the archive: {listed:?}");
    }

    let unpacked = scratch.path().join("unpacked");
    cpio_extract(&out, &unpacked);
    assert_eq!(
        fs::read(unpacked.join("init")).unwrap(),
        fs::read(&init).unwrap()
    );
    let order_text = fs::read_to_string(unpacked.join(&base).join("modules.load-order")).unwrap();
    let order: Vec<String> = order_text.lines().map(str::to_owned).collect();
    let names: Vec<String> = order
        .iter()
        .map(|p| {
            let file = p.rsplit('/').next().unwrap();
            file.strip_suffix(".ko")
                .unwrap_or_else(|| panic!("{p}: not a plain .ko"))
                .replace('-', "_")
        })
        .collect();
    assert_eq!(
        summary["modules"].as_array().unwrap().len(),
        names.len(),
        "{summary}"
    );
    // The modules a VM with virtio or SCSI disks and an ext4 root needs (Debian builds
    // them all as modules), and the requested vfat with its fat.
    for m in [
        "virtio_pci",
        "virtio_ring",
        "virtio",
        "virtio_blk",
        "virtio_scsi",
        "virtio_console",
        "scsi_mod",
        "sd_mod",
        "ext4",
        "jbd2",
        "mbcache",
        "crc16",
        "crc32c_generic",
        "vfat",
        "fat",
    ] {
        assert!(names.iter().any(|n| n == m), "{m} missing: {names:?}");
    }
    // Every module is in the archive, the real modinfo reads it, and everything it
    // depends on is loaded before it.
    for (i, rel) in order.iter().enumerate() {
        let file = unpacked.join(&base).join(rel);
        assert!(
            listed_set.contains(format!("{base}/{rel}").as_str()),
            "{rel}"
        );
        for dep in modinfo_depends(&file) {
            let at = names.iter().position(|n| *n == dep);
            assert!(
                at.is_some_and(|at| at < i),
                "{rel} depends on {dep}, which is not loaded before it: {names:?}"
            );
        }
    }
    // ext4's soft dependency (crc32c, for metadata checksums) comes before it.
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(pos("crc32c_generic") < pos("ext4"));
    // Nothing else: no more than the closure (a few dozen of the kernel's thousands).
    assert!(names.len() < 40, "{} modules: {names:?}", names.len());
}

#[test]
fn initramfs_names_an_unknown_module_and_writes_nothing() {
    let (kernel, _) = debian_kernel();
    let scratch = tempfile::tempdir().unwrap();
    write_file(scratch.path(), "init", b"#!/bin/sh\n", 0o755);
    let out = scratch.path().join("initramfs.img");
    let r = run_fail(
        treeline()
            .args(["image", "initramfs", "--module", "no_such_driver", "--root"])
            .arg(&kernel)
            .arg("--init")
            .arg(scratch.path().join("init"))
            .arg("--out")
            .arg(&out),
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("\"no_such_driver\""), "{err}");
    assert!(!out.exists());
}

/// What the deployment's busybox init runs at sysinit on the VM's console: the version
/// file of the tree, whether /usr is writable, and the device and ostree= argument of
/// the root, between markers; then, with the boot partition mounted on /boot,
/// `treeline admin status` of the running system (the test build of treeline with the
/// glibc it links, carried under /usr/lib/tl-test: the Alpine userland is musl, and
/// only treeline-boot is built static). Then it powers off.
const REPORT: &str = r#"#!/bin/sh
g=/usr/lib/tl-test/glibc
mount -t ext4 /dev/vda1 /boot
treeline() { $g/ld-linux-x86-64.so.2 --library-path $g /usr/lib/tl-test/treeline "$@"; }
echo TL-STATUS-BEGIN
treeline admin status 2>&1
echo TL-STATUS-END
# An update disk, if any, says what this boot does next (tests/image.rs upgrade loop).
mkdir -p /mnt/updates
if mount -t ext4 /dev/vdb /mnt/updates 2>/dev/null; then . /mnt/updates/step.sh; fi
v=$(cat /usr/share/tl-test/version)
if touch /usr/tl-probe 2>/dev/null; then usr=writable; else usr=readonly; fi
if echo "$v" > /etc/tl-probe; then etc=writable; else etc=readonly; fi
echo "$v" > /var/tl-probe && var=ok
[ -d /sysroot/ostree/repo ] && sysroot=ok
rootdev=$(awk '$5 == "/" { for (i = 7; i < NF; i++) if ($i == "-") print $(i + 2) }' /proc/self/mountinfo | tail -n 1)
for a in $(cat /proc/cmdline); do case "$a" in ostree=*) ostree=${a#ostree=} ;; esac; done
echo "TL-VM-BEGIN version=$v pid1=$(readlink /proc/1/exe) usr=$usr etc=$etc var=$var sysroot=$sysroot rootdev=$rootdev $ostree TL-VM-END"
"#;
const INITTAB: &str = "::sysinit:/usr/libexec/tl-test/report\n::sysinit:/bin/busybox poweroff -f\n";

/// An Alpine tree (the 3.20 minirootfs, its /etc as /usr/etc) carrying Debian's kernel
/// with an initramfs whose /init is the static treeline-boot, a report script run by
/// its busybox init, and a version file; committed to `repo` (archive) on `REF`.
fn commit_bootable_tree(scratch: &Path, repo: &Path, version: &str) {
    let (kernel, kver) = debian_kernel();
    let tree = scratch.join(format!("tree-{version}"));
    unpack_minirootfs(&tree);
    fs::rename(tree.join("etc"), tree.join("usr/etc")).unwrap();
    for mount_point in ["sysroot", "boot"] {
        fs::create_dir_all(tree.join(mount_point)).unwrap();
    }
    write_file(&tree, "usr/etc/inittab", INITTAB.as_bytes(), 0o644);
    write_file(
        &tree,
        "usr/libexec/tl-test/report",
        REPORT.as_bytes(),
        0o755,
    );
    write_file(
        &tree,
        "usr/share/tl-test/version",
        format!("{version}\n").as_bytes(),
        0o644,
    );
    // As in OSTree trees: the booted system reaches the sysroot's ostree/ at /ostree.
    std::os::unix::fs::symlink("sysroot/ostree", tree.join("ostree")).unwrap();
    let carried = tree.join("usr/lib/tl-test");
    fs::create_dir_all(carried.join("glibc")).unwrap();
    run_ok(
        tool("objcopy")
            .arg("--strip-debug")
            .arg(env!("CARGO_BIN_EXE_treeline"))
            .arg(carried.join("treeline")),
    );
    let ldd = run_ok(tool("ldd").arg(env!("CARGO_BIN_EXE_treeline")));
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let name = Path::new(lib).file_name().unwrap();
        fs::copy(lib, carried.join("glibc").join(name)).unwrap();
    }
    let moddir = tree.join("usr/lib/modules").join(&kver);
    fs::create_dir_all(&moddir).unwrap();
    fs::copy(
        kernel.join(format!("boot/vmlinuz-{kver}")),
        moddir.join("vmlinuz"),
    )
    .unwrap();
    run_ok(
        treeline()
            .args(["image", "initramfs", "--root"])
            .arg(&kernel)
            .arg("--init")
            .arg(static_boot())
            .arg("--out")
            .arg(moddir.join("initramfs.img")),
    );
    if !repo.join("config").exists() {
        run_ok(ostree(repo).args(["init", "--mode=archive"]));
    }
    run_ok(
        tl(repo)
            .args(["commit", "-b", REF])
            .arg(format!("--subject={version}"))
            .arg(&tree),
    );
}

const REF: &str = "alpine/vm/x86_64";

/// Boot qemu with `args` (a disk, or a kernel and initramfs) until it powers off or 240 s
/// pass; returns the serial console. TCG: under nested KVM, SeaBIOS's handover to
/// syslinux hits an emulation failure.
fn boot_qemu(args: &[String], log: &Path) -> String {
    run_qemu(args, log, None)
}

/// Like [`boot_qemu`], but cut the power (SIGKILL qemu: the guest's unwritten caches are
/// lost) as soon as `marker` shows on the serial console; it must show.
fn boot_qemu_cut_at(args: &[String], log: &Path, marker: &str) -> String {
    run_qemu(args, log, Some(marker))
}

fn run_qemu(args: &[String], log: &Path, cut_at: Option<&str>) -> String {
    let mut qemu = tool("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "256",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .args(args)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    let read_log = || String::from_utf8_lossy(&fs::read(log).unwrap_or_default()).into_owned();
    let status = loop {
        if let Some(s) = qemu.try_wait().unwrap() {
            break Some(s);
        }
        if let Some(m) = cut_at
            && read_log().contains(m)
        {
            let _ = qemu.kill();
            let _ = qemu.wait();
            let serial = read_log();
            return serial;
        }
        if std::time::Instant::now() > deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let serial = read_log();
    assert!(
        status.is_some(),
        "qemu did not power off within 240 s; serial console:\n{serial}"
    );
    if let Some(m) = cut_at {
        panic!("{m:?} never showed on the console; serial console:\n{serial}");
    }
    serial
}

#[test]
fn disk_image_boots_in_qemu_through_extlinux_to_the_deployment() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    commit_bootable_tree(scratch.path(), &repo, "1");
    let img = scratch.path().join("disk.img");
    let layout = scratch.path().join("layout.toml");
    fs::write(&layout, "[boot]\nsize = \"64M\"\n[swap]\nsize = \"8M\"\n").unwrap();
    let json = run_ok(
        tl(&repo)
            .args(["image", "build", "--ref", REF, "--json"])
            .args(["--karg", "console=ttyS0", "--karg", "panic=-1"])
            .args(["--remote-url", "http://updates.invalid/repo"])
            .arg("--layout")
            .arg(&layout)
            .arg("--out")
            .arg(&img),
    );
    let summary: serde_json::Value = serde_json::from_str(&json).unwrap();

    // The partition table as sfdisk reads it: boot (BIOS-bootable), swap, root last.
    let table: serde_json::Value =
        serde_json::from_str(&run_ok(tool("sfdisk").arg("--json").arg(&img))).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["boot", "swap", "root"]);
    assert_eq!(parts[0]["attrs"], "LegacyBIOSBootable");
    assert_eq!(parts[0]["size"].as_u64().unwrap() * 512, 64 << 20);
    // Each file system carries its label where blkid looks.
    for (p, (label, ty)) in parts
        .iter()
        .zip([("boot", "ext3"), ("swap", "swap"), ("root", "ext4")])
    {
        let offset = p["start"].as_u64().unwrap() * 512;
        let probe = run_ok(
            tool("blkid")
                .args(["-p", "-o", "export", "-O"])
                .arg(offset.to_string())
                .arg(&img),
        );
        assert!(probe.contains(&format!("LABEL={label}\n")), "{probe}");
        assert!(probe.contains(&format!("TYPE={ty}\n")), "{probe}");
    }
    assert_eq!(
        summary["partitions"].as_array().unwrap().len(),
        3,
        "{summary}"
    );
    // Read back without mounting (debugfs): the remote in the image's repository, the
    // origin naming it, and the extlinux config of the boot version.
    let debugfs_cat = |part: &serde_json::Value, path: &str| {
        let offset = part["start"].as_u64().unwrap() * 512;
        run_ok(
            tool("debugfs")
                .arg("-R")
                .arg(format!("cat {path}"))
                .arg(format!("{}?offset={offset}", img.display())),
        )
    };
    let config = debugfs_cat(&parts[2], "/ostree/repo/config");
    assert!(
        config.contains("[remote \"origin\"]\nurl=http://updates.invalid/repo\n"),
        "{config}"
    );
    let deployment = summary["deployment"].as_str().unwrap();
    let origin = debugfs_cat(
        &parts[2],
        &format!("/ostree/deploy/alpine/deploy/{deployment}.origin"),
    );
    assert!(
        origin.contains(&format!("refspec=origin:{REF}")),
        "{origin}"
    );
    let syslinux_cfg = debugfs_cat(&parts[0], "/loader.1/syslinux.cfg");
    assert!(syslinux_cfg.contains("DEFAULT ostree-0"), "{syslinux_cfg}");

    // Boot it: SeaBIOS, syslinux's GPT MBR, extlinux reading the syslinux.cfg of the
    // boot version, the kernel and the initramfs of the deployment, treeline-boot as its
    // /init (modules, root by label, the deployment's root, switch root), then the
    // deployment's own busybox init.
    let serial = boot_qemu(
        &[
            "-drive".into(),
            format!("file={},format=raw,if=virtio", img.display()),
        ],
        &scratch.path().join("serial.log"),
    );
    let cmdline = serial
        .lines()
        .find(|l| l.contains("Kernel command line:"))
        .unwrap_or_default();
    assert!(
        cmdline.contains("root=LABEL=root rw console=ttyS0 panic=-1 ostree=/ostree/boot.1/alpine/"),
        "{cmdline}"
    );
    let ostree_arg = cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("ostree="))
        .unwrap();
    for step in [
        "treeline-boot: loaded ",
        "treeline-boot: mounted /dev/vda3 (ext4) on /sysroot",
        &format!("treeline-boot: starting deployment alpine/{deployment}"),
    ] {
        assert!(
            serial.contains(step),
            "{step:?} not on the console:\n{serial}"
        );
    }
    // treeline on the guest: one deployment, booted, with the image's remote.
    assert_eq!(
        console_deployments(&serial, "alpine"),
        [format!("* alpine {deployment}")],
        "treeline status on the guest; serial console:\n{serial}"
    );
    assert!(
        serial.contains(&format!("origin refspec: origin:{REF}")),
        "{serial}"
    );
    let expected = format!(
        "TL-VM-BEGIN version=1 pid1=/bin/busybox usr=readonly etc=writable var=ok \
         sysroot=ok rootdev=/dev/vda3 {ostree_arg} TL-VM-END"
    );
    assert!(
        serial.contains(&expected),
        "the deployment's init did not report {expected:?}; serial console:\n{serial}"
    );
}

#[test]
fn qcow2_image_without_loader_has_the_same_partitions() {
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    commit_bootable_tree(scratch.path(), &repo, "1");
    let img = scratch.path().join("disk.qcow2");
    run_ok(
        tl(&repo)
            .args(["image", "build", "--ref", REF, "--size", "300M"])
            .args(["--format", "qcow2", "--bootloader", "none", "--out"])
            .arg(&img),
    );
    let info: serde_json::Value = serde_json::from_str(&run_ok(
        tool("qemu-img").args(["info", "--output=json"]).arg(&img),
    ))
    .unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 300u64 << 20);
    let raw = scratch.path().join("back.raw");
    run_ok(
        tool("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&img)
            .arg(&raw),
    );
    let table: serde_json::Value =
        serde_json::from_str(&run_ok(tool("sfdisk").arg("--json").arg(&raw))).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["boot", "root"]);
    assert!(parts[0].get("attrs").is_none(), "{parts:?}");
    // The root partition takes the rest of the 300 MiB disk.
    let end = (parts[1]["start"].as_u64().unwrap() + parts[1]["size"].as_u64().unwrap()) * 512;
    assert_eq!(end, (300 << 20) - (1 << 20));
    // No staging directory is left beside the output.
    let left: Vec<_> = fs::read_dir(scratch.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".treeline-image")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn image_of_a_tree_with_a_kernel_but_no_initramfs_is_refused() {
    let (kernel, kver) = debian_kernel();
    let scratch = tempfile::tempdir().unwrap();
    let tree = scratch.path().join("tree");
    let moddir = tree.join("usr/lib/modules").join(&kver);
    fs::create_dir_all(&moddir).unwrap();
    fs::create_dir_all(tree.join("usr/etc")).unwrap();
    fs::copy(
        kernel.join(format!("boot/vmlinuz-{kver}")),
        moddir.join("vmlinuz"),
    )
    .unwrap();
    let repo = scratch.path().join("repo");
    run_ok(ostree(&repo).args(["init", "--mode=archive"]));
    run_ok(tl(&repo).args(["commit", "-b", REF]).arg(&tree));
    let img = scratch.path().join("disk.img");
    let r = run_fail(
        tl(&repo)
            .args([
                "image",
                "build",
                "--ref",
                REF,
                "--bootloader",
                "none",
                "--out",
            ])
            .arg(&img),
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains(&format!(
            "{REF}: the tree has kernel {kver} but no usr/lib/modules/{kver}/initramfs.img"
        )),
        "{err}"
    );
    assert!(!img.exists());
}

#[test]
fn initramfs_refuses_a_dynamically_linked_init() {
    let (kernel, _) = debian_kernel();
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("initramfs.img");
    // The init from $TREELINE_BOOT (as --init's default is read): the host's own
    // programs are dynamically linked.
    let r = run_fail(
        treeline()
            .env("TREELINE_BOOT", "/bin/true")
            .args(["image", "initramfs", "--root"])
            .arg(&kernel)
            .arg("--out")
            .arg(&out),
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("init /bin/true: dynamically linked (needs /lib"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn initramfs_init_lists_the_block_devices_when_the_root_does_not_appear() {
    // Straight into Debian's kernel with treeline-boot's initramfs (no boot loader), a
    // virtio disk whose ext4 has another label, and a short wait.
    let (kernel, kver) = debian_kernel();
    let scratch = tempfile::tempdir().unwrap();
    let initrd = scratch.path().join("initramfs.img");
    run_ok(
        treeline()
            .args(["image", "initramfs", "--root"])
            .arg(&kernel)
            .arg("--init")
            .arg(static_boot())
            .arg("--out")
            .arg(&initrd),
    );
    let disk = scratch.path().join("other.img");
    fs::File::create(&disk).unwrap().set_len(8 << 20).unwrap();
    run_ok(
        tool("mkfs.ext4")
            .args(["-q", "-F", "-L", "not-root"])
            .arg(&disk),
    );
    let serial = boot_qemu(
        &[
            "-kernel".into(),
            kernel
                .join(format!("boot/vmlinuz-{kver}"))
                .display()
                .to_string(),
            "-initrd".into(),
            initrd.display().to_string(),
            "-append".into(),
            "console=ttyS0 panic=-1 root=LABEL=tl-missing treeline.rootwait=3".into(),
            "-drive".into(),
            format!("file={},format=raw,if=virtio", disk.display()),
        ],
        &scratch.path().join("serial.log"),
    );
    for line in [
        "treeline-boot: waiting up to 3 s for the root device LABEL=tl-missing",
        "treeline-boot: error: root device LABEL=tl-missing did not appear within 3 s; block devices seen:",
        "  /dev/vda: ext label \"not-root\"",
    ] {
        assert!(
            serial.lines().any(|l| l.trim_end() == line),
            "{line:?} not on the console:\n{serial}"
        );
    }
    // PID 1 ended: the kernel says so (and reboots, which ends qemu here).
    assert!(serial.contains("Attempted to kill init"), "{serial}");
}

/// An update disk for the VM (ext4 labelled `updates`, mounted on /mnt/updates by the
/// report script): a copy of `repo` (no network in the guest) and `step.sh`, what the
/// boot does next.
fn update_disk(scratch: &Path, repo: &Path, n: usize, step: &str) -> std::path::PathBuf {
    let dir = scratch.join(format!("updates-{n}"));
    fs::create_dir_all(&dir).unwrap();
    run_ok(tool("cp").arg("-a").arg(repo).arg(dir.join("repo")));
    fs::write(dir.join("step.sh"), step).unwrap();
    let upd = scratch.join(format!("updates-{n}.img"));
    fs::File::create(&upd).unwrap().set_len(256 << 20).unwrap();
    run_ok(
        tool("mkfs.ext4")
            .args(["-q", "-F", "-L", "updates", "-d"])
            .arg(&dir)
            .arg(&upd),
    );
    upd
}

fn vm_drives(img: &Path, upd: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("file={},format=raw,if=virtio", img.display()),
        "-drive".into(),
        format!("file={},format=raw,if=virtio", upd.display()),
    ]
}

/// The version the deployment's init reported.
fn reported_version(serial: &str) -> String {
    serial
        .split("TL-VM-BEGIN version=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no report on the console:\n{serial}"))
        .to_owned()
}

/// A guest step running `treeline admin ARGS`, its output and exit code between markers.
fn admin_step(what: &str) -> String {
    format!("echo TL-STEP-BEGIN; treeline admin {what} 2>&1; echo TL-STEP-END rc=$?\n")
}

/// An image of v1 (origin `origin:REF`, its remote a URL the guest cannot reach) and v2
/// committed after it in `repo`; returns (image, v1's deployment, v2's commit).
fn v1_image_and_v2(scratch: &Path, repo: &Path) -> (std::path::PathBuf, String, String) {
    commit_bootable_tree(scratch, repo, "1");
    let v1 = run_ok(tl(repo).args(["rev-parse", REF])).trim().to_owned();
    let img = scratch.join("disk.img");
    let json = run_ok(
        tl(repo)
            .args(["image", "build", "--ref", REF, "--json"])
            .args(["--karg", "console=ttyS0", "--karg", "panic=-1"])
            .args(["--remote-url", "http://updates.invalid/repo"])
            .arg("--out")
            .arg(&img),
    );
    let summary: serde_json::Value = serde_json::from_str(&json).unwrap();
    let d1 = summary["deployment"].as_str().unwrap().to_owned();
    commit_bootable_tree(scratch, repo, "2");
    let v2 = run_ok(tl(repo).args(["rev-parse", REF])).trim().to_owned();
    assert_ne!(v1, v2);
    (img, d1, v2)
}

#[test]
fn vm_upgrades_from_an_update_disk_then_rolls_back_across_reboots() {
    let scratch = tempfile::tempdir().unwrap();
    let scratch = scratch.path();
    let repo = scratch.join("repo");
    let (img, d1, v2) = v1_image_and_v2(scratch, &repo);
    let boot = |n: usize, step: &str| -> String {
        let upd = update_disk(scratch, &repo, n, step);
        boot_qemu(
            &vm_drives(&img, &upd),
            &scratch.join(format!("serial-{n}.log")),
        )
    };

    // Boot 1: v1, the only deployment; upgrade from the repository on the update disk.
    let s1 = boot(1, &admin_step("upgrade --from /mnt/updates/repo"));
    assert_eq!(reported_version(&s1), "1", "{s1}");
    assert_eq!(
        console_deployments(&s1, "alpine"),
        [format!("* alpine {d1}")],
        "{s1}"
    );
    assert!(s1.contains("TL-STEP-END rc=0"), "upgrade failed:\n{s1}");
    assert!(s1.contains("Update available"), "{s1}");

    // Boot 2: v2 booted, v1 the rollback; roll back.
    let s2 = boot(2, &admin_step("rollback"));
    assert_eq!(reported_version(&s2), "2", "{s2}");
    let st2 = console_deployments(&s2, "alpine");
    assert_eq!(st2.len(), 2, "{s2}");
    assert!(st2[0].starts_with(&format!("* alpine {v2}.")), "{st2:?}");
    assert_eq!(st2[1], format!("alpine {d1} (rollback)"), "{st2:?}");
    assert!(s2.contains("TL-STEP-END rc=0"), "rollback failed:\n{s2}");

    // Boot 3: v1 booted again, v2 still there.
    let s3 = boot(3, "");
    assert_eq!(reported_version(&s3), "1", "{s3}");
    let st3 = console_deployments(&s3, "alpine");
    assert_eq!(st3[0], format!("* alpine {d1}"), "{s3}");
    assert!(st3[1].starts_with(&format!("alpine {v2}.")), "{st3:?}");
}

/// A guest step checking the repository with `treeline fsck`, its verdict between markers.
const FSCK_STEP: &str = "echo TL-FSCK-BEGIN; treeline --repo=/ostree/repo fsck --quiet 2>&1; \
                         echo TL-FSCK-END rc=$?\n";

/// A guest step starting `upgrade --from` the update disk that stops at fault `point`
/// and says so, for the host to cut the power there.
fn cut_step(point: &str) -> String {
    format!(
        "TREELINE_FAULT={point} TREELINE_FAULT_MODE=hang treeline admin upgrade \
         --from /mnt/updates/repo 2>&1\n"
    )
}

#[test]
fn vm_power_cut_during_an_upgrade_boots_a_complete_deployment_and_fsck_passes() {
    let scratch = tempfile::tempdir().unwrap();
    let scratch = scratch.path();
    let repo = scratch.join("repo");
    let (img, d1, v2) = v1_image_and_v2(scratch, &repo);
    let marker = |point: &str| format!("treeline: fault point {point} reached");

    let starting = |d: &str| format!("treeline-boot: starting deployment alpine/{d}");
    // Boots 1 to 3: each cut at one point of the upgrade; the next one starts v1, the only
    // deployment, complete, and the repository is sound.
    //  - commit-during-rename: v2's objects half moved into objects/ (staging synced);
    //  - write-after-entries: v2 copied, its deployment checked out, the new boot entries
    //    written, the boot version not swapped;
    //  - write-after-swap: right after the swap to the new boot version.
    let points = [
        "commit-during-rename",
        "write-after-entries",
        "write-after-swap",
    ];
    for (i, point) in points.iter().enumerate() {
        let n = i + 1;
        let check = if i == 0 { "" } else { FSCK_STEP };
        let upd = update_disk(scratch, &repo, n, &format!("{check}{}", cut_step(point)));
        let serial = boot_qemu_cut_at(
            &vm_drives(&img, &upd),
            &scratch.join(format!("serial-{n}.log")),
            &marker(point),
        );
        assert!(serial.contains(&starting(&d1)), "boot {n}:\n{serial}");
        assert_eq!(
            console_deployments(&serial, "alpine"),
            [format!("* alpine {d1}")],
            "boot {n}:\n{serial}"
        );
        if i > 0 {
            assert!(
                serial.contains("TL-FSCK-END rc=0"),
                "fsck after the cut at {}:\n{serial}",
                points[i - 1]
            );
        }
    }

    // Boot 4: the new default, v2, complete, boots with v1 as its rollback; fsck passes.
    let upd = update_disk(scratch, &repo, 4, FSCK_STEP);
    let s4 = boot_qemu(&vm_drives(&img, &upd), &scratch.join("serial-4.log"));
    assert_eq!(reported_version(&s4), "2", "{s4}");
    let st4 = console_deployments(&s4, "alpine");
    assert_eq!(st4.len(), 2, "{s4}");
    assert!(st4[0].starts_with(&format!("* alpine {v2}.")), "{st4:?}");
    assert_eq!(st4[1], format!("alpine {d1} (rollback)"), "{st4:?}");
    assert!(
        s4.contains("TL-FSCK-END rc=0"),
        "fsck after the cut at write-after-swap:\n{s4}"
    );
}

/// Unpack a container archive (tar, or squashfs through unsquashfs) into `dest`, keeping
/// owners, modes and xattrs as a container runtime would.
fn unpack_container(archive: &Path, squashfs: bool, dest: &Path) {
    if squashfs {
        run_ok(
            tool("unsquashfs")
                .args(["-no-progress", "-d"])
                .arg(dest)
                .arg(archive),
        );
    } else {
        fs::create_dir_all(dest).unwrap();
        run_ok(
            tool("tar")
                .args([
                    "--extract",
                    "--numeric-owner",
                    "--same-permissions",
                    "--xattrs",
                ])
                .args(["--xattrs-include=*", "--file"])
                .arg(archive)
                .arg("--directory")
                .arg(dest),
        );
    }
}

#[test]
fn container_archive_runs_as_a_container_and_upgrades_from_a_repository() {
    use common::container as ct;
    let scratch = SysrootScratch::new();
    // The build machine's repository (at build/ostree/repo, where the compose helper
    // puts commits), v1 on the ref.
    let build = scratch.path().join("build");
    let repo = build.join("ostree/repo");
    fs::create_dir_all(&repo).unwrap();
    run_ok(ostree(&repo).args(["init", "--mode=bare"]));
    let work = scratch.path().join("work");
    let c1 = ct::compose(&build, &work, "v1");
    let archive = |format: &str, out: &Path| -> serde_json::Value {
        let json = run_ok(
            tl(&repo)
                .args(["image", "container", "--json", "--ref", ct::REF])
                .args(["--format", format, "--init"])
                .arg(static_boot())
                .arg("--out")
                .arg(out),
        );
        serde_json::from_str(&json).unwrap()
    };
    let tar = scratch.path().join("ct.tar");
    let summary = archive("tar", &tar);
    assert_eq!(summary["commit"], c1.as_str(), "{summary}");
    let d1 = format!("{c1}.0");
    assert_eq!(summary["deployment"], d1.as_str(), "{summary}");
    assert_eq!(
        summary["file_size"].as_u64().unwrap(),
        fs::metadata(&tar).unwrap().len()
    );

    // Unpacked as a container's root: treeline-boot as /sbin/init starts v1.
    let root = scratch.path().join("ct-tar");
    unpack_container(&tar, false, &root);
    let st: serde_json::Value =
        serde_json::from_str(&run_ok(admin(&root).args(["status", "--json"]))).unwrap();
    assert_eq!(st["container"], true, "{st}");
    assert_eq!(st["deployments"][0]["id"], d1.as_str(), "{st}");
    assert_eq!(
        ct::boot(&root, ct::Root::Chroot),
        ct::expected_report(&root, &d1, "v1")
    );

    // v2 reaches it as a repository on a disk: upgrade --from, restart, v2 runs.
    let c2 = ct::compose(&build, &work, "v2");
    run_ok(admin(&root).args(["upgrade", "--from"]).arg(&repo));
    let d2 = format!("{c2}.0");
    assert_eq!(
        ct::boot(&root, ct::Root::MountPoint),
        ct::expected_report(&root, &d2, "v2")
    );
    run_ok(tl(&root.join("ostree/repo")).arg("fsck"));

    // squashfs: the same root, now of v2, unpacked and started.
    let sqfs = scratch.path().join("ct.squashfs");
    let summary = archive("squashfs", &sqfs);
    assert_eq!(summary["commit"], c2.as_str(), "{summary}");
    let magic = fs::read(&sqfs).unwrap();
    assert_eq!(&magic[..4], b"hsqs", "not a squashfs image");
    let root = scratch.path().join("ct-squashfs");
    unpack_container(&sqfs, true, &root);
    assert_eq!(
        ct::boot(&root, ct::Root::Chroot),
        ct::expected_report(&root, &d2, "v2")
    );
}
