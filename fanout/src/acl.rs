//! Per-connection topic access control (PROTOCOL.md §2, the `wse_topics` claim).
//!
//! Place: beside the topic index. The shard compiles a connection's rules once (from its
//! token, or from the application's `set_topic_acl`) and asks three questions: may this
//! connection subscribe to a name or pattern, may it receive a publication of a topic, may
//! it publish to a topic. Deny always wins over allow.
//!
//! Wildcard subscriptions cannot be checked exactly against glob rules (whether one glob's
//! language is contained in another's is costly to decide), so the check here is
//! conservative and the shard adds a second one: a pattern may be subscribed when its text
//! matches an allow glob and no deny glob, and every delivery is filtered with
//! [`TopicAcl::may_receive`], so a pattern never delivers a topic the rules deny.

use wse_protocol::auth::TopicRules;

use crate::glob::glob_match;

/// A connection's compiled topic rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicAcl {
    /// Globs a topic must match to be received; empty allows every topic not denied.
    allow: Vec<Box<str>>,
    /// Globs that refuse a topic whatever `allow` says.
    deny: Vec<Box<str>>,
    /// Globs of the topics the connection may publish to.
    publish: Vec<Box<str>>,
}

impl TopicAcl {
    /// Compiles `rules`.
    pub fn new(rules: &TopicRules) -> TopicAcl {
        let boxed = |list: &[String]| list.iter().map(|g| g.as_str().into()).collect();
        TopicAcl {
            allow: boxed(&rules.allow),
            deny: boxed(&rules.deny),
            publish: boxed(&rules.publish),
        }
    }

    /// Whether the connection may subscribe to `pattern` (a topic name or a glob). See the
    /// module docs for why this is only half of the check for globs.
    pub fn may_subscribe(&self, pattern: &str) -> bool {
        self.may_receive(pattern)
    }

    /// Whether a publication of the concrete `topic` may reach the connection.
    pub fn may_receive(&self, topic: &str) -> bool {
        !matches_any(&self.deny, topic)
            && (self.allow.is_empty() || matches_any(&self.allow, topic))
    }

    /// Whether the connection may publish to `topic`: a `publish` glob matches and no deny
    /// glob does.
    pub fn may_publish(&self, topic: &str) -> bool {
        matches_any(&self.publish, topic) && !matches_any(&self.deny, topic)
    }
}

fn matches_any(globs: &[Box<str>], topic: &str) -> bool {
    globs.iter().any(|glob| glob_match(glob, topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(allow: &[&str], deny: &[&str], publish: &[&str]) -> TopicAcl {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
        TopicAcl::new(&TopicRules {
            allow: owned(allow),
            deny: owned(deny),
            publish: owned(publish),
        })
    }

    #[test]
    fn allow_list_limits_what_is_received() {
        let acl = acl(&["chat.*", "news"], &[], &[]);
        assert!(acl.may_receive("chat.room"));
        assert!(acl.may_receive("news"));
        assert!(!acl.may_receive("sports"));
        assert!(!acl.may_receive("newsflash"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let acl = acl(&["chat.*"], &["chat.secret", "*.admin"], &["chat.*"]);
        assert!(!acl.may_receive("chat.secret"));
        assert!(!acl.may_receive("chat.admin"));
        assert!(!acl.may_publish("chat.secret"));
        assert!(acl.may_publish("chat.room"));
    }

    #[test]
    fn empty_allow_list_allows_everything_not_denied() {
        let acl = acl(&[], &["private.*"], &[]);
        assert!(acl.may_receive("anything"));
        assert!(!acl.may_receive("private.x"));
    }

    #[test]
    fn publishing_needs_a_publish_glob() {
        let acl = acl(&[], &[], &["orders.?"]);
        assert!(acl.may_publish("orders.1"));
        assert!(!acl.may_publish("orders.12"));
        assert!(!acl.may_publish("chat"));
        assert!(!TopicAcl::default().may_publish("chat"));
    }

    #[test]
    fn glob_subscriptions_are_checked_by_their_text() {
        let acl = acl(&["chat.*"], &["chat.secret"], &[]);
        assert!(acl.may_subscribe("chat.*"));
        assert!(acl.may_subscribe("chat.r?om"));
        assert!(!acl.may_subscribe("*"));
        assert!(!acl.may_subscribe("chat.secret"));
    }
}
