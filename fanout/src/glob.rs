//! Wildcard matching for subscription patterns (`PROTOCOL.md` §3).
//!
//! Sits on the fan-out side of the data path: when a publication reaches a shard, its
//! [`TopicIndex`](crate::index::TopicIndex) asks this module which glob subscriptions match the
//! topic. `*` matches any run of characters, possibly empty; `?` matches exactly one Unicode
//! scalar value. There is no escape: a topic that contains `*` or `?` cannot be published
//! (the protocol layer rejects it), so no pattern ever needs to match them literally.
//!
//! Validating names (length, control characters, spaces) is the protocol layer's job; these
//! functions accept any string, the empty one included.

/// Whether `pattern` holds a wildcard (`*` or `?`), i.e. whether it must go through
/// [`glob_match`] rather than a plain string comparison.
pub fn has_wildcards(pattern: &str) -> bool {
    pattern.bytes().any(|b| b == b'*' || b == b'?')
}

/// Whether `topic` matches `pattern` as a whole.
///
/// Runs in O(`pattern.len()` · `topic.len()`) time at worst and allocates nothing: on a
/// mismatch it returns only to the most recent `*`, letting it swallow one more character.
/// Retrying earlier stars is never needed, because a later star can absorb anything an
/// earlier one could have.
pub fn glob_match(pattern: &str, topic: &str) -> bool {
    if !has_wildcards(pattern) {
        return pattern == topic;
    }
    let (mut p, mut t) = (0, 0);
    // The pattern position just past the latest `*`, and where in the topic that star's run
    // currently ends. `None` until the first star is seen.
    let mut resume: Option<(usize, usize)> = None;
    loop {
        match (char_at(pattern, p), char_at(topic, t)) {
            (Some('*'), _) => {
                p += 1;
                resume = Some((p, t));
            }
            (Some(pc), Some(tc)) if pc == '?' || pc == tc => {
                p += pc.len_utf8();
                t += tc.len_utf8();
            }
            (None, None) => return true,
            _ => {
                // Mismatch: the latest star takes one more character, or nothing can match.
                let Some((star_end, run_end)) = resume else { return false };
                let Some(swallowed) = char_at(topic, run_end) else { return false };
                t = run_end + swallowed.len_utf8();
                p = star_end;
                resume = Some((p, t));
            }
        }
    }
}

/// The character starting at byte `at` of `s`, or `None` at the end.
///
/// `at` is always on a character boundary: callers only ever advance by `len_utf8`.
fn char_at(s: &str, at: usize) -> Option<char> {
    s[at..].chars().next()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn pattern_without_wildcards_matches_only_itself() {
        assert!(glob_match("user:1:events", "user:1:events"));
        assert!(!glob_match("user:1:events", "user:1:event"));
        assert!(!glob_match("user:1", "user:1:events"));
    }

    #[test]
    fn star_in_the_middle_matches_one_segment_or_more() {
        assert!(glob_match("user:*:events", "user:42:events"));
        assert!(glob_match("user:*:events", "user::events"));
        assert!(glob_match("user:*:events", "user:a:b:events"));
        assert!(!glob_match("user:*:events", "user:42:event"));
        assert!(!glob_match("user:*:events", "admin:42:events"));
    }

    #[test]
    fn lone_star_matches_everything_including_empty() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("*", ""));
        assert!(glob_match("**", "x"));
    }

    #[test]
    fn leading_and_trailing_stars_anchor_nothing() {
        assert!(glob_match("*:events", "user:1:events"));
        assert!(!glob_match("*:events", "user:1:events:x"));
        assert!(glob_match("user:*", "user:"));
        assert!(glob_match("user:*", "user:1:events"));
        assert!(!glob_match("user:*", "use"));
        assert!(glob_match("*1*", "user:1:events"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(glob_match("room?", "room1"));
        assert!(!glob_match("room?", "room"));
        assert!(!glob_match("room?", "room12"));
        assert!(glob_match("??", "ab"));
        assert!(!glob_match("?", ""));
    }

    #[test]
    fn question_mark_matches_one_multibyte_scalar() {
        assert!(glob_match("caf?", "café"));
        assert!(glob_match("?-?", "日-本"));
        assert!(!glob_match("caf??", "café"));
        assert!(glob_match("*é", "café"));
        assert!(glob_match("🎉*?", "🎉ü"));
    }

    #[test]
    fn empty_pattern_and_topic_are_handled() {
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(!glob_match("a*", ""));
    }

    #[test]
    fn backtracks_past_a_false_start() {
        assert!(glob_match("*ab", "aab"));
        assert!(glob_match("a*b?d", "axxbybcd"));
        assert!(glob_match("a*b?d", "axxbyd"));
        assert!(!glob_match("a*b?d", "axxbd"));
    }

    #[test]
    fn pathological_pattern_finishes_quickly() {
        let topic = "a".repeat(10_000);
        let started = Instant::now();
        assert!(!glob_match("*a*a*a*a*a*a*b", &topic));
        assert!(glob_match("*a*a*a*a*a*a*", &topic));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn detects_wildcards() {
        assert!(has_wildcards("a*"));
        assert!(has_wildcards("?"));
        assert!(!has_wildcards("user:1:events"));
        assert!(!has_wildcards(""));
    }
}
