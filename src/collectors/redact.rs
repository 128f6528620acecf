//! Password literals out of statement texts before they leave the agent. pg_stat_statements
//! normalizes the constants of plannable statements but keeps utility statements verbatim, so
//! `CREATE ROLE … PASSWORD '…'`, `ALTER USER … ENCRYPTED PASSWORD '…' VALID UNTIL '…'`,
//! `CREATE USER MAPPING … OPTIONS (password '…')`, `SET x.password = '…'` and
//! `CREATE SUBSCRIPTION … CONNECTION 'host=… password=…'` would otherwise reach the platform.
//!
//! A small lexer (PostgreSQL's quoting rules: `'…'` with `''`, `E'…'` with backslashes,
//! `$tag$…$tag$`, `"identifiers"`, comments) finds each string literal; one that follows a word
//! naming a password (`PASSWORD`, `sslpassword`, `x.password`, optionally then `=` or `TO`)
//! becomes `'***'`, and one that holds `password` itself (a connection string) is masked as a
//! connection string. A text cut short inside a literal (`left(query, n)`) is masked to its end.

use std::borrow::Cow;

pub const REDACTED: &str = "'***'";

/// Case-insensitive, without allocating (runs on every statement text fetched).
fn has_password(s: &str) -> bool {
    s.as_bytes()
        .windows(8)
        .any(|w| w.eq_ignore_ascii_case(b"password"))
}

/// The text with its password literals replaced; borrowed when there is nothing to replace.
pub fn passwords(sql: &str) -> Cow<'_, str> {
    if !has_password(sql) {
        return Cow::Borrowed(sql);
    }
    let b = sql.as_bytes();
    let n = b.len();
    let mut out = String::with_capacity(n);
    let mut copied = 0; // bytes of `sql` already in `out`
    let mut armed = false; // the last token named a password (or was `=`/TO after one)
    let mut i = 0;
    let word_byte =
        |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c == b'.' || c >= 0x80;
    while i < n {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < n && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < n {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'\'' || (c == b'$' && dollar_tag(b, i).is_some()) {
            let start = i;
            let (end, content) = if c == b'\'' {
                let backslash =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !word_byte(b[i - 2]));
                quoted(b, i, backslash)
            } else {
                let tag = dollar_tag(b, i).unwrap_or(1);
                let close = &b[i..i + tag];
                let body = i + tag;
                match find(b, body, close) {
                    Some(e) => (e + tag, (body, e)),
                    None => (n, (body, n)),
                }
            };
            let text = &sql[content.0..content.1];
            let replacement = if armed {
                Some(REDACTED.to_string())
            } else if has_password(text) {
                Some(format!(
                    "'{}'",
                    crate::secret::conninfo::mask(text).replace('\'', "''")
                ))
            } else {
                None
            };
            if let Some(r) = replacement {
                // An `E` prefix stays before the replacement (harmless: no backslashes in it).
                out.push_str(&sql[copied..start]);
                out.push_str(&r);
                copied = end;
            }
            armed = false;
            i = end;
        } else if c == b'"' {
            let (end, content) = quoted(b, i, false);
            armed = has_password(&sql[content.0..content.1]);
            i = end;
        } else if word_byte(c) {
            let start = i;
            while i < n && word_byte(b[i]) {
                i += 1;
            }
            let w = &sql[start..i];
            let prefix = b.get(i) == Some(&b'\'') && matches!(w, "e" | "E" | "n" | "N");
            if prefix {
                // `E'…'`, `N'…'`: the literal decides, the arming stays.
            } else if has_password(w) {
                armed = true;
            } else if !(armed && w.eq_ignore_ascii_case("to")) {
                armed = false;
            }
        } else {
            if c != b'=' {
                armed = false;
            }
            i += 1;
        }
    }
    if copied == 0 {
        return Cow::Borrowed(sql);
    }
    out.push_str(&sql[copied..]);
    Cow::Owned(out)
}

/// A `'…'` or `"…"` token at `i`: (end, content range). Doubled quotes stay inside; with
/// `backslash`, `\x` escapes too. Unterminated: to the end of the text.
fn quoted(b: &[u8], i: usize, backslash: bool) -> (usize, (usize, usize)) {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        if backslash && b[j] == b'\\' {
            j += 2;
        } else if b[j] == q {
            if b.get(j + 1) == Some(&q) {
                j += 2;
            } else {
                return (j + 1, (i + 1, j));
            }
        } else {
            j += 1;
        }
    }
    (b.len(), (i + 1, b.len()))
}

/// Length of a `$tag$` opening at `i` (`$$` included; `$1` is a parameter, not a tag).
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
        return None;
    }
    let mut j = i + 1;
    if b.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1 - i)
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    (from..=b.len().saturating_sub(needle.len())).find(|&k| b[k..].starts_with(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_literals_are_replaced_in_every_quoting() {
        for (sql, want) in [
            (
                "CREATE ROLE a PASSWORD 'S3cr'",
                "CREATE ROLE a PASSWORD '***'",
            ),
            (
                "alter user a with encrypted password 'S3cr''q' valid until '2030-01-01'",
                "alter user a with encrypted password '***' valid until '2030-01-01'",
            ),
            (
                "ALTER ROLE a PASSWORD E'S3\\'cr'",
                "ALTER ROLE a PASSWORD E'***'",
            ),
            (
                "ALTER ROLE a PASSWORD $x$S3cr$x$ LOGIN",
                "ALTER ROLE a PASSWORD '***' LOGIN",
            ),
            (
                "ALTER ROLE a PASSWORD $$S3cr$$",
                "ALTER ROLE a PASSWORD '***'",
            ),
            (
                "ALTER ROLE a PASSWORD /* c */ 'S3cr'",
                "ALTER ROLE a PASSWORD /* c */ '***'",
            ),
            (
                "CREATE USER MAPPING FOR a SERVER s OPTIONS (user 'u', password 'S3cr')",
                "CREATE USER MAPPING FOR a SERVER s OPTIONS (user 'u', password '***')",
            ),
            (
                "ALTER USER MAPPING FOR a SERVER s OPTIONS (SET \"password\" 'S3cr')",
                "ALTER USER MAPPING FOR a SERVER s OPTIONS (SET \"password\" '***')",
            ),
            ("SET my.password = 'S3cr'", "SET my.password = '***'"),
            (
                "ALTER SYSTEM SET x.password TO 'S3cr'",
                "ALTER SYSTEM SET x.password TO '***'",
            ),
            (
                "CREATE SUBSCRIPTION s CONNECTION 'host=h password=S3cr dbname=d' PUBLICATION p",
                "CREATE SUBSCRIPTION s CONNECTION 'host=h password=*** dbname=d' PUBLICATION p",
            ),
            (
                "ALTER ROLE a PASSWORD 'S3cr trunc",
                "ALTER ROLE a PASSWORD '***'",
            ),
            ("ALTER ROLE a PASSWORD NULL", "ALTER ROLE a PASSWORD NULL"),
            (
                "SELECT $1 AS password, 'plain'",
                "SELECT $1 AS password, 'plain'",
            ),
        ] {
            let got = passwords(sql);
            assert_eq!(got, want, "{sql}");
            assert!(!got.contains("S3"), "{sql}");
        }
        assert!(matches!(passwords("SELECT 'x'"), Cow::Borrowed(_)));
    }
}
