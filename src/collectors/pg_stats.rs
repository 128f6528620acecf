//! `pg_stats` (collectors.md §3.4): a bootstrap snapshot of every user table's column statistics
//! (never with distribution values), an optional paged backfill with values
//! (`include_table_data`), then only tables analyzed since the last poll. Tables under an
//! AccessExclusiveLock are skipped. Rows are streamed one at a time; state is an offset and a
//! timestamp (nothing per table).

use super::rowmap::{map_row, not_exclusively_locked};
use super::{CatalogCollector, CollectCtx, CollectorSettings, PayloadSink};
use crate::error::{Context, Error, Result};
use serde_json::Value;
use std::time::SystemTime;

const FIELDS: &[&str] = &[
    "schemaname",
    "tablename",
    "attname",
    "inherited",
    "null_frac",
    "avg_width",
    "n_distinct",
    "most_common_vals",
    "most_common_freqs",
    "histogram_bounds",
    "correlation",
    "most_common_elems",
    "most_common_elem_freqs",
    "elem_count_histogram",
];
const VALUE_ARRAYS: &[&str] = &["most_common_vals", "histogram_bounds", "most_common_elems"];

pub struct PgStats {
    batch: i64,
    include_data: bool,
    bootstrapped: bool,
    offset: i64,
    backfill_done: bool,
    last_poll: Option<SystemTime>,
}

impl PgStats {
    pub fn new(s: &CollectorSettings) -> PgStats {
        PgStats {
            batch: s.int("backfill_batch_size", 200).max(0),
            include_data: s.bool("include_table_data", false),
            bootstrapped: false,
            offset: 0,
            backfill_done: false,
            last_poll: None,
        }
    }
}

fn select(with_data: bool) -> String {
    let vals = |c: &str| {
        if with_data {
            format!("CASE WHEN ps.{c} IS NULL THEN NULL ELSE pg_catalog.format('%s', ps.{c}) END AS {c}")
        } else {
            format!("NULL::text AS {c}")
        }
    };
    format!(
        "SELECT ps.schemaname, ps.tablename, ps.attname, ps.inherited, ps.null_frac, ps.avg_width, ps.n_distinct, {}, \
         pg_catalog.array_to_json(ps.most_common_freqs) AS most_common_freqs, {}, ps.correlation, {}, \
         pg_catalog.array_to_json(ps.most_common_elem_freqs) AS most_common_elem_freqs, \
         pg_catalog.array_to_json(ps.elem_count_histogram) AS elem_count_histogram FROM pg_catalog.pg_stats ps",
        vals("most_common_vals"),
        vals("histogram_bounds"),
        vals("most_common_elems")
    )
}

/// Parses a PostgreSQL text-array literal (`{a,"b c",NULL}`) into its element strings; nested
/// arrays stay as their literal text. None when the text is not an array literal.
pub fn parse_pg_array(s: &str) -> Option<Vec<Value>> {
    let inner = s.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    if inner.is_empty() {
        return Some(out);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        let mut quoted = false;
        let mut depth = 0;
        if chars.peek() == Some(&'"') {
            quoted = true;
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => item.push(chars.next()?),
                    '"' => break,
                    c => item.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' && depth == 0 {
                    break;
                }
                if c == '{' {
                    depth += 1;
                } else if c == '}' {
                    depth -= 1;
                }
                item.push(c);
                chars.next();
            }
        }
        if !quoted && item == "NULL" {
            out.push(Value::Null);
        } else {
            out.push(Value::from(item));
        }
        match chars.next() {
            None => return Some(out),
            Some(',') => continue,
            Some(_) => return None,
        }
    }
}

