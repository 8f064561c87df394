//! Micro-benchmarks of the engine's parts that need no rule tables (hash, JSON scan,
//! tokens, codes, dates): `cargo run --release --example micro`.
use std::time::Instant;
fn main() {
    let data = vec![b'x'; 300];
    let mut out = Vec::new();
    let n = 200_000;
    let t = Instant::now();
    for i in 0..n {
        out.clear();
        consumer_native::blake2b::hex_digest(&data[..100 + (i % 3)], 16, &mut out);
    }
    println!(
        "blake2b 100B: {:.0} ns",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    let line = r#"{"finalRecipient":"rfc822; user0.993908@example0.net","action":"failed","diagnosticCode":"smtp;554 5.7.1 Spam message rejected; If this is not spam contact abuse <user0.993908@example0.net> id=6513269e0d37 [198.51.100.0]","remoteMta":"dns; mx0.example0.net","lastAttemptDate":"Fri, 14 Mar 2025 09:12:05 +0000","reportingMta":"dns; mta-out-3.example.com","messageId":"<6513269e0d37@example.com>"}"#;
    let keys = [
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
    ];
    let t = Instant::now();
    let mut slots: [Option<consumer_native::json::Value>; 10] = Default::default();
    let mut ok = 0;
    for _ in 0..n {
        ok += consumer_native::json::flat_object(std::hint::black_box(line), &keys, &mut slots)
            as usize;
    }
    println!(
        "json: {:.0} ns {ok}",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    let mut tokens = consumer_native::text::Tokens::default();
    let diag = b"smtp;554 5.7.1 Spam message rejected; If this is not spam contact abuse <user0.993908@example0.net> id=6513269e0d37 [198.51.100.0]";
    let t = Instant::now();
    for _ in 0..n {
        tokens.fill(std::hint::black_box(diag));
    }
    println!("tokens: {:.0} ns", t.elapsed().as_nanos() as f64 / n as f64);
    let t = Instant::now();
    let mut s = 0u32;
    for _ in 0..n {
        s += consumer_native::text::reply_code(std::hint::black_box(diag)).unwrap_or(0) as u32;
    }
    println!(
        "reply: {:.0} ns {s}",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    let mut e = String::new();
    let t = Instant::now();
    for _ in 0..n {
        s += consumer_native::text::enhanced_code(std::hint::black_box(diag), &mut e) as u32;
    }
    println!(
        "enhanced: {:.0} ns {s}",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    let mut o = String::new();
    let t = Instant::now();
    for _ in 0..n {
        o.clear();
        s += consumer_native::time::parse_time(
            std::hint::black_box("Fri, 14 Mar 2025 09:12:05 +0000"),
            0,
            1 << 40,
            &mut o,
        ) as u32;
    }
    println!(
        "time: {:.0} ns {s}",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}
