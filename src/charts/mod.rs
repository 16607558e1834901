//! Charts rendered on the server as SVG with plotters. Pure functions: no database,
//! no HTTP. Labels come only from our own data (dates, numbers), never user strings.

use plotters::prelude::*;
use time::Date;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("draw chart: {0}")]
pub struct ChartError(String);

/// A bar chart of credits used per day, as an SVG document with a `<title>` for
/// screen readers. `size` is (width, height) in px. Empty input draws an empty axis.
pub fn usage_svg(
    days: &[(Date, i64)],
    title: &str,
    size: (u32, u32),
) -> Result<String, ChartError> {
    bars_svg(
        days,
        &[],
        |d| format!("{} {}", d.day(), month_abbrev(d.month())),
        crate::money::format_credits,
        title,
        size,
    )
}

/// A bar chart of money per day or per month (`monthly`: bars labelled "Nov 2026"),
/// amounts in minor units of `currency`, y axis labelled in whole units ("€1,200").
/// `overlay` (same length, each at most its bar) is drawn inside each bar in a darker
/// shade: commission inside revenue. Negative values (a month of refunds) draw no bar.
pub fn money_svg(
    points: &[(Date, i64)],
    overlay: &[i64],
    monthly: bool,
    currency: &str,
    title: &str,
    size: (u32, u32),
) -> Result<String, ChartError> {
    let currency = currency.to_owned();
    bars_svg(
        points,
        overlay,
        |d| {
            if monthly {
                format!("{} {}", month_abbrev(d.month()), d.year())
            } else {
                format!("{} {}", d.day(), month_abbrev(d.month()))
            }
        },
        move |v| {
            let whole = crate::money::Money::new(v, &currency).to_string();
            whole
                .strip_suffix(".00")
                .map_or_else(|| whole.clone(), str::to_owned)
        },
        title,
        size,
    )
}

/// The colours of stacked series, in order (the page's legend uses the same, as CSS
/// classes `series-0` to `series-7`). At most this many series are drawn.
pub const SERIES_COLOURS: [(u8, u8, u8); 8] = [
    (79, 70, 229),
    (14, 165, 233),
    (16, 185, 129),
    (245, 158, 11),
    (239, 68, 68),
    (168, 85, 247),
    (100, 116, 139),
    (236, 72, 153),
];

/// A stacked bar chart of credits per day: one bar per day in `days`, one segment per
/// series (`(name, credits per day)`, each as long as `days`, at most
/// [`SERIES_COLOURS`] of them; more are ignored) in [`SERIES_COLOURS`] order, as an SVG
/// document with a `<title>`. Names are not drawn: the page shows the legend.
pub fn stacked_usage_svg(
    days: &[Date],
    series: &[(String, Vec<i64>)],
    title: &str,
    size: (u32, u32),
) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| ChartError(e.to_string());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let series = &series[..series.len().min(SERIES_COLOURS.len())];
        let totals: Vec<i64> = (0..days.len())
            .map(|i| {
                series
                    .iter()
                    .map(|(_, v)| v.get(i).copied().unwrap_or(0).max(0))
                    .sum()
            })
            .collect();
        let max = totals.iter().copied().max().unwrap_or(0).max(1);
        let y_top = max + max / 10 + 1;
        let n = days.len().max(1) as u32;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d((0u32..n).into_segmented(), 0i64..y_top)
            .map_err(|e| err(&e))?;
        let label = |i: &SegmentValue<u32>| match i {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => days
                .get(*i as usize)
                .map(|d| format!("{} {}", d.day(), month_abbrev(d.month())))
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(RGBColor(235, 238, 242))
            .bold_line_style(RGBColor(225, 229, 235))
            .axis_style(RGBColor(180, 186, 196))
            .x_labels(8)
            .x_label_formatter(&label)
            .y_labels(5)
            .y_label_formatter(&|v| crate::money::format_credits(*v))
            .label_style(("sans-serif", 12).into_font().color(&RGBColor(90, 98, 112)))
            .draw()
            .map_err(|e| err(&e))?;
        let mut base = vec![0i64; days.len()];
        for (s, (_, values)) in series.iter().enumerate() {
            let (r, g, b) = SERIES_COLOURS[s];
            let colour = RGBColor(r, g, b);
            let mut bars = Vec::new();
            for (i, bottom) in base.iter_mut().enumerate() {
                let v = values.get(i).copied().unwrap_or(0).max(0);
                if v == 0 {
                    continue;
                }
                let i = i as u32;
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), *bottom),
                        (SegmentValue::Exact(i + 1), *bottom + v),
                    ],
                    colour.filled(),
                );
                bar.set_margin(0, 0, 2, 2);
                bars.push(bar);
                *bottom += v;
            }
            chart.draw_series(bars).map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(with_title(svg, title))
}

