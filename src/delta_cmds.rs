//! `static-delta`: generate, inspect, apply and index static deltas, as `ostree
//! static-delta` does, in the same on-disk format.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use treeline_store::Repo;
use treeline_store::delta::{self, DeltaInfo, DeltaName, GenerateOptions, format_size};

/// `static-delta` arguments.
#[derive(Args, Debug)]
#[command(
    after_long_help = "Static deltas carry everything needed to go from one commit to another \
    (or from nothing) as a superblock plus a few compressed parts, in the exact format of \
    `ostree static-delta`: deltas generated here are applied by ostree and the other way \
    round. They live under deltas/ in the repository, with an index per target commit under \
    delta-indexes/."
)]
pub struct DeltaArgs {
    #[command(subcommand)]
    command: DeltaCommand,
}

#[derive(Subcommand, Debug)]
enum DeltaCommand {
    /// List the deltas of the repository (FROM-TO, or TO for from-scratch deltas).
    List {
        /// Print a JSON array of {name, from, to}.
        #[arg(long)]
        json: bool,
    },
    /// Describe a delta: endianness, timestamp, parts with sizes and operations, fallbacks.
    Show {
        /// Delta name (FROM-TO or TO), or a path to a superblock file or delta directory.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a delta (and update its target's delta index).
    Delete {
        /// Delta name (FROM-TO or TO).
        name: String,
    },
    /// Generate a delta from one commit (by default the parent of TO), or from scratch.
    Generate(GenerateArgs),
    /// Apply a delta directory (holding `superblock` and its parts) to the repository.
    #[command(
        long_about = "Apply a delta directory (holding `superblock` and its parts 0, 1, ...) to \
        the repository, in one transaction: every part is checked against the checksum in the \
        superblock and every object against its name before anything is stored. The FROM \
        commit must be present. Deltas listing fallback objects are refused, as ostree refuses \
        them: those objects are not in the directory. No ref is moved."
    )]
    ApplyOffline {
        /// The delta directory, or its superblock file.
        path: PathBuf,
    },
    /// Rewrite the delta indexes (delta-indexes/) from the deltas present.
    Reindex {
        /// Only the index of this target revision.
        #[arg(long, value_name = "REV")]
        to: Option<String>,
    },
}

/// `static-delta generate` flags.
#[derive(Args, Debug)]
struct GenerateArgs {
    /// Create the delta from this revision (default: TO's parent).
    #[arg(long, value_name = "REV", conflicts_with = "empty")]
    from: Option<String>,
    /// Create a from-scratch delta (everything TO needs).
    #[arg(long)]
    empty: bool,
    /// Create the delta to this revision.
    #[arg(long, value_name = "REV")]
    to: Option<String>,
    /// The target revision, as an alternative to --to.
    #[arg(value_name = "TO", conflicts_with = "to")]
    to_positional: Option<String>,
    /// Never use bsdiff (modified files are sent whole).
    #[arg(long)]
    disable_bsdiff: bool,
    /// New files larger than this many megabytes (10^6 bytes) are left out of the parts,
    /// as fallbacks to fetch individually; 0 disables fallbacks.
    #[arg(long, value_name = "MB", default_value_t = 4)]
    min_fallback_size: u64,
    /// Don't bsdiff a file when old and new together exceed this many megabytes.
    #[arg(long, value_name = "MB", default_value_t = 128)]
    max_bsdiff_size: u64,
    /// Start a new part past this many megabytes of payload.
    #[arg(long, value_name = "MB", default_value_t = 32)]
    max_chunk_size: u64,
    /// Do nothing if the delta already exists.
    #[arg(short = 'n', long)]
    if_not_exists: bool,
}

fn open_repo(path: &Option<PathBuf>) -> Result<Repo> {
    let path = path
        .as_ref()
        .ok_or_else(|| anyhow!("no repository given: use --repo=PATH or set OSTREE_REPO"))?;
    Repo::open(path).with_context(|| format!("opening repository {}", path.display()))
}

