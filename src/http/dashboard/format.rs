//! How figures are written on the dashboard: plain functions, so templates only place
//! text.

use chrono::{DateTime, Utc};
use std::fmt::Write;

/// A latency in milliseconds: two decimals under 10 ms, whole milliseconds under a
/// second, seconds above.
pub fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// A ratio as a percentage with one decimal, or a dash when there is none.
pub fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "—".to_owned(), |ratio| format!("{:.1} %", ratio * 100.0))
}

/// Events per second: two decimals under 10, whole numbers above.
pub fn per_second(rate: f64) -> String {
    if rate < 10.0 { format!("{rate:.2}/s") } else { format!("{rate:.0}/s") }
}

/// How long ago an instant was, in the largest whole unit; `in …` for the future.
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    let amount = seconds.unsigned_abs();
    let span = match amount {
        0..60 => format!("{amount} s"),
        60..3600 => format!("{} min", amount / 60),
        3600..86_400 => format!("{} h", amount / 3600),
        _ => format!("{} d", amount / 86_400),
    };
    if seconds >= 0 { format!("{span} ago") } else { format!("in {span}") }
}

/// A value for a query string, percent-encoded.
pub fn encoded(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Width and height of a sparkline's SVG view box.
pub const SPARK_WIDTH: f64 = 120.0;
pub const SPARK_HEIGHT: f64 = 24.0;

/// The SVG path of a sparkline: values spread over the width, scaled so `top` (or the
/// largest value, when larger) reaches the top. A missing value breaks the line; a value
/// alone between gaps is drawn as a short dash, so it still shows.
pub fn sparkline(values: &[Option<f64>], top: f64) -> String {
    let highest = values.iter().flatten().fold(top, |high, value| high.max(*value));
    let step = if values.len() > 1 { SPARK_WIDTH / (values.len() - 1) as f64 } else { 0.0 };
    let mut path = String::new();
    let mut drawing = false;
    for (index, value) in values.iter().enumerate() {
        let Some(value) = value else {
            drawing = false;
            continue;
        };
        let x = index as f64 * step;
        let share = if highest > 0.0 { value.max(0.0) / highest } else { 0.0 };
        let y = SPARK_HEIGHT - share * SPARK_HEIGHT;
        let command = if drawing { 'L' } else { 'M' };
        let _ = write!(path, "{command}{x:.1},{y:.1}");
        let alone = !drawing && values.get(index + 1).is_none_or(Option::is_none);
        if alone {
            path.push_str("h1.5");
        }
        drawing = true;
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn latencies_keep_their_precision_where_it_matters() {
        assert_eq!(millis(0.4321), "0.43 ms");
        assert_eq!(millis(123.4), "123 ms");
        assert_eq!(millis(2500.0), "2.50 s");
    }

    #[test]
    fn percentages_and_rates() {
        assert_eq!(percent(Some(0.875)), "87.5 %");
        assert_eq!(percent(None), "—");
        assert_eq!(per_second(0.1), "0.10/s");
        assert_eq!(per_second(42.4), "42/s");
    }

    #[test]
    fn relative_times_use_the_largest_unit() {
        let now = DateTime::UNIX_EPOCH + TimeDelta::days(10);
        assert_eq!(relative(now - TimeDelta::seconds(5), now), "5 s ago");
        assert_eq!(relative(now - TimeDelta::minutes(90), now), "1 h ago");
        assert_eq!(relative(now + TimeDelta::days(2), now), "in 2 d");
    }

    #[test]
    fn sparklines_scale_to_the_top_and_break_at_gaps() {
        assert_eq!(sparkline(&[Some(0.0), Some(1.0), Some(0.5)], 1.0), "M0.0,24.0L60.0,0.0L120.0,12.0");
        assert_eq!(sparkline(&[Some(2.0), None, Some(4.0)], 1.0), "M0.0,12.0h1.5M120.0,0.0h1.5");
        assert_eq!(sparkline(&[Some(5.0)], 0.0), "M0.0,0.0h1.5");
        assert_eq!(sparkline(&[], 1.0), "");
    }
}
