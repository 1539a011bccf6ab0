//! Resolves a request the way `apk add --simulate` or `apt-get install --simulate` would,
//! and prints the chosen packages (`name version`, one a line, in install order).
//!
//! ```text
//! resolve apk [--arch x86_64] INDEX.tar.gz... -- ATOM...
//! resolve deb [--arch amd64] [--no-recommends] [--required] [--essential] PACKAGES... -- NAME...
//! ```
//!
//! Used by bench/pkg-resolve.sh; `--time` prints load and solve times on stderr.

use std::process::ExitCode;
use std::time::Instant;

use treeline_pkg::Family;
use treeline_pkg::solve::{Request, Universe, solve};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("resolve: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let family = match args.next().as_deref() {
        Some("apk") => Family::Apk,
        Some("deb") => Family::Deb,
        _ => return Err("usage: resolve apk|deb [options] INDEX... -- REQUEST...".into()),
    };
    let mut arch = match family {
        Family::Apk => "x86_64".to_owned(),
        Family::Deb => "amd64".to_owned(),
    };
    let (mut recommends, mut required, mut essential, mut time) = (true, false, false, false);
    let mut indexes = Vec::new();
    let mut request_words = Vec::new();
    let mut in_request = false;
    while let Some(arg) = args.next() {
        if in_request {
            request_words.push(arg);
            continue;
        }
        match arg.as_str() {
            "--" => in_request = true,
            "--arch" => arch = args.next().ok_or("--arch needs a value")?,
            "--no-recommends" => recommends = false,
            "--required" => required = true,
            "--essential" => essential = true,
            "--time" => time = true,
            _ => indexes.push(arg),
        }
    }
    let start = Instant::now();
    let mut packages = Vec::new();
    for index in &indexes {
        match family {
            Family::Apk => packages
                .extend(treeline_pkg::apk::ApkIndex::open(index.as_ref(), &arch)?.into_packages()),
            Family::Deb => packages.extend(treeline_pkg::deb::read_packages(index, &arch)?),
        }
    }
    let universe = Universe::new(family, packages);
    let loaded = start.elapsed();
    let mut request = match family {
        Family::Apk => Request::from_apk_world(&request_words.join(" "))?,
        Family::Deb => Request::names(&request_words),
    };
    request.install_recommends = recommends;
    request.add_required = required;
    request.add_essential = essential;
    let solution = solve(&universe, &request)?;
    let solved = start.elapsed();
    for package in solution.packages(&universe) {
        println!("{} {}", package.name, package.version);
    }
    if time {
        eprintln!(
            "load {:.1} ms, solve {:.1} ms, {} packages, searched: {}",
            loaded.as_secs_f64() * 1e3,
            (solved - loaded).as_secs_f64() * 1e3,
            solution.install_order.len(),
            solution.searched
        );
    }
    Ok(())
}
