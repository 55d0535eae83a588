//! The trace parser of `regcache-bench` (docs/TRACES.md) on arbitrary
//! text. Oracle: no panic; a malformed line is an error naming line
//! `1..=lines`; a parsed trace written back with `to_text` parses to the
//! same trace.

#![no_main]

use libfuzzer_sys::fuzz_target;
use regcache_bench::trace::Trace;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Trace::parse("fuzz", text) {
        Ok(t) => {
            let again = Trace::parse("fuzz", &t.to_text())
                .unwrap_or_else(|e| panic!("to_text wrote what parse refuses: {e}"));
            assert_eq!(again, t, "parse(to_text(t)) != t");
        }
        Err(e) => {
            assert!(
                e.line >= 1 && e.line <= text.lines().count(),
                "error names line {}",
                e.line
            );
        }
    }
});
