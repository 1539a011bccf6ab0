//! A Debian (systemd) tree composed by `treeline compose` boots in qemu from a treeline
//! image: bookworm with systemd, udev and Debian's kernel from the host's configured
//! mirror, its initramfs built at compose time with treeline-boot as /init; systemd
//! reaches its default target with a login prompt on the serial console, and a unit
//! prints `treeline admin status` there (one booted deployment) and powers off.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const REF: &str = "debian/bookworm/amd64/vm";

/// Run by `tl-report.service` once the system is up: waits for the serial getty, then
/// prints the status of the running system and the init's state between markers on the
/// console, and powers off.
const REPORT: &str = r#"#!/bin/sh
exec >/dev/console 2>&1
for i in $(seq 60); do systemctl -q is-active serial-getty@ttyS0.service && break; sleep 1; done
sleep 2
mount -t ext4 /dev/vda1 /boot
echo TL-STATUS-BEGIN
treeline admin status
echo TL-STATUS-END
echo "TL-INIT pid1=$(readlink /proc/1/exe) state=$(systemctl is-system-running) TL-INIT-END"
systemctl poweroff
"#;

const UNIT: &str = "[Unit]
Description=Show treeline status on the console, then power off
After=getty.target

[Service]
Type=simple
ExecStart=/usr/libexec/tl-report

[Install]
WantedBy=multi-user.target
";

/// The treefile: systemd as init, udev (without it no device is ever plugged and the
/// serial getty waits for ttyS0 in vain), Debian's kernel; tiny-initramfs stands in for
/// initramfs-tools as the kernel's initramfs tool and its image is dropped, so compose
/// builds treeline's. The treeline binary is this test's build (glibc, as bookworm's).
fn treefile(dir: &Path) -> std::path::PathBuf {
    write_file(dir, "report.sh", REPORT.as_bytes(), 0o755);
    write_file(dir, "tl-report.service", UNIT.as_bytes(), 0o644);
    let text = format!(
        r#"ref = "{REF}"
version = "12.0"
distribution = "debian"
packages = ["systemd", "systemd-sysv", "udev", "tiny-initramfs"]
exclude-packages = ["initramfs-tools"]
kernel = "linux-image-amd64"
services = ["tl-report.service"]

[[files]]
src = {treeline:?}
dest = "/usr/bin/treeline"
mode = "0755"
[[files]]
src = {report:?}
dest = "/usr/libexec/tl-report"
mode = "0755"
[[files]]
src = {unit:?}
dest = "/etc/systemd/system/tl-report.service"

[[postprocess]]
name = "drop-tiny-initramfs-image"
script = "rm -f /boot/initrd.img-*"

[debian]
suite = "bookworm"
"#,
        treeline = env!("CARGO_BIN_EXE_treeline"),
        report = dir.join("report.sh").display().to_string(),
        unit = dir.join("tl-report.service").display().to_string(),
    );
    let path = dir.join("vm.toml");
    fs::write(&path, text).unwrap();
    path
}

/// qemu (TCG, 512 MiB) on `disk` until the guest powers off or 600 s pass; the serial
/// console with terminal escapes removed.
fn boot(disk: &Path, log: &Path) -> String {
    let mut qemu = tool("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "512",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-monitor", "none", "-serial"])
        .arg(format!("file:{}", log.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", disk.display()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(s) = qemu.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let raw = String::from_utf8_lossy(&fs::read(log).unwrap_or_default()).into_owned();
    let serial = strip_escapes(&raw);
    assert!(
        status.is_some(),
        "qemu did not power off within 600 s; serial console:\n{serial}"
    );
    serial
}

/// `s` without ANSI escape sequences (systemd colours its console status).
fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[test]
fn composed_debian_systemd_tree_boots_to_a_login_prompt_and_shows_its_status() {
    let started = Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    run_ok(ostree(&repo).args(["init", "--mode=archive"]));
    let tf = treefile(scratch.path());
    let cache = test_cache().join("compose-debian");
    let out = run_ok(
        tl(&repo)
            .args(["compose", "tree", "--json", "--cache-dir"])
            .arg(&cache)
            .arg("--boot-init")
            .arg(static_boot())
            .arg(&tf),
    );
    let composed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let commit = composed["commit"].as_str().unwrap().to_owned();
    eprintln!("composed {commit} in {:?}", started.elapsed());

    // The kernel and the initramfs compose built, where deploy looks for them.
    let modules = run_ok(tl(&repo).args(["ls", &commit, "/usr/lib/modules"]));
    let kver = modules
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .find_map(|p| p.strip_prefix("/usr/lib/modules/"))
        .unwrap_or_else(|| panic!("no kernel in /usr/lib/modules:\n{modules}"))
        .to_owned();
    let moddir = run_ok(tl(&repo).args(["ls", &commit, &format!("/usr/lib/modules/{kver}")]));
    for f in ["vmlinuz", "initramfs.img"] {
        assert!(
            moddir.lines().any(|l| l.ends_with(&format!("/{kver}/{f}"))),
            "{f} missing:\n{moddir}"
        );
    }

    let img = scratch.path().join("disk.img");
    let json = run_ok(
        tl(&repo)
            .args(["image", "build", "--ref", REF, "--json"])
            .args(["--karg", "console=ttyS0", "--karg", "panic=-1"])
            .arg("--out")
            .arg(&img),
    );
    let summary: serde_json::Value = serde_json::from_str(&json).unwrap();
    let deployment = summary["deployment"].as_str().unwrap().to_owned();
    eprintln!("image built at {:?}", started.elapsed());

    let boot_started = Instant::now();
    let serial = boot(&img, &scratch.path().join("serial.log"));
    eprintln!(
        "booted and powered off in {:?} (whole test {:?})",
        boot_started.elapsed(),
        started.elapsed()
    );
    assert!(
        serial.contains(&format!(
            "treeline-boot: starting deployment debian/{deployment}"
        )),
        "{serial}"
    );
    // systemd's serial getty on the kernel's console.
    assert!(
        serial
            .lines()
            .any(|l| l.contains(" login: ") || l.ends_with(" login:")),
        "no login prompt on the console:\n{serial}"
    );
    // systemd is PID 1 and reached its default target with no failed unit.
    assert!(
        serial.contains("TL-INIT pid1=/usr/lib/systemd/systemd state=running TL-INIT-END"),
        "{serial}"
    );
    let deployments = console_deployments(&serial, "debian");
    assert_eq!(
        deployments,
        [format!("* debian {deployment}")],
        "treeline status on the guest:\n{serial}"
    );
}
