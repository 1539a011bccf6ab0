//! Malformed and hostile `.deb`s: each is refused with an error naming the file and the
//! problem. Containers are assembled here; tar members come from the real `tar`,
//! `gzip`/`xz` and python3's tarfile.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use treeline_pkg::deb::{DebPackage, Error};

use common::{apt_download, ar_archive, run_ok};

/// Opens and reads a whole package (every file's content, then the end of the file).
fn read_all(deb: &Path) -> Result<usize, Error> {
    let package = DebPackage::open(deb)?;
    let mut data = package.into_data()?;
    let mut count = 0;
    for entry in data.entries()? {
        let mut entry = entry?;
        std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| Error::from_io(deb, e))?;
        count += 1;
    }
    data.finish()?;
    Ok(count)
}

/// Asserts `read_all` fails with a message that names `deb` and contains `problem`.
fn assert_refused(deb: &Path, problem: &str) -> String {
    let err = match read_all(deb) {
        Ok(count) => panic!(
            "{} read ({count} entries) but should fail with {problem:?}",
            deb.display()
        ),
        Err(err) => err.to_string(),
    };
    assert!(
        err.starts_with(&deb.display().to_string()) && err.contains(problem),
        "error for {} should name it and say {problem:?}, got: {err}",
        deb.display()
    );
    eprintln!("refused as expected: {err}");
    err
}

/// A gzip'd control archive made by the real tar from `control` text.
fn control_tar_gz(control: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("control"), control).unwrap();
    let out = Command::new("tar")
        .args(["-czf", "-", "--owner=0", "--group=0", "-C"])
        .arg(dir.path())
        .arg("./control")
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

const CONTROL: &str = "Package: t\nVersion: 1\nArchitecture: all\nDescription: t\n";

const TAR_PRELUDE: &str = r#"import io, sys, tarfile
t = tarfile.open(sys.argv[1], 'w', format=tarfile.GNU_FORMAT)
def add(name, type=tarfile.REGTYPE, data=b'', linkname=''):
    i = tarfile.TarInfo(name)
    i.type = type
    i.linkname = linkname
    i.mode = 0o755 if type == tarfile.DIRTYPE else 0o644
    i.size = len(data) if type == tarfile.REGTYPE else 0
    t.addfile(i, io.BytesIO(data) if type == tarfile.REGTYPE else None)
STATEMENTS
t.close()
"#;

/// An uncompressed data tar from python3 tarfile statements (`add(name, type, data,
/// linkname)` is predefined).
fn data_tar(statements: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("data.tar");
    let script = TAR_PRELUDE.replace("STATEMENTS", statements);
    run_ok(Command::new("python3").arg("-c").arg(script).arg(&out));
    std::fs::read(out).unwrap()
}

/// An ar member: name and content.
type Member<'a> = (&'a str, &'a [u8]);

fn write_deb(dir: &Path, name: &str, members: &[(&str, &[u8])]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, ar_archive(members)).unwrap();
    path
}

fn deb_with_data(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let control = control_tar_gz(CONTROL);
    write_deb(
        dir,
        name,
        &[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", &control),
            ("data.tar", data),
        ],
    )
}

