//! Measurement bookkeeping with no I/O: latency histograms (hdrhistogram), loss
//! accounting for broadcasts, the fixed-rate send schedule that keeps latency honest
//! under coordinated omission, and medians across rounds.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram records, in nanoseconds (60 s). Larger values are
/// clamped to it (and still counted).
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Significant decimal digits every histogram keeps (0.1 % value resolution).
pub const HISTOGRAM_SIGFIG: u8 = 3;

/// A latency distribution in nanoseconds.
#[derive(Clone, Debug)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    /// An empty distribution covering 1 ns ..= [`MAX_LATENCY_NS`].
    pub fn new() -> Latency {
        // The bounds are constants that hdrhistogram accepts; fall back to an
        // auto-resizing histogram if a future version disagrees.
        let hist = Histogram::new_with_bounds(1, MAX_LATENCY_NS, HISTOGRAM_SIGFIG)
            .or_else(|_| Histogram::new(HISTOGRAM_SIGFIG))
            .unwrap_or_else(|_| unreachable!("3 significant digits are always valid"));
        Latency { hist }
    }

    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        self.record_ns(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records one latency in nanoseconds (clamped to the histogram's range).
    pub fn record_ns(&mut self, ns: u64) {
        self.hist.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
    }

    /// Records a latency measured by a closed loop that meant to issue one operation
    /// every `interval_ns`: hdrhistogram back-fills the operations the stall
    /// prevented (`value - interval`, `value - 2·interval`, …), which corrects for
    /// coordinated omission when no intended send time is available.
    pub fn record_corrected(&mut self, ns: u64, interval_ns: u64) {
        let ns = ns.clamp(1, MAX_LATENCY_NS);
        if self.hist.record_correct(ns, interval_ns).is_err() {
            self.hist.saturating_record(ns);
        }
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Both histograms share the same bounds, so addition cannot fail; if it ever
        // did, the samples are added one bucket at a time (saturating).
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at quantile `q` (0..=1), in nanoseconds.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }

    /// The percentiles reports show, in microseconds; `None` when empty.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.hist.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(LatencySummary {
            count: self.hist.len(),
            mean_us: self.hist.mean() / 1000.0,
            p50_us: us(self.hist.value_at_quantile(0.50)),
            p90_us: us(self.hist.value_at_quantile(0.90)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            p999_us: us(self.hist.value_at_quantile(0.999)),
            max_us: us(self.hist.max()),
        })
    }
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

/// Loss accounting of one receiver: each sender's sequence numbers (from 0) must
/// arrive strictly increasing (conduit and netconduit both keep one sender's
/// broadcasts in order per receiver), so a skipped number is a loss and numbers after
/// the last one seen were still in flight when the run ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiverLoss {
    /// Per sender: one past the highest sequence number seen.
    next: Vec<u64>,
    /// Per sender: frames counted once and in order.
    in_order: Vec<u64>,
    /// Tick frames received.
    pub received: u64,
    /// Frames whose sequence number was not above the last one from the same sender
    /// (a duplicate or a reordering).
    pub out_of_order: u64,
    /// Frames that named a sender that does not exist.
    pub foreign: u64,
}

impl ReceiverLoss {
    /// Accounting for a run with `senders` senders.
    pub fn new(senders: usize) -> ReceiverLoss {
        ReceiverLoss {
            next: vec![0; senders],
            in_order: vec![0; senders],
            ..ReceiverLoss::default()
        }
    }

    /// Notes the arrival of `seq` from `sender`.
    pub fn on_tick(&mut self, sender: usize, seq: u64) {
        self.received += 1;
        let (Some(next), Some(count)) = (self.next.get_mut(sender), self.in_order.get_mut(sender))
        else {
            self.foreign += 1;
            return;
        };
        if seq < *next {
            self.out_of_order += 1;
        } else {
            *next = seq + 1;
            *count += 1;
        }
    }

