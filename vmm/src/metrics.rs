//! Named counters that vCPU threads and devices bump and the control API reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fixed set of named counters.
#[derive(Debug, Default)]
pub struct Counters {
    names: Vec<&'static str>,
    values: Vec<AtomicU64>,
}

impl Counters {
    pub fn new(names: &[&'static str]) -> Arc<Self> {
        Arc::new(Self {
            names: names.to_vec(),
            values: names.iter().map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Adds `n` to counter `index` (an index into the names given to `new`).
    pub fn add(&self, index: usize, n: u64) {
        if let Some(v) = self.values.get(index) {
            v.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.names
            .iter()
            .zip(&self.values)
            .map(|(n, v)| ((*n).to_owned(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Sums snapshots counter by counter (the vCPUs' exit counters into one map).
pub fn sum<'a>(all: impl IntoIterator<Item = &'a Counters>) -> BTreeMap<String, u64> {
    let mut total = BTreeMap::new();
    for c in all {
        for (k, v) in c.snapshot() {
            *total.entry(k).or_insert(0) += v;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_by_index_and_ignore_unknown_indices() {
        let c = Counters::new(&["a", "b"]);
        c.add(1, 5);
        c.add(1, 2);
        c.add(9, 1);
        let s = c.snapshot();
        assert_eq!((s["a"], s["b"]), (0, 7));
    }

    #[test]
    fn sum_adds_counters_of_the_same_name() {
        let a = Counters::new(&["x", "y"]);
        let b = Counters::new(&["x", "y"]);
        a.add(0, 1);
        b.add(0, 2);
        b.add(1, 3);
        let t = sum([&*a, &*b]);
        assert_eq!((t["x"], t["y"]), (3, 3));
    }
}
