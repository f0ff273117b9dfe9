use chrono::{DateTime, TimeDelta, Utc};
use std::time::Duration;

/// How long a thread can be continued and how many turns it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationPolicy {
    /// Sliding window after the last change in which a thread can still be continued.
    pub timeout: TimeDelta,
    /// Turns a thread may hold.
    pub max_turns: u32,
}

impl ConversationPolicy {
    pub fn expires_at(&self, updated_at: DateTime<Utc>) -> DateTime<Utc> {
        updated_at + self.timeout
    }

    pub fn is_expired(&self, updated_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        now >= self.expires_at(updated_at)
    }

    /// Threads last changed at or before this instant are expired at `now`.
    pub fn expiry_cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.timeout
    }

    pub fn turns_remaining(&self, turn_count: u32) -> u32 {
        self.max_turns.saturating_sub(turn_count)
    }

    /// How long a cached thread document stays correct. A live thread's document says
    /// `expired: false`, so it may only be served until the thread expires; an expired
    /// thread can no longer change, so its document is good for a full window.
    pub fn cache_ttl(&self, updated_at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
        let left = self.expires_at(updated_at) - now;
        let ttl = if left > TimeDelta::zero() { left } else { self.timeout };
        ttl.to_std().unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ConversationPolicy {
        ConversationPolicy { timeout: TimeDelta::hours(1), max_turns: 3 }
    }

    #[test]
    fn expiry_is_sliding_from_the_last_change() {
        let updated = Utc::now();
        assert!(!policy().is_expired(updated, updated + TimeDelta::minutes(59)));
        assert!(policy().is_expired(updated, updated + TimeDelta::hours(1)));
        assert_eq!(policy().expiry_cutoff(updated + TimeDelta::hours(1)), updated);
    }

    #[test]
    fn cache_ttl_ends_when_the_thread_expires() {
        let updated = Utc::now();
        let now = updated + TimeDelta::minutes(45);
        assert_eq!(policy().cache_ttl(updated, now), Duration::from_secs(15 * 60));
        let later = updated + TimeDelta::hours(2);
        assert_eq!(policy().cache_ttl(updated, later), Duration::from_secs(3600));
    }

    #[test]
    fn turns_remaining_never_underflows() {
        assert_eq!(policy().turns_remaining(1), 2);
        assert_eq!(policy().turns_remaining(5), 0);
    }
}
