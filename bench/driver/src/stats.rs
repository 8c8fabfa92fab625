//! Medians and ranges: what every timed figure is reported as.

/// A sample's median, minimum and maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Sample {
    /// The summary of `values` (all zero when empty).
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return Sample { median: 0.0, min: 0.0, max: 0.0, n: 0 };
        }
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Sample { median, min: v[0], max: v[n - 1], n }
    }

    /// `median (min–max)` with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!("{:.d$} ({:.d$}–{:.d$})", self.median, self.min, self.max, d = digits)
    }
}

#[cfg(test)]
mod tests {
    use super::Sample;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Sample::of(&[3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(Sample::of(&[4.0, 1.0, 3.0, 2.0]).median, 2.5);
        let s = Sample::of(&[5.0, f64::NAN, 1.0]);
        assert_eq!((s.min, s.max, s.n), (1.0, 5.0, 2));
        assert_eq!(Sample::of(&[]).n, 0);
    }

    #[test]
    fn shows_median_and_range() {
        assert_eq!(Sample::of(&[1.0, 2.0, 4.0]).show(1), "2.0 (1.0–4.0)");
    }
}
