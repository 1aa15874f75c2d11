//! What every scenario hands back: one JSON object (printed as a single
//! line on stdout, for scripts) and a human summary (printed on stderr).

use serde_json::Value;

/// A scenario's results.
pub struct Report {
    pub json: Value,
    pub summary: String,
}

impl Report {
    /// Prints the JSON line to stdout and the summary to stderr.
    pub fn print(&self) {
        println!("{}", self.json);
        eprintln!("{}", self.summary);
    }
}

/// `x / secs`, or 0 for an empty interval.
pub fn per_second(x: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        crate::procfs::round(x as f64 / secs)
    } else {
        0.0
    }
}
