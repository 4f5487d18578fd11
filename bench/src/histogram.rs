//! A latency histogram that workers fill and the coordinator merges: log-linear buckets (32 per
//! power of two, so about 3 % resolution), fixed size, sent over pipes as sparse pairs.

use serde::{Deserialize, Serialize};

/// Linear below this many microseconds; then `SUB` buckets per power of two.
const SUB: u64 = 32;
const SUB_BITS: u32 = 5;
/// Powers of two covered above the linear range: up to about 2^40 µs (12 days).
const OCTAVES: usize = 36;
const BUCKETS: usize = SUB as usize + OCTAVES * SUB as usize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

/// The wire form: `(bucket, count)` for non-empty buckets only.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sparse {
    pub buckets: Vec<(u32, u64)>,
    pub max: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let octave = 63 - v.leading_zeros() - SUB_BITS; // v >> octave is in SUB..2*SUB
    let i = SUB as usize * (octave as usize + 1) + ((v >> octave) - SUB) as usize;
    i.min(BUCKETS - 1)
}

/// The largest value that falls in bucket `i` (what a percentile reports: an upper bound).
fn bucket_high(i: usize) -> u64 {
    if i < SUB as usize {
        return i as u64;
    }
    let octave = (i / SUB as usize - 1) as u32;
    let base = (SUB + (i as u64 % SUB)) << octave;
    base + (1u64 << octave) - 1
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        self.counts[bucket(micros)] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1), as the upper edge of its bucket, capped by the maximum
    /// seen; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(i).min(self.max);
            }
        }
        self.max
    }

    pub fn to_sparse(&self) -> Sparse {
        let buckets =
            self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| (i as u32, *c)).collect();
        Sparse { buckets, max: self.max }
    }

    pub fn from_sparse(s: &Sparse) -> Histogram {
        let mut h = Histogram::default();
        for &(i, c) in &s.buckets {
            if let Some(slot) = h.counts.get_mut(i as usize) {
                *slot += c;
                h.total += c;
            }
        }
        h.max = s.max;
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_whose_upper_edge_is_at_least_the_value() {
        for v in (0..5000).chain([1 << 20, (1 << 20) + 12345, 1 << 39]) {
            let i = bucket(v);
            assert!(bucket_high(i) >= v, "v {v} bucket {i} high {}", bucket_high(i));
            assert!(i == 0 || bucket_high(i - 1) < v, "v {v} also fits bucket {}", i - 1);
        }
    }

    #[test]
    fn quantiles_are_within_the_bucket_resolution() {
        let mut h = Histogram::default();
        for v in 1..=10_000 {
            h.record(v);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 5000.0 - 1.0).abs() < 0.04, "p50 {p50}");
        assert!((p99 / 9900.0 - 1.0).abs() < 0.04, "p99 {p99}");
        assert_eq!(h.quantile(1.0), 10_000);
    }

    #[test]
    fn sparse_round_trip_and_merge_keep_counts() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(3);
        a.record(70_000);
        b.record(3);
        let mut m = Histogram::from_sparse(&a.to_sparse());
        m.merge(&b);
        assert_eq!((m.count(), m.max()), (3, 70_000));
        assert_eq!(m.quantile(0.5), 3);
    }
}
