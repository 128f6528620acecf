//! The streaming encoder of catalog payloads: a collector writes its rows into a [`PayloadSink`]
//! one at a time, each row is encoded once (Go `encoding/json` bytes) straight into the gzip
//! encoder whose output becomes the HTTP body (or into a plain buffer for dry-run, which writes
//! the same JSON). Peak memory of one payload is its compressed size plus one row, whatever its
//! row count. A hash of the `rows` array's bytes (not `collected_at`) is computed on the way, for
//! skip-unchanged.
//!
//! Shape written: `{"collected_at":"…","rows":[row,row,…]` then optional extra members, `}`.

use crate::error::{Error, Result};
use crate::gojson;
use flate2::write::GzEncoder;
use postgres::types::{FromSql, Type};
use postgres::Row;
use serde_json::Value;
use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::io::Write;
use std::time::SystemTime;

enum Out {
    /// Gzip to come: the first [`LAZY_GZIP`] bytes are kept plain, so a payload that ends up
    /// not sent (empty, unchanged) never builds a deflate state (~250 KiB, allocated and zeroed).
    Pending(Vec<u8>),
    Gzip(GzEncoder<Vec<u8>>),
    Plain(Vec<u8>),
}

/// Plain bytes held before the compressor starts.
const LAZY_GZIP: usize = 16 << 10;