    /// Frames that count as delivered once: in order and from a real sender.
    pub fn delivered(&self) -> u64 {
        self.in_order.iter().sum()
    }

    /// Sequence numbers skipped: a later message from the same sender arrived, this
    /// one never did.
    pub fn lost(&self) -> u64 {
        self.next
            .iter()
            .zip(&self.in_order)
            .map(|(n, c)| n - c)
            .sum()
    }

    /// Messages sent (`sent[s]` by sender `s`) after the last one this receiver got:
    /// still in flight when the run ended.
    pub fn unfinished(&self, sent: &[u64]) -> u64 {
        self.next
            .iter()
            .zip(sent)
            .map(|(n, s)| s.saturating_sub(*n))
            .sum()
    }
}

/// Loss over every receiver of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LossReport {
    /// Deliveries the run should have produced: messages sent × receivers.
    pub expected: u64,
    /// Deliveries that arrived once and in order.
    pub delivered: u64,
    /// Deliveries that never came although later messages from the same sender did.
    /// Must be 0.
    pub lost: u64,
    /// Deliveries still outstanding when a time bound ended the run (the tail after
    /// each receiver's last arrival); 0 for a run that finished.
    pub unfinished: u64,
    /// Duplicates and reorderings.
    pub out_of_order: u64,
    /// Frames claiming an unknown sender.
    pub foreign: u64,
}

impl LossReport {
    /// Sums `receivers`, given that sender `s` sent `sent[s]` messages, each to every
    /// receiver.
    pub fn tally<'a>(
        sent: &[u64],
        receivers: impl IntoIterator<Item = &'a ReceiverLoss>,
    ) -> LossReport {
        let mut r = LossReport::default();
        let mut count = 0u64;
        for rx in receivers {
            count += 1;
            r.delivered += rx.delivered();
            r.lost += rx.lost();
            r.unfinished += rx.unfinished(sent);
            r.out_of_order += rx.out_of_order;
            r.foreign += rx.foreign;
        }
        r.expected = sent.iter().sum::<u64>() * count;
        r
    }
}

/// Send times of a fixed-rate sender. Latency is measured from the time a message was
/// *meant* to leave, not when the sender got round to it, so a stall (in the sender,
/// the server or the network) shows in the results instead of silently thinning the
/// samples (coordinated omission).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Offset of message 0 from the run's clock origin, in nanoseconds.
    pub start_ns: u64,
    /// Interval between messages, in nanoseconds (at least 1).
    pub interval_ns: u64,
}

impl Schedule {
    /// `rate_hz` messages per second starting at `start_ns`.
    pub fn new(start_ns: u64, rate_hz: f64) -> Schedule {
        let interval = if rate_hz > 0.0 {
            (1e9 / rate_hz).round().max(1.0) as u64
        } else {
            u64::MAX
        };
        Schedule {
            start_ns,
            interval_ns: interval,
        }
    }

    /// When message `k` is due.
    pub fn due_ns(&self, k: u64) -> u64 {
        self.start_ns
            .saturating_add(k.saturating_mul(self.interval_ns))
    }

    /// The latency to report for message `k` that arrived at `arrived_ns`: measured
    /// from when it was due, however late it was actually sent.
    pub fn latency_ns(&self, k: u64, arrived_ns: u64) -> u64 {
        arrived_ns.saturating_sub(self.due_ns(k))
    }
}