/// A referral funnel: one horizontal bar per step (`(label, count)`, labels are ours),
/// with its count and its share of the first step.
pub fn funnel_svg(
    steps: &[(&str, i64)],
    title: &str,
    size: (u32, u32),
) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| ChartError(e.to_string());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let first = steps.first().map_or(0, |(_, n)| *n).max(1);
        let (w, h) = (f64::from(size.0), f64::from(size.1));
        let row = h / steps.len().max(1) as f64;
        let label_w = 170.0;
        let style = ("sans-serif", 14).into_font().color(&RGBColor(27, 31, 42));
        let shades = [
            RGBColor(199, 210, 254),
            RGBColor(129, 140, 248),
            RGBColor(79, 70, 229),
        ];
        for (i, (label, n)) in steps.iter().enumerate() {
            let y = (i as f64 * row) as i32;
            let bar_h = (row * 0.6) as i32;
            let top = y + ((row - f64::from(bar_h)) / 2.0) as i32;
            let share = (*n).max(0) as f64 / first as f64;
            let bar_w = ((w - label_w - 150.0) * share.min(1.0)).max(2.0) as i32;
            root.draw(&Text::new(
                (*label).to_owned(),
                (8, top + bar_h / 2 - 8),
                style.clone(),
            ))
            .map_err(|e| err(&e))?;
            root.draw(&Rectangle::new(
                [(label_w as i32, top), (label_w as i32 + bar_w, top + bar_h)],
                shades[i.min(shades.len() - 1)].filled(),
            ))
            .map_err(|e| err(&e))?;
            let pct = if i == 0 {
                String::new()
            } else {
                format!(" ({:.0} %)", share * 100.0)
            };
            root.draw(&Text::new(
                format!("{}{pct}", crate::money::format_credits(*n)),
                (label_w as i32 + bar_w + 8, top + bar_h / 2 - 8),
                style.clone(),
            ))
            .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(with_title(svg, title))
}

/// One bar per point, labelled by `x_label`, the y axis by `y_label`.
fn bars_svg(
    points: &[(Date, i64)],
    overlay: &[i64],
    x_label: impl Fn(&Date) -> String,
    y_label: impl Fn(i64) -> String,
    title: &str,
    size: (u32, u32),
) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| ChartError(e.to_string());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let max = points.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
        let y_top = max + max / 10 + 1;
        let n = points.len().max(1) as u32;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(56)
            .build_cartesian_2d((0u32..n).into_segmented(), 0i64..y_top)
            .map_err(|e| err(&e))?;
        let label = |i: &SegmentValue<u32>| match i {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => points
                .get(*i as usize)
                .map(|(d, _)| x_label(d))
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(RGBColor(235, 238, 242))
            .bold_line_style(RGBColor(225, 229, 235))
            .axis_style(RGBColor(180, 186, 196))
            .x_labels(8)
            .x_label_formatter(&label)
            .y_labels(5)
            .y_label_formatter(&|v| y_label(*v))
            .label_style(("sans-serif", 12).into_font().color(&RGBColor(90, 98, 112)))
            .draw()
            .map_err(|e| err(&e))?;
        let bar = RGBColor(79, 70, 229);
        chart
            .draw_series(points.iter().enumerate().filter(|(_, (_, v))| *v > 0).map(
                |(i, (_, v))| {
                    let i = i as u32;
                    let mut r = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), 0),
                            (SegmentValue::Exact(i + 1), *v),
                        ],
                        bar.filled(),
                    );
                    r.set_margin(0, 0, 2, 2);
                    r
                },
            ))
            .map_err(|e| err(&e))?;
        let dark = RGBColor(49, 46, 129);
        chart
            .draw_series(
                overlay
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v > 0)
                    .map(|(i, v)| {
                        let i = i as u32;
                        let mut r = Rectangle::new(
                            [
                                (SegmentValue::Exact(i), 0),
                                (SegmentValue::Exact(i + 1), *v),
                            ],
                            dark.filled(),
                        );
                        r.set_margin(0, 0, 2, 2);
                        r
                    }),
            )
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(with_title(svg, title))
}

