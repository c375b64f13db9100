//! What the benchmarks share.

/// The `p` quantile (0 to 1) of `v`, nearest rank; NaN for no samples.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n => v[((((n - 1) as f64) * p).round() as usize).min(n - 1)],
    }
}

pub mod sandbox_vm;
