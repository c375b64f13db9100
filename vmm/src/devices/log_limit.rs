//! A budget for log lines a guest can trigger (a malformed packet, a bad status write): a
//! burst of lines per window, then silence until the window ends, with the count of the lines
//! left out reported on the next one, so a hostile guest cannot flood the VMM's log.

use std::time::{Duration, Instant};

/// Lines allowed per window.
const BURST: u32 = 10;
/// Length of a window.
const WINDOW: Duration = Duration::from_secs(10);

/// One budget; each place that logs on a guest's behalf keeps its own (or a device shares one).
#[derive(Debug, Default)]
pub struct LogLimit {
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimit {
    pub const fn new() -> Self {
        Self {
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged now: `Some(n)`, with `n` lines left out before it, or
    /// `None` (the line is counted as left out).
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= WINDOW);
        if fresh {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= BURST {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.in_window += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_counted_until_the_window_ends() {
        let mut limit = LogLimit::new();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(limit.allow_at(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(limit.allow_at(t0 + WINDOW / 2), None);
        }
        assert_eq!(
            limit.allow_at(t0 + WINDOW),
            Some(1000),
            "reports the lines left out"
        );
        assert_eq!(limit.allow_at(t0 + WINDOW), Some(0));
    }
}
