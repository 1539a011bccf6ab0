//! Container-mode helpers shared by tests/container.rs and tests/image.rs: a composed
//! Alpine tree whose init reports how it was started, and starting a container root with
//! its /sbin/init in a PID and mount namespace.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

pub const STATEROOT: &str = "alpine";
pub const REF: &str = "alpine/container-test";

/// What the deployment's init reports: its sysinit runs this script, then powers off
/// (which, in a PID namespace, ends just that namespace).
pub const REPORT: &str = r#"#!/bin/sh
v=$(cat /usr/share/tl-test/version)
if touch /usr/tl-probe 2>/dev/null; then usr=writable; else usr=readonly; fi
if echo "$v" > /etc/tl-probe; then etc=writable; else etc=readonly; fi
echo "$v" > /var/tl-probe && var=ok
[ -f /sysroot/ostree/container-deployments ] && sysroot=ok
echo "TL-BOOT version=$v root=$(stat -c %d:%i /) pid1=$(readlink /proc/1/exe) usr=$usr etc=$etc var=$var sysroot=$sysroot"
"#;
pub const INITTAB: &str =
    "::sysinit:/usr/libexec/tl-test/report\n::sysinit:/bin/busybox poweroff -f\n";

/// Compose busybox and alpine-baselayout from the shared 3.19 packages, with the report
/// script, an inittab running it and a version file, onto REF of the sysroot's repo.
pub fn compose(sysroot: &Path, work: &Path, version: &str) -> String {
    fs::create_dir_all(work).unwrap();
    let keys = alpine_keys(&work.join("keysroot"));
    for (name, text) in [("report", REPORT), ("inittab", INITTAB)] {
        fs::write(work.join(name), text).unwrap();
    }
    fs::write(work.join("version"), format!("{version}\n")).unwrap();
    let treefile = work.join("tree.toml");
    let apks = test_data().join("alpine/v3.19-standard-iso-apks");
    fs::write(
        &treefile,
        format!(
            "ref = {REF:?}\nversion = {version:?}\ndistribution = \"alpine\"\n\
             repositories = [{:?}]\nkeys = {:?}\npackages = [\"alpine-baselayout\", \"busybox\"]\n\
             [[files]]\nsrc = \"report\"\ndest = \"/usr/libexec/tl-test/report\"\nmode = \"0755\"\n\
             [[files]]\nsrc = \"version\"\ndest = \"/usr/share/tl-test/version\"\n\
             [[files]]\nsrc = \"inittab\"\ndest = \"/etc/inittab\"\n",
            apks.display().to_string(),
            keys.display().to_string(),
        ),
    )
    .unwrap();
    let out = run_ok(
        tl(&sysroot.join("ostree/repo"))
            .args(["compose", "tree", "--json", "--cache-dir"])
            .arg(work.join("cache"))
            .arg(&treefile),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["commit"].as_str().unwrap().to_owned()
}

/// A container sysroot with stateroot `alpine` and treeline-boot as /sbin/init.
pub fn container_sysroot(scratch: &SysrootScratch) -> PathBuf {
    let s = scratch.path().join("sysroot");
    run_ok(admin(&s).args(["init-fs", "--container"]).arg(&s));
    run_ok(admin(&s).args(["os-init", STATEROOT]));
    run_ok(
        admin(&s)
            .arg("install-boot")
            .arg("--from")
            .arg(static_boot()),
    );
    s
}

/// How the container's root is handed to its init.
#[derive(Clone, Copy)]
pub enum Root {
    /// A plain `chroot` into the sysroot directory.
    Chroot,
    /// The sysroot bound on itself first, so the root is a mount point, as container
    /// runtimes hand it over.
    MountPoint,
}

/// Start the container: PID 1 of a new PID and mount namespace is the sysroot's
/// /sbin/init, with /proc mounted for it as a runtime does.
pub fn start(sysroot: &Path, root: Root) -> std::process::Output {
    let mut c = tool("timeout");
    c.arg("60")
        .arg("unshare")
        .args(["--pid", "--mount", "--fork"])
        .arg(format!("--mount-proc={}", sysroot.join("proc").display()));
    match root {
        Root::Chroot => c.arg("chroot").arg(sysroot).arg("/sbin/init"),
        Root::MountPoint => c
            .args([
                "sh",
                "-c",
                r#"mount --rbind "$S" "$S" && exec chroot "$S" /sbin/init"#,
            ])
            .env("S", sysroot),
    };
    c.output().unwrap()
}

/// [`start`], then the report line of the deployment's init.
pub fn boot(sysroot: &Path, root: Root) -> String {
    let out = start(sysroot, root);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut reports = stdout.lines().filter(|l| l.starts_with("TL-BOOT "));
    let line = reports.next().unwrap_or_else(|| {
        panic!(
            "the deployment's init did not report ({}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        )
    });
    assert!(reports.next().is_none(), "init ran twice: {stdout}");
    assert!(
        stderr.contains("treeline-boot: starting deployment alpine/"),
        "{stderr}"
    );
    line.to_owned()
}

/// The report of a correctly started deployment `id` of `version`: its directory is the
/// root (device and inode as the host sees them), PID 1 is its busybox init, /usr is
/// read-only, /etc writable, /var and /sysroot there.
pub fn expected_report(s: &Path, id: &str, version: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let dir = deployment_dir(s, id);
    let m = fs::metadata(&dir).unwrap();
    // PID 1's executable as the kernel names it: through /bin -> usr/bin on a merged /usr.
    let busybox = fs::canonicalize(dir.join("bin/busybox")).unwrap();
    let pid1 = Path::new("/").join(busybox.strip_prefix(&dir).unwrap());
    format!(
        "TL-BOOT version={version} root={}:{} pid1={} usr=readonly etc=writable var=ok sysroot=ok",
        m.dev(),
        m.ino(),
        pid1.display()
    )
}

pub fn deployment_dir(s: &Path, id: &str) -> PathBuf {
    s.join("ostree/deploy")
        .join(STATEROOT)
        .join("deploy")
        .join(id)
}
