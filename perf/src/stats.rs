//! Small summaries over rounds and number formatting.

/// Median (mean of the middle two for an even count); None when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 })
}

/// The `p`-th percentile (0 < p <= 100) by nearest rank: the smallest value with at least
/// p% of the values at or below it (of 200 values, p99 is the 198th smallest); None when empty.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

pub fn min(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::min)
}

pub fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

/// The rate one thing (a forwarder, a generator) reached over the rounds that completed, as
/// the benchmarks' JSON holds it (flattened into each per-case summary).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rates {
    pub rounds_ok: usize,
    pub median_pps: Option<u64>,
    pub min_pps: Option<u64>,
    pub max_pps: Option<u64>,
    pub per_round_pps: Vec<u64>,
}

impl Rates {
    /// The rates of the rounds that completed, in round order.
    pub fn of(per_round_pps: Vec<u64>) -> Rates {
        let pps: Vec<f64> = per_round_pps.iter().map(|&p| p as f64).collect();
        Rates {
            rounds_ok: per_round_pps.len(),
            median_pps: median(&pps).map(|x| x.round() as u64),
            min_pps: min(&pps).map(|x| x as u64),
            max_pps: max(&pps).map(|x| x as u64),
            per_round_pps,
        }
    }
}

/// `a / b` to 3 decimals; None when either is missing or `b` is 0.
pub fn ratio(a: Option<u64>, b: Option<u64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0 => Some(round_to(a as f64 / b as f64, 3)),
        _ => None,
    }
}

/// `a / b` of two measured figures to 3 decimals; None when either is missing or `b` is not
/// above 0.
pub fn ratio_f(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(round_to(a / b, 3)),
        _ => None,
    }
}

/// The median of whole numbers, rounded to the nearest; None when empty.
pub fn median_u64(v: &[u64]) -> Option<u64> {
    median(&v.iter().map(|&x| x as f64).collect::<Vec<_>>()).map(|x| x.round() as u64)
}

/// The median, to 3 decimals, of what `f` gives for the samples it gives something for.
pub fn median_of<T>(v: &[&T], f: impl Fn(&T) -> Option<f64>) -> Option<f64> {
    let x: Vec<f64> = v.iter().filter_map(|s| f(s)).collect();
    median(&x).map(|m| round_to(m, 3))
}

/// Rounds to `digits` decimals (for ratios in JSON).
pub fn round_to(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// 1234567 -> "1,234,567".
pub fn thousands(x: u64) -> String {
    let s = x.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && i % 3 == s.len() % 3 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count with separators, "-" when missing.
pub fn opt_thousands(x: Option<u64>) -> String {
    x.map_or_else(|| "-".into(), thousands)
}

/// A figure with `digits` decimals, "-" when missing.
pub fn opt_fixed(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        let v: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(100.0));
        assert_eq!(percentile(&v, 99.0), Some(198.0));
        assert_eq!(percentile(&v, 100.0), Some(200.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    }

    #[test]
    fn separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!((opt_thousands(None), opt_fixed(Some(1.234), 2), opt_fixed(None, 1)), ("-".into(), "1.23".into(), "-".into()));
    }

    #[test]
    fn medians_of_counts_and_ratios_of_figures() {
        assert_eq!(median_u64(&[1, 2]), Some(2));
        assert_eq!(median_u64(&[]), None);
        assert_eq!(ratio_f(Some(1.0), Some(3.0)), Some(0.333));
        assert_eq!(ratio_f(Some(1.0), Some(0.0)), None);
        let v = [(1, Some(1.0)), (2, None), (3, Some(2.0))];
        let refs: Vec<&(i32, Option<f64>)> = v.iter().collect();
        assert_eq!(median_of(&refs, |s| s.1), Some(1.5));
    }
}
