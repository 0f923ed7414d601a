//! `podswitch-perf sync-curve`: the `sync` benchmark at five cluster sizes (5,000 to 50,000
//! Services), as a table and an SVG chart in `perf/results/`.
//!
//! Contract: each size runs `podswitch-perf sync --json` in a child process of its own (so each
//! `max_rss_mb` is that size's agent alone), with the proportions of the target size:
//! 10 endpoints per Service, 3 pods per Service, one policy per 10 Services, one namespace per
//! 33 Services (50,000 Services: 150,000 pods, 5,000 policies, 1,500 namespaces). Progress goes
//! to stderr, one line per size. It writes `sync-curve.md` (the table) and `sync-curve.svg`
//! (three panels: full sync, one change's p99, peak memory, each against its target) into
//! `--out`; `--json` prints the figures as one JSON object on the last line. A size whose run
//! fails stops the curve with its error: no partial chart is written.
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::Value;

#[derive(Debug, clap::Args)]
pub struct SyncCurveArgs {
    /// Service counts, comma-separated (the other objects scale with them).
    #[arg(long, value_delimiter = ',', default_value = "5000,10000,20000,35000,50000")]
    sizes: Vec<u32>,
    /// EndpointSlice changes timed at each size.
    #[arg(long, default_value_t = 200)]
    changes: u32,
    /// Where the table and the chart go.
    #[arg(long, default_value = "perf/results")]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

/// One size's figures.
struct Point {
    services: u32,
    pods: u32,
    policies: u32,
    namespaces: u32,
    full_sync_ms: f64,
    change_p50_us: f64,
    change_p99_us: f64,
    max_rss_mb: f64,
}

/// A chart panel: its title and the figure it plots.
type Panel = (&'static str, fn(&Point) -> f64);

/// The targets: full sync 1 s, one change p99 1 ms, peak memory 800 MB.
const TARGETS: [f64; 3] = [1000.0, 1000.0, 800.0];

fn run_size(services: u32, changes: u32) -> anyhow::Result<Point> {
    let (pods, policies, namespaces) = (services * 3, (services / 10).max(1), (services * 3 / 100).max(1));
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(["sync", "--json", "--endpoints", "10"])
        .args(["--services", &services.to_string(), "--pods", &pods.to_string()])
        .args(["--policies", &policies.to_string(), "--namespaces", &namespaces.to_string()])
        .args(["--changes", &changes.to_string()])
        .output()
        .context("running podswitch-perf sync")?;
    if !out.status.success() {
        bail!("sync at {services} Services failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().context("sync printed nothing")?;
    let v: Value = serde_json::from_str(last).context("sync's last line is not JSON")?;
    let f = |k: &str| v[k].as_f64().with_context(|| format!("sync's JSON has no {k}"));
    Ok(Point {
        services,
        pods,
        policies,
        namespaces,
        full_sync_ms: f("full_sync_ms")?,
        change_p50_us: f("update_p50_us")?,
        change_p99_us: f("update_p99_us")?,
        max_rss_mb: f("max_rss_mb")?,
    })
}

fn table(points: &[Point]) -> String {
    let mut s = String::from(
        "| Services | pods | policies | namespaces | full sync (ms) | one change p50 / p99 (µs) | peak RSS (MB) |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for p in points {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} | {:.0} / {:.0} | {:.0} |",
            p.services, p.pods, p.policies, p.namespaces, p.full_sync_ms, p.change_p50_us, p.change_p99_us, p.max_rss_mb
        );
    }
    s
}

/// Three panels side by side, each a polyline over the sizes with its target dashed.
fn svg(points: &[Point]) -> String {
    let (w, h, pad) = (300.0, 220.0, 45.0);
    let panels: [Panel; 3] =
        [("full sync (ms)", |p| p.full_sync_ms), ("one change p99 (µs)", |p| p.change_p99_us), ("peak RSS (MB)", |p| p.max_rss_mb)];
    let max_x = points.iter().map(|p| p.services).max().unwrap_or(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n",
        3.0 * w,
        h + 30.0
    );
    for (i, (title, value)) in panels.iter().enumerate() {
        let x0 = i as f64 * w;
        let target = TARGETS[i];
        let max_y = points.iter().map(value).fold(target, f64::max) * 1.1;
        let px = |x: f64| x0 + pad + (w - 1.5 * pad) * x / max_x;
        let py = |y: f64| h - pad + 20.0 - (h - 1.5 * pad) * y / max_y;
        let _ = writeln!(s, "<text x=\"{}\" y=\"14\" font-weight=\"bold\">{title}</text>", x0 + pad);
        let _ = writeln!(
            s,
            "<line x1=\"{a}\" y1=\"{b}\" x2=\"{c}\" y2=\"{b}\" stroke=\"black\"/><line x1=\"{a}\" y1=\"{b}\" x2=\"{a}\" y2=\"{d}\" stroke=\"black\"/>",
            a = px(0.0),
            b = py(0.0),
            c = px(max_x),
            d = py(max_y)
        );
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{t}\" x2=\"{}\" y2=\"{t}\" stroke=\"red\" stroke-dasharray=\"4,3\"/><text x=\"{}\" y=\"{}\" fill=\"red\">target {target:.0}</text>",
            px(0.0),
            px(max_x),
            px(0.0) + 4.0,
            py(target) - 3.0,
            t = py(target)
        );
        let line: Vec<String> = points.iter().map(|p| format!("{:.1},{:.1}", px(p.services as f64), py(value(p)))).collect();
        let _ = writeln!(s, "<polyline points=\"{}\" fill=\"none\" stroke=\"steelblue\" stroke-width=\"2\"/>", line.join(" "));
        for p in points {
            let (x, y) = (px(p.services as f64), py(value(p)));
            let _ = writeln!(s, "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"steelblue\"/><text x=\"{:.1}\" y=\"{:.1}\">{:.0}</text>", x - 8.0, y - 6.0, value(p));
            let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\">{}k</text>", x - 6.0, py(0.0) + 12.0, p.services / 1000);
        }
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" font-size=\"9\">Services</text>", px(max_x) - 40.0, py(0.0) + 24.0);
    }
    s.push_str("</svg>\n");
    s
}

