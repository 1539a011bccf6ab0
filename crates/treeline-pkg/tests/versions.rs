//! Version ordering checked against the real tools on real versions: Alpine versions from
//! the shared APKINDEX files against `apk version -t` / `-c` of the Alpine 3.19.4 minirootfs,
//! and Debian versions from the host's bookworm index against `dpkg --compare-versions`.

mod common;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use treeline_pkg::{apk, deb};

/// A small deterministic generator, so that a failing pair shows up again on the next run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn symbol(ord: Ordering) -> &'static str {
    match ord {
        Ordering::Less => "<",
        Ordering::Equal => "=",
        Ordering::Greater => ">",
    }
}

/// `(package name, version)` from the `P:`/`V:` lines of an APKINDEX.tar.gz.
fn apkindex_versions(path: &Path) -> Vec<(String, String)> {
    let file = std::fs::File::open(path).unwrap();
    // The signature and the index are separate gzip members forming one tar stream.
    let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(file));
    let mut text = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().as_os_str() == "APKINDEX" {
            entry.read_to_string(&mut text).unwrap();
        }
    }
    assert!(!text.is_empty(), "no APKINDEX in {}", path.display());
    let mut out = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("P:") {
            name = Some(value.to_owned());
        } else if let Some(value) = line.strip_prefix("V:") {
            out.push((name.clone().unwrap(), value.to_owned()));
        } else if line.is_empty() {
            name = None;
        }
    }
    out
}

/// Pairs worth comparing from a pool of real versions: the same package across releases,
/// neighbours in sorted order (they share long prefixes and differ in one token), versions
/// with the same first component, and random pairs.
fn interesting_pairs(
    by_package: &BTreeMap<String, BTreeSet<String>>,
    sorted: &[String],
    rng: &mut XorShift,
    random: usize,
) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for versions in by_package.values() {
        let versions: Vec<&String> = versions.iter().collect();
        for window in versions.windows(2) {
            pairs.push((window[0].clone(), window[1].clone()));
        }
    }
    for window in sorted.windows(2) {
        pairs.push((window[1].clone(), window[0].clone()));
    }
    let mut by_prefix: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for version in sorted {
        let prefix = version
            .split(['.', '-', '_', '+', '~', ':'])
            .next()
            .unwrap_or("");
        by_prefix.entry(prefix).or_default().push(version);
    }
    for group in by_prefix.values().filter(|group| group.len() > 1) {
        for _ in 0..group.len().min(8) {
            let a = group[rng.below(group.len())];
            let b = group[rng.below(group.len())];
            pairs.push((a.clone(), b.clone()));
        }
    }
    for _ in 0..random {
        let a = &sorted[rng.below(sorted.len())];
        let b = &sorted[rng.below(sorted.len())];
        pairs.push((a.clone(), b.clone()));
    }
    pairs
}

/// A version with a few characters changed, to reach the paths for odd and invalid input.
fn mutate(version: &str, alphabet: &[u8], rng: &mut XorShift) -> String {
    let mut bytes = version.as_bytes().to_vec();
    for _ in 0..1 + rng.below(2) {
        let c = alphabet[rng.below(alphabet.len())];
        let at = rng.below(bytes.len() + 1);
        match rng.below(3) {
            0 if at < bytes.len() => bytes[at] = c,
            1 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.insert(at, c),
        }
    }
    let mutated = String::from_utf8(bytes).unwrap();
    // The tools would read a leading `-` as an option.
    if mutated.is_empty() || mutated.starts_with('-') {
        format!("0{mutated}")
    } else {
        mutated
    }
}

