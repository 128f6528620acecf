//! The dry-run summary printed on stderr after the payloads: per endpoint the payloads, rows,
//! bytes and gzipped bytes (what the wire would carry), the key system facts from the
//! system-info payload, and a last line saying nothing was sent. Counts come from the very
//! lines written, so they always match the output file.

use serde_json::Value;
use std::io::Write;
use std::sync::Mutex;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub endpoint: String,
    pub payloads: usize,
    pub rows: usize,
    pub bytes: usize,
    /// Gzipped size for the endpoints sent compressed (the rest go uncompressed).
    pub gzipped: Option<usize>,
}

/// Per-endpoint counts in first-seen order, and the system facts (key, value).
#[derive(Default)]
struct Tally(Vec<EndpointStats>, Vec<(String, String)>);

#[derive(Default)]
pub struct Summary {
    inner: Mutex<Tally>,
}

/// Rows of a payload: the length of its largest top-level array or object (`metrics`,
/// `config`, `rows`, `system_info` …; an empty `rows` is 0), else 1 (a heartbeat).
pub fn rows(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.len(),
        Value::Object(m) => m
            .values()
            .filter_map(|x| match x {
                Value::Array(a) => Some(a.len()),
                Value::Object(o) => Some(o.len()),
                _ => None,
            })
            .max()
            .unwrap_or(1),
        _ => 1,
    }
}

fn gzip_len(bytes: &[u8]) -> usize {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(bytes);
    e.finish().map(|v| v.len()).unwrap_or(0)
}

impl Summary {
    pub fn note(&self, segment: &str, gzip: bool, body: &[u8]) {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(info) = v.get("system_info").and_then(Value::as_object) {
            g.1 = info
                .iter()
                .map(|(k, x)| {
                    let val = x.get("value").unwrap_or(x);
                    let text = match val {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect();
        }
        let idx = match g.0.iter().position(|s| s.endpoint == segment) {
            Some(i) => i,
            None => {
                g.0.push(EndpointStats {
                    endpoint: segment.to_string(),
                    ..Default::default()
                });
                g.0.len() - 1
            }
        };
        let s = &mut g.0[idx];
        s.payloads += 1;
        s.rows += rows(&v);
        s.bytes += body.len();
        if gzip {
            *s.gzipped.get_or_insert(0) += gzip_len(body);
        }
    }

    pub fn endpoints(&self) -> Vec<EndpointStats> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// The text block; `extra` (the recommendation and its plan) goes before the last line.
    pub fn render(&self, extra: &str) -> String {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::from("--- dry-run summary ---\n");
        let w =
            g.0.iter()
                .map(|s| s.endpoint.len())
                .max()
                .unwrap_or(8)
                .max(8);
        out.push_str(&format!(
            "{:<w$}  {:>8}  {:>8}  {:>10}  {:>10}\n",
            "endpoint", "payloads", "rows", "bytes", "gzipped"
        ));
        let (mut p, mut r, mut b) = (0, 0, 0);
        for s in &g.0 {
            out.push_str(&format!(
                "{:<w$}  {:>8}  {:>8}  {:>10}  {:>10}\n",
                s.endpoint,
                s.payloads,
                s.rows,
                s.bytes,
                s.gzipped
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into())
            ));
            p += s.payloads;
            r += s.rows;
            b += s.bytes;
        }
        out.push_str(&format!("{:<w$}  {p:>8}  {r:>8}  {b:>10}\n", "total"));
        if !g.1.is_empty() {
            out.push_str("system facts:\n");
            for (k, v) in &g.1 {
                out.push_str(&format!("  {k} = {v}\n"));
            }
        }
        out.push_str(extra);
        out.push_str(&format!(
            "nothing was sent: {p} payload(s) were written instead of being sent to the platform\n"
        ));
        out
    }
}