#[test]
fn hostile_data_entries_are_refused_naming_package_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    // A benign archive built the same way reads: the harness itself does not fail.
    let benign = deb_with_data(
        dir.path(),
        "benign.deb",
        &data_tar(
            "add('./', tarfile.DIRTYPE)\nadd('./etc', tarfile.DIRTYPE)\nadd('./etc/a', data=b'x')\nadd('./etc/l', tarfile.SYMTYPE, linkname='../../outside')\nadd('./etc/h', tarfile.LNKTYPE, linkname='./etc/a')",
        ),
    );
    assert_eq!(read_all(&benign).unwrap(), 5);

    let cases = [
        (
            "parent",
            "add('./../x', data=b'x')",
            "\"./../x\"",
            "'..' component",
        ),
        (
            "deep-parent",
            "add('./a/../../x', data=b'x')",
            "\"./a/../../x\"",
            "'..' component",
        ),
        (
            "absolute",
            "add('/etc/passwd', data=b'x')",
            "\"/etc/passwd\"",
            "absolute path",
        ),
        (
            "through-symlink",
            "add('./evil', tarfile.SYMTYPE, linkname='/etc')\nadd('./evil/passwd', data=b'x')",
            "\"./evil/passwd\"",
            "goes through \"evil\", a symlink earlier in the archive",
        ),
        (
            "dir-through-symlink",
            "add('./d', tarfile.SYMTYPE, linkname='../..')\nadd('./d/x/', tarfile.DIRTYPE)",
            "\"./d/x/\"",
            "a symlink earlier",
        ),
        (
            "through-file",
            "add('./f', data=b'x')\nadd('./f/x', data=b'x')",
            "\"./f/x\"",
            "a file earlier",
        ),
        (
            "hardlink-missing",
            "add('./h', tarfile.LNKTYPE, linkname='./nothere')",
            "\"./h\"",
            "hardlink to \"./nothere\", which is not a regular file earlier in the archive",
        ),
        (
            "hardlink-before-target",
            "add('./h', tarfile.LNKTYPE, linkname='./later')\nadd('./later', data=b'x')",
            "\"./h\"",
            "not a regular file earlier",
        ),
        (
            "hardlink-absolute",
            "add('./h', tarfile.LNKTYPE, linkname='/etc/shadow')",
            "\"./h\"",
            "hardlink target \"/etc/shadow\": absolute path",
        ),
        (
            "hardlink-to-dir",
            "add('./d', tarfile.DIRTYPE)\nadd('./h', tarfile.LNKTYPE, linkname='./d')",
            "\"./h\"",
            "not a regular file earlier",
        ),
        (
            "fifo",
            "add('./p', tarfile.FIFOTYPE)",
            "\"./p\"",
            "fifo: OSTree cannot store fifos",
        ),
        (
            "char-device",
            "add('./dev/null', tarfile.CHRTYPE)",
            "\"./dev/null\"",
            "device node: OSTree cannot store device nodes",
        ),
        (
            "block-device",
            "add('./sda', tarfile.BLKTYPE)",
            "\"./sda\"",
            "device node",
        ),
        (
            "duplicate",
            "add('./f', data=b'1')\nadd('./f', data=b'2')",
            "\"./f\"",
            "appears twice",
        ),
        (
            "symlink-then-dir",
            "add('./s', tarfile.SYMTYPE, linkname='/')\nadd('./s/', tarfile.DIRTYPE)",
            "\"./s/\"",
            "appears twice (earlier as Symlink)",
        ),
    ];
    for (name, statements, entry, problem) in cases {
        let deb = deb_with_data(dir.path(), &format!("{name}.deb"), &data_tar(statements));
        let err = assert_refused(&deb, problem);
        assert!(
            err.contains(&format!("data.tar entry {entry}")),
            "{name}: {err}"
        );
    }
}

#[test]
fn truncated_packages_are_refused_at_every_cut() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(apt_download("base-files")).unwrap();
    let len = real.len();
    let mut cuts = vec![0, 4, 7, 8, 20, 67, 68, 69, 100, 132, 200, 1000];
    cuts.extend([len / 4, len / 2, 3 * len / 4, len - 200, len - 2, len - 1]);
    for cut in cuts {
        let deb = dir.path().join(format!("cut-{cut}.deb"));
        std::fs::write(&deb, &real[..cut]).unwrap();
        let err = match read_all(&deb) {
            Ok(_) => panic!("{} bytes of {len} read as a whole package", cut),
            Err(err) => err.to_string(),
        };
        assert!(
            err.starts_with(&deb.display().to_string()),
            "cut {cut}: {err}"
        );
    }
    // The uncut file reads, and a cut inside data.tar.xz says so.
    let whole = dir.path().join("whole.deb");
    std::fs::write(&whole, &real).unwrap();
    assert!(read_all(&whole).unwrap() > 10);
    let half = dir.path().join(format!("cut-{}.deb", len / 2));
    assert_refused(&half, "member data.tar.xz");
}