/// The median of `values` (the mean of the middle two for an even count); `None` when
/// empty. NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_every_sample() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        for us in 1..=100u64 {
            a.record_ns(us * 1000);
        }
        for _ in 0..100 {
            b.record_ns(5_000_000);
        }
        let mut all = a.clone();
        all.merge(&b);
        assert_eq!(all.count(), 200);
        let s = all.summary().unwrap();
        // Half the samples are 1..100 µs, the other half 5 ms.
        assert!(s.p50_us <= 100.5, "{s:?}");
        assert!((s.p90_us - 5000.0).abs() < 5.0, "{s:?}");
        assert!((s.max_us - 5000.0).abs() < 5.0, "{s:?}");
        // Merging an empty histogram changes nothing.
        all.merge(&Latency::new());
        assert_eq!(all.count(), 200);
        assert!(Latency::new().summary().is_none());
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut l = Latency::new();
        l.record_ns(0);
        l.record_ns(u64::MAX);
        l.record(Duration::from_secs(3600));
        assert_eq!(l.count(), 3);
        assert!(l.quantile_ns(1.0) >= MAX_LATENCY_NS - MAX_LATENCY_NS / 500);
    }

    #[test]
    fn loss_accounting() {
        let mut rx = ReceiverLoss::new(2);
        for seq in [0, 1, 2, 4] {
            rx.on_tick(0, seq);
        }
        rx.on_tick(1, 0);
        rx.on_tick(0, 4); // duplicate
        rx.on_tick(0, 3); // late: counted out of order, and 3 stays a gap
        rx.on_tick(7, 1); // no such sender
        assert_eq!(rx.received, 8);
        assert_eq!(rx.out_of_order, 2);
        assert_eq!(rx.foreign, 1);
        assert_eq!(rx.delivered(), 5);
        assert_eq!(rx.lost(), 1);
        // Sender 0 sent 7 (5 and 6 never came: the tail), sender 1 sent 1.
        assert_eq!(rx.unfinished(&[7, 1]), 2);

        let mut perfect = ReceiverLoss::new(2);
        for seq in 0..7 {
            perfect.on_tick(0, seq);
        }
        perfect.on_tick(1, 0);
        let r = LossReport::tally(&[7, 1], [&rx, &perfect]);
        assert_eq!(r.expected, 16);
        assert_eq!(r.delivered, 13);
        assert_eq!(r.lost, 1);
        assert_eq!(r.unfinished, 2);
        assert_eq!(r.out_of_order, 2);
        assert_eq!(r.foreign, 1);
        assert_eq!(r.expected, r.delivered + r.lost + r.unfinished);
        // A complete run: nothing lost, nothing outstanding.
        let r = LossReport::tally(&[7, 1], [&perfect]);
        assert_eq!(
            (r.lost, r.unfinished, r.delivered, r.expected),
            (0, 0, 8, 8)
        );
        // No receivers: nothing expected.
        assert_eq!(LossReport::tally(&[5], []).expected, 0);
    }

    #[test]
    fn schedule_charges_stalls_to_latency() {
        // 30 Hz from t = 1 s.
        let s = Schedule::new(1_000_000_000, 30.0);
        assert_eq!(s.interval_ns, 33_333_333);
        assert_eq!(s.due_ns(0), 1_000_000_000);
        assert_eq!(s.due_ns(3), 1_099_999_999);
        // Message 10 was due at 1.3333 s; the sender stalled and only sent it at 1.5 s,
        // and it arrived 1 ms later: the reported latency includes the stall.
        let due = s.due_ns(10);
        let arrived = 1_501_000_000;
        assert_eq!(s.latency_ns(10, arrived), arrived - due);
        assert!(s.latency_ns(10, arrived) > 160_000_000);
        // Arriving "before" it was due (clock skew) reports 0, not a wrap-around.
        assert_eq!(s.latency_ns(10, 0), 0);
        assert_eq!(Schedule::new(0, 0.0).interval_ns, u64::MAX);
    }

    #[test]
    fn corrected_recording_backfills_a_stall() {
        // A closed loop that meant to run every 1 ms saw one 10 ms response: the 9
        // operations it failed to issue are back-filled (9, 8, … 1 ms).
        let mut l = Latency::new();
        l.record_corrected(10_000_000, 1_000_000);
        assert_eq!(l.count(), 10);
        let mut plain = Latency::new();
        plain.record_corrected(500_000, 1_000_000);
        assert_eq!(plain.count(), 1);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
