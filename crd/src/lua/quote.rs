//! The one escaping function: every user string that reaches Lua goes through [`quote`].

/// Render `s` as a Lua string literal whose value is exactly `s`, whatever it contains.
///
/// The literal is single-quoted and ASCII-only: `\`, `'` and `"` are backslash-escaped, every
/// other byte outside printable ASCII (control characters including NUL, CR and LF, DEL, and every
/// byte of a non-ASCII UTF-8 sequence) is written as a three-digit decimal escape `\ddd`. The
/// result never contains a newline, an unescaped quote, or anything Lua could read as code, so
/// `]]`, `]=]`, `--` and friends are inert data.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                // Always three digits, so a following digit in `s` cannot extend the escape.
                out.push('\\');
                out.push(char::from(b'0' + b / 100));
                out.push(char::from(b'0' + (b / 10) % 10));
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
    out.push('\'');
    out
}

#[cfg(test)]
mod tests {
    use super::quote;

    /// Decode a literal produced by `quote` with Lua's own rules for the escapes it uses.
    fn unquote(lit: &str) -> Vec<u8> {
        let b = lit.as_bytes();
        assert!(
            b.len() >= 2 && b[0] == b'\'' && b[b.len() - 1] == b'\'',
            "not quoted: {lit}"
        );
        let inner = &b[1..b.len() - 1];
        let mut out = Vec::new();
        let mut i = 0;
        while i < inner.len() {
            match inner[i] {
                b'\\' => {
                    let c = inner[i + 1];
                    if c.is_ascii_digit() {
                        let d = &inner[i + 1..i + 4];
                        assert!(d.iter().all(u8::is_ascii_digit), "short \\ddd in {lit}");
                        let v: u32 = std::str::from_utf8(d).unwrap().parse().unwrap();
                        out.push(u8::try_from(v).unwrap());
                        i += 4;
                    } else {
                        assert!(
                            matches!(c, b'\\' | b'\'' | b'"'),
                            "unexpected escape in {lit}"
                        );
                        out.push(c);
                        i += 2;
                    }
                }
                b'\'' | b'"' => panic!("unescaped quote inside {lit}"),
                c => {
                    assert!((0x20..0x7f).contains(&c), "raw byte {c} in {lit}");
                    out.push(c);
                    i += 1;
                }
            }
        }
        out
    }

    #[test]
    fn plain_text_is_kept() {
        assert_eq!(quote("example.com."), "'example.com.'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("127.0.0.1@53"), "'127.0.0.1@53'");
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(quote("a'b"), r"'a\'b'");
        assert_eq!(quote("a\"b"), r#"'a\"b'"#);
        assert_eq!(quote(r"a\b"), r"'a\\b'");
        assert_eq!(quote(r"\'"), r"'\\\''");
    }

    #[test]
    fn control_characters_use_three_digit_escapes() {
        assert_eq!(quote("a\nb"), r"'a\010b'");
        assert_eq!(quote("\0"), r"'\000'");
        assert_eq!(quote("\r\t"), r"'\013\009'");
        // A digit right after an escape cannot be swallowed into it.
        assert_eq!(quote("\n1"), r"'\0101'");
        assert_eq!(unquote(&quote("\n1")), b"\n1");
        assert_eq!(quote("\u{7f}"), r"'\127'");
    }

    #[test]
    fn non_ascii_is_escaped_bytewise() {
        assert_eq!(quote("é"), r"'\195\169'");
        assert_eq!(unquote(&quote("日本")), "日本".as_bytes());
    }

    #[test]
    fn injection_payloads_stay_data() {
        for p in [
            "']] os.execute('touch /tmp/x') --",
            "]=] os.exit(1) --[=[",
            "x' .. os.execute('id') .. '",
            "\"); os.exit(1); (\"",
            "a\nos.exit(1)\n",
            "--[[ comment",
            "\0'\0",
            "\\' os.exit(1) --",
        ] {
            let q = quote(p);
            assert!(
                !q.contains('\n') && !q.contains('\r') && !q.contains('\0'),
                "{q}"
            );
            assert_eq!(unquote(&q), p.as_bytes(), "round trip of {p:?}");
        }
    }

    #[test]
    fn every_char_round_trips() {
        // Every byte value reachable from a &str: all ASCII, plus multi-byte sequences.
        for c in (0u32..=0x7f).chain([0x80, 0xff, 0x100, 0x7ff, 0x800, 0xffff, 0x10000, 0x10ffff]) {
            let ch = char::from_u32(c).unwrap();
            for s in [
                ch.to_string(),
                format!("a{ch}b"),
                format!("{ch}{ch}0"),
                format!("\\{ch}'"),
            ] {
                let q = quote(&s);
                assert!(q.is_ascii(), "{q}");
                assert_eq!(unquote(&q), s.as_bytes(), "char U+{c:04X}");
            }
        }
    }

    #[test]
    fn pairs_of_ascii_bytes_round_trip() {
        // Property-style: every pair of ASCII bytes, in every position next to quotes/escapes.
        for a in 0u8..=0x7f {
            for b in 0u8..=0x7f {
                let s = String::from_utf8(vec![a, b, b'9', a]).unwrap();
                let q = quote(&s);
                assert!(!q[1..q.len() - 1].bytes().any(|x| x == b'\n'));
                assert_eq!(unquote(&q), s.as_bytes());
            }
        }
    }
}
