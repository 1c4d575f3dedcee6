//! `shmring bench --plot FILE.svg`: each round-trip row's latency by percentile, drawn
//! as HdrHistogram's plotter draws it (the percentile on a log axis of 1 / (1 - q), so
//! that 90%, 99%, 99.9% and 99.99% sit evenly apart), the latency on a log axis so that
//! the floor and the kernel rows fit on the same picture. Drawn with plotters' SVG
//! backend: one line per row, and a legend line and label per row beside the chart.

use plotters::prelude::*;

/// The quantiles each round-trip row is read at: q = 1 - 10^(-k/8), k = 0..=32, i.e.
/// from p0 (the minimum) to p99.99 in 8 steps per decade of 1 / (1 - q).
pub const STEPS: usize = 33;

/// The quantile of step `k`.
pub fn quantile(k: usize) -> f64 {
    1.0 - 10f64.powf(-(k as f64) / 8.0)
}

/// One curve: a row's name and its latency (ns) at each of the `STEPS` quantiles.
pub struct Curve<'a> {
    pub name: &'a str,
    pub ns: [u64; STEPS],
    /// Its median, for the legend.
    pub p50: u64,
}

/// What the title says about where and how the figures were taken.
pub struct Labels {
    pub machine: String,
    pub state: String,
}

const W: u32 = 960;
const H: u32 = 600;
/// The band above the chart (title, machine, state) and the legend's column on its right.
const HEAD: u32 = 70;
const LEGEND: u32 = 240;
const COLOURS: [RGBColor; 12] = [
    RGBColor(0x00, 0x00, 0x00),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0xaa, 0x33, 0x77),
];

/// `100 ns`, `1 us`, `10 us`, `1 ms` for an axis label (the axis's ticks sit on decades).
fn ns_label(v: f64) -> String {
    let fmt = |x: f64, unit: &str| {
        if (x - x.round()).abs() < 1e-6 {
            format!("{x:.0} {unit}")
        } else {
            format!("{x:.1} {unit}")
        }
    };
    match v {
        v if v >= 1e9 => fmt(v / 1e9, "s"),
        v if v >= 1e6 => fmt(v / 1e6, "ms"),
        v if v >= 1e3 => fmt(v / 1e3, "us"),
        v => fmt(v, "ns"),
    }
}

/// The percentile at `x` = log10(1 / (1 - q)): `0%`, `90%`, `99%`, `99.9%`, `99.99%`.
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let digits = (x.ceil() as usize).saturating_sub(2);
    format!("{p:.digits$}%")
}

/// A median for the legend, to three figures: `143 ns`, `1.54 us`, `25.3 us`.
fn ns_exact(v: u64) -> String {
    let f = v as f64;
    let (x, unit) = match v {
        v if v >= 1_000_000_000 => (f / 1e9, "s"),
        v if v >= 1_000_000 => (f / 1e6, "ms"),
        v if v >= 1_000 => (f / 1e3, "us"),
        _ => return format!("{v} ns"),
    };
    if x >= 100.0 {
        format!("{x:.0} {unit}")
    } else if x >= 10.0 {
        format!("{x:.1} {unit}")
    } else {
        format!("{x:.2} {unit}")
    }
}

/// The SVG document: one line per curve, p0 to p99.99, and a legend with each row's
/// median.
pub fn svg(curves: &[Curve<'_>], labels: &Labels) -> Result<String, String> {
    let mut out = String::new();
    draw(&mut out, curves, labels).map_err(|e| format!("drawing the plot failed: {e}"))?;
    Ok(out)
}

fn draw(
    out: &mut String,
    curves: &[Curve<'_>],
    labels: &Labels,
) -> Result<(), Box<dyn std::error::Error>> {
    let all = || curves.iter().flat_map(|c| c.ns.iter()).copied();
    // Whole decades around every value, so that the ticks (decades) frame the curves.
    let lo = 10f64.powf((all().min().unwrap_or(1).max(1) as f64).log10().floor());
    let hi = 10f64.powf((all().max().unwrap_or(10).max(10) as f64).log10().ceil());
    let hi = if hi <= lo { lo * 10.0 } else { hi };
    let root = SVGBackend::with_string(out, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(HEAD);
    let (plot, legend) = body.split_horizontally(W - LEGEND);
    let font = |size: u32| ("sans-serif", size).into_font().color(&BLACK);
    head.draw(&Text::new(
        "Round-trip latency by percentile (shmring bench)",
        (16, 10),
        font(18),
    ))?;
    head.draw(&Text::new(labels.machine.as_str(), (16, 34), font(13)))?;
    head.draw(&Text::new(labels.state.as_str(), (16, 52), font(13)))?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..4f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(5)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|v| ns_label(*v))
        .x_desc("percentile (log scale of 1 / (1 - p))")
        .y_desc("round trip (log scale)")
        .label_style(font(13))
        .axis_desc_style(font(13))
        .light_line_style(WHITE)
        .draw()?;
    for (i, c) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points = (0..STEPS).map(|k| (k as f64 / 8.0, c.ns[k].max(1) as f64));
        chart.draw_series(LineSeries::new(points, colour.stroke_width(2)))?;
        let y = 24 + 20 * i as i32;
        legend.draw(&PathElement::new(
            vec![(4, y), (28, y)],
            colour.stroke_width(2),
        ))?;
        legend.draw(&Text::new(
            format!("{} (p50 {})", c.name, ns_exact(c.p50)),
            (34, y - 7),
            font(13),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// A row's duration for the title: `30 ms`, `1.5 s`.
pub fn span(d: std::time::Duration) -> String {
    if d < std::time::Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The machine for a title: CPU model, CPUs online, kernel.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    // CPUs online, not `available_parallelism`: the bench pins itself before it draws.
    // SAFETY: sysconf reads a system setting; any name is allowed.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned());
    format!("{cpu}, {n} CPUs, Linux {kernel}")
}

/// Today's date (UTC), `2026-12-03`, for a title.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil(secs / 86_400);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// days-to-civil algorithm, restated).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(59), (1970, 3, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(20_790), (2026, 12, 3));
    }

    #[test]
    fn quantiles_run_from_the_minimum_to_p99_99() {
        assert_eq!(quantile(0), 0.0);
        assert!((quantile(8) - 0.9).abs() < 1e-12);
        assert!((quantile(32) - 0.9999).abs() < 1e-12);
    }

    #[test]
    fn latency_labels() {
        assert_eq!(ns_label(100.0), "100 ns");
        assert_eq!(ns_label(1e3), "1 us");
        assert_eq!(ns_label(1e5), "100 us");
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(4.0), "99.99%");
        assert_eq!(ns_exact(143), "143 ns");
        assert_eq!(ns_exact(1_540), "1.54 us");
        assert_eq!(ns_exact(25_300), "25.3 us");
        assert_eq!(ns_exact(2_500_000), "2.50 ms");
    }
}