#[test]
fn container_errors_are_specific() {
    let dir = tempfile::tempdir().unwrap();
    let control = control_tar_gz(CONTROL);
    let data = data_tar("add('./', tarfile.DIRTYPE)\nadd('./a', data=b'x')");
    let real = std::fs::read(apt_download("base-files")).unwrap();

    let mut bad_magic = real.clone();
    bad_magic[5] = b'x';
    let path = dir.path().join("bad-magic.deb");
    std::fs::write(&path, bad_magic).unwrap();
    assert_refused(&path, "not a valid .deb: bad ar magic");
    let path = dir.path().join("empty.deb");
    std::fs::write(&path, b"").unwrap();
    assert_refused(&path, "bad ar magic");

    let cases: Vec<(&str, Vec<Member>, &str)> = vec![
        (
            "no-debian-binary",
            vec![("control.tar.gz", &control), ("data.tar", &data)],
            "first member is \"control.tar.gz\", expected debian-binary",
        ),
        (
            "version-3",
            vec![
                ("debian-binary", b"3.0\n"),
                ("control.tar.gz", &control),
                ("data.tar", &data),
            ],
            "unsupported format version \"3.0\\n\"",
        ),
        (
            "unknown-member",
            vec![
                ("debian-binary", b"2.0\n"),
                ("foo.txt", b"hi"),
                ("data.tar", &data),
            ],
            "unexpected member \"foo.txt\" (expected control.tar, control.tar.gz",
        ),
        (
            "data-first",
            vec![
                ("debian-binary", b"2.0\n"),
                ("data.tar", &data),
                ("control.tar.gz", &control),
            ],
            "unexpected member \"data.tar\" (expected control.tar",
        ),
        (
            "bz2",
            vec![
                ("debian-binary", b"2.0\n"),
                ("control.tar.bz2", &control),
                ("data.tar", &data),
            ],
            "member control.tar.bz2: unsupported compression",
        ),
        (
            "no-data",
            vec![("debian-binary", b"2.0\n"), ("control.tar.gz", &control)],
            "missing data.tar member",
        ),
        (
            "trailing-member",
            vec![
                ("debian-binary", b"2.0\n"),
                ("control.tar.gz", &control),
                ("data.tar", &data),
                ("extra", b"x"),
            ],
            "unexpected member \"extra\" after data.tar",
        ),
        (
            "bad-xz-control",
            vec![
                ("debian-binary", b"2.0\n"),
                ("control.tar.xz", b"\xfd7zXZ\0 this is not xz at all"),
                ("data.tar", &data),
            ],
            "member control.tar.xz: ",
        ),
        (
            "bad-gzip-data",
            vec![
                ("debian-binary", b"2.0\n"),
                ("control.tar.gz", &control),
                ("data.tar.gz", b"\x1f\x8b\x08\0garbage garbage garbage"),
            ],
            "member data.tar.gz: ",
        ),
        (
            "plain-control-not-tar",
            vec![
                ("debian-binary", b"2.0\n"),
                ("control.tar", b"not a tar"),
                ("data.tar", &data),
            ],
            "member control.tar: ",
        ),
    ];
    for (name, members, problem) in cases {
        let path = write_deb(dir.path(), &format!("{name}.deb"), &members);
        assert_refused(&path, problem);
    }

    // dpkg's `_` extension members (signatures) are skipped anywhere after debian-binary.
    let signed = write_deb(
        dir.path(),
        "signed.deb",
        &[
            ("debian-binary", b"2.0\n"),
            ("_gpgorigin", b"sig"),
            ("control.tar.gz", &control),
            ("data.tar", &data),
            ("_gpgbuilder", b"sig"),
        ],
    );
    assert_eq!(read_all(&signed).unwrap(), 2);
}

#[test]
fn corrupted_compressed_data_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read(apt_download("coreutils")).unwrap();
    // Flip bytes well inside data.tar.xz (the control member is a few KB at the front).
    for at in [real.len() / 2, real.len() - 100] {
        let mut corrupted = real.clone();
        corrupted[at] ^= 0x55;
        let path = dir.path().join(format!("flip-{at}.deb"));
        std::fs::write(&path, corrupted).unwrap();
        let err = read_all(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
    }
}

#[test]
fn control_problems_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_tar("add('./', tarfile.DIRTYPE)");
    for (missing, control) in [
        ("Package", "Version: 1\nArchitecture: all\n"),
        ("Version", "Package: t\nArchitecture: all\n"),
        ("Architecture", "Package: t\nVersion: 1\n"),
    ] {
        let control = control_tar_gz(control);
        let path = write_deb(
            dir.path(),
            &format!("no-{missing}.deb"),
            &[
                ("debian-binary", b"2.0\n"),
                ("control.tar.gz", &control),
                ("data.tar", &data),
            ],
        );
        assert_refused(&path, &format!("control: missing required field {missing}"));
    }
    let control = control_tar_gz("Package: t\nVersion: 1\nnot a field\n");
    let path = write_deb(
        dir.path(),
        "syntax.deb",
        &[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", &control),
            ("data.tar", &data),
        ],
    );
    assert_refused(
        &path,
        "syntax.deb:control: line 3: no ':' in field line \"not a field\"",
    );

    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("postinst"), "#!/bin/sh\n").unwrap();
    let out = Command::new("tar")
        .args(["-czf", "-", "-C"])
        .arg(empty.path())
        .arg("./postinst")
        .output()
        .unwrap();
    let path = write_deb(
        dir.path(),
        "no-control.deb",
        &[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", &out.stdout),
            ("data.tar", &data),
        ],
    );
    assert_refused(&path, "control: no control file in the control archive");

    let control = control_tar_gz(CONTROL);
    let path = write_deb(
        dir.path(),
        "bad-relation.deb",
        &[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", &control),
            ("data.tar", &data),
        ],
    );
    let package = DebPackage::open(&path).unwrap();
    assert_eq!(package.meta("amd64").unwrap().name, "t");
    let control = control_tar_gz(&format!("{CONTROL}Depends: a (>> )\n"));
    std::fs::write(
        &path,
        ar_archive(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", &control),
            ("data.tar", &data),
        ]),
    )
    .unwrap();
    let err = DebPackage::open(&path)
        .unwrap()
        .meta("amd64")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&path.display().to_string()) && err.contains("Depends: missing version"),
        "{err}"
    );
    // The relation error is in the meta only: the package itself still reads.
    assert_eq!(read_all(&path).unwrap(), 1);
}