/// Run a `static-delta` command.
pub fn run(repo_path: Option<PathBuf>, args: DeltaArgs) -> Result<ExitCode> {
    let mut repo = open_repo(&repo_path)?;
    let mut out = std::io::stdout().lock();
    match args.command {
        DeltaCommand::List { json } => {
            let names = delta::list(&repo)?;
            if json {
                let v: Vec<serde_json::Value> = names
                    .iter()
                    .map(|n| {
                        serde_json::json!({
                            "name": n.to_string(),
                            "from": n.from.map(|c| c.to_hex()),
                            "to": n.to.to_hex(),
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(v))?;
            } else if names.is_empty() {
                writeln!(out, "(No static deltas)")?;
            } else {
                for n in names {
                    writeln!(out, "{n}")?;
                }
            }
        }
        DeltaCommand::Show { name, json } => {
            let info = delta::show(&repo, &name)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&info_json(&info))?)?;
            } else {
                print_info(&mut out, &info)?;
            }
        }
        DeltaCommand::Delete { name } => {
            let name: DeltaName = name.parse()?;
            delta::delete(&mut repo, &name)?;
        }
        DeltaCommand::Generate(g) => generate(&mut repo, &mut out, g)?,
        DeltaCommand::ApplyOffline { path } => {
            let report = delta::apply_offline(&repo, &path)
                .with_context(|| format!("applying static delta {}", path.display()))?;
            writeln!(
                out,
                "Applied {}: {} part(s), {} skipped, {} object(s) written",
                report.name, report.parts_applied, report.parts_skipped, report.objects_written
            )?;
        }
        DeltaCommand::Reindex { to } => {
            let to = to.map(|r| repo.resolve_rev(&r)).transpose()?;
            delta::reindex(&mut repo, to)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn generate(repo: &mut Repo, out: &mut impl Write, g: GenerateArgs) -> Result<()> {
    let to_rev =
        g.to.or(g.to_positional)
            .ok_or_else(|| anyhow!("TO revision must be specified (--to=REV)"))?;
    let to = repo.resolve_rev(&to_rev)?;
    let from = if g.empty {
        None
    } else {
        let from_rev = g.from.unwrap_or_else(|| format!("{to_rev}^"));
        Some(
            repo.resolve_rev(&from_rev)
                .with_context(|| format!("resolving FROM revision {from_rev}"))?,
        )
    };
    let name = DeltaName::new(from, to);
    if g.if_not_exists && delta::has_delta(repo, &name) {
        writeln!(out, "Delta {name} already exists.")?;
        return Ok(());
    }
    let mb = |v: u64, flag: &str| {
        v.checked_mul(1_000_000)
            .ok_or_else(|| anyhow!("--{flag}={v}: too large"))
    };
    if g.max_chunk_size == 0 {
        bail!("--max-chunk-size must be at least 1");
    }
    let opts = GenerateOptions {
        bsdiff: !g.disable_bsdiff,
        min_fallback_size: mb(g.min_fallback_size, "min-fallback-size")?,
        max_bsdiff_size: mb(g.max_bsdiff_size, "max-bsdiff-size")?,
        max_chunk_size: mb(g.max_chunk_size, "max-chunk-size")?,
        ..Default::default()
    };
    writeln!(out, "Generating static delta:")?;
    match from {
        Some(f) => writeln!(out, "  From: {f}")?,
        None => writeln!(out, "  From: empty")?,
    }
    writeln!(out, "  To:   {to}")?;
    out.flush()?;
    let report = delta::generate(repo, from, to, &opts)?;
    writeln!(
        out,
        "Wrote {} part(s), {} object(s) ({} bsdiff), {} fallback(s); total {} ({})",
        report.parts.len(),
        report.part_objects,
        report.bsdiff_objects,
        report.fallbacks.len(),
        report.total_size(),
        format_size(report.total_size())
    )?;
    Ok(())
}

fn print_info(out: &mut impl Write, info: &DeltaInfo) -> Result<()> {
    let sb = &info.superblock;
    writeln!(out, "Delta: {}", info.name)?;
    writeln!(out, "Signed: {}", if info.signed { "yes" } else { "no" })?;
    match &sb.from {
        Some(f) => writeln!(out, "From: {f}")?,
        None => writeln!(out, "From <scratch>")?,
    }
    writeln!(out, "To: {}", sb.to)?;
    writeln!(
        out,
        "Endianness: {}{}",
        sb.endianness.name(),
        if sb.endianness_guessed {
            " (heuristic)"
        } else {
            ""
        }
    )?;
    writeln!(out, "Timestamp: {}", sb.timestamp)?;
    writeln!(out, "Number of parents: {}", sb.recurse.len() / 64)?;
    writeln!(out, "Number of fallback entries: {}", sb.fallbacks.len())?;
    for f in &sb.fallbacks {
        writeln!(out, "  {}", f.object.checksum)?;
    }
    let (fs, fu) = (sb.total_fallback_size(), sb.total_fallback_usize());
    writeln!(out, "Total Fallback Size: {fs} ({})", format_size(fs))?;
    writeln!(
        out,
        "Total Fallback Uncompressed Size: {fu} ({})",
        format_size(fu)
    )?;
    writeln!(out, "Number of parts: {}", info.parts.len())?;
    for (i, p) in info.parts.iter().enumerate() {
        writeln!(
            out,
            "PartMeta{i}: nobjects={} size={} usize={}",
            p.header.objects.len(),
            p.header.size,
            p.header.usize
        )?;
        writeln!(
            out,
            "PartPayload{i}: nmodes={} nxattrs={} blobsize={} opsize={}",
            p.modes, p.xattrs, p.blob_size, p.ops_size
        )?;
        let o = &p.ops;
        writeln!(
            out,
            "PartPayloadOps{i}: openspliceclose={} open={} write={} setread={} unsetread={} \
             close={} bspatch={}",
            o.open_splice_close, o.open, o.write, o.set_read, o.unset_read, o.close, o.bspatch
        )?;
    }
    let (ps, pu) = (sb.total_part_size(), sb.total_part_usize());
    writeln!(out, "Total Part Size: {ps} ({})", format_size(ps))?;
    writeln!(
        out,
        "Total Part Uncompressed Size: {pu} ({})",
        format_size(pu)
    )?;
    writeln!(out, "Total Size: {} ({})", ps + fs, format_size(ps + fs))?;
    writeln!(
        out,
        "Total Uncompressed Size: {} ({})",
        pu + fu,
        format_size(pu + fu)
    )?;
    Ok(())
}

fn info_json(info: &DeltaInfo) -> serde_json::Value {
    let sb = &info.superblock;
    serde_json::json!({
        "name": info.name.to_string(),
        "from": sb.from.map(|c| c.to_hex()),
        "to": sb.to.to_hex(),
        "signed": info.signed,
        "signed_by": info.signed_by,
        "endianness": sb.endianness.name(),
        "endianness_guessed": sb.endianness_guessed,
        "timestamp": sb.timestamp,
        "superblock_size": info.superblock_size,
        "commit": {
            "subject": sb.commit.subject,
            "timestamp": sb.commit.timestamp,
            "parent": sb.commit.parent.map(|c| c.to_hex()),
        },
        "metadata": sb.metadata.0.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_text()))).collect::<serde_json::Map<_, _>>(),
        "parts": info.parts.iter().map(|p| serde_json::json!({
            "checksum": p.header.checksum.to_hex(),
            "size": p.header.size,
            "usize": p.header.usize,
            "objects": p.header.objects.len(),
            "inline": p.inline,
            "modes": p.modes,
            "xattrs": p.xattrs,
            "blob_size": p.blob_size,
            "ops_size": p.ops_size,
            "ops": {
                "open_splice_close": p.ops.open_splice_close,
                "open": p.ops.open,
                "write": p.ops.write,
                "set_read_source": p.ops.set_read,
                "unset_read_source": p.ops.unset_read,
                "close": p.ops.close,
                "bspatch": p.ops.bspatch,
            },
        })).collect::<Vec<_>>(),
        "fallbacks": sb.fallbacks.iter().map(|f| serde_json::json!({
            "object": f.object.to_string(),
            "size": f.size,
            "usize": f.usize,
        })).collect::<Vec<_>>(),
        "total_part_size": sb.total_part_size(),
        "total_part_usize": sb.total_part_usize(),
        "total_fallback_size": sb.total_fallback_size(),
        "total_fallback_usize": sb.total_fallback_usize(),
    })
}
