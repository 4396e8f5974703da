//! A small SVG line-chart writer, so the plots in `docs/BENCHMARKS.md` are
//! generated from the JSON results by the project's own code (no plotting
//! dependency, no browser).

use std::fmt::Write;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Points, drawn in the order given.
    pub points: Vec<(f64, f64)>,
}

/// Axis scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Linear from 0 (or the smallest value, if negative).
    Linear,
    /// Base-10 logarithmic (all values must be positive).
    Log10,
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// X axis scale.
    pub x_scale: Scale,
    /// Y axis scale.
    pub y_scale: Scale,
    /// The lines.
    pub series: Vec<Series>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
/// Distinguishable colours (Okabe–Ito), cycled.
const COLORS: [&str; 7] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Compact tick label: 1500 -> "1.5k", 2000000 -> "2M".
pub fn tick_label(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else if x.abs() >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    };
    format!("{s}{suffix}")
}

/// An axis: maps values to [0, 1] and proposes ticks.
struct Axis {
    scale: Scale,
    lo: f64,
    hi: f64,
}

impl Axis {
    fn new(scale: Scale, values: impl Iterator<Item = f64>) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        match scale {
            Scale::Linear => {
                lo = lo.min(0.0);
                if hi <= lo {
                    hi = lo + 1.0;
                }
                let step = nice_step((hi - lo) / 5.0);
                hi = (hi / step).ceil() * step;
            }
            Scale::Log10 => {
                assert!(lo > 0.0, "log axis needs positive values, got {lo}");
                lo = 10f64.powf(lo.log10().floor());
                hi = 10f64.powf(hi.log10().ceil());
                if hi <= lo {
                    hi = lo * 10.0;
                }
            }
        }
        Axis { scale, lo, hi }
    }

    fn frac(&self, v: f64) -> f64 {
        match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log10 => (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10()),
        }
    }

    fn ticks(&self) -> Vec<f64> {
        match self.scale {
            Scale::Linear => {
                let step = nice_step((self.hi - self.lo) / 5.0);
                let mut t = Vec::new();
                let mut v = (self.lo / step).ceil() * step;
                while v <= self.hi + step * 1e-9 {
                    t.push(v);
                    v += step;
                }
                t
            }
            Scale::Log10 => {
                let mut t = Vec::new();
                let mut v = self.lo;
                while v <= self.hi * (1.0 + 1e-9) {
                    t.push(v);
                    v *= 10.0;
                }
                t
            }
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= raw {
            return m * p;
        }
    }
    10.0 * p
}

impl Chart {
    /// Renders the chart as a standalone SVG document.
    ///
    /// # Panics
    /// If a log-scaled axis gets a value that is not positive.
    pub fn to_svg(&self) -> String {
        let pts = || self.series.iter().flat_map(|s| s.points.iter());
        let xa = Axis::new(self.x_scale, pts().map(|p| p.0));
        let ya = Axis::new(self.y_scale, pts().map(|p| p.1));
        let pw = WIDTH - LEFT - RIGHT;
        let ph = HEIGHT - TOP - BOTTOM;
        let px = |v: f64| LEFT + xa.frac(v) * pw;
        let py = |v: f64| TOP + ph - ya.frac(v) * ph;

        let mut s = String::new();
        let w = &mut s;
        // Writing to a String cannot fail.
        let _ = writeln!(
            w,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(w, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            w,
            r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            escape(&self.title)
        );
        for t in xa.ticks() {
            let x = px(t);
            let _ = writeln!(
                w,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e0e0e0"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                tick_label(t)
            );
        }
        for t in ya.ticks() {
            let y = py(t);
            let _ = writeln!(
                w,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                tick_label(t)
            );
        }
        let _ = writeln!(
            w,
            r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            w,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            HEIGHT - 18.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            w,
            r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let path: Vec<String> = series
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                w,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                path.join(" ")
            );
            for &(x, y) in &series.points {
                let _ = writeln!(
                    w,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    px(x),
                    py(y)
                );
            }
            let ly = TOP + 14.0 + 20.0 * i as f64;
            let lx = WIDTH - RIGHT + 14.0;
            let _ = writeln!(
                w,
                r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                lx + 22.0,
                lx + 28.0,
                ly + 4.0,
                escape(&series.name)
            );
        }
        let _ = writeln!(w, "</svg>");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(y_scale: Scale, series: Vec<Series>) -> Chart {
        Chart {
            title: "t <&> \"q\"".into(),
            x_label: "clients".into(),
            y_label: "writes/s".into(),
            x_scale: Scale::Linear,
            y_scale,
            series,
        }
    }

    #[test]
    fn tick_labels_are_compact() {
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(1500.0), "1.5k");
        assert_eq!(tick_label(20_000.0), "20k");
        assert_eq!(tick_label(2_000_000.0), "2M");
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7000.0), 10_000.0);
    }

    #[test]
    fn svg_has_one_polyline_and_marker_per_point_and_escapes_text() {
        let c = chart(
            Scale::Linear,
            vec![
                Series {
                    name: "a".into(),
                    points: vec![(1.0, 10.0), (8.0, 80.0)],
                },
                Series {
                    name: "b&c".into(),
                    points: vec![(1.0, 5.0), (8.0, 20.0), (64.0, 30.0)],
                },
            ],
        );
        let svg = c.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 5);
        assert!(svg.contains("t &lt;&amp;&gt; &quot;q&quot;"));
        assert!(svg.contains(">b&amp;c<"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn points_land_inside_the_plot_area() {
        let c = chart(
            Scale::Log10,
            vec![Series {
                name: "p99".into(),
                points: vec![(1.0, 120.0), (64.0, 45_000.0)],
            }],
        );
        let svg = c.to_svg();
        for circle in svg.split("<circle").skip(1) {
            let num = |attr: &str| -> f64 {
                let i = circle.find(attr).unwrap() + attr.len();
                circle[i..].split('"').next().unwrap().parse().unwrap()
            };
            let (cx, cy) = (num("cx=\""), num("cy=\""));
            assert!((LEFT..=WIDTH - RIGHT).contains(&cx), "cx {cx}");
            assert!((TOP..=HEIGHT - BOTTOM).contains(&cy), "cy {cy}");
        }
        // Log axis from 100 to 100k: four decade ticks.
        assert!(svg.contains(">100<") && svg.contains(">100k<"));
    }

    #[test]
    fn empty_chart_still_renders() {
        let svg = chart(Scale::Linear, vec![]).to_svg();
        assert!(svg.contains("</svg>"));
    }
}
