//! What the benchmark binaries (`src/bin/bench-*.rs`) share: their settings from the
//! environment (`ROUNDS`, `FIGURES`), and the statistics, machine load and CPU time they print.

use std::time::Duration;

/// How many rounds each figure takes: `ROUNDS`, 5 when unset or not a number.
pub fn rounds() -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(5)
}

/// Whether `FIGURES` (a comma-separated list; all figures when unset) asks for `figure`.
pub fn wanted(figure: &str) -> bool {
    std::env::var("FIGURES").map_or(true, |figures| {
        figures.split(',').any(|f| f.trim() == figure)
    })
}

/// min / median / max of `samples`, then the samples in the order taken. Panics when empty.
pub fn summary(mut samples: Vec<f64>, decimals: usize) -> String {
    let listed: Vec<String> = samples.iter().map(|s| format!("{s:.decimals$}")).collect();
    samples.sort_by(f64::total_cmp);
    format!(
        "min {:.decimals$}, median {:.decimals$}, max {:.decimals$} over {} rounds ({})",
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() - 1],
        samples.len(),
        listed.join(", ")
    )
}

/// The middle sample (the upper one of an even count). Panics when empty.
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// The latency under which `fraction` of `latencies` came, e.g. 0.99 for p99; zero when there
/// are none.
pub fn percentile(latencies: &[Duration], fraction: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let rank = (sorted.len() as f64 * fraction).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

/// The machine's 1, 5 and 15 minute load averages, for reading the figures beside.
pub fn load_average() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    format!("load average {}", fields.join(" "))
}

/// The machine's CPU time since boot, all CPUs together, as (busy, total) in clock ticks
/// ([`clock_tick`]), from the first line of `/proc/stat` (user nice system idle iowait irq
/// softirq steal): busy is all but idle and iowait.
pub fn machine_cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|field| field.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// How long one clock tick of `/proc/stat` lasts.
pub fn clock_tick() -> Duration {
    // SAFETY: sysconf only reads a system constant.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_secs(1) / u32::try_from(ticks_per_second).unwrap_or(100).max(1)
}

#[cfg(test)]
mod tests {
    use super::{median, percentile, summary};
    use std::time::Duration;

    #[test]
    fn p99_is_the_latency_under_which_99_percent_came() {
        let latencies: Vec<Duration> = (1..=200).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&latencies, 0.99), Duration::from_millis(198));
        assert_eq!(percentile(&latencies, 0.5), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }

    #[test]
    fn a_summary_sorts_for_its_figures_and_lists_the_rounds_as_taken() {
        assert_eq!(
            summary(vec![3.0, 1.0, 2.0], 1),
            "min 1.0, median 2.0, max 3.0 over 3 rounds (3.0, 1.0, 2.0)"
        );
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
