//! The full bookworm main amd64 `Packages` index (from apt's own lists, decompressed by
//! apt) parses completely, plain and recompressed by gzip and xz, and agrees with
//! `grep -c` and `apt-cache show`.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use treeline_pkg::PackageMeta;
use treeline_pkg::deb::{Target, parse_atoms, parse_dependencies, read_packages};

use common::{bookworm_packages_plain, compressed_copy, run_ok};

fn field<'a>(meta: &'a PackageMeta, name: &str) -> Option<&'a str> {
    meta.fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Records of `apt-cache show` output as field maps (first-line values).
fn parse_apt_cache_show(text: &str) -> Vec<HashMap<String, String>> {
    let mut records = Vec::new();
    let mut current = HashMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            if !current.is_empty() {
                records.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with(' ') {
            let name = last.clone().unwrap();
            let value: &mut String = current.get_mut(&name).unwrap();
            value.push('\n');
            value.push_str(line);
            continue;
        }
        let (name, value) = line.split_once(':').unwrap();
        current.insert(name.to_owned(), value.trim().to_owned());
        last = Some(name.to_owned());
    }
    if !current.is_empty() {
        records.push(current);
    }
    records
}

#[test]
fn bookworm_main_index_parses_and_agrees_with_apt() {
    let plain = bookworm_packages_plain();
    let started = Instant::now();
    let packages = read_packages(&plain, "amd64").unwrap_or_else(|e| panic!("{e}"));
    let elapsed = started.elapsed();
    let bytes = std::fs::metadata(&plain).unwrap().len();
    eprintln!(
        "parsed {} stanzas ({:.1} MB) in {:.3} s",
        packages.len(),
        bytes as f64 / 1e6,
        elapsed.as_secs_f64()
    );

    // Stanza count as grep counts Package lines.
    let grep = run_ok(Command::new("grep").arg("-c").arg("^Package: ").arg(&plain));
    assert_eq!(packages.len(), grep.trim().parse::<usize>().unwrap());
    assert!(packages.len() > 50_000, "{} stanzas", packages.len());

    // Every relation field parses, the ones PackageMeta does not keep as well.
    let target = Target::arch("amd64");
    let mut relations = 0;
    for meta in &packages {
        for (name, value) in &meta.fields {
            match name.as_str() {
                "Suggests" | "Enhances" => {
                    relations += parse_dependencies(name, value, target)
                        .unwrap_or_else(|e| panic!("{}: {e}", meta.name))
                        .len()
                }
                "Replaces" => {
                    relations += parse_atoms(name, value, target)
                        .unwrap_or_else(|e| panic!("{}: {e}", meta.name))
                        .len()
                }
                _ => {}
            }
        }
        relations += meta.depends.len()
            + meta.pre_depends.len()
            + meta.recommends.len()
            + meta.conflicts.len()
            + meta.breaks.len()
            + meta.provides.len();
        // Binary indexes carry no arch restrictions: nothing is dropped.
        for (name, parsed) in [
            ("Depends", meta.depends.len()),
            ("Pre-Depends", meta.pre_depends.len()),
            ("Recommends", meta.recommends.len()),
            ("Breaks", meta.breaks.len()),
            ("Conflicts", meta.conflicts.len()),
            ("Provides", meta.provides.len()),
        ] {
            let items = field(meta, name).map_or(0, |v| v.split(',').count());
            assert_eq!(parsed, items, "{} {name}", meta.name);
        }
        assert!(
            !meta.location.is_empty() && meta.checksum.len() == 64,
            "{}",
            meta.name
        );
    }
    eprintln!("{relations} relations parsed");

    // A sample compared field by field with apt-cache show.
    let sample: Vec<&PackageMeta> = packages.iter().step_by(500).collect();
    let mut cmd = Command::new("apt-cache");
    cmd.arg("show");
    for meta in &sample {
        cmd.arg(format!("{}={}", meta.name, meta.version));
    }
    let records = parse_apt_cache_show(&run_ok(&mut cmd));
    for meta in &sample {
        let record = records
            .iter()
            .find(|r| r.get("Filename").map(String::as_str) == Some(meta.location.as_str()))
            .unwrap_or_else(|| panic!("apt-cache show has no record for {}", meta.location));
        for name in [
            "Package",
            "Version",
            "Architecture",
            "Size",
            "SHA256",
            "Installed-Size",
            "Depends",
            "Pre-Depends",
            "Recommends",
            "Provides",
            "Breaks",
            "Conflicts",
            "Source",
            "Priority",
            "Multi-Arch",
            "Essential",
        ] {
            assert_eq!(
                field(meta, name),
                record.get(name).map(String::as_str),
                "{} {name}",
                meta.name
            );
        }
        assert_eq!(meta.size.to_string(), record["Size"]);
        assert_eq!(meta.checksum, record["SHA256"]);
        let kib: u64 = record["Installed-Size"].parse().unwrap();
        assert_eq!(meta.installed_size, kib * 1024);
        let source = record.get("Source").map(|s| s.split(' ').next().unwrap());
        assert_eq!(meta.source.as_deref(), source);
        assert_eq!(
            meta.essential,
            record.get("Essential").is_some_and(|e| e == "yes")
        );
    }
    eprintln!(
        "{} sampled packages agree with apt-cache show",
        sample.len()
    );

    // The same index compressed by the real gzip and xz reads the same.
    for (tool, args, suffix) in [("gzip", ["-1", "-n"], ".gz"), ("xz", ["-1", "-T2"], ".xz")] {
        let compressed = compressed_copy(&plain, tool, &args, suffix);
        let started = Instant::now();
        let again = read_packages(&compressed, "amd64").unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "parsed {} in {:.3} s",
            compressed.display(),
            started.elapsed().as_secs_f64()
        );
        assert_eq!(again.len(), packages.len());
        for (a, b) in again.iter().zip(&packages) {
            assert_eq!(a.fields, b.fields);
        }
    }
}

#[test]
fn index_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Packages");
    std::fs::write(
        &path,
        "Package: a\nVersion: 1\nArchitecture: all\n\nPackage: b\nVersion: 1\nArchitecture: all\nProvides: x (>= 1)\n",
    )
    .unwrap();
    let err = read_packages(&path, "amd64").unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: stanza at line 5 (package \"b\"): Provides: x: only (= version) is allowed here in \"x (>= 1)\"",
            path.display()
        )
    );
    std::fs::write(&path, "Package: a\n continuation\nbad\n").unwrap();
    let err = read_packages(&path, "amd64").unwrap_err().to_string();
    assert_eq!(
        err,
        format!("{}: line 3: no ':' in field line \"bad\"", path.display())
    );
    // A truncated xz index fails naming the file.
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "printf 'Package: a\\nVersion: 1\\nArchitecture: all\\n' | xz > '{0}.xz' && head -c 30 '{0}.xz' > '{0}.cut.xz'",
        path.display()
    )));
    let cut = dir.path().join("Packages.cut.xz");
    let err = read_packages(&cut, "amd64").unwrap_err().to_string();
    assert!(err.starts_with(&cut.display().to_string()), "{err}");
    let missing = dir.path().join("nope");
    let err = read_packages(&missing, "amd64").unwrap_err().to_string();
    assert!(err.starts_with(&missing.display().to_string()), "{err}");
}
