//! Which counters a request or an interval moves. Names are Envoy stat names (proxy-wasm
//! `define_metric`), listed in the README. Label values come only from fixed lists, so a client
//! cannot grow the number of stats by sending made-up methods.

use std::borrow::Cow;

use crate::audit::{Record, DENY};

/// MCP methods with a counter of their own; any other method counts as `other`.
const KNOWN_METHODS: [&str; 22] = [
    "initialize", "ping", "server/discover", "subscriptions/listen", "tools/list", "tools/call",
    "resources/list", "resources/read", "resources/templates/list", "resources/subscribe",
    "resources/unsubscribe", "prompts/list", "prompts/get", "completion/complete", "logging/setLevel",
    "tasks/get", "tasks/update", "tasks/cancel", "tasks/list", "notifications", "GET", "DELETE",
];

/// A method as one of the fixed names (`notifications`, `other`, or empty when absent).
pub fn known_method(method: &str) -> &'static str {
    let method = if method.starts_with("notifications/") { "notifications" } else { method };
    match KNOWN_METHODS.iter().find(|m| **m == method) {
        Some(m) => m,
        None if method.is_empty() => "",
        None => "other",
    }
}

/// A method as the audit record keeps it: one of the fixed names without a copy, else as sent.
pub fn method_text(method: &str) -> Cow<'static, str> {
    match KNOWN_METHODS.iter().find(|m| **m == method) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(method.to_string()),
    }
}

/// The counter label of a method.
pub fn method_label(method: &str) -> String {
    match known_method(method) {
        "" => "none".to_string(),
        m => m.replace('/', "_"),
    }
}

/// Counters one audited request increments.
pub fn request_counters(rec: &Record) -> Vec<String> {
    let mut names = vec![format!("mcp_gateway.requests.{}", rec.decision), format!("mcp_gateway.method.{}", method_label(&rec.method))];
    if rec.decision == DENY {
        // Reasons are the filter's own fixed codes.
        names.push(format!("mcp_gateway.denied.{}", rec.reason));
    }
    if rec.decision != DENY {
        names.push(format!("mcp_gateway.delegation_depth.{}", rec.depth.min(MAX_DEPTH_LABEL)));
    }
    names
}

/// Depths above this share one counter.
const MAX_DEPTH_LABEL: u32 = 8;

/// What one audited request is counted under: fixed strings and a depth.
type Key = (&'static str, &'static str, &'static str, u32);

/// Per-request counts of one worker since the last flush: names are built and the host calls
/// made once per tick, not once per request. Between two ticks a worker sees a handful of
/// distinct keys, so counting is a short scan comparing string addresses (a key whose strings
/// sit at other addresses only takes another entry: `drain` adds entries up by name).
#[derive(Debug, Default)]
pub struct Pending {
    counts: Vec<(Key, u64)>,
}

fn same(a: &Key, b: &Key) -> bool {
    std::ptr::eq(a.0, b.0) && std::ptr::eq(a.1, b.1) && std::ptr::eq(a.2, b.2) && a.3 == b.3
}

impl Pending {
    /// Counts one audited request.
    pub fn record(&mut self, rec: &Record) {
        // A borrowed method is one of the fixed names already.
        let method = match &rec.method {
            Cow::Borrowed(m) => m,
            Cow::Owned(m) => known_method(m),
        };
        let key = (rec.decision, method, rec.reason, rec.depth);
        match self.counts.iter_mut().find(|(k, _)| same(k, &key)) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((key, 1)),
        }
    }

    /// Everything counted since the last drain, by counter name.
    pub fn drain(&mut self) -> Vec<(String, u64)> {
        let mut totals: std::collections::HashMap<String, u64> = Default::default();
        for ((decision, method, reason, depth), n) in self.counts.drain(..) {
            let rec = Record { decision, method: Cow::Borrowed(method), reason, depth, ..Default::default() };
            for name in request_counters(&rec) {
                *totals.entry(name).or_default() += n;
            }
        }
        totals.into_iter().collect()
    }
}

/// Cumulative event counts of one worker, flushed to Envoy as deltas.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub verify_hit: u64,
    pub verify_miss: u64,
    pub mint_hit: u64,
    pub mint_miss: u64,
    pub minted: u64,
}

impl Tally {
    /// (counter, increment) since `before`, leaving out zeros.
    pub fn since(&self, before: &Tally) -> Vec<(&'static str, u64)> {
        [
            ("mcp_gateway.verify_cache.hit", self.verify_hit - before.verify_hit),
            ("mcp_gateway.verify_cache.miss", self.verify_miss - before.verify_miss),
            ("mcp_gateway.mint_cache.hit", self.mint_hit - before.mint_hit),
            ("mcp_gateway.mint_cache.miss", self.mint_miss - before.mint_miss),
            ("mcp_gateway.tokens_minted", self.minted - before.minted),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::ALLOW;

    #[test]
    fn made_up_methods_share_one_counter() {
        assert_eq!(method_label("tools/call"), "tools_call");
        assert_eq!(method_label("notifications/initialized"), "notifications");
        assert_eq!(method_label("x/../../evil"), "other");
    }

    #[test]
    fn denials_count_their_reason() {
        let rec = Record { decision: DENY, reason: "scope_missing", method: "tools/call".into(), ..Default::default() };
        assert_eq!(request_counters(&rec), vec!["mcp_gateway.requests.deny", "mcp_gateway.method.tools_call", "mcp_gateway.denied.scope_missing"]);
        let rec = Record { decision: ALLOW, depth: 2, ..Default::default() };
        assert_eq!(request_counters(&rec)[2], "mcp_gateway.delegation_depth.2");
    }

    #[test]
    fn pending_counts_drain_once() {
        let mut p = Pending::default();
        let rec = Record { decision: ALLOW, depth: 1, method: "tools/call".into(), ..Default::default() };
        p.record(&rec);
        p.record(&rec);
        let mut drained = p.drain();
        drained.sort();
        assert!(drained.contains(&("mcp_gateway.requests.allow".to_string(), 2)));
        assert!(p.drain().is_empty());
    }

    #[test]
    fn equal_keys_at_other_addresses_add_up_by_name() {
        let mut p = Pending::default();
        let borrowed = Record { decision: ALLOW, depth: 1, method: Cow::Borrowed("tools/call"), ..Default::default() };
        let leaked: &'static str = Box::leak(String::from("allow").into_boxed_str());
        let owned = Record { decision: leaked, depth: 1, method: Cow::Owned("tools/call".into()), ..Default::default() };
        let made_up = Record { decision: ALLOW, depth: 1, method: Cow::Owned("x/made-up".into()), ..Default::default() };
        for rec in [&borrowed, &owned, &made_up, &borrowed] {
            p.record(rec);
        }
        let drained: std::collections::HashMap<String, u64> = p.drain().into_iter().collect();
        assert_eq!(drained["mcp_gateway.requests.allow"], 4);
        assert_eq!(drained["mcp_gateway.method.tools_call"], 3);
        assert_eq!(drained["mcp_gateway.method.other"], 1);
    }

    #[test]
    fn tally_reports_only_what_moved() {
        let before = Tally::default();
        let after = Tally { verify_hit: 3, minted: 1, ..before };
        assert_eq!(after.since(&before), vec![("mcp_gateway.verify_cache.hit", 3), ("mcp_gateway.tokens_minted", 1)]);
    }
}