const APK_TRAPS: &[(&str, &str)] = &[
    ("1.2.3_rc1-r0", "1.2.3-r0"),
    ("1.2.3_alpha", "1.2.3_beta"),
    ("1.2.3_beta", "1.2.3_pre"),
    ("1.2.3_pre", "1.2.3_rc"),
    ("1.2.3", "1.2.3_p1"),
    ("1.2.3_p1", "1.2.4"),
    ("1.2.3_git20230101", "1.2.3"),
    ("1.2.3_git20230101", "1.2.3_p1"),
    ("1.0_cvs", "1.0_svn"),
    ("1.0_hg", "1.0_git"),
    ("1.2.3a", "1.2.3"),
    ("1.2.3a", "1.2.3b"),
    ("1.2.3b", "1.2.4"),
    ("1.0", "1.0a"),
    ("1.2", "1.2.0"),
    ("1.2.0", "1.2.0.0"),
    ("1.10", "1.9"),
    ("0.9", "0.10"),
    ("1.05", "1.5"),
    ("1.005", "1.05"),
    ("1.010", "1.01"),
    ("1.0", "1.00"),
    ("1.2.3", "1.2.3-r0"),
    ("1.2.3-r10", "1.2.3-r9"),
    ("1.0_rc", "1.0_rc1"),
    ("1.0_p", "1.0"),
    ("2.0_rc1", "2.0_rc1_p1"),
    ("1.0_alpha1_beta2", "1.0_alpha1"),
    ("1.2.4_git20230717-r4", "1.2.4-r0"),
    ("1.2.4_git20230717-r4", "1.2.5-r0"),
    ("6.4_p20231125-r0", "6.4-r0"),
    ("9.6_p1-r0", "9.6-r1"),
    ("1.2~abc", "1.2"),
    ("1.2~abc", "1.2~abd"),
    ("1_foo", "1"),
    ("1_foo", "1_alpha"),
    ("1-foo", "1"),
    ("1.", "1"),
    ("a1", "1"),
    ("1.123456789012345678", "1.123456789012345677"),
    ("1.12345678901234567", "1.12345678901234568"),
    ("1A", "1"),
    ("1ab", "1a"),
    ("1.2-3", "1.2"),
    ("1-r1-r2", "1-r1"),
    ("1_p-r1", "1_p1"),
    ("1_p-r1-r2", "1_p-r1"),
];

