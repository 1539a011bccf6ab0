//! An Alpine tree composed by `treeline compose` (alpine-base from the 3.19 packages of
//! the test data, so OpenRC runs the system under busybox init) boots in qemu from a
//! `treeline image build` disk: extlinux, Debian's kernel with treeline-boot's
//! initramfs, the deployment, OpenRC's runlevels, a login prompt on the serial console,
//! and `treeline admin status` there showing the one booted deployment.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const REF: &str = "alpine/3.19/x86_64/vm";

/// Runs from OpenRC's `local` service (the last of the default runlevel): in the
/// background, so that inittab's getty starts once the runlevel is done, it waits for
/// the getty, then prints `treeline admin status` between markers (the test build of
/// treeline with the glibc it links, carried under /usr/lib/tl-test: the userland is
/// musl) and what runs the system, and powers off.
const REPORT: &str = r#"#!/bin/sh
(
while ! pidof getty >/dev/null; do sleep 1; done
sleep 2
g=/usr/lib/tl-test/glibc
mount -t ext4 /dev/vda1 /boot
echo TL-STATUS-BEGIN
$g/ld-linux-x86-64.so.2 --library-path $g /usr/lib/tl-test/treeline admin status 2>&1
echo TL-STATUS-END
echo "TL-VM-BEGIN pid1=$(readlink /proc/1/exe) runlevel=$(cat /run/openrc/softlevel) TL-VM-END"
poweroff
) </dev/null >/dev/console 2>&1 &
"#;

/// Alpine's inittab with the getty on the serial console instead of the VTs.
const INITTAB: &str = "::sysinit:/sbin/openrc sysinit\n::sysinit:/sbin/openrc boot\n\
                       ::wait:/sbin/openrc default\n\
                       ttyS0::respawn:/sbin/getty -L ttyS0 115200 vt100\n\
                       ::ctrlaltdel:/sbin/reboot\n::shutdown:/sbin/openrc shutdown\n";

/// The treefile: alpine-base with the hostname and local services enabled, and as
/// `[[files]]` the report, the inittab, treeline with its glibc, and Debian's kernel
/// with an initramfs built from its modules (treeline-boot as /init).
fn write_treefile(scratch: &Path) -> PathBuf {
    let (kernel, kver) = debian_kernel();
    let files = scratch.join("files");
    fs::create_dir_all(files.join("glibc")).unwrap();
    write_file(&files, "report.start", REPORT.as_bytes(), 0o755);
    write_file(&files, "inittab", INITTAB.as_bytes(), 0o644);
    let initramfs = files.join("initramfs.img");
    run_ok(
        treeline()
            .args(["image", "initramfs", "--root"])
            .arg(&kernel)
            .arg("--init")
            .arg(static_boot())
            .arg("--out")
            .arg(&initramfs),
    );
    let carried = files.join("treeline");
    run_ok(
        tool("objcopy")
            .arg("--strip-debug")
            .arg(env!("CARGO_BIN_EXE_treeline"))
            .arg(&carried),
    );
    let mut entries = vec![
        (
            files.join("report.start"),
            "/etc/local.d/tl-report.start".to_owned(),
        ),
        (files.join("inittab"), "/etc/inittab".to_owned()),
        (carried, "/usr/lib/tl-test/treeline".to_owned()),
        (
            kernel.join(format!("boot/vmlinuz-{kver}")),
            format!("/usr/lib/modules/{kver}/vmlinuz"),
        ),
        (initramfs, format!("/usr/lib/modules/{kver}/initramfs.img")),
    ];
    let ldd = run_ok(tool("ldd").arg(env!("CARGO_BIN_EXE_treeline")));
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let name = Path::new(lib).file_name().unwrap().to_string_lossy();
        entries.push((PathBuf::from(lib), format!("/usr/lib/tl-test/glibc/{name}")));
    }
    let keys = alpine_keys(&scratch.join("keysroot"));
    let mut text = format!(
        "ref = {REF:?}\ndistribution = \"alpine\"\narch = \"x86_64\"\n\
         repositories = [{:?}]\nkeys = {:?}\npackages = [\"alpine-base\"]\n\
         hostname = \"tl-alpine\"\n\
         services = [{{ name = \"hostname\", runlevel = \"boot\" }}, \
         {{ name = \"local\", runlevel = \"default\" }}]\n",
        test_data()
            .join("alpine/v3.19-standard-iso-apks")
            .display()
            .to_string(),
        keys.display().to_string(),
    );
    for (src, dest) in entries {
        text.push_str(&format!(
            "[[files]]\nsrc = {:?}\ndest = {dest:?}\n",
            src.display().to_string()
        ));
    }
    let path = scratch.join("vm.toml");
    fs::write(&path, text).unwrap();
    path
}

/// Boots the disk in qemu (TCG, as tests/image.rs: SeaBIOS's handover to syslinux fails
/// under nested KVM) until the guest powers off or 240 s pass; the serial console.
fn boot(img: &Path, log: &Path) -> String {
    let mut qemu = tool("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "256", "-display", "none"])
        .args(["-no-reboot", "-monitor", "none", "-serial"])
        .arg(format!("file:{}", log.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", img.display()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let exited = loop {
        if qemu.try_wait().unwrap().is_some() {
            break true;
        }
        if Instant::now() > deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let serial = String::from_utf8_lossy(&fs::read(log).unwrap_or_default()).into_owned();
    assert!(
        exited,
        "qemu did not power off within 240 s; serial console:\n{serial}"
    );
    serial
}

#[test]
fn composed_alpine_tree_boots_openrc_to_a_login_prompt_with_one_booted_deployment() {
    let scratch = tempfile::tempdir().unwrap();
    let scratch = scratch.path();
    let repo = scratch.join("repo");
    run_ok(ostree(&repo).args(["init", "--mode=bare"]));
    let treefile = write_treefile(scratch);
    let out = run_ok(
        tl(&repo)
            .args(["compose", "tree", "--json", "--cache-dir"])
            .arg(scratch.join("cache"))
            .arg(&treefile),
    );
    let composed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let commit = composed["commit"].as_str().unwrap().to_owned();

    let img = scratch.join("disk.img");
    let json = run_ok(
        tl(&repo)
            .args(["image", "build", "--json", "--ref", REF])
            .args(["--karg", "console=ttyS0", "--karg", "panic=-1", "--out"])
            .arg(&img),
    );
    let summary: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(summary["commit"], commit.as_str(), "{summary}");
    let deployment = summary["deployment"].as_str().unwrap().to_owned();

    let started = Instant::now();
    let serial = boot(&img, &scratch.join("serial.log"));
    eprintln!(
        "boot to power-off: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for step in [
        format!("treeline-boot: starting deployment alpine/{deployment}"),
        " is starting up Linux ".to_owned(),
        " * Starting local ...".to_owned(),
        "tl-alpine login: ".to_owned(),
    ] {
        assert!(
            serial.contains(&step),
            "{step:?} not on the console:\n{serial}"
        );
    }
    let deployments = console_deployments(&serial, "alpine");
    assert_eq!(deployments, [format!("* alpine {deployment}")], "{serial}");
    assert!(
        serial.contains("TL-VM-BEGIN pid1=/usr/bin/busybox runlevel=default TL-VM-END"),
        "busybox init with OpenRC's default runlevel did not report:\n{serial}"
    );
}
