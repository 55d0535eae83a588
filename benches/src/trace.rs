//! The trace format of `docs/TRACES.md`, parsed strictly.
//!
//! ```text
//! # comment
//! [<rank>] A <hex address> <decimal length>   acquire then release a registration
//! [<rank>] U <hex address> <decimal length>   the range was unmapped / invalidated
//! ```
//!
//! The hex address may carry a `0x` prefix. A malformed line is an error
//! naming the file, the line and the reason; nothing is skipped silently.

use std::collections::BTreeMap;
use std::path::Path;
use umn::AddrRange;

/// What a record asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Acquire then release a registration of the range.
    Acquire,
    /// The range was unmapped or invalidated.
    Unmap,
}

/// One trace record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// What happened.
    pub kind: Kind,
    /// The range, in the traced process's addresses.
    pub range: AddrRange,
}

/// A parse failure: file, 1-based line, reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ParseError {
    /// The file (or `<builtin:NAME>`).
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// A parsed trace: records per rank (rank 0 when the file has no rank
/// column), in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// Name for reports.
    pub name: String,
    /// rank → records.
    pub ranks: BTreeMap<u32, Vec<Record>>,
}

impl Trace {
    /// Read and parse a trace file.
    ///
    /// # Errors
    /// I/O errors, and [`ParseError`] for the first malformed line.
    pub fn read(path: &Path) -> anyhow::Result<Trace> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read trace: {e}", path.display()))?;
        Ok(Self::parse(&path.display().to_string(), &text)?)
    }

    /// Parse trace text. Either every record has a rank column or none has.
    ///
    /// # Errors
    /// [`ParseError`] for the first malformed line.
    pub fn parse(name: &str, text: &str) -> Result<Trace, ParseError> {
        let mut ranks: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        let mut ranked: Option<bool> = None;
        for (i, raw) in text.lines().enumerate() {
            let err = |reason: String| ParseError {
                file: name.to_string(),
                line: i + 1,
                reason,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (rank, rest) = match fields.len() {
                3 => (None, &fields[..]),
                4 => {
                    let r = fields[0].parse::<u32>().map_err(|_| {
                        err(format!(
                            "rank {:?} is not a non-negative decimal integer",
                            fields[0]
                        ))
                    })?;
                    (Some(r), &fields[1..])
                }
                n => {
                    return Err(err(format!(
                        "expected `[rank] A|U <hex address> <decimal length>`, found {n} fields"
                    )));
                }
            };
            match ranked {
                None => ranked = Some(rank.is_some()),
                Some(r) if r != rank.is_some() => {
                    return Err(err("mixes records with and without a rank column".into()));
                }
                _ => {}
            }
            let kind = match rest[0] {
                "A" => Kind::Acquire,
                "U" => Kind::Unmap,
                k => return Err(err(format!("record type {k:?} is neither A nor U"))),
            };
            let hex = rest[1]
                .strip_prefix("0x")
                .or_else(|| rest[1].strip_prefix("0X"))
                .unwrap_or(rest[1]);
            let addr = u64::from_str_radix(hex, 16)
                .map_err(|_| err(format!("address {:?} is not hexadecimal", rest[1])))?;
            let len = rest[2]
                .parse::<u64>()
                .map_err(|_| err(format!("length {:?} is not a decimal integer", rest[2])))?;
            if addr == 0 {
                return Err(err("address is NULL".into()));
            }
            if len == 0 {
                return Err(err("length is zero".into()));
            }
            let range = AddrRange::from_start_len(addr, len).map_err(|e| err(e.to_string()))?;
            range.page_align().map_err(|e| err(e.to_string()))?;
            ranks
                .entry(rank.unwrap_or(0))
                .or_default()
                .push(Record { kind, range });
        }
        Ok(Trace {
            name: name.to_string(),
            ranks,
        })
    }

    /// Serialise in the trace format (with a rank column when there is more
    /// than one rank, or the one rank is not 0), so that [`Trace::parse`]
    /// gives this trace back.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let ranked = self.ranks.keys().any(|&r| r != 0);
        for (rank, recs) in &self.ranks {
            for r in recs {
                if ranked {
                    s.push_str(&format!("{rank} "));
                }
                let k = if r.kind == Kind::Acquire { 'A' } else { 'U' };
                s.push_str(&format!("{k} {:x} {}\n", r.range.start(), r.range.len()));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranks_comments_and_prefixes() {
        let t = Trace::parse("t", "# hi\nA 1000 4096\nU 0x2000 10 # tail\n\n").unwrap();
        assert_eq!(t.ranks[&0].len(), 2);
        assert_eq!(
            t.ranks[&0][1],
            Record {
                kind: Kind::Unmap,
                range: AddrRange::new(0x2000, 0x200a).unwrap()
            }
        );
        let t = Trace::parse("t", "0 A 1000 1\n1 A 1000 1\n").unwrap();
        assert_eq!(t.ranks.len(), 2);
        assert_eq!(
            Trace::parse("x", &t.to_text()).unwrap(),
            Trace {
                name: "x".into(),
                ..t
            }
        );
    }

    /// Found by the `trace` fuzz target: a trace whose only rank is not 0
    /// lost its rank column on the way back to text.
    #[test]
    fn single_nonzero_rank_survives_to_text() {
        let t = Trace::parse("t", "1 A 1000 1\n1 U 2000 5\n").unwrap();
        assert_eq!(Trace::parse("t", &t.to_text()).unwrap(), t);
        let t = Trace::parse("t", "A 1000 1\n").unwrap();
        assert_eq!(t.to_text(), "A 1000 1\n");
    }

    #[test]
    fn malformed_lines_name_file_line_and_reason() {
        let cases = [
            ("A 1000", "found 2 fields"),
            ("B 1000 1", "neither A nor U"),
            ("A xyz 1", "not hexadecimal"),
            ("A 1000 -1", "not a decimal integer"),
            ("A 1000 0", "length is zero"),
            ("A 0 10", "NULL"),
            ("A ffffffffffffffff 2", "overflows"),
            ("A fffffffffffff001 4095", "overflows"),
            ("x A 1000 1", "rank"),
        ];
        for (line, want) in cases {
            let e = Trace::parse("f.trace", &format!("A 1000 1\n{line}\n")).unwrap_err();
            assert_eq!((e.file.as_str(), e.line), ("f.trace", 2), "{line}");
            assert!(e.to_string().contains(want), "{line}: {e}");
        }
        let e = Trace::parse("f", "A 1000 1\n0 A 1000 1\n").unwrap_err();
        assert!(e.reason.contains("mixes"), "{e}");
    }
}