#[test]
fn apk_compare_and_validity_agree_with_apk_version() {
    let mut by_package: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let indexes = common::data_file("alpine/indexes");
    let mut index_files: Vec<_> = std::fs::read_dir(&indexes)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    index_files.sort();
    assert!(
        index_files.len() >= 2,
        "expected several APKINDEX files in {}",
        indexes.display()
    );
    for path in &index_files {
        for (name, version) in apkindex_versions(path) {
            by_package.entry(name).or_default().insert(version);
        }
    }
    let distinct: BTreeSet<String> = by_package.values().flatten().cloned().collect();
    let mut sorted: Vec<String> = distinct.iter().cloned().collect();
    sorted.sort_by(|a, b| apk::version::compare(a, b));

    let mut rng = XorShift(0x5eed_a1b2_c3d4_e5f6);
    let mut pairs = interesting_pairs(&by_package, &sorted, &mut rng, 1500);
    let alphabet = b"._-r0123456789abpzA~";
    let mut odd = Vec::new();
    for _ in 0..600 {
        let a = &sorted[rng.below(sorted.len())];
        let b = mutate(a, alphabet, &mut rng);
        odd.push(b.clone());
        pairs.push((a.clone(), b));
    }
    pairs.extend(APK_TRAPS.iter().map(|&(a, b)| (a.to_owned(), b.to_owned())));

    let root = tempfile::tempdir().unwrap();
    common::unpack_minirootfs("3.19.4", root.path());
    let oracle = apk_version_test(root.path(), &pairs);
    let mut disagreements = Vec::new();
    for ((a, b), expected) in pairs.iter().zip(&oracle) {
        let ours = symbol(apk::version::compare(a, b));
        if ours != expected {
            disagreements.push(format!("{a} vs {b}: apk says {expected}, we say {ours}"));
        }
    }
    // The empty version cannot go through the shell loop; ask apk directly.
    let empty = common::run_ok(common::chroot_apk(root.path()).args(["version", "-t", "", "1"]));
    assert_eq!(
        empty.trim(),
        symbol(apk::version::compare("", "1")),
        "empty vs 1"
    );
    let empty_valid = common::chroot_apk(root.path())
        .args(["version", "-c", ""])
        .status()
        .unwrap()
        .success();
    assert_eq!(
        apk::version::is_valid(""),
        empty_valid,
        "validity of the empty version"
    );

    // Validity: one `apk version -c` with every candidate, printing the invalid ones.
    let mut candidates: Vec<String> = distinct.iter().cloned().collect();
    candidates.extend(odd);
    candidates.extend(
        APK_TRAPS
            .iter()
            .flat_map(|&(a, b)| [a.to_owned(), b.to_owned()]),
    );
    let out = common::chroot_apk(root.path())
        .args(["version", "-c"])
        .args(&candidates)
        .output()
        .unwrap();
    let invalid_by_apk: BTreeSet<&str> =
        std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    let mut validity_disagreements = Vec::new();
    for candidate in &candidates {
        let apk_says = !invalid_by_apk.contains(candidate.as_str());
        if apk::version::is_valid(candidate) != apk_says {
            validity_disagreements.push(format!("{candidate}: apk says valid={apk_says}"));
        }
    }
    let invalid_count = candidates
        .iter()
        .filter(|c| !apk::version::is_valid(c))
        .count();
    eprintln!(
        "apk: {} of {} pairs agree with `apk version -t` ({} distinct real versions from {} indexes); \
         validity: {} of {} candidates agree with `apk version -c` ({invalid_count} invalid)",
        pairs.len() - disagreements.len(),
        pairs.len(),
        distinct.len(),
        index_files.len(),
        candidates.len() - validity_disagreements.len(),
        candidates.len(),
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(
        validity_disagreements.is_empty(),
        "{}",
        validity_disagreements.join("\n")
    );
    assert!(
        invalid_count > 50,
        "the mutations should reach invalid versions"
    );

    let started = Instant::now();
    let mut checksum = 0i64;
    for _ in 0..20 {
        for (a, b) in &pairs {
            checksum += apk::version::compare(a, b) as i64;
        }
    }
    eprintln!(
        "apk compare: {:.0} ns per comparison (checksum {checksum})",
        started.elapsed().as_nanos() as f64 / (20 * pairs.len()) as f64
    );
}

/// Runs `apk version -t a b` for every pair in one chroot process (a shell loop over a file).
fn apk_version_test(root: &Path, pairs: &[(String, String)]) -> Vec<String> {
    let mut list = String::new();
    for (a, b) in pairs {
        assert!(!a.contains(char::is_whitespace) && !b.contains(char::is_whitespace));
        list.push_str(&format!("{a} {b}\n"));
    }
    std::fs::write(root.join("pairs.txt"), list).unwrap();
    let out = common::run_ok(Command::new("chroot").arg(root).args([
        "/bin/sh",
        "-c",
        "while read -r a b; do /sbin/apk --no-network version -t \"$a\" \"$b\" || echo fail; done < /pairs.txt",
    ]));
    let answers: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(answers.len(), pairs.len(), "one answer per pair");
    answers
}

const DEB_TRAPS: &[(&str, &str)] = &[
    ("1.0~rc1", "1.0"),
    ("1.0~~", "1.0~"),
    ("1.0~~a", "1.0~~"),
    ("1.0~", "1.0"),
    ("1.0a", "1.0+"),
    ("1.0a", "1.0."),
    ("1.0+", "1.0."),
    ("1.0Z", "1.0a"),
    ("1.10", "1.9"),
    ("1.010", "1.10"),
    (
        "1.123456789012345678901234567890",
        "1.123456789012345678901234567891",
    ),
    ("1:0.1", "2.0"),
    ("0:1.0", "1.0"),
    ("1.0", "1.0-0"),
    ("1.0-1", "1.0-1.1"),
    ("1.0-1-2", "1.0-1-1"),
    ("10:1", "9:2"),
    ("2.36-9+deb12u4", "2.36-9+deb12u10"),
    ("1.0-1~bpo12+1", "1.0-1"),
    ("1.0-1+b1", "1.0-1"),
    ("1:2:3", "1:2:4"),
    ("1.0-a", "1.0-A"),
    ("0", "00"),
    ("1.0.0", "1.0"),
];

#[test]
fn deb_compare_and_validity_agree_with_dpkg() {
    let mut by_package: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let lists = common::bookworm_packages_lists();
    for list in &lists {
        let content = common::apt_cat_file(list);
        let mut source = None;
        let mut package = None;
        for line in content.lines() {
            let line = line.unwrap();
            if let Some(value) = line.strip_prefix("Package: ") {
                package = Some(value.to_owned());
            } else if let Some(value) = line.strip_prefix("Source: ") {
                // `Source: name (version)` carries a second real version.
                let mut words = value.split_whitespace();
                let name = words.next().unwrap_or_default().to_owned();
                if let Some(version) = words.next() {
                    let version = version.trim_start_matches('(').trim_end_matches(')');
                    by_package
                        .entry(name.clone())
                        .or_default()
                        .insert(version.to_owned());
                }
                source = Some(name);
            } else if let Some(value) = line.strip_prefix("Version: ") {
                // Binaries of one source package are grouped together: their versions (binNMUs,
                // epochs, different upstreams) are the interesting neighbours.
                let group = source.clone().or_else(|| package.clone()).unwrap();
                by_package
                    .entry(group)
                    .or_default()
                    .insert(value.to_owned());
            } else if line.is_empty() {
                source = None;
                package = None;
            }
        }
    }
    let distinct: BTreeSet<String> = by_package.values().flatten().cloned().collect();
    assert!(
        distinct.len() > 10_000,
        "only {} versions in {lists:?}",
        distinct.len()
    );
    let mut sorted: Vec<String> = distinct.iter().cloned().collect();
    sorted.sort_by(|a, b| deb::version::compare(a, b));

    let mut rng = XorShift(0x0dd5_eed5_1234_abcd);
    // Neighbours in sorted order are many (one per distinct version): keep a sample.
    let sample: Vec<String> = sorted.iter().step_by(8).cloned().collect();
    let mut pairs = interesting_pairs(&BTreeMap::new(), &sample, &mut rng, 1500);
    for versions in by_package.values().filter(|versions| versions.len() > 1) {
        let versions: Vec<&String> = versions.iter().collect();
        let a = versions[rng.below(versions.len())];
        let b = versions[rng.below(versions.len())];
        pairs.push((a.clone(), b.clone()));
    }
    pairs.truncate(6000);
    let alphabet = b"~+.-:0123456789aZ";
    let mut odd = Vec::new();
    for _ in 0..400 {
        let a = &sorted[rng.below(sorted.len())];
        let b = mutate(a, alphabet, &mut rng);
        if deb::version::is_valid(&b) {
            pairs.push((a.clone(), b.clone()));
        }
        odd.push(b);
    }
    pairs.extend(DEB_TRAPS.iter().map(|&(a, b)| (a.to_owned(), b.to_owned())));

    let oracle = dpkg_compare(&pairs);
    let mut disagreements = Vec::new();
    for ((a, b), expected) in pairs.iter().zip(&oracle) {
        let ours = symbol(deb::version::compare(a, b));
        if ours != expected {
            disagreements.push(format!("{a} vs {b}: dpkg says {expected}, we say {ours}"));
        }
    }

    let mut candidates: Vec<String> = sorted.iter().step_by(20).cloned().collect();
    candidates.extend(odd);
    candidates.extend(
        [
            "1.0-",
            "a1.0",
            ":1",
            "a:1",
            "+1:1",
            " 1.0",
            "1.0\t",
            "1:",
            "1.0_1",
            "1.0-1_1",
            "2147483648:1",
            "2147483647:1",
            "1.2:3",
            "+0:1",
            "1:a",
            "\t1:2",
        ]
        .map(str::to_owned),
    );
    let dpkg_validity = dpkg_validity(&candidates);
    let mut validity_disagreements = Vec::new();
    for (candidate, dpkg_says) in candidates.iter().zip(&dpkg_validity) {
        if deb::version::is_valid(candidate) != *dpkg_says {
            validity_disagreements.push(format!("{candidate:?}: dpkg says valid={dpkg_says}"));
        }
    }
    let invalid_count = dpkg_validity.iter().filter(|valid| !**valid).count();
    eprintln!(
        "deb: {} of {} pairs agree with `dpkg --compare-versions` ({} distinct real versions); \
         validity: {} of {} candidates agree with dpkg ({invalid_count} invalid)",
        pairs.len() - disagreements.len(),
        pairs.len(),
        distinct.len(),
        candidates.len() - validity_disagreements.len(),
        candidates.len(),
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(
        validity_disagreements.is_empty(),
        "{}",
        validity_disagreements.join("\n")
    );
    assert!(
        invalid_count > 50,
        "the mutations should reach invalid versions"
    );

    // Speed, ours against the debversion crate, on the same pairs.
    let rounds = 20;
    let started = Instant::now();
    let mut checksum = 0i64;
    for _ in 0..rounds {
        for (a, b) in &pairs {
            checksum += deb::version::compare(a, b) as i64;
        }
    }
    let ours = started.elapsed().as_nanos() as f64 / (rounds * pairs.len()) as f64;
    let started = Instant::now();
    let mut theirs_checksum = 0i64;
    let mut unparsed = 0;
    for _ in 0..rounds {
        for (a, b) in &pairs {
            match (
                a.parse::<debversion::Version>(),
                b.parse::<debversion::Version>(),
            ) {
                (Ok(a), Ok(b)) => theirs_checksum += a.cmp(&b) as i64,
                _ => unparsed += 1,
            }
        }
    }
    let theirs = started.elapsed().as_nanos() as f64 / (rounds * pairs.len()) as f64;
    // debversion is not the oracle; note where it departs from dpkg.
    let debversion_wrong: Vec<String> = pairs
        .iter()
        .zip(&oracle)
        .filter_map(|((a, b), expected)| {
            let ord = a.parse::<debversion::Version>().ok()?.cmp(&b.parse().ok()?);
            (symbol(ord) != expected)
                .then(|| format!("{a} {b}: dpkg {expected}, debversion {}", symbol(ord)))
        })
        .collect();
    eprintln!(
        "deb compare: {ours:.0} ns per comparison; debversion parse+compare: {theirs:.0} ns \
         (checksums {checksum} / {theirs_checksum}, {} pairs debversion cannot parse, \
         {} where it differs from dpkg, e.g. {:?})",
        unparsed / rounds,
        debversion_wrong.len(),
        debversion_wrong.iter().take(3).collect::<Vec<_>>()
    );
}

/// `dpkg --compare-versions` for every pair, in one shell loop.
fn dpkg_compare(pairs: &[(String, String)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let list: String = pairs.iter().map(|(a, b)| format!("{a} {b}\n")).collect();
    std::fs::write(dir.path().join("pairs"), list).unwrap();
    let out = common::run_ok(Command::new("sh").arg("-c").arg(format!(
        "while read -r a b; do \
           if dpkg --compare-versions \"$a\" lt \"$b\"; then echo '<'; \
           elif dpkg --compare-versions \"$a\" eq \"$b\"; then echo '='; \
           else echo '>'; fi; \
         done < {}",
        dir.path().join("pairs").display()
    )));
    let answers: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(answers.len(), pairs.len(), "one answer per pair");
    answers
}

/// Whether dpkg takes each version without an error or a warning.
fn dpkg_validity(candidates: &[String]) -> Vec<bool> {
    let dir = tempfile::tempdir().unwrap();
    let list: String = candidates.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(dir.path().join("versions"), list).unwrap();
    let out = common::run_ok(Command::new("sh").arg("-c").arg(format!(
        "while IFS= read -r v; do \
           if msg=$(dpkg --compare-versions \"$v\" eq \"$v\" 2>&1 >/dev/null) && [ -z \"$msg\" ]; \
           then echo valid; else echo invalid; fi; \
         done < {}",
        dir.path().join("versions").display()
    )));
    let answers: Vec<bool> = out.lines().map(|line| line == "valid").collect();
    assert_eq!(answers.len(), candidates.len(), "one answer per version");
    answers
}

/// Fuzzy constraints (`name~prefix`) worth trying against `version`: cuts at every token
/// boundary, and those cuts extended or with their last number changed.
fn fuzzy_prefixes(version: &str) -> BTreeSet<String> {
    let bytes = version.as_bytes();
    let mut cuts = vec![version.to_owned()];
    for i in 1..bytes.len() {
        let (before, here) = (bytes[i - 1], bytes[i]);
        let separator = matches!(here, b'.' | b'_' | b'-');
        let switch = before.is_ascii_alphanumeric()
            && here.is_ascii_alphanumeric()
            && before.is_ascii_digit() != here.is_ascii_digit();
        if separator || switch {
            cuts.push(version[..i].to_owned());
        }
    }
    let mut prefixes = BTreeSet::new();
    for cut in cuts {
        for extension in ["", ".0", ".9", "_p1", "_rc1", "a", "1", "-r0", "-r99"] {
            prefixes.insert(format!("{cut}{extension}"));
        }
        // The last number, plus one and minus one.
        let digits = cut.bytes().rev().take_while(u8::is_ascii_digit).count();
        if digits > 0 && digits < 9 {
            let (head, number) = cut.split_at(cut.len() - digits);
            let number: u64 = number.parse().unwrap();
            prefixes.insert(format!("{head}{}", number + 1));
            if number > 0 {
                prefixes.insert(format!("{head}{}", number - 1));
            }
        }
    }
    prefixes.retain(|p| apk::version::is_valid(p) && !p.is_empty() && !p.starts_with('-'));
    prefixes
}

#[test]
fn apk_fuzzy_match_agrees_with_apk_solver() {
    let root = tempfile::tempdir().unwrap();
    common::unpack_minirootfs("3.19.4", root.path());
    // The installed packages are what apk's solver can pick from without a network.
    let installed = std::fs::read_to_string(root.path().join("lib/apk/db/installed")).unwrap();
    let mut packages = Vec::new();
    let mut name = None;
    for line in installed.lines() {
        if let Some(value) = line.strip_prefix("P:") {
            name = Some(value.to_owned());
        } else if let Some(value) = line.strip_prefix("V:") {
            packages.push((name.take().unwrap(), value.to_owned()));
        }
    }
    assert!(packages.len() >= 10, "{packages:?}");
    let mut queries = Vec::new();
    for (name, version) in &packages {
        for prefix in fuzzy_prefixes(version) {
            queries.push((name.clone(), version.clone(), prefix));
        }
    }
    let list: String = queries
        .iter()
        .map(|(name, _, prefix)| format!("{name}~{prefix}\n"))
        .collect();
    std::fs::write(root.path().join("fuzzy.txt"), list).unwrap();
    // `add --simulate` succeeds exactly when the installed version satisfies the constraint.
    let out = common::run_ok(Command::new("chroot").arg(root.path()).args([
        "/bin/sh",
        "-c",
        "while read -r atom; do \
           if /sbin/apk --no-network add --simulate \"$atom\" >/dev/null 2>&1; \
           then echo match; else echo no; fi; \
         done < /fuzzy.txt",
    ]));
    let answers: Vec<&str> = out.lines().collect();
    assert_eq!(answers.len(), queries.len());
    let mut disagreements = Vec::new();
    for ((name, version, prefix), answer) in queries.iter().zip(&answers) {
        let apk_says = *answer == "match";
        if apk::version::fuzzy_match(version, prefix) != apk_says {
            disagreements.push(format!(
                "{name}-{version} ~{prefix}: apk says match={apk_says}"
            ));
        }
    }
    let matches = answers.iter().filter(|a| **a == "match").count();
    eprintln!(
        "apk fuzzy: {} of {} constraints agree with apk's solver ({matches} match) over {} installed packages",
        queries.len() - disagreements.len(),
        queries.len(),
        packages.len()
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(
        matches > 20 && matches < queries.len() - 20,
        "both outcomes exercised"
    );
}