fn encoder() -> GzEncoder<Vec<u8>> {
    GzEncoder::new(Vec::with_capacity(4096), flate2::Compression::default())
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum State {
    Empty,
    Open,
    Rows { first: bool },
    Members,
}

pub struct PayloadSink {
    out: Out,
    /// One row's encoding; reused, so it stays at the largest row's size.
    buf: String,
    hasher: Option<DefaultHasher>,
    rows_hash: Option<u64>,
    json_len: u64,
    rows: u64,
    state: State,
}

/// A finished payload: the body as it goes on the wire.
pub struct Payload {
    pub body: Vec<u8>,
    pub gzipped: bool,
    /// Length of the uncompressed JSON.
    pub json_len: u64,
    pub rows: u64,
}

impl Payload {
    /// The JSON text (gunzipped when needed), for tests and tools.
    pub fn json(&self) -> Result<Vec<u8>> {
        if !self.gzipped {
            return Ok(self.body.clone());
        }
        let mut d = flate2::read::GzDecoder::new(&self.body[..]);
        let mut v = Vec::with_capacity(self.json_len as usize);
        std::io::Read::read_to_end(&mut d, &mut v)
            .map_err(|e| Error::other(format!("gunzipping a payload: {e}")))?;
        Ok(v)
    }
}

/// A column's raw binary value, borrowed from the row.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }
    fn from_sql_null(
        _: &Type,
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

impl PayloadSink {
    /// A sink whose body is gzip (HTTP) or plain JSON (dry-run, tests).
    pub fn new(gzip: bool) -> PayloadSink {
        let out = if gzip {
            Out::Pending(Vec::new())
        } else {
            Out::Plain(Vec::with_capacity(4096))
        };
        PayloadSink {
            out,
            buf: String::with_capacity(512),
            hasher: None,
            rows_hash: None,
            json_len: 0,
            rows: 0,
            state: State::Empty,
        }
    }

    fn flush_buf(&mut self) -> Result<()> {
        let b = self.buf.as_bytes();
        if let Some(h) = &mut self.hasher {
            h.write(b);
        }
        self.json_len += b.len() as u64;
        let r = match &mut self.out {
            Out::Pending(v) if v.len() + b.len() > LAZY_GZIP => {
                let mut g = encoder();
                let r = g.write_all(v).and_then(|_| g.write_all(b));
                self.out = Out::Gzip(g);
                r
            }
            Out::Gzip(g) => g.write_all(b),
            Out::Pending(v) | Out::Plain(v) => {
                v.extend_from_slice(b);
                Ok(())
            }
        };
        self.buf.clear();
        r.map_err(|e| Error::other(format!("compressing a payload: {e}")))
    }

    /// Opens the envelope: `{"collected_at":"<UTC, ns>"`.
    pub fn begin(&mut self, collected_at: SystemTime) -> Result<()> {
        debug_assert_eq!(self.state, State::Empty);
        self.buf.push_str("{\"collected_at\":");
        gojson::write_str(&mut self.buf, &crate::timefmt::utc_nanos(collected_at));
        self.state = State::Open;
        self.flush_buf()
    }

    /// Starts the `rows` array; its bytes are hashed until [`PayloadSink::end_rows`].
    pub fn begin_rows(&mut self) -> Result<()> {
        debug_assert_eq!(self.state, State::Open);
        self.buf.push_str(",\"rows\":");
        self.flush_buf()?;
        self.hasher = Some(DefaultHasher::new());
        self.buf.push('[');
        self.state = State::Rows { first: true };
        self.flush_buf()
    }

    fn row_sep(&mut self) {
        if let State::Rows { first } = &mut self.state {
            if !*first {
                self.buf.push(',');
            }
            *first = false;
        } else {
            debug_assert!(false, "row outside the rows array");
        }
    }

    /// Writes one PostgreSQL row mapped onto `fields` by column name (collectors.md §2.6.4):
    /// missing columns are `null`, extra columns dropped, `omitempty` fields left out when NULL.
    pub fn pg_row(&mut self, row: &Row, fields: &[&str], omitempty: &[&str]) -> Result<()> {
        self.row_sep();
        self.buf.push('{');
        let cols = row.columns();
        let mut first = true;
        for f in fields {
            let idx = cols.iter().position(|c| c.name().eq_ignore_ascii_case(f));
            let raw = match idx {
                Some(i) => {
                    row.try_get::<_, Raw<'_>>(i)
                        .map_err(|e| Error::other(format!("decoding column {f}: {e}")))?
                        .0
                }
                None => None,
            };
            if raw.is_none() && omitempty.contains(f) {
                continue;
            }
            if !first {
                self.buf.push(',');
            }
            first = false;
            gojson::write_str(&mut self.buf, f);
            self.buf.push(':');
            match (raw, idx) {
                (Some(raw), Some(i)) => {
                    super::super::collectors::rowmap::encode(cols[i].type_(), raw, &mut self.buf)
                        .map_err(|e| Error::other(format!("decoding column {f}: {e}")))?
                }
                _ => self.buf.push_str("null"),
            }
        }
        self.buf.push('}');
        self.rows += 1;
        self.flush_buf()
    }

    /// Writes one row given as a JSON value (collectors that reshape rows).
    pub fn value_row(&mut self, v: &Value) -> Result<()> {
        self.row_sep();
        gojson::write_value(&mut self.buf, v).map_err(Error::other)?;
        self.rows += 1;
        self.flush_buf()
    }

    /// Writes one row already encoded by the caller (with `gojson`).
    pub fn encoded_row(&mut self, json: &str) -> Result<()> {
        self.row_sep();
        self.buf.push_str(json);
        self.rows += 1;
        self.flush_buf()
    }

    /// Closes the `rows` array and returns the hash of its bytes.
    pub fn end_rows(&mut self) -> Result<u64> {
        debug_assert!(matches!(self.state, State::Rows { .. }));
        self.buf.push(']');
        self.flush_buf()?;
        let h = self.hasher.take().map(|h| h.finish()).unwrap_or(0);
        self.rows_hash = Some(h);
        self.state = State::Members;
        Ok(h)
    }

    /// Adds a member after `rows`: `,"key":<value>`.
    pub fn member(&mut self, key: &str, v: &Value) -> Result<()> {
        debug_assert_eq!(self.state, State::Members);
        self.buf.push(',');
        gojson::write_str(&mut self.buf, key);
        self.buf.push(':');
        gojson::write_value(&mut self.buf, v).map_err(Error::other)?;
        self.flush_buf()
    }

    /// Adds a member whose value the caller encodes into the given buffer (a long array written
    /// element by element is flushed through [`PayloadSink::flush_member`]).
    pub fn member_with(
        &mut self,
        key: &str,
        write: impl FnOnce(&mut PayloadSink) -> Result<()>,
    ) -> Result<()> {
        debug_assert_eq!(self.state, State::Members);
        self.buf.push(',');
        gojson::write_str(&mut self.buf, key);
        self.buf.push(':');
        write(self)?;
        self.flush_buf()
    }

    /// The scratch buffer, for [`PayloadSink::member_with`] writers.
    pub fn scratch(&mut self) -> &mut String {
        &mut self.buf
    }

    /// Sends what the scratch buffer holds on to the body (bounds memory inside a member).
    pub fn flush_member(&mut self) -> Result<()> {
        self.flush_buf()
    }

    /// Writes a whole small payload given as one JSON value (instead of begin/rows/end).
    pub fn whole(&mut self, v: &Value) -> Result<()> {
        debug_assert_eq!(self.state, State::Empty);
        gojson::write_value(&mut self.buf, v).map_err(Error::other)?;
        self.state = State::Members;
        self.buf.pop(); // the closing brace comes with finish()
        self.flush_buf()
    }

    /// Writes `{"<key>":"<text>"` with the text escaped and flushed in 64 KiB pieces, so a
    /// long text is never copied whole; members follow with [`PayloadSink::member`].
    pub fn begin_with_text(&mut self, key: &str, text: &str) -> Result<()> {
        self.begin_text(key)?;
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = rest.len().min(64 << 10);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text_piece(&rest[..cut])?;
            rest = &rest[cut..];
        }
        self.end_text()
    }

    /// Opens `{"<key>":"` for a text written piece by piece ([`PayloadSink::text_piece`], then
    /// [`PayloadSink::end_text`]): the DDL dump is encoded as it is generated, row by row.
    pub fn begin_text(&mut self, key: &str) -> Result<()> {
        debug_assert_eq!(self.state, State::Empty);
        self.buf.push('{');
        gojson::write_str(&mut self.buf, key);
        self.buf.push_str(":\"");
        self.flush_buf()
    }

    /// Appends `piece` (escaped) to the open text.
    pub fn text_piece(&mut self, piece: &str) -> Result<()> {
        debug_assert_eq!(self.state, State::Empty);
        gojson::write_str_body(&mut self.buf, piece);
        self.flush_buf()
    }

    /// Closes the text opened by [`PayloadSink::begin_text`]; members may follow.
    pub fn end_text(&mut self) -> Result<()> {
        self.buf.push('"');
        self.state = State::Members;
        self.flush_buf()
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes the payload (the envelope and, for gzip, the stream).
    pub fn finish(mut self) -> Result<Payload> {
        if matches!(self.state, State::Rows { .. }) {
            self.end_rows()?;
        }
        if self.state != State::Empty {
            self.buf.push('}');
            self.flush_buf()?;
        }
        let (body, gzipped) = match self.out {
            Out::Pending(v) => {
                let mut g = encoder();
                g.write_all(&v)
                    .map_err(|e| Error::other(format!("compressing a payload: {e}")))?;
                (
                    g.finish()
                        .map_err(|e| Error::other(format!("compressing a payload: {e}")))?,
                    true,
                )
            }
            Out::Gzip(g) => (
                g.finish()
                    .map_err(|e| Error::other(format!("compressing a payload: {e}")))?,
                true,
            ),
            Out::Plain(v) => (v, false),
        };
        Ok(Payload {
            body,
            gzipped,
            json_len: self.json_len,
            rows: self.rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn envelope(gzip: bool, rows: &[Value]) -> (Payload, u64) {
        let mut s = PayloadSink::new(gzip);
        s.begin(UNIX_EPOCH + Duration::from_nanos(1_500)).unwrap();
        s.begin_rows().unwrap();
        for r in rows {
            s.value_row(r).unwrap();
        }
        let h = s.end_rows().unwrap();
        s.member("n", &Value::from(rows.len())).unwrap();
        (s.finish().unwrap(), h)
    }

    #[test]
    fn gzip_and_plain_carry_the_same_json() {
        let rows = vec![serde_json::json!({"a": "x<y", "b": 1.5}), Value::Null];
        let (gz, h1) = envelope(true, &rows);
        let (plain, h2) = envelope(false, &rows);
        let expected = r#"{"collected_at":"1970-01-01T00:00:00.0000015Z","rows":[{"a":"x\u003cy","b":1.5},null],"n":2}"#;
        assert_eq!(String::from_utf8(plain.body.clone()).unwrap(), expected);
        assert_eq!(String::from_utf8(gz.json().unwrap()).unwrap(), expected);
        assert_eq!(gz.json_len, expected.len() as u64);
        assert_eq!((gz.rows, h1), (2, h2));
    }

    #[test]
    fn the_hash_covers_rows_not_collected_at() {
        let rows = [serde_json::json!({"a": 1})];
        let mut a = PayloadSink::new(false);
        a.begin(UNIX_EPOCH).unwrap();
        a.begin_rows().unwrap();
        a.value_row(&rows[0]).unwrap();
        let ha = a.end_rows().unwrap();
        let mut b = PayloadSink::new(false);
        b.begin(UNIX_EPOCH + Duration::from_secs(60)).unwrap();
        b.begin_rows().unwrap();
        b.value_row(&rows[0]).unwrap();
        let hb = b.end_rows().unwrap();
        assert_eq!(ha, hb);
        let mut c = PayloadSink::new(false);
        c.begin(UNIX_EPOCH).unwrap();
        c.begin_rows().unwrap();
        c.value_row(&serde_json::json!({"a": 2})).unwrap();
        assert_ne!(c.end_rows().unwrap(), ha);
    }

    #[test]
    fn long_texts_are_written_in_pieces_with_the_same_bytes() {
        let text = "CREATE TABLE \"é<€>\"\u{2028};\n".repeat(10_000);
        let mut s = PayloadSink::new(true);
        s.begin_with_text("ddl", &text).unwrap();
        s.member("ddl_hash", &Value::from("h")).unwrap();
        let got = s.finish().unwrap().json().unwrap();
        let want = gojson::to_vec(&serde_json::json!({"ddl": text, "ddl_hash": "h"})).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn whole_payloads_are_closed_by_finish() {
        let mut s = PayloadSink::new(false);
        s.whole(&serde_json::json!({"ddl": "x", "ddl_hash": "y"}))
            .unwrap();
        let p = s.finish().unwrap();
        assert_eq!(p.body, br#"{"ddl":"x","ddl_hash":"y"}"#);
    }
}
