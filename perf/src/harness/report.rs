//! A run's results: `NAME.json` (the summary, pretty-printed, one trailing newline), `NAME.md`
//! and any further files, written into the results directory (created if missing) unless
//! `--no-save`; then the summary on stdout, as one JSON line (`--json`) or as a table.
//!
//! The pieces the benchmarks' reports share: [`padded`] (plain-text tables) and
//! [`markdown_table`] (the same rows in Markdown), [`heading`] and [`run_line`] (how a
//! Markdown report starts), [`section`] (notes and errors as a list under a heading).
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::host::{Host, Stamp};

/// The output options every driver has (flattened into its arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Print progress on stderr and, as the last line of stdout, one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Where the result files are written (default: perf/results of this checkout).
    #[arg(long, value_name = "DIR")]
    pub results_dir: Option<PathBuf>,
    /// Do not write the result files.
    #[arg(long)]
    pub no_save: bool,
}

/// Writes the files `files` makes (unless `--no-save`; where they went, or why not, goes to
/// `say`), then prints `summary` as one JSON line with `--json`, else `table`.
pub fn publish<S: Serialize>(
    out: &OutputArgs,
    summary: &S,
    files: impl FnOnce() -> Result<Vec<(&'static str, String)>>,
    table: impl FnOnce() -> String,
    say: impl Fn(String),
) -> Result<()> {
    if !out.no_save {
        let dir = out.results_dir.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
        match files().and_then(|f| save(&dir, &f)) {
            Ok(names) => say(format!("result written: {}", names.join(", "))),
            Err(e) => say(format!("cannot write the result to {}: {e:#}", dir.display())),
        }
    }
    if out.json {
        println!("{}", serde_json::to_string(summary)?);
    } else {
        print!("{}", table());
    }
    Ok(())
}

/// The summary as the `.json` file holds it.
pub fn json<S: Serialize>(summary: &S) -> Result<String> {
    Ok(serde_json::to_string_pretty(summary)? + "\n")
}

/// Writes `files` (name, text) into `dir`; returns their paths in order.
fn save(dir: &Path, files: &[(&str, String)]) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        names.push(path.display().to_string());
    }
    Ok(names)
}

/// A plain-text table: `head` and `rows` in columns, those numbered in `left` left-aligned,
/// the others right-aligned, two spaces apart, no trailing spaces.
pub fn padded<const N: usize>(head: &[&str; N], rows: &[[String; N]], left: &[usize]) -> String {
    let mut w = head.map(|h| h.chars().count());
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if left.contains(&i) {
                l.push_str(c);
                l.push_str(&" ".repeat(pad + 2));
            } else {
                l.push_str(&" ".repeat(pad));
                l.push_str(c);
                l.push_str("  ");
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut o = line(&head.map(String::from));
    for r in rows {
        o.push_str(&line(r));
    }
    o
}

/// The Markdown table of `head` and `rows`, the columns numbered in `left` left-aligned, the
/// others right-aligned.
pub fn markdown_table<const N: usize>(head: &[&str; N], rows: &[[String; N]], left: &[usize]) -> String {
    let align: String = (0..N).map(|i| if left.contains(&i) { " --- |" } else { " ---: |" }).collect();
    let mut o = format!("| {} |\n|{align}\n", head.join(" | "));
    for r in rows {
        o.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    o
}

/// How a benchmark's Markdown report starts: its title and where it comes from.
pub fn heading(bench: &str) -> String {
    format!("# {bench} benchmark: last result\n\nWritten by `scripts/bench.sh {bench}` (perf/README.md says how it measures).\n\n")
}

/// The report's `- Run: ...` line, without its end: when, which commit, how long, on what.
pub fn run_line(stamp: &Stamp, host: &Host) -> String {
    format!(
        "- Run: {}, git {}, {} s in all; kernel {}, {} ({} CPUs)",
        stamp.started_utc,
        stamp.git.as_deref().unwrap_or("?"),
        stamp.elapsed_s,
        host.kernel,
        host.cpu,
        host.online_cpus
    )
}

/// Whether a ratio meets its target (`met(ratio)`): `met`, `NOT met`, or `not measured`.
pub fn verdict(ratio: Option<f64>, met: impl FnOnce(f64) -> bool) -> &'static str {
    match ratio {
        Some(r) if met(r) => "met",
        Some(_) => "NOT met",
        None => "not measured",
    }
}

/// `items` under `heading`, each a line `BULLET ITEM`; nothing without items.
pub fn section<T: std::fmt::Display>(heading: &str, bullet: &str, items: impl IntoIterator<Item = T>) -> String {
    let lines: String = items.into_iter().map(|i| format!("{bullet}{i}\n")).collect();
    if lines.is_empty() {
        lines
    } else {
        format!("{heading}{lines}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_sections_vanish_when_empty() {
        let rows = [["ab".to_string(), "c".to_string(), "1,000".to_string()]];
        assert_eq!(padded(&["x", "y", "z"], &rows, &[0, 1]), "x   y      z\nab  c  1,000\n");
        assert_eq!(padded(&["x", "y", "z"], &rows, &[0, 2]), "x   y  z\nab  c  1,000\n");
        assert_eq!(markdown_table(&["x", "y", "z"], &rows, &[0]), "| x | y | z |\n| --- | ---: | ---: |\n| ab | c | 1,000 |\n");
        assert_eq!(markdown_table(&["x", "y", "z"], &rows, &[0, 2]), "| x | y | z |\n| --- | ---: | --- |\n| ab | c | 1,000 |\n");
        assert_eq!(section("\nNotes:\n\n", "- ", ["a", "b"]), "\nNotes:\n\n- a\n- b\n");
        assert_eq!(section("\nNotes:\n\n", "- ", Vec::<String>::new()), "");
        assert_eq!([verdict(Some(1.0), |r| r >= 1.0), verdict(Some(0.9), |r| r >= 1.0), verdict(None, |_| true)], ["met", "NOT met", "not measured"]);
    }
}