pub fn main(a: SyncCurveArgs) -> anyhow::Result<i32> {
    if a.sizes.is_empty() || a.sizes.contains(&0) {
        bail!("--sizes needs one or more Service counts above 0");
    }
    let mut points = Vec::new();
    for &n in &a.sizes {
        eprintln!("sync-curve: {n} Services ...");
        let p = run_size(n, a.changes)?;
        eprintln!(
            "sync-curve: {n} Services: full sync {:.0} ms, one change p99 {:.0} us, peak RSS {:.0} MB",
            p.full_sync_ms, p.change_p99_us, p.max_rss_mb
        );
        points.push(p);
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let md = format!(
        "# `sync` at five cluster sizes\n\n`podswitch-perf sync-curve` (release build): each size in a process of its own, 10 endpoints\nper Service, 3 pods per Service, one policy per 10 Services, one namespace per 33 Services;\n{} EndpointSlice changes timed per size. Targets: full sync 1,000 ms, one change p99 1,000 µs\n(and flat), peak RSS 800 MB at 50,000 Services.\n\n{}\n![sync curve](sync-curve.svg)\n",
        a.changes,
        table(&points)
    );
    std::fs::write(a.out.join("sync-curve.md"), md)?;
    std::fs::write(a.out.join("sync-curve.svg"), svg(&points))?;
    print!("{}", table(&points));
    if a.json {
        let j = serde_json::json!({
            "services": points.iter().map(|p| p.services).collect::<Vec<_>>(),
            "full_sync_ms": points.iter().map(|p| p.full_sync_ms).collect::<Vec<_>>(),
            "update_p50_us": points.iter().map(|p| p.change_p50_us).collect::<Vec<_>>(),
            "update_p99_us": points.iter().map(|p| p.change_p99_us).collect::<Vec<_>>(),
            "max_rss_mb": points.iter().map(|p| p.max_rss_mb).collect::<Vec<_>>(),
        });
        println!("{j}");
    }
    Ok(0)
}
