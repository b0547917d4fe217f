//! The daemon process's own resident memory and CPU time, read from the kernel at each scrape,
//! under the names every Prometheus client library gives them (`process_resident_memory_bytes`,
//! `process_cpu_seconds_total`), so existing dashboards read them as they are.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// The size a `/proc` text gives in kB for `field` (a line `field:  N kB`), in bytes: `VmRSS`
/// or `VmHWM` of `/proc/PID/status`, `Pss` of `/proc/PID/smaps_rollup`.
pub fn kb_field_bytes(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
    })?;
    let mut words = line.split_whitespace();
    let kilobytes: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => kilobytes.checked_mul(1024),
        _ => None,
    }
}

/// User plus system CPU time this process has used, in seconds.
fn cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointer it is given, which points at
    // memory of that type and size that lives across the call.
    let result = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if result != 0 {
        return None;
    }
    // SAFETY: getrusage succeeded, so it filled the whole struct (zeroed before, in any case).
    let usage = unsafe { usage.assume_init() };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// Writes the process's figures on each scrape; a figure the kernel does not give is left out.
#[derive(Debug)]
pub(crate) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let resident = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| kb_field_bytes(&status, "VmRSS"));
        if let Some(bytes) = resident {
            let gauge = ConstGauge::new(bytes as f64);
            gauge.encode(encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(&Unit::Bytes),
                gauge.metric_type(),
            )?)?;
        }
        if let Some(seconds) = cpu_seconds() {
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
