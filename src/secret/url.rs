//! URLs as shown in errors and logs: the password of the userinfo (or the whole userinfo when it
//! is not a plain user name), non-numeric "ports" (a password written without its `@`), query
//! values outside a shown list and the fragment are masked, whatever characters they hold. The
//! userinfo ends at the *last* `@`, so a password holding `/`, `?`, `#` or `@` stays hidden.

pub const MASK: &str = "***";

/// Length of the `scheme://` prefix when `s` starts with one.
pub fn scheme_len(s: &str) -> Option<usize> {
    let i = s.find("://")?;
    let mut c = s[..i].chars();
    let ok = c.next()?.is_ascii_alphabetic()
        && c.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    ok.then_some(i + 3)
}

/// A generic URL (platform, proxies, cloud endpoints): userinfo masked (a user before `:` is
/// kept), every query value masked.
pub fn mask(s: &str) -> String {
    mask_showing(s, &[])
}

/// [`mask`], showing the values of the `shown_query` keys (lower-case).
pub fn mask_showing(s: &str, shown_query: &[&str]) -> String {
    mask_with(s, shown_query, false, &mut Vec::new())
}

/// Plain host-like text (no scheme, no separators) cannot hold userinfo: shown as is.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_/".contains(c))
}

/// A user name cannot hold these; a "user" that does is really something else (a query, a
/// path), so it is masked whole.
fn plausible_user(u: &str) -> bool {
    !u.contains(['/', '?', '#', '&', '=', ' '])
}

/// The masked form of `s`; every hidden raw part is pushed on `hidden` (for the log
/// redactor). `shown_query`: lower-case query keys whose values are shown. `bare_user`: a
/// userinfo without `:` is a user name (PostgreSQL) rather than a token (generic URLs).
pub fn mask_with(
    s: &str,
    shown_query: &[&str],
    bare_user: bool,
    hidden: &mut Vec<String>,
) -> String {
    let Some(n) = scheme_len(s) else {
        if plain(s) {
            return s.to_string();
        }
        // Not a URL at all: nothing in it can be trusted to be harmless.
        if !s.is_empty() {
            hidden.push(s.to_string());
        }
        return MASK.to_string();
    };
    let (scheme, rest) = s.split_at(n);
    let mut out = scheme.to_string();
    let after = match rest.rfind('@') {
        Some(at) => {
            let info = &rest[..at];
            // A `?` or `#` before the `@`: the `@` may be inside the query, not the end of
            // the userinfo, so the query's values could show as a host name.
            let query_like = info.contains(['?', '#']);
            match info.split_once(':') {
                _ if query_like => {
                    hidden.push(rest.to_string());
                    out.push_str(MASK);
                    return out;
                }
                Some((user, pw)) if plausible_user(user) => {
                    hidden.push(pw.to_string());
                    out.push_str(&format!("{user}:{MASK}@"));
                }
                None if bare_user && plausible_user(info) => out.push_str(&format!("{info}@")),
                None if plausible_user(info) => {
                    hidden.push(info.to_string());
                    out.push_str(&format!("{MASK}@"));
                }
                // The `@` is not a userinfo end (it is in the query, or the user holds `/`):
                // which part is secret cannot be told, so nothing after the scheme is shown.
                _ => {
                    hidden.push(rest.to_string());
                    out.push_str(MASK);
                    return out;
                }
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    let (after, fragment) = match after.split_once('#') {
        Some((a, f)) => (a, Some(f)),
        None => (after, None),
    };
    let (before_query, query) = match after.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (after, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => before_query.split_at(i),
        None => (before_query, ""),
    };
    out.push_str(&mask_hosts(authority, hidden));
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        let parts: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, v)) if shown_query.contains(&k.to_ascii_lowercase().as_str()) => {
                    format!("{k}={v}")
                }
                Some((k, v)) => {
                    hidden.push(v.to_string());
                    format!("{k}={MASK}")
                }
                None if p.is_empty() || shown_query.contains(&p.to_ascii_lowercase().as_str()) => {
                    p.to_string()
                }
                None => {
                    hidden.push(p.to_string());
                    MASK.to_string()
                }
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    if let Some(f) = fragment {
        if !f.is_empty() {
            hidden.push(f.to_string());
        }
        out.push('#');
        out.push_str(MASK);
    }
    out
}

/// `h1:5432,[::1]:5433`: a port that is not a number is masked (`u:pw/db` without its `@`).
fn mask_hosts(authority: &str, hidden: &mut Vec<String>) -> String {
    authority
        .split(',')
        .map(|h| {
            let (host, port) = match h.strip_prefix('[') {
                Some(v6) => match v6.split_once(']') {
                    Some((addr, tail)) => (format!("[{addr}]"), tail.strip_prefix(':')),
                    None => (h.to_string(), None),
                },
                None => match h.split_once(':') {
                    Some((host, port)) => (host.to_string(), Some(port)),
                    None => (h.to_string(), None),
                },
            };
            match port {
                Some(p) if p.is_empty() || p.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{host}:{p}")
                }
                Some(p) => {
                    hidden.push(p.to_string());
                    format!("{host}:{MASK}")
                }
                None => host,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_urls_hide_userinfo_query_and_fragment() {
        for (raw, shown) in [
            ("https://app.dbtune.com", "https://app.dbtune.com"),
            ("http://u:p4ss@proxy:3128", "http://u:***@proxy:3128"),
            ("https://tok3n@host/x", "https://***@host/x"),
            ("https://u:pa/ss?w#@h:1/p?sig=abc#frag", "https://***"),
            (
                "https://u:pa/ss@h:1/p?sig=abc#frag",
                "https://u:***@h:1/p?sig=***#***",
            ),
            ("https://h:1/p?sig=abc@x", "https://***"),
            ("https://h/p?token", "https://h/p?***"),
            ("ftp://u:secret/h", "ftp://u:***/h"),
            ("https://[::1]:443/x", "https://[::1]:443/x"),
        ] {
            assert_eq!(mask(raw), shown, "{raw}");
        }
        assert_eq!(mask("not a url secret"), "***");
        assert_eq!(mask("u:secret@host"), "***");
        assert_eq!(mask("app.dbtune.com"), "app.dbtune.com");
    }
}
