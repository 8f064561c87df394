//! Times the engine on a minimal line with near-empty tables (no Python needed):
//! `cargo run --release --example engine`.
use consumer_native::engine::Scratch;
use consumer_native::tables::*;
use std::time::Instant;

fn main() {
    let mut names = Names::default();
    let words: Vec<u16> = [
        "Delivered",
        "Deferred",
        "Bounce",
        "provider",
        "rule",
        "enhancedCode",
        "replyCode",
        "fallback",
        "SoftBounceAutoReply",
        "SoftBounceUndetermined",
        "UnhandledState",
        "suppress",
        "other",
    ]
    .iter()
    .map(|w| names.get(w))
    .collect();
    let blocked = names.get("Blocked");
    let size = names.words.len();
    let tables = Tables {
        names: names.words,
        rules: vec![],
        rule_index: PhraseIndex::new(vec![]).unwrap(),
        enhanced: FastMap::default(),
        reply: FastMap::default(),
        final_status: vec![Some(blocked); size],
        temporary: (0..size as u16).map(Some).collect(),
        firm: vec![false; size],
        policy_version: "abc".into(),
        mailbox_domains: FastMap::default(),
        mailbox_hosts: FastMap::default(),
        mailbox_tokens: PhraseIndex::new(vec![]).unwrap(),
        mailbox_token_groups: vec![],
        vocabulary: Vocabulary {
            delivered: words[0],
            deferred: words[1],
            bounce: words[2],
            by_provider: words[3],
            by_rule: words[4],
            by_enhanced: words[5],
            by_reply: words[6],
            by_fallback: words[7],
            auto_reply: words[8],
            undetermined: words[9],
            unhandled: words[10],
            suppress: words[11],
            other: words[12],
        },
        actions: [("failed".to_string(), Kind::Failed)].into_iter().collect(),
        keys: [
            "finalRecipient",
            "originalRecipient",
            "action",
            "status",
            "diagnosticCode",
            "remoteMta",
            "lastAttemptDate",
            "reportingMta",
            "messageId",
            "finalLogId",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        provider: "dsn".into(),
        schema_version: 1,
        unicode: consumer_native::text::Unicode::ascii_only(),
        limits: Limits {
            match_chars: 4096,
            scan_chars: 1024,
            text_chars: 8192,
            ident_chars: 256,
            email_chars: 254,
            min_ts: 946_684_800,
            max_ts: 4_102_444_800,
            line_bytes: 65536,
        },
    };
    let batch = tables.batch("2025", 1 << 20);
    let lines: Vec<String> = (0..1000).map(|i| format!(r#"{{"finalRecipient":"rfc822; user{i}.99@example{}.net","action":"failed","finalLogId":"abc"}}"#, i % 97)).collect();
    let mut scratch = Scratch::default();
    let (mut events, mut updates) = (Vec::new(), Vec::new());
    let n = 200;
    let t = Instant::now();
    let mut ok = 0;
    for _ in 0..n {
        for line in &lines {
            events.clear();
            updates.clear();
            ok += tables
                .process(
                    line.as_bytes(),
                    &batch,
                    &mut scratch,
                    &mut events,
                    &mut updates,
                )
                .is_some() as usize;
        }
    }
    println!(
        "minimal+log: {:.0} ns/line ({ok} ok)",
        t.elapsed().as_nanos() as f64 / (n * lines.len()) as f64
    );
}
