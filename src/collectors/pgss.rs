//! `pg_stat_statements` (collectors.md §4): per-statement counters, aggregated by
//! (queryid, userid, dbid), with interval deltas and a top-N cut.
//!
//! Cheaper than the Go agent (DECISIONS.md): counters are read every tick with
//! `pg_stat_statements(false)` (no query texts); texts — and the §4.1 exclusion filter, which
//! needs them — are fetched only for statement keys not seen before, and kept in a cache bounded
//! by a byte budget of compressed text (least recently sent texts are dropped first and re-fetched when needed).
//! Keys that disappear (dealloc, reset) leave the cache. The extension is never reset; resets and
//! upgrades are inferred (negative diffs → no delta; version change → fresh baseline).

use super::{CatalogCollector, CollectCtx, PayloadSink};
use crate::config::collectors::CollectorSettings;
use crate::error::{Context, Error, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::SystemTime;

/// Bytes of query text kept in memory at most.
pub const DEFAULT_TEXT_BUDGET: usize = 2 << 20;

/// §4.1 exclusion pattern, anchored at both ends (deliberately as narrow as the Go agent's).
const EXCLUDE_PATTERN: &str = r"^[[:space:]]*(BEGIN|COMMIT|ROLLBACK|SET |SHOW |SELECT (pg_|\$1$|version[[:space:]]*\([[:space:]]*\)))[[:space:]]*;?[[:space:]]*$";

/// Text shown by the server for statements of other users without pg_read_all_stats.
const HIDDEN_TEXT: &str = "<insufficient privilege>";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Ty {
    I,
    F,
    B,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Agg {
    Sum,
    Min,
    Max,
    MeanExec,
    StdExec,
    MeanPlan,
    StdPlan,
    Null,
}

/// Counter columns after the ids, in the payload's order.
const FIELDS: &[(&str, Ty, Agg)] = &[
    ("calls", Ty::I, Agg::Sum),
    ("total_exec_time", Ty::F, Agg::Sum),
    ("min_exec_time", Ty::F, Agg::Min),
    ("max_exec_time", Ty::F, Agg::Max),
    ("mean_exec_time", Ty::F, Agg::MeanExec),
    ("stddev_exec_time", Ty::F, Agg::StdExec),
    ("rows", Ty::I, Agg::Sum),
    ("shared_blks_hit", Ty::I, Agg::Sum),
    ("shared_blks_read", Ty::I, Agg::Sum),
    ("shared_blks_dirtied", Ty::I, Agg::Sum),
    ("shared_blks_written", Ty::I, Agg::Sum),
    ("local_blks_hit", Ty::I, Agg::Sum),
    ("local_blks_read", Ty::I, Agg::Sum),
    ("local_blks_dirtied", Ty::I, Agg::Sum),
    ("local_blks_written", Ty::I, Agg::Sum),
    ("temp_blks_read", Ty::I, Agg::Sum),
    ("temp_blks_written", Ty::I, Agg::Sum),
    ("shared_blk_read_time", Ty::F, Agg::Sum),
    ("shared_blk_write_time", Ty::F, Agg::Sum),
    ("local_blk_read_time", Ty::F, Agg::Sum),
    ("local_blk_write_time", Ty::F, Agg::Sum),
    ("plans", Ty::I, Agg::Sum),
    ("total_plan_time", Ty::F, Agg::Sum),
    ("min_plan_time", Ty::F, Agg::Min),
    ("max_plan_time", Ty::F, Agg::Max),
    ("mean_plan_time", Ty::F, Agg::MeanPlan),
    ("stddev_plan_time", Ty::F, Agg::StdPlan),
    ("wal_records", Ty::I, Agg::Sum),
    ("wal_fpi", Ty::I, Agg::Sum),
    ("wal_bytes", Ty::I, Agg::Sum),
    ("toplevel", Ty::B, Agg::Null),
    ("temp_blk_read_time", Ty::F, Agg::Sum),
    ("temp_blk_write_time", Ty::F, Agg::Sum),
    ("jit_functions", Ty::I, Agg::Sum),
    ("jit_generation_time", Ty::F, Agg::Sum),
    ("jit_inlining_count", Ty::I, Agg::Sum),
    ("jit_inlining_time", Ty::F, Agg::Sum),
    ("jit_optimization_count", Ty::I, Agg::Sum),
    ("jit_optimization_time", Ty::F, Agg::Sum),
    ("jit_emission_count", Ty::I, Agg::Sum),
    ("jit_emission_time", Ty::F, Agg::Sum),
];
const NF: usize = 41;
const _: () = assert!(FIELDS.len() == NF);
const OMITEMPTY: &[&str] = &["local_blk_read_time", "local_blk_write_time"];

fn idx(name: &str) -> usize {
    FIELDS
        .iter()
        .position(|f| f.0 == name)
        .expect("known pgss field")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    Null,
    I(i64),
    F(f64),
    B(bool),
}

impl Num {
    fn f(self) -> Option<f64> {
        match self {
            Num::I(i) => Some(i as f64),
            Num::F(f) => Some(f),
            _ => None,
        }
    }
    fn json(self) -> Value {
        match self {
            Num::Null => Value::Null,
            Num::I(i) => Value::from(i),
            Num::F(f) => serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Num::B(b) => Value::Bool(b),
        }
    }
}

type Key = (i64, u32, u32); // (queryid, userid, dbid)
/// Previous tick's aggregated counters per key: (calls, total_exec_time).
type Snapshot = HashMap<Key, (Option<i64>, Option<f64>)>;

/// The extension's (major, minor) from `extversion` (`1.10`, `1.11dev` …).
pub fn parse_ext_version(s: &str) -> Option<(u32, u32)> {
    let maj_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let rest = s[maj_len..].strip_prefix('.')?;
    let min_len = rest.bytes().take_while(u8::is_ascii_digit).count();
    if maj_len == 0 || min_len == 0 {
        return None;
    }
    Some((s[..maj_len].parse().ok()?, rest[..min_len].parse().ok()?))
}

/// The counters select list for an extension version (§4.1), without the text columns.
pub fn counter_columns(v: (u32, u32)) -> String {
    let mut c: Vec<String> = vec![
        "userid".into(),
        "dbid".into(),
        "queryid".into(),
        "calls".into(),
    ];
    if v >= (1, 8) {
        for f in [
            "total_exec_time",
            "min_exec_time",
            "max_exec_time",
            "mean_exec_time",
            "stddev_exec_time",
        ] {
            c.push(f.into());
        }
    } else {
        for (old, new) in [
            ("total_time", "total_exec_time"),
            ("min_time", "min_exec_time"),
            ("max_time", "max_exec_time"),
            ("mean_time", "mean_exec_time"),
            ("stddev_time", "stddev_exec_time"),
        ] {
            c.push(format!("{old} AS {new}"));
        }
    }
    c.push("rows".into());
    for f in [
        "shared_blks_hit",
        "shared_blks_read",
        "shared_blks_dirtied",
        "shared_blks_written",
        "local_blks_hit",
        "local_blks_read",
        "local_blks_dirtied",
        "local_blks_written",
        "temp_blks_read",
        "temp_blks_written",
    ] {
        c.push(f.into());
    }
    if v >= (1, 11) {
        for f in [
            "shared_blk_read_time",
            "shared_blk_write_time",
            "local_blk_read_time",
            "local_blk_write_time",
        ] {
            c.push(f.into());
        }
    } else {
        c.push("blk_read_time AS shared_blk_read_time".into());
        c.push("blk_write_time AS shared_blk_write_time".into());
    }
    if v >= (1, 8) {
        for f in [
            "plans",
            "total_plan_time",
            "min_plan_time",
            "max_plan_time",
            "mean_plan_time",
            "stddev_plan_time",
        ] {
            c.push(f.into());
        }
        c.push("wal_records".into());
        c.push("wal_fpi".into());
        c.push("wal_bytes::bigint AS wal_bytes".into());
    } else {
        c.push("NULL::bigint AS plans".into());
        for f in [
            "total_plan_time",
            "min_plan_time",
            "max_plan_time",
            "mean_plan_time",
            "stddev_plan_time",
        ] {
            c.push(format!("NULL::double precision AS {f}"));
        }
        for f in ["wal_records", "wal_fpi", "wal_bytes"] {
            c.push(format!("NULL::bigint AS {f}"));
        }
    }
    if v >= (1, 9) {
        c.push("toplevel".into());
    }
    if v >= (1, 10) {
        for f in [
            "temp_blk_read_time",
            "temp_blk_write_time",
            "jit_functions",
            "jit_generation_time",
            "jit_inlining_count",
            "jit_inlining_time",
            "jit_optimization_count",
            "jit_optimization_time",
            "jit_emission_count",
            "jit_emission_time",
        ] {
            c.push(f.into());
        }
    }
    c.join(", ")
}

#[derive(Clone, Debug)]
pub struct StatRow {
    key: Option<Key>,
    ids: [Num; 3], // userid, dbid, queryid as read
    /// Inline (no allocation per row): the tick's rows are one contiguous buffer, freed after.
    vals: [Num; NF],
}

#[derive(Clone, Copy, Default, Debug)]
struct Pool {
    had: bool,
    n: f64,
    mean: f64,
    m2: f64,
}

impl Pool {
    fn add(&mut self, n: Option<f64>, mean: Option<f64>, sd: Option<f64>) {
        let (Some(n), Some(mean), Some(sd)) = (n, mean, sd) else {
            return;
        };
        self.had = true;
        if n <= 0.0 {
            return;
        }
        let m2 = sd * sd * n;
        if self.n == 0.0 {
            *self = Pool {
                had: true,
                n,
                mean,
                m2,
            };
            return;
        }
        let tot = self.n + n;
        let d = mean - self.mean;
        self.mean += d * n / tot;
        self.m2 += m2 + d * d * self.n * n / tot;
        self.n = tot;
    }
    fn result(&self) -> Num {
        if !self.had {
            Num::Null
        } else if self.n == 0.0 {
            Num::F(0.0)
        } else {
            Num::F((self.m2 / self.n).sqrt())
        }
    }
}

struct Merged {
    row: StatRow,
    exec: Pool,
    plan: Pool,
}

fn pool_inputs(
    r: &StatRow,
    n: &str,
    mean: &str,
    sd: &str,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    (
        r.vals[idx(n)].f(),
        r.vals[idx(mean)].f(),
        r.vals[idx(sd)].f(),
    )
}

fn merge_into(a: &mut StatRow, b: &StatRow) {
    for (i, (_, ty, agg)) in FIELDS.iter().enumerate() {
        let (x, y) = (a.vals[i], b.vals[i]);
        a.vals[i] = match (agg, x, y) {
            (_, Num::Null, y) if *agg != Agg::Null => y,
            (_, x, Num::Null) => x,
            (Agg::Sum, Num::I(p), Num::I(q)) if *ty == Ty::I => Num::I(p.saturating_add(q)),
            (Agg::Sum, x, y) => Num::F(x.f().unwrap_or(0.0) + y.f().unwrap_or(0.0)),
            (Agg::Min, x, y) => Num::F(x.f().unwrap_or(f64::MAX).min(y.f().unwrap_or(f64::MAX))),
            (Agg::Max, x, y) => Num::F(x.f().unwrap_or(f64::MIN).max(y.f().unwrap_or(f64::MIN))),
            _ => x,
        };
    }
}

/// §4.3 step 2: merge rows with the same (queryid, userid, dbid) in first-seen order, recompute
/// means and pooled stddevs, null `toplevel`; rows lacking a key component follow unmerged.
pub fn aggregate(rows: Vec<StatRow>) -> Vec<StatRow> {
    let mut order: Vec<Merged> = Vec::new();
    let mut pos: HashMap<Key, usize> = HashMap::new();
    let mut passthrough = Vec::new();
    for r in rows {
        let Some(k) = r.key else {
            passthrough.push(r);
            continue;
        };
        let (en, em, es) = pool_inputs(&r, "calls", "mean_exec_time", "stddev_exec_time");
        let (pn, pm, ps) = pool_inputs(&r, "plans", "mean_plan_time", "stddev_plan_time");
        match pos.get(&k) {
            Some(&i) => {
                let m = &mut order[i];
                merge_into(&mut m.row, &r);
                m.exec.add(en, em, es);
                m.plan.add(pn, pm, ps);
            }
            None => {
                let mut exec = Pool::default();
                exec.add(en, em, es);
                let mut plan = Pool::default();
                plan.add(pn, pm, ps);
                pos.insert(k, order.len());
                order.push(Merged { row: r, exec, plan });
            }
        }
    }
    let mut out = Vec::with_capacity(order.len() + passthrough.len());
    for mut m in order {
        let mean = |total: Num, n: Num| match (total.f(), n.f()) {
            (None, _) => Num::Null,
            (Some(_), None) => Num::F(0.0),
            (Some(_), Some(0.0)) => Num::F(0.0),
            (Some(t), Some(c)) => Num::F(t / c),
        };
        let v = &mut m.row.vals;
        v[idx("mean_exec_time")] = mean(v[idx("total_exec_time")], v[idx("calls")]);
        v[idx("mean_plan_time")] = mean(v[idx("total_plan_time")], v[idx("plans")]);
        v[idx("stddev_exec_time")] = m.exec.result();
        v[idx("stddev_plan_time")] = m.plan.result();
        v[idx("toplevel")] = Num::Null;
        out.push(m.row);
    }
    out.extend(passthrough);
    out
}

#[derive(Clone, Debug)]
struct TextEntry {
    excluded: bool,
    /// The text, deflate-compressed (statement texts shrink 4-10x): the budget counts these bytes.
    query: Option<Box<[u8]>>,
    query_len: Option<i64>,
    last_used: u64,
}

fn pack(text: &str) -> Box<[u8]> {
    use std::io::Write;
    let mut e = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(text.len() / 4 + 16),
        flate2::Compression::fast(),
    );
    let _ = e.write_all(text.as_bytes());
    e.finish().unwrap_or_default().into_boxed_slice()
}

fn unpack(packed: &[u8]) -> Option<String> {
    use std::io::Read;
    let mut s = String::new();
    flate2::read::DeflateDecoder::new(packed)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// Bounded cache of statement texts and exclusion verdicts, keyed like the snapshot.
#[derive(Default)]
pub struct TextCache {
    map: HashMap<Key, TextEntry>,
    bytes: usize,
    budget: usize,
}

impl TextCache {
    fn new(budget: usize) -> TextCache {
        TextCache {
            map: HashMap::new(),
            bytes: 0,
            budget,
        }
    }
    fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
    fn insert(&mut self, k: Key, e: TextEntry) {
        self.bytes += e.query.as_ref().map_or(0, |q| q.len());
        if let Some(old) = self.map.insert(k, e) {
            self.bytes -= old.query.as_ref().map_or(0, |q| q.len());
        }
    }
    /// Keeps only `live` keys (statements deallocated or reset away leave the cache).
    fn retain(&mut self, live: &HashMap<Key, ()>) {
        let mut freed = 0;
        self.map.retain(|k, e| {
            let keep = live.contains_key(k);
            if !keep {
                freed += e.query.as_ref().map_or(0, |q| q.len());
            }
            keep
        });
        self.bytes -= freed;
    }
    /// Drops the least recently sent texts until the cache is under 3/4 of its budget
    /// (verdicts and lengths stay; a dropped text is fetched again when its row is sent).
    fn enforce_budget(&mut self) {
        if self.bytes <= self.budget {
            return;
        }
        let mut with_text: Vec<(u64, Key)> = self
            .map
            .iter()
            .filter(|(_, e)| e.query.is_some())
            .map(|(k, e)| (e.last_used, *k))
            .collect();
        with_text.sort_unstable();
        let target = self.budget / 4 * 3;
        for (_, k) in with_text {
            if self.bytes <= target {
                break;
            }
            if let Some(e) = self.map.get_mut(&k) {
                if let Some(q) = e.query.take() {
                    self.bytes -= q.len();
                }
            }
        }
    }
    pub fn text_bytes(&self) -> usize {
        self.bytes
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

pub struct PgStatStatements {
    diff_limit: usize,
    include_queries: bool,
    max_len: i64,
    ext: Option<((u32, u32), String)>,
    /// Previous tick's aggregated counters: key → (calls, total_exec_time).
    snapshot: Option<Snapshot>,
    texts: TextCache,
    tick: u64,
}

impl PgStatStatements {
    pub fn new(s: &CollectorSettings) -> PgStatStatements {
        PgStatStatements::with_budget(s, DEFAULT_TEXT_BUDGET)
    }
    pub fn with_budget(s: &CollectorSettings, budget: usize) -> PgStatStatements {
        PgStatStatements {
            diff_limit: s.int("diff_limit", 500).clamp(0, 500) as usize,
            include_queries: s.bool("include_queries", true),
            max_len: s.int("max_query_text_length", 8192).clamp(0, 8192),
            ext: None,
            snapshot: None,
            texts: TextCache::new(budget),
            tick: 0,
        }
    }
    pub fn text_cache(&self) -> &TextCache {
        &self.texts
    }

    fn relation(schema: &str) -> String {
        format!("{}.pg_stat_statements", crate::pg::quote_ident(schema))
    }

    /// Fetches verdicts (and texts when wanted) for `keys`, streaming. Texts of `sent` keys are
    /// always kept; the others only while the cache is under its budget (reading the text file
    /// costs the server the same for one text as for all, so one fetch fills the cache).
    fn fetch_texts(
        &mut self,
        ctx: &CollectCtx<'_>,
        schema: &str,
        keys: &[Key],
        with_text: bool,
        sent: &std::collections::HashSet<Key>,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let (q, l) = if self.include_queries && with_text {
            (
                format!("left(s.query, {})", self.max_len),
                "length(s.query)::bigint",
            )
        } else if self.include_queries {
            ("NULL::text".to_string(), "length(s.query)::bigint")
        } else {
            ("NULL::text".to_string(), "NULL::bigint")
        };
        let sql = format!(
            "SELECT s.queryid, s.userid, s.dbid, \
             COALESCE({} OR s.query ~* {}, true) AS excluded, {q} AS query, {l} AS query_len \
             FROM {}(true) s WHERE (s.queryid, s.userid, s.dbid) IN \
             (SELECT * FROM unnest($1::bigint[], $2::oid[], $3::oid[]))",
            crate::pg::agent_statement_sql("s.query"),
            crate::pg::quote_literal(EXCLUDE_PATTERN),
            Self::relation(schema)
        );
        let qids: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let uids: Vec<u32> = keys.iter().map(|k| k.1).collect();
        let dids: Vec<u32> = keys.iter().map(|k| k.2).collect();
        let tick = self.tick;
        let texts = &mut self.texts;
        ctx.pg
            .for_each_row(&sql, &[&qids, &uids, &dids], |r| {
                let k: Key = (r.get(0), r.get(1), r.get(2));
                let excluded: bool = r.get(3);
                // toplevel/nested rows share the key and the text: the first one wins.
                if with_text {
                    if let Some(e) = texts.map.get(&k) {
                        if e.query.is_some() {
                            return Ok(());
                        }
                    }
                } else if texts.map.contains_key(&k) {
                    return Ok(());
                }
                let query = if texts.bytes < texts.budget || sent.contains(&k) {
                    // Utility statements keep their literals: passwords go before anything
                    // is kept or sent.
                    r.get::<_, Option<&str>>(4)
                        .map(|t| pack(&super::redact::passwords(t)))
                } else {
                    None
                };
                let e = TextEntry {
                    excluded,
                    query,
                    query_len: r.get(5),
                    last_used: tick,
                };
                texts.insert(k, e);
                Ok(())
            })
            .context("failed to query pg_stat_statements texts")?;
        Ok(())
    }

    /// Reads the counters, streaming: each row becomes a compact [`StatRow`] as it arrives.
    /// Also returns the extension version the server reports now (read in the same statement,
    /// so an upgrade is noticed without a separate query each tick).
    fn read_counters(
        &self,
        ctx: &CollectCtx<'_>,
        v: (u32, u32),
        schema: &str,
    ) -> Result<(Vec<StatRow>, Option<String>)> {
        let sql = format!(
            "SELECT {}, (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_stat_statements') \
             AS dbtune_extversion FROM {}(false)",
            counter_columns(v),
            Self::relation(schema)
        );
        let mut out = Vec::new();
        let mut cols: Option<Vec<Option<usize>>> = None;
        let mut version = None;
        ctx.pg
            .for_each_row(&sql, &[], |r| {
                let cols = cols.get_or_insert_with(|| {
                    let names: Vec<&str> = r.columns().iter().map(|c| c.name()).collect();
                    version = names
                        .iter()
                        .position(|n| *n == "dbtune_extversion")
                        .and_then(|i| r.get::<_, Option<String>>(i));
                    FIELDS
                        .iter()
                        .map(|f| names.iter().position(|n| *n == f.0))
                        .collect()
                });
                let userid: Option<u32> = r
                    .try_get(0)
                    .map_err(|e| Error::other(format!("reading pg_stat_statements.userid: {e}")))?;
                let dbid: Option<u32> = r
                    .try_get(1)
                    .map_err(|e| Error::other(format!("reading pg_stat_statements.dbid: {e}")))?;
                let queryid: Option<i64> = r.try_get(2).map_err(|e| {
                    Error::other(format!("reading pg_stat_statements.queryid: {e}"))
                })?;
                let mut vals = [Num::Null; NF];
                for (fi, (name, ty, _)) in FIELDS.iter().enumerate() {
                    let v = match cols[fi] {
                        None => Num::Null,
                        Some(ci) => {
                            let err = |e: postgres::Error| {
                                Error::other(format!("reading pg_stat_statements.{name}: {e}"))
                            };
                            match ty {
                                Ty::I => r
                                    .try_get::<_, Option<i64>>(ci)
                                    .map_err(err)?
                                    .map_or(Num::Null, Num::I),
                                Ty::F => r
                                    .try_get::<_, Option<f64>>(ci)
                                    .map_err(err)?
                                    .map_or(Num::Null, Num::F),
                                Ty::B => r
                                    .try_get::<_, Option<bool>>(ci)
                                    .map_err(err)?
                                    .map_or(Num::Null, Num::B),
                            }
                        }
                    };
                    vals[fi] = v;
                }
                let key = match (queryid, userid, dbid) {
                    (Some(q), Some(u), Some(d)) => Some((q, u, d)),
                    _ => None,
                };
                let ids = [
                    userid.map_or(Num::Null, |u| Num::I(u as i64)),
                    dbid.map_or(Num::Null, |d| Num::I(d as i64)),
                    queryid.map_or(Num::Null, Num::I),
                ];
                out.push(StatRow { key, ids, vals });
                Ok(())
            })
            .context("failed to query pg_stat_statements")?;
        Ok((out, version))
    }

    fn extension(&self, ctx: &CollectCtx<'_>) -> Result<((u32, u32), String)> {
        let rows = ctx
            .pg
            .query(
                "SELECT e.extversion, n.nspname FROM pg_catalog.pg_extension e \
                 JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'",
                &[],
            )
            .context("failed to query pg_stat_statements extension version")?;
        let row = rows.first().ok_or_else(|| {
            Error::other(
                "failed to query pg_stat_statements extension version: no rows in result set",
            )
        })?;
        let ver: String = row.get(0);
        let schema: String = row.get(1);
        let v = parse_ext_version(&ver).ok_or_else(|| {
            Error::other(format!(
                "could not parse pg_stat_statements extension version from {ver:?}"
            ))
        })?;
        Ok((v, schema))
    }

    fn row_json(&self, r: &StatRow) -> Value {
        let mut m = Map::with_capacity(FIELDS.len() + 5);
        m.insert("userid".into(), r.ids[0].json());
        m.insert("dbid".into(), r.ids[1].json());
        m.insert("queryid".into(), r.ids[2].json());
        if self.include_queries {
            let (q, l) = match r.key {
                Some(k) => self
                    .texts
                    .map
                    .get(&k)
                    .map(|e| (e.query.as_deref().and_then(unpack), e.query_len))
                    .unwrap_or((None, None)),
                None => {
                    let q: String = HIDDEN_TEXT.chars().take(self.max_len as usize).collect();
                    (Some(q), Some(HIDDEN_TEXT.len() as i64))
                }
            };
            if let Some(q) = q {
                m.insert("query".into(), Value::from(q));
            }
            if let Some(l) = l {
                m.insert("query_len".into(), Value::from(l));
            }
        }
        for (i, (name, _, _)) in FIELDS.iter().enumerate() {
            let v = r.vals[i];
            if v == Num::Null && OMITEMPTY.contains(name) {
                continue;
            }
            m.insert((*name).into(), v.json());
        }
        Value::Object(m)
    }
}

struct Delta {
    calls: i64,
    exec: f64,
}

impl CatalogCollector for PgStatStatements {
    fn collect_into(&mut self, ctx: &CollectCtx<'_>, out: &mut PayloadSink) -> Result<bool> {
        self.tick += 1;
        let collected_at = SystemTime::now();
        // The extension's version and schema are read once; the counters statement reports
        // the current version, and a change (upgrade) or a failure makes this tick re-read them.
        let mut attempt = 0;
        let (raw, schema) = loop {
            attempt += 1;
            let (v, schema) = match self.ext.clone() {
                Some(e) => e,
                None => {
                    let e = self.extension(ctx)?;
                    // New extension version (or first run): new column set, fresh baseline.
                    self.snapshot = None;
                    self.texts.clear();
                    self.ext = Some(e.clone());
                    e
                }
            };
            match self.read_counters(ctx, v, &schema) {
                Ok((_, Some(now))) if parse_ext_version(&now) != Some(v) && attempt == 1 => {
                    self.ext = None;
                }
                Ok((raw, _)) => break (raw, schema),
                Err(e) if attempt == 1 => {
                    log::debug!("pg_stat_statements: re-reading the extension after: {e}");
                    self.ext = None;
                }
                Err(e) => {
                    self.ext = None;
                    return Err(e);
                }
            }
        };

        // Verdicts and texts for statements not seen before.
        let mut live: HashMap<Key, ()> = HashMap::with_capacity(raw.len());
        let mut unknown = Vec::new();
        for r in &raw {
            if let Some(k) = r.key {
                if live.insert(k, ()).is_none() && !self.texts.map.contains_key(&k) {
                    unknown.push(k);
                }
            }
        }
        // Texts come along when the new statements fit in one payload; otherwise only the
        // verdicts, and texts later for the rows actually sent (bounds memory and transfer).
        // Texts come along (compressed, within the budget); rows sent without one yet get
        // theirs below.
        self.fetch_texts(ctx, &schema, &unknown, true, &Default::default())?;
        self.texts.retain(&live);

        // Excluded statements are dropped; statements whose text vanished between the two reads
        // are kept in the baseline but not sent this tick.
        let mut rows = Vec::with_capacity(raw.len());
        for r in raw {
            match r.key.map(|k| self.texts.map.get(&k).map(|e| e.excluded)) {
                Some(Some(true)) => {}
                _ => rows.push(r),
            }
        }
        let rows = aggregate(rows);

        let (ci, ei) = (idx("calls"), idx("total_exec_time"));
        let counters = |r: &StatRow| {
            let c = match r.vals[ci] {
                Num::I(i) => Some(i),
                _ => None,
            };
            (c, r.vals[ei].f())
        };
        let mut deltas: Vec<Option<Delta>> = Vec::with_capacity(rows.len());
        let (mut sum_calls, mut sum_exec, mut delta_count) = (0i64, 0f64, 0usize);
        for r in &rows {
            let d = match (&self.snapshot, r.key) {
                (Some(prev), Some(k)) => {
                    let (pc, pe) = prev.get(&k).copied().unwrap_or((Some(0), Some(0.0)));
                    let (c, e) = counters(r);
                    match (c, pc, e, pe) {
                        (Some(c), Some(pc), Some(e), Some(pe)) if c - pc > 0 && e - pe > 0.0 => {
                            Some(Delta {
                                calls: c - pc,
                                exec: e - pe,
                            })
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(d) = &d {
                delta_count += 1;
                sum_calls += d.calls;
                sum_exec += d.exec;
            }
            deltas.push(d);
        }
        let first_run = self.snapshot.is_none();
        let visible: Vec<bool> = rows
            .iter()
            .map(|r| r.key.is_none_or(|k| self.texts.map.contains_key(&k)))
            .collect();

        // Top-N by interval mean time (stable: rows without a delta keep their order).
        let mut order: Vec<usize> = (0..rows.len()).filter(|&i| visible[i]).collect();
        let rank = |i: usize| deltas[i].as_ref().map_or(0.0, |d| d.exec / d.calls as f64);
        if !first_run {
            order.sort_by(|&a, &b| {
                rank(b)
                    .partial_cmp(&rank(a))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
        }
        if self.diff_limit > 0 && order.len() > self.diff_limit {
            order.truncate(self.diff_limit);
        }

        // Texts evicted from the cache are fetched again for the rows being sent.
        if self.include_queries {
            let missing: Vec<Key> = order
                .iter()
                .filter_map(|&i| rows[i].key)
                .filter(|k| self.texts.map.get(k).is_some_and(|e| e.query.is_none()))
                .collect();
            if !missing.is_empty() {
                let sent: std::collections::HashSet<Key> = missing.iter().copied().collect();
                for k in &missing {
                    if let Some(e) = self.texts.map.remove(k) {
                        self.texts.bytes -= e.query.as_ref().map_or(0, |q| q.len());
                    }
                }
                // The same fetch fills the cache with the other texts still missing (within
                // the budget), so the next ticks need none.
                let mut keys = missing;
                if self.texts.bytes < self.texts.budget {
                    keys.extend(
                        self.texts
                            .map
                            .iter()
                            .filter(|(k, e)| e.query.is_none() && !e.excluded && !sent.contains(k))
                            .map(|(k, _)| *k),
                    );
                }
                self.fetch_texts(ctx, &schema, &keys, true, &sent)?;
            }
        }
        for &i in &order {
            if let Some(e) = rows[i].key.and_then(|k| self.texts.map.get_mut(&k)) {
                e.last_used = self.tick;
            }
        }

        out.begin(collected_at)?;
        out.begin_rows()?;
        for &i in &order {
            out.value_row(&self.row_json(&rows[i]))?;
        }
        out.end_rows()?;
        if order.iter().any(|&i| deltas[i].is_some()) {
            out.member_with("deltas", |out| {
                out.scratch().push('[');
                let mut first = true;
                for &i in &order {
                    let (Some(d), r) = (&deltas[i], &rows[i]) else {
                        continue;
                    };
                    let mut m = Map::new();
                    m.insert("userid".into(), r.ids[0].json());
                    m.insert("dbid".into(), r.ids[1].json());
                    m.insert("queryid".into(), r.ids[2].json());
                    m.insert("calls".into(), Value::from(d.calls));
                    m.insert("total_exec_time".into(), Num::F(d.exec).json());
                    if !first {
                        out.scratch().push(',');
                    }
                    first = false;
                    crate::gojson::write_value(out.scratch(), &Value::Object(m))
                        .map_err(Error::other)?;
                    out.flush_member()?;
                }
                out.scratch().push(']');
                Ok(())
            })?;
        }
        self.texts.enforce_budget();
        self.snapshot = Some(
            rows.iter()
                .filter_map(|r| r.key.map(|k| (k, counters(r))))
                .collect(),
        );
        out.member("delta_count", &Value::from(delta_count))?;
        let avg = if sum_calls > 0 {
            sum_exec / sum_calls as f64
        } else {
            0.0
        };
        out.member("average_query_runtime", &Num::F(avg).json())?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        key: Option<Key>,
        calls: i64,
        total: f64,
        mean: f64,
        sd: f64,
        min: f64,
        max: f64,
    ) -> StatRow {
        let mut vals = [Num::Null; NF];
        vals[idx("calls")] = Num::I(calls);
        vals[idx("total_exec_time")] = Num::F(total);
        vals[idx("mean_exec_time")] = Num::F(mean);
        vals[idx("stddev_exec_time")] = Num::F(sd);
        vals[idx("min_exec_time")] = Num::F(min);
        vals[idx("max_exec_time")] = Num::F(max);
        vals[idx("toplevel")] = Num::B(true);
        StatRow {
            key,
            ids: [Num::I(10), Num::I(5), Num::I(-4242)],
            vals,
        }
    }

    #[test]
    fn aggregation_pools_stddev_and_recomputes_means() {
        let k = Some((-4242, 10, 5));
        let out = aggregate(vec![
            row(k, 2, 30.0, 15.0, 5.0, 10.0, 20.0),
            row(k, 1, 30.0, 30.0, 0.0, 30.0, 30.0),
        ]);
        assert_eq!(out.len(), 1);
        let v = &out[0].vals;
        assert_eq!(v[idx("calls")], Num::I(3));
        assert_eq!(v[idx("total_exec_time")], Num::F(60.0));
        assert_eq!(v[idx("mean_exec_time")], Num::F(20.0));
        assert_eq!(v[idx("min_exec_time")], Num::F(10.0));
        assert_eq!(v[idx("max_exec_time")], Num::F(30.0));
        assert_eq!(v[idx("toplevel")], Num::Null);
        let Num::F(sd) = v[idx("stddev_exec_time")] else {
            panic!()
        };
        assert!((sd - (200.0f64 / 3.0).sqrt()).abs() < 1e-9, "{sd}");
        // Plan stddev had no inputs → null.
        assert_eq!(v[idx("stddev_plan_time")], Num::Null);
    }

    #[test]
    fn passthrough_rows_follow_keyed_rows() {
        let out = aggregate(vec![
            row(None, 1, 1.0, 1.0, 0.0, 1.0, 1.0),
            row(Some((1, 1, 1)), 5, 100.0, 20.0, 0.0, 1.0, 1.0),
            row(Some((1, 1, 1)), 3, 50.0, 16.0, 0.0, 1.0, 1.0),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].vals[idx("calls")], Num::I(8));
        assert_eq!(out[0].vals[idx("total_exec_time")], Num::F(150.0));
        assert!(out[1].key.is_none());
    }

    #[test]
    fn versions_and_columns() {
        assert_eq!(parse_ext_version("1.10"), Some((1, 10)));
        assert_eq!(parse_ext_version("1.11dev"), Some((1, 11)));
        assert_eq!(parse_ext_version("x"), None);
        assert!(counter_columns((1, 7)).contains("total_time AS total_exec_time"));
        assert!(counter_columns((1, 7)).contains("NULL::bigint AS wal_bytes"));
        assert!(!counter_columns((1, 8)).contains("toplevel"));
        assert!(counter_columns((1, 9)).contains("toplevel"));
        assert!(counter_columns((1, 10)).contains("blk_read_time AS shared_blk_read_time"));
        assert!(counter_columns((1, 11)).contains("local_blk_write_time"));
    }
}
