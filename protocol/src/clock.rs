//! The one place that reads the wall clock, for the edges (the engine's glue, the
//! client, the load generator). Nothing else in this crate calls it: every encoder and
//! state machine takes the time stamp as an argument, so they stay deterministic.

/// Milliseconds since the Unix epoch, for frame headers (informational only; a clock
/// before 1970 stamps 0).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