fn convert_values(rows: &mut [Value]) -> Result<()> {
    for row in rows.iter_mut() {
        let Some(obj) = row.as_object_mut() else {
            continue;
        };
        for k in VALUE_ARRAYS {
            let Some(Value::String(raw)) = obj.get(*k) else {
                continue;
            };
            let v = match parse_pg_array(raw) {
                Some(a) => Value::Array(a),
                None => serde_json::from_str(raw).map_err(|_| {
                    let name = |f: &str| {
                        obj.get(f)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    Error::other(format!(
                        "pg_stats {}.{}.{} {k}: failed to parse pg array: {raw:?}",
                        name("schemaname"),
                        name("tablename"),
                        name("attname")
                    ))
                })?,
            };
            obj.insert((*k).to_string(), v);
        }
    }
    Ok(())
}

/// Streams the rows of one pg_stats query, each reshaped on its own (value arrays parsed).
fn stream(
    ctx: &CollectCtx<'_>,
    out: &mut PayloadSink,
    collected_at: SystemTime,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<u64> {
    out.begin(collected_at)?;
    out.begin_rows()?;
    let n = ctx.pg.for_each_row(sql, params, |r| {
        let mut row = [map_row(&r, FIELDS, &[]).context("failed to read pg_stats")?];
        convert_values(&mut row)?;
        out.value_row(&row[0])
    })?;
    out.end_rows()?;
    Ok(n)
}

impl CatalogCollector for PgStats {
    fn collect_into(&mut self, ctx: &CollectCtx<'_>, out: &mut PayloadSink) -> Result<bool> {
        let collected_at = SystemTime::now();
        let order = "ORDER BY ps.schemaname, ps.tablename, ps.attname";
        let rows = if !self.bootstrapped {
            let sql = format!(
                "{} JOIN pg_catalog.pg_stat_user_tables pst ON ps.schemaname = pst.schemaname AND ps.tablename = pst.relname \
                 WHERE {} {order}",
                select(false),
                not_exclusively_locked("pst.relid")
            );
            let rows = stream(ctx, out, collected_at, &sql, &[])
                .context("failed to query pg_stats bootstrap")?;
            self.bootstrapped = true;
            self.last_poll = Some(collected_at);
            rows
        } else if self.include_data && !self.backfill_done {
            let sql = format!(
                "{} JOIN (SELECT relid, schemaname, relname FROM pg_catalog.pg_stat_user_tables ORDER BY schemaname, relname \
                 LIMIT $1 OFFSET $2) batch ON ps.schemaname = batch.schemaname AND ps.tablename = batch.relname WHERE {} {order}",
                select(true),
                not_exclusively_locked("batch.relid")
            );
            let rows = stream(ctx, out, collected_at, &sql, &[&self.batch, &self.offset])
                .context("failed to query pg_stats backfill")?;
            // An empty page may also be a batch of tables without statistics: check for more tables.
            let more: bool = ctx
                .pg
                .query_one(
                    "SELECT count(*) > $1 FROM pg_catalog.pg_stat_user_tables",
                    &[&self.offset],
                )
                .context("failed to count tables for pg_stats backfill")?
                .get(0);
            if rows == 0 && (!more || self.batch == 0) {
                self.backfill_done = true;
                self.last_poll = Some(collected_at);
                return Ok(false);
            }
            self.offset += self.batch;
            rows
        } else {
            // Two cheap steps instead of joining the pg_stats view with pg_stat_user_tables
            // (10x the server time, mostly planning): which tables were analyzed since the last
            // poll, then only their statistics. Most polls find none and stop at the first.
            let since = self.last_poll.unwrap_or(collected_at);
            let sql = format!(
                "SELECT pst.schemaname::text, pst.relname::text FROM pg_catalog.pg_stat_user_tables pst \
                 WHERE GREATEST(pst.last_analyze, pst.last_autoanalyze) > $1 AND {}",
                not_exclusively_locked("pst.relid")
            );
            let (mut schemas, mut tables) = (Vec::<String>::new(), Vec::<String>::new());
            ctx.pg
                .for_each_row(&sql, &[&since], |r| {
                    schemas.push(r.get(0));
                    tables.push(r.get(1));
                    Ok(())
                })
                .context("failed to query analyzed tables for pg_stats")?;
            if tables.is_empty() {
                self.last_poll = Some(collected_at);
                return Ok(false);
            }
            // The two ANY filters reach the catalog indexes; the pair test keeps only the exact
            // (schema, table) pairs.
            let sql = format!(
                "{} WHERE ps.schemaname = ANY($1) AND ps.tablename = ANY($2) \
                 AND (ps.schemaname, ps.tablename) IN (SELECT * FROM unnest($1::text[], $2::text[])) {order}",
                select(self.include_data)
            );
            let rows = stream(ctx, out, collected_at, &sql, &[&schemas, &tables])
                .context("failed to query pg_stats")?;
            self.last_poll = Some(collected_at);
            rows
        };
        Ok(rows > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals() {
        assert_eq!(
            parse_pg_array(r#"{a,"b c",3,NULL,"x\"y"}"#).unwrap(),
            vec![
                Value::from("a"),
                Value::from("b c"),
                Value::from("3"),
                Value::Null,
                Value::from("x\"y")
            ]
        );
        assert_eq!(parse_pg_array("{}").unwrap(), Vec::<Value>::new());
        assert_eq!(
            parse_pg_array("{{1,2},{3,4}}").unwrap(),
            vec![Value::from("{1,2}"), Value::from("{3,4}")]
        );
        assert!(parse_pg_array("abc").is_none());
    }
}
