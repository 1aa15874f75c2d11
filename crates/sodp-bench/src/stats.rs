//! Latency summaries: exact percentiles over every recorded sample (the
//! runs are bounded, so keeping all samples is affordable and avoids
//! histogram rounding).

use serde_json::json;

use crate::procfs::round;

/// Percentiles of a set of latencies, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub count: usize,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Summarises latencies given in nanoseconds (sorts them in place).
pub fn summarize(samples: &mut [u64]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    samples.sort_unstable();
    let n = samples.len();
    let at = |q: f64| {
        // Nearest-rank percentile.
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        samples[rank - 1] as f64 / 1e3
    };
    let sum: u128 = samples.iter().map(|&x| x as u128).sum();
    Summary {
        count: n,
        mean: sum as f64 / n as f64 / 1e3,
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        p999: at(0.999),
        max: samples[n - 1] as f64 / 1e3,
    }
}

impl Summary {
    pub fn to_json(self) -> serde_json::Value {
        json!({
            "count": self.count,
            "mean_us": round(self.mean),
            "p50_us": round(self.p50),
            "p90_us": round(self.p90),
            "p99_us": round(self.p99),
            "p999_us": round(self.p999),
            "max_us": round(self.max),
        })
    }

    /// One human-readable line.
    pub fn line(&self) -> String {
        format!(
            "n={} p50={:.0}µs p90={:.0}µs p99={:.0}µs p99.9={:.0}µs max={:.0}µs",
            self.count, self.p50, self.p90, self.p99, self.p999, self.max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=1000).map(|x| x * 1000).collect();
        let s = summarize(&mut v);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50, 500.0);
        assert_eq!(s.p99, 990.0);
        assert_eq!(s.p999, 999.0);
        assert_eq!(s.max, 1000.0);
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(summarize(&mut []).count, 0);
    }
}
