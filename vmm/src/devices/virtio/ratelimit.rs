//! Rate-limited logging for guest-triggered events.
//!
//! A hostile guest can produce bad descriptors or packets as fast as it can
//! notify a queue. Each log call site gets its own budget (a burst per
//! one-second window) so such a guest cannot flood the VMM's log or spend the
//! VMM's CPU on formatting; suppressed messages are counted and the count is
//! reported with the next message that gets through.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Messages allowed per call site per window.
pub const LOG_BURST: u32 = 10;
const WINDOW_MS: u64 = 1000;

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One call site's budget.
#[derive(Debug)]
pub struct RateLimiter {
    window: AtomicU64,
    count: AtomicU32,
    suppressed: AtomicU64,
}

impl RateLimiter {
    /// A limiter with a full budget.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self {
            window: AtomicU64::new(0),
            count: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Returns `Some(suppressed_since_last_allowed)` if a message may be
    /// logged now, `None` if this one is to be dropped.
    pub fn check(&self) -> Option<u64> {
        let window = now_ms() / WINDOW_MS + 1;
        if self.window.swap(window, Ordering::Relaxed) != window {
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(1, Ordering::Relaxed) < LOG_BURST {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// `log::warn!` with a per-call-site budget (see the module doc).
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMITER: $crate::devices::virtio::ratelimit::RateLimiter =
            $crate::devices::virtio::ratelimit::RateLimiter::new();
        if let Some(suppressed) = LIMITER.check() {
            if suppressed > 0 {
                log::warn!("{} ({} similar messages suppressed)", format_args!($($arg)+), suppressed);
            } else {
                log::warn!($($arg)+);
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_suppress() {
        let l = RateLimiter::new();
        let allowed = (0..100).filter(|_| l.check().is_some()).count();
        // A window boundary may fall inside the loop, allowing one more burst.
        assert!(allowed == LOG_BURST as usize || allowed == 2 * LOG_BURST as usize);
    }
}