/// plotters writes no `<title>`: adds one (escaped) and `role="img"`, so the chart has
/// an accessible name.
fn with_title(svg: String, title: &str) -> String {
    let escaped = title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    match svg.find('>') {
        Some(end) => {
            let (open, rest) = svg.split_at(end + 1);
            format!(
                "{}<title>{escaped}</title>{rest}",
                open.replacen("<svg ", "<svg role=\"img\" ", 1)
            )
        }
        None => svg,
    }
}

fn month_abbrev(m: time::Month) -> &'static str {
    use time::Month::*;
    match m {
        January => "Jan",
        February => "Feb",
        March => "Mar",
        April => "Apr",
        May => "May",
        June => "Jun",
        July => "Jul",
        August => "Aug",
        September => "Sep",
        October => "Oct",
        November => "Nov",
        December => "Dec",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn stacks_one_segment_per_series_and_day() {
        let days = [date!(2026 - 12 - 01), date!(2026 - 12 - 02)];
        let series = vec![
            ("Graph query".to_owned(), vec![3, 0]),
            ("Risk score".to_owned(), vec![2, 4]),
        ];
        let svg = stacked_usage_svg(&days, &series, "Credits by feature", (600, 200)).unwrap();
        assert!(svg.contains("<title>Credits by feature</title>"));
        // Three non-empty segments, in the first two series' colours.
        assert_eq!(svg.matches("fill=\"#4F46E5\"").count(), 1, "{svg}");
        assert_eq!(svg.matches("fill=\"#0EA5E9\"").count(), 2, "{svg}");
    }

    #[test]
    fn draws_one_bar_per_day_with_a_title() {
        let days = [
            (date!(2026 - 11 - 20), 5),
            (date!(2026 - 11 - 21), 12),
            (date!(2026 - 11 - 22), 0),
        ];
        let svg = usage_svg(&days, "Credits used <per day>", (640, 240)).unwrap();
        assert!(svg.starts_with("<svg role=\"img\" "), "{svg:.80}");
        assert!(svg.contains("<title>Credits used &lt;per day&gt;</title>"));
        assert!(svg.contains("21 Nov"));
        // Two non-empty bars in the bar colour.
        assert!(svg.matches("fill=\"#4F46E5\"").count() >= 2, "bars missing");
    }

    #[test]
    fn money_charts_label_months_and_whole_amounts() {
        let months = [
            (date!(2026 - 10 - 01), 120_000),
            (date!(2026 - 11 - 01), 45_050),
        ];
        let svg = money_svg(
            &months,
            &[24_000, 9_010],
            true,
            "eur",
            "Revenue per month",
            (640, 240),
        )
        .unwrap();
        assert!(svg.contains("fill=\"#312E81\""), "commission drawn inside");
        assert!(
            svg.contains("Oct 2026") && svg.contains("Nov 2026"),
            "{svg:.400}"
        );
        assert!(svg.contains('€'), "y axis in euros");
    }

    #[test]
    fn a_funnel_draws_each_step_with_its_share() {
        let svg = funnel_svg(
            &[("Link followed", 80), ("Signed up", 20), ("Paid", 5)],
            "Referral funnel",
            (640, 150),
        )
        .unwrap();
        assert!(svg.contains("<title>Referral funnel</title>"));
        assert!(svg.contains("Signed up") && svg.contains("20 (25 %)") && svg.contains("5 (6 %)"));
    }

    #[test]
    fn empty_input_still_renders() {
        let svg = usage_svg(&[], "Nothing yet", (320, 160)).unwrap();
        assert!(svg.contains("</svg>"));
    }
}
