//! `pg_stat_statements` (collectors.md §4): per-statement counters, aggregated by
//! (queryid, userid, dbid), with interval deltas and a top-N cut.
//!
//! Cheaper than the Go agent (DECISIONS.md): counters are read every tick with
//! `pg_stat_statements(false)` (no query texts), in two statements: ids, calls and total exec
//! time of every statement (all that ranking, deltas and the baseline need; 48 bytes a
//! statement in memory), then the full counters of the at most `diff_limit` rows sent, by key.
//! The sent rows' counters are therefore read a few milliseconds after the ones the deltas are
//! computed from. With few statements (at most twice `diff_limit` at the last tick, or no cap)
//! one read of every full row costs the server less, and is what is done. Texts — and the §4.1 exclusion filter, which needs them — are fetched only for
//! statement keys not seen before, and kept in a cache bounded by a byte budget of compressed
//! text (least recently sent texts are dropped first and re-fetched when needed).
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
/// Previous tick's aggregated counters: key → index into `vals` (calls, total_exec_time). The
/// index is the tick's aggregation map, kept; excluded statements hold (0, 0), as if absent.
struct Snapshot {
    pos: HashMap<Key, u32>,
    vals: Vec<(Option<i64>, Option<f64>)>,
}

impl Snapshot {
    fn get(&self, k: &Key) -> (Option<i64>, Option<f64>) {
        self.pos
            .get(k)
            .map_or((Some(0), Some(0.0)), |&i| self.vals[i as usize])
    }
}

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

const _: () = assert!(std::mem::size_of::<StatRow>() == 352);

/// Bits 61..63 of [`StatRow::nulls`]: userid, dbid, queryid NULL (a pass-through row).
const ID_NULL_SHIFT: u32 = 61;

/// One row's counters as 8-byte words (an `i64`, the bits of an `f64` or a bool, per the field's
/// [`Ty`]) with a null bitmask: 352 bytes, no allocation, so a tick's rows are one contiguous
/// buffer (half the size of a vector of tagged numbers).
/// The columns read for every statement each tick (ranking, deltas, the snapshot): ids, calls
/// and total exec time. The full counters are read only for the rows sent.
pub fn light_columns(v: (u32, u32)) -> &'static str {
    if v >= (1, 8) {
        "userid, dbid, queryid, calls, total_exec_time"
    } else {
        "userid, dbid, queryid, calls, total_time AS total_exec_time"
    }
}

/// One statement as every tick needs it: 48 bytes (the full counters are read for the rows
/// sent only, so a tick holds all statements in this form and at most `diff_limit` full rows).
#[derive(Clone, Copy, Debug)]
struct Light {
    key: Key,
    calls: Option<i64>,
    exec: Option<f64>,
}

const _: () = assert!(std::mem::size_of::<Light>() == 48);

/// Light rows merged by key as they arrive (§4.3 step 2 for calls and total exec time: NULL-aware
/// sums); pass-through rows are only counted.
#[derive(Default)]
struct LightAgg {
    rows: Vec<Light>,
    pass: usize,
    /// Key → index in `rows`; becomes the next snapshot's index.
    pos: HashMap<Key, u32>,
}

impl LightAgg {
    /// The light view of a full read (same sums: calls and total exec time merge alike).
    fn of(full: &Aggregator) -> LightAgg {
        let light = |r: &StatRow| {
            let calls = match r.get(idx("calls")) {
                Num::I(i) => Some(i),
                _ => None,
            };
            Light {
                key: r.key,
                calls,
                exec: r.get(idx("total_exec_time")).f(),
            }
        };
        LightAgg {
            rows: full.rows.iter().map(light).collect(),
            pass: full.pass.len(),
            pos: full.pos.clone(),
        }
    }
    fn add(&mut self, key: Option<Key>, calls: Option<i64>, exec: Option<f64>) {
        let Some(k) = key else {
            self.pass += 1;
            return;
        };
        match self.pos.get(&k) {
            Some(&i) => {
                let m = &mut self.rows[i as usize];
                m.calls = match (m.calls, calls) {
                    (Some(a), Some(b)) => Some(a.saturating_add(b)),
                    (a, b) => a.or(b),
                };
                m.exec = match (m.exec, exec) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
            }
            None => {
                self.pos.insert(k, self.rows.len() as u32);
                self.rows.push(Light {
                    key: k,
                    calls,
                    exec,
                });
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct StatRow {
    /// (queryid, userid, dbid); a NULL component is 0 with its bit set in `nulls`.
    key: Key,
    /// Bit i: `FIELDS[i]` is NULL; bits from [`ID_NULL_SHIFT`]: the ids.
    nulls: u64,
    vals: [u64; NF],
}

impl StatRow {
    fn new(queryid: Option<i64>, userid: Option<u32>, dbid: Option<u32>) -> StatRow {
        let nulls = (userid.is_none() as u64) << ID_NULL_SHIFT
            | (dbid.is_none() as u64) << (ID_NULL_SHIFT + 1)
            | (queryid.is_none() as u64) << (ID_NULL_SHIFT + 2)
            | ((1u64 << NF) - 1);
        StatRow {
            key: (queryid.unwrap_or(0), userid.unwrap_or(0), dbid.unwrap_or(0)),
            nulls,
            vals: [0; NF],
        }
    }
    /// The aggregation key; `None` when a component is NULL (pass-through row).
    fn key(&self) -> Option<Key> {
        (self.nulls >> ID_NULL_SHIFT == 0).then_some(self.key)
    }
    /// userid, dbid, queryid as read.
    fn ids(&self) -> [Num; 3] {
        let null = |b: u32| self.nulls >> (ID_NULL_SHIFT + b) & 1 == 1;
        [
            if null(0) {
                Num::Null
            } else {
                Num::I(self.key.1 as i64)
            },
            if null(1) {
                Num::Null
            } else {
                Num::I(self.key.2 as i64)
            },
            if null(2) {
                Num::Null
            } else {
                Num::I(self.key.0)
            },
        ]
    }
    fn get(&self, i: usize) -> Num {
        if self.nulls >> i & 1 == 1 {
            return Num::Null;
        }
        let w = self.vals[i];
        match FIELDS[i].1 {
            Ty::I => Num::I(w as i64),
            Ty::F => Num::F(f64::from_bits(w)),
            Ty::B => Num::B(w != 0),
        }
    }
    fn set(&mut self, i: usize, n: Num) {
        let (null, w) = match n {
            Num::Null => (true, 0),
            Num::I(v) => (false, v as u64),
            Num::F(v) => (false, v.to_bits()),
            Num::B(v) => (false, v as u64),
        };
        self.nulls = self.nulls & !(1 << i) | (null as u64) << i;
        self.vals[i] = w;
    }
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

/// Exec and plan pools of one row on its own (before any merge).
fn pools_of(r: &StatRow) -> (Pool, Pool) {
    let (mut exec, mut plan) = (Pool::default(), Pool::default());
    let f = |n: &str| r.get(idx(n)).f();
    exec.add(f("calls"), f("mean_exec_time"), f("stddev_exec_time"));
    plan.add(f("plans"), f("mean_plan_time"), f("stddev_plan_time"));
    (exec, plan)
}

fn merge_into(a: &mut StatRow, b: &StatRow) {
    for (i, (_, ty, agg)) in FIELDS.iter().enumerate() {
        let (x, y) = (a.get(i), b.get(i));
        let v = match (agg, x, y) {
            (_, Num::Null, y) if *agg != Agg::Null => y,
            (_, x, Num::Null) => x,
            (Agg::Sum, Num::I(p), Num::I(q)) if *ty == Ty::I => Num::I(p.saturating_add(q)),
            (Agg::Sum, x, y) => Num::F(x.f().unwrap_or(0.0) + y.f().unwrap_or(0.0)),
            (Agg::Min, x, y) => Num::F(x.f().unwrap_or(f64::MAX).min(y.f().unwrap_or(f64::MAX))),
            (Agg::Max, x, y) => Num::F(x.f().unwrap_or(f64::MIN).max(y.f().unwrap_or(f64::MIN))),
            _ => x,
        };
        a.set(i, v);
    }
}

/// §4.3 step 2, done as rows arrive: rows with the same (queryid, userid, dbid) merge into the
/// first one in place (one buffer for the tick, never a second copy); rows lacking a key
/// component are kept apart and follow the keyed rows unmerged.
#[derive(Default)]
struct Aggregator {
    rows: Vec<StatRow>,
    pass: Vec<StatRow>,
    /// Key → index in `rows`; becomes the next snapshot's index.
    pos: HashMap<Key, u32>,
    /// Pooled stddev inputs, only for rows that had a duplicate.
    pools: HashMap<u32, (Pool, Pool)>,
}

impl Aggregator {
    fn with_capacity(n: usize) -> Aggregator {
        Aggregator {
            rows: Vec::with_capacity(n),
            pos: HashMap::with_capacity(n),
            ..Default::default()
        }
    }
    fn add(&mut self, r: StatRow) {
        let Some(k) = r.key() else {
            self.pass.push(r);
            return;
        };
        match self.pos.get(&k) {
            Some(&i) => {
                let m = &mut self.rows[i as usize];
                let p = self.pools.entry(i).or_insert_with(|| pools_of(m));
                let f = |n: &str| r.get(idx(n)).f();
                p.0.add(f("calls"), f("mean_exec_time"), f("stddev_exec_time"));
                p.1.add(f("plans"), f("mean_plan_time"), f("stddev_plan_time"));
                merge_into(m, &r);
            }
            None => {
                self.pos.insert(k, self.rows.len() as u32);
                self.rows.push(r);
            }
        }
    }
    /// Means recomputed, stddevs pooled, `toplevel` nulled on every keyed row (§4.3 step 2).
    fn finish(&mut self) {
        let mean = |total: Num, n: Num| match (total.f(), n.f()) {
            (None, _) => Num::Null,
            (Some(_), None) => Num::F(0.0),
            (Some(_), Some(0.0)) => Num::F(0.0),
            (Some(t), Some(c)) => Num::F(t / c),
        };
        for (i, r) in self.rows.iter_mut().enumerate() {
            let (exec, plan) = self
                .pools
                .get(&(i as u32))
                .copied()
                .unwrap_or_else(|| pools_of(r));
            let g = |r: &StatRow, n: &str| r.get(idx(n));
            r.set(
                idx("mean_exec_time"),
                mean(g(r, "total_exec_time"), g(r, "calls")),
            );
            r.set(
                idx("mean_plan_time"),
                mean(g(r, "total_plan_time"), g(r, "plans")),
            );
            r.set(idx("stddev_exec_time"), exec.result());
            r.set(idx("stddev_plan_time"), plan.result());
            r.set(idx("toplevel"), Num::Null);
        }
        self.pools = HashMap::new();
    }
}

/// §4.3 step 2 on a list of rows: keyed rows merged in first-seen order with means and pooled
/// stddevs recomputed and `toplevel` nulled, then the pass-through rows.
pub fn aggregate(rows: Vec<StatRow>) -> Vec<StatRow> {
    let mut a = Aggregator::default();
    for r in rows {
        a.add(r);
    }
    a.finish();
    let mut out = a.rows;
    out.extend(a.pass);
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
    fn retain(&mut self, live: &HashMap<Key, u32>) {
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
    /// Rows of the last tick: the next tick's buffer is sized from it (no doubling copies).
    last_len: usize,
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
            last_len: 0,
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

    /// Reads ids, calls and total exec time of every statement, streaming, merged by key as they
    /// arrive into a buffer sized from the last tick. Also returns the extension version the
    /// server reports now (read in the same statement, so an upgrade is noticed without a
    /// separate query each tick).
    fn read_light(
        &self,
        ctx: &CollectCtx<'_>,
        v: (u32, u32),
        schema: &str,
    ) -> Result<(LightAgg, Option<String>)> {
        let sql = format!(
            "SELECT {}, (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_stat_statements') \
             AS dbtune_extversion FROM {}(false)",
            light_columns(v),
            Self::relation(schema)
        );
        let n = self.last_len + self.last_len / 16 + 16;
        let mut out = LightAgg {
            rows: Vec::with_capacity(n),
            pass: 0,
            pos: HashMap::with_capacity(n),
        };
        let mut version = None;
        let mut first = true;
        ctx.pg
            .for_each_row(&sql, &[], |r| {
                if first {
                    first = false;
                    version = r.get::<_, Option<String>>(5);
                }
                let col = |name: &str, e: postgres::Error| {
                    Error::other(format!("reading pg_stat_statements.{name}: {e}"))
                };
                let userid: Option<u32> = r.try_get(0).map_err(|e| col("userid", e))?;
                let dbid: Option<u32> = r.try_get(1).map_err(|e| col("dbid", e))?;
                let queryid: Option<i64> = r.try_get(2).map_err(|e| col("queryid", e))?;
                let calls: Option<i64> = r.try_get(3).map_err(|e| col("calls", e))?;
                let exec: Option<f64> = r.try_get(4).map_err(|e| col("total_exec_time", e))?;
                let key = match (queryid, userid, dbid) {
                    (Some(q), Some(u), Some(d)) => Some((q, u, d)),
                    _ => None,
                };
                out.add(key, calls, exec);
                Ok(())
            })
            .context("failed to query pg_stat_statements")?;
        Ok((out, version))
    }

    /// Reads the full counters of `sel`'s keys (and of the pass-through rows when its flag is
    /// set), or of every statement for `None` (then with the version the server reports, as
    /// [`PgStatStatements::read_light`]), streaming: each row becomes a compact [`StatRow`]
    /// merged into its key's row as it arrives.
    fn read_full(
        &self,
        ctx: &CollectCtx<'_>,
        v: (u32, u32),
        schema: &str,
        sel: Option<(&[Key], bool)>,
    ) -> Result<(Aggregator, Option<String>)> {
        // One statement text for both uses, so switching between them adds no new
        // pg_stat_statements entry (each one would cost a text fetch).
        let sql = format!(
            "SELECT {}, (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_stat_statements') \
             AS dbtune_extversion FROM {}(false) s WHERE $4::boolean \
             OR (s.queryid, s.userid, s.dbid) IN (SELECT * FROM unnest($1::bigint[], $2::oid[], $3::oid[])) \
             OR ($5::boolean AND (s.queryid IS NULL OR s.userid IS NULL OR s.dbid IS NULL))",
            counter_columns(v),
            Self::relation(schema),
        );
        let (keys, pass) = sel.unwrap_or((&[], false));
        let qids: Vec<i64> = keys.iter().map(|k| k.0).collect();
        let uids: Vec<u32> = keys.iter().map(|k| k.1).collect();
        let dids: Vec<u32> = keys.iter().map(|k| k.2).collect();
        let all = sel.is_none();
        let params: [&(dyn postgres::types::ToSql + Sync); 5] = [&qids, &uids, &dids, &all, &pass];
        let mut out = Aggregator::with_capacity(match sel {
            Some(_) => keys.len(),
            None => self.last_len + self.last_len / 16 + 16,
        });
        let mut version = None;
        let mut cols: Option<Vec<Option<usize>>> = None;
        ctx.pg
            .for_each_row(&sql, &params, |r| {
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
                let mut row = StatRow::new(queryid, userid, dbid);
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
                    row.set(fi, v);
                }
                out.add(row);
                Ok(())
            })
            .context(if sel.is_some() {
                "failed to query pg_stat_statements counters of the rows sent"
            } else {
                "failed to query pg_stat_statements"
            })?;
        out.finish();
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
        let ids = r.ids();
        m.insert("userid".into(), ids[0].json());
        m.insert("dbid".into(), ids[1].json());
        m.insert("queryid".into(), ids[2].json());
        if self.include_queries {
            let (q, l) = match r.key() {
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
            let v = r.get(i);
            if v == Num::Null && OMITEMPTY.contains(name) {
                continue;
            }
            m.insert((*name).into(), v.json());
        }
        Value::Object(m)
    }
}

impl CatalogCollector for PgStatStatements {
    fn collect_into(&mut self, ctx: &CollectCtx<'_>, out: &mut PayloadSink) -> Result<bool> {
        self.tick += 1;
        let collected_at = SystemTime::now();
        // The extension's version and schema are read once; the counters statement reports
        // the current version, and a change (upgrade) or a failure makes this tick re-read them.
        let mut attempt = 0;
        let (light, full_read, v, schema) = loop {
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
            // Few statements (at most twice what is sent): one read of everything costs the
            // server less than the light read plus the read of the rows sent.
            let one_read =
                self.tick > 1 && (self.diff_limit == 0 || self.last_len <= 2 * self.diff_limit);
            let read = if one_read {
                self.read_full(ctx, v, &schema, None)
                    .map(|(full, now)| ((LightAgg::of(&full), Some(full)), now))
            } else {
                self.read_light(ctx, v, &schema)
                    .map(|(l, now)| ((l, None), now))
            };
            match read {
                Ok((_, Some(now))) if parse_ext_version(&now) != Some(v) && attempt == 1 => {
                    self.ext = None;
                }
                Ok(((light, full), _)) => break (light, full, v, schema),
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
        let LightAgg { rows, pass, pos } = light;
        self.last_len = rows.len() + pass;

        // Verdicts and texts for statements not seen before.
        let unknown: Vec<Key> = rows
            .iter()
            .map(|r| r.key)
            .filter(|k| !self.texts.map.contains_key(k))
            .collect();
        // Texts come along (compressed, within the budget); rows sent without one yet get
        // theirs below.
        self.fetch_texts(ctx, &schema, &unknown, true, &Default::default())?;
        drop(unknown);
        self.texts.retain(&pos);

        // Excluded statements are dropped (left out of ranking, deltas and snapshot); statements
        // whose text vanished between the two reads are kept in the baseline but not sent.
        let excluded: Vec<bool> = rows
            .iter()
            .map(|r| self.texts.map.get(&r.key).is_some_and(|e| e.excluded))
            .collect();
        // Deltas of keyed rows, (0, _) for none: both diffs must be > 0.
        let mut deltas: Vec<(i64, f64)> = vec![(0, 0.0); rows.len()];
        let (mut sum_calls, mut sum_exec, mut delta_count) = (0i64, 0f64, 0usize);
        if let Some(prev) = &self.snapshot {
            for (i, r) in rows.iter().enumerate() {
                if excluded[i] {
                    continue;
                }
                if let ((Some(c), Some(pc)), (Some(e), Some(pe))) = {
                    let (pc, pe) = prev.get(&r.key);
                    ((r.calls, pc), (r.exec, pe))
                } {
                    if c - pc > 0 && e - pe > 0.0 {
                        deltas[i] = (c - pc, e - pe);
                        delta_count += 1;
                        sum_calls += c - pc;
                        sum_exec += e - pe;
                    }
                }
            }
        }
        let first_run = self.snapshot.is_none();
        let nk = rows.len();

        // Top-N by interval mean time (stable: rows without a delta keep their order); keyed
        // rows first in first-seen order, then pass-through rows (indices from `nk`).
        let mut order: Vec<u32> = (0..nk)
            .filter(|&i| !excluded[i] && self.texts.map.contains_key(&rows[i].key))
            .chain(nk..nk + pass)
            .map(|i| i as u32)
            .collect();
        drop(excluded);
        let rank = |i: u32| match deltas.get(i as usize) {
            Some(&(c, e)) if c > 0 => e / c as f64,
            _ => 0.0,
        };
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
        order.shrink_to_fit();
        let key_at = |i: u32| rows.get(i as usize).map(|r| r.key);

        // Texts evicted from the cache are fetched again for the rows being sent.
        if self.include_queries {
            let missing: Vec<Key> = order
                .iter()
                .filter_map(|&i| key_at(i))
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
            if let Some(e) = key_at(i).and_then(|k| self.texts.map.get_mut(&k)) {
                e.last_used = self.tick;
            }
        }

        // The full counters of the rows sent only (at most diff_limit rows in memory). They are
        // read just after the light read; deltas and the baseline come from the light read.
        let sent_keys: Vec<Key> = order.iter().filter_map(|&i| key_at(i)).collect();
        let with_pass = order.iter().any(|&i| i as usize >= nk);
        let full = match full_read {
            Some(full) => full,
            None if sent_keys.is_empty() && !with_pass => Aggregator::default(),
            None => {
                self.read_full(ctx, v, &schema, Some((&sent_keys, with_pass)))
                    .inspect_err(|_| self.ext = None)?
                    .0
            }
        };
        drop(sent_keys);
        // A statement deallocated between the two reads is left out with its delta (every delta
        // has its row).
        let full_at = |i: u32| -> Option<&StatRow> {
            match key_at(i) {
                Some(k) => full.pos.get(&k).map(|&j| &full.rows[j as usize]),
                None => full.pass.get(i as usize - nk),
            }
        };
        order.retain(|&i| full_at(i).is_some());
        let has_delta = |i: u32| deltas.get(i as usize).is_some_and(|d| d.0 > 0);

        out.begin(collected_at)?;
        out.begin_rows()?;
        for &i in &order {
            if let Some(r) = full_at(i) {
                out.value_row(&self.row_json(r))?;
            }
        }
        out.end_rows()?;
        if order.iter().any(|&i| has_delta(i)) {
            out.member_with("deltas", |out| {
                out.scratch().push('[');
                let mut first = true;
                for &i in &order {
                    let Some(r) = full_at(i).filter(|_| has_delta(i)) else {
                        continue;
                    };
                    let (d, ids) = (deltas[i as usize], r.ids());
                    let mut m = Map::new();
                    m.insert("userid".into(), ids[0].json());
                    m.insert("dbid".into(), ids[1].json());
                    m.insert("queryid".into(), ids[2].json());
                    m.insert("calls".into(), Value::from(d.0));
                    m.insert("total_exec_time".into(), Num::F(d.1).json());
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
        drop(full);
        self.texts.enforce_budget();
        // The next baseline: every keyed row's (calls, total), indexed by this tick's map.
        let vals = rows
            .iter()
            .map(|r| {
                if self.texts.map.get(&r.key).is_some_and(|e| e.excluded) {
                    (Some(0), Some(0.0))
                } else {
                    (r.calls, r.exec)
                }
            })
            .collect();
        drop(rows);
        self.snapshot = Some(Snapshot { pos, vals });
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
        let (q, u, d) = match key {
            Some((q, u, d)) => (Some(q), Some(u), Some(d)),
            None => (None, Some(10), Some(5)),
        };
        let mut r = StatRow::new(q, u, d);
        r.set(idx("calls"), Num::I(calls));
        r.set(idx("total_exec_time"), Num::F(total));
        r.set(idx("mean_exec_time"), Num::F(mean));
        r.set(idx("stddev_exec_time"), Num::F(sd));
        r.set(idx("min_exec_time"), Num::F(min));
        r.set(idx("max_exec_time"), Num::F(max));
        r.set(idx("toplevel"), Num::B(true));
        r
    }

    #[test]
    fn aggregation_pools_stddev_and_recomputes_means() {
        let k = Some((-4242, 10, 5));
        let out = aggregate(vec![
            row(k, 2, 30.0, 15.0, 5.0, 10.0, 20.0),
            row(k, 1, 30.0, 30.0, 0.0, 30.0, 30.0),
        ]);
        assert_eq!(out.len(), 1);
        let v = |n: &str| out[0].get(idx(n));
        assert_eq!(v("calls"), Num::I(3));
        assert_eq!(v("total_exec_time"), Num::F(60.0));
        assert_eq!(v("mean_exec_time"), Num::F(20.0));
        assert_eq!(v("min_exec_time"), Num::F(10.0));
        assert_eq!(v("max_exec_time"), Num::F(30.0));
        assert_eq!(v("toplevel"), Num::Null);
        let Num::F(sd) = v("stddev_exec_time") else {
            panic!()
        };
        assert!((sd - (200.0f64 / 3.0).sqrt()).abs() < 1e-9, "{sd}");
        // Plan stddev had no inputs → null.
        assert_eq!(v("stddev_plan_time"), Num::Null);
        // Untouched counters stay NULL through the merge.
        assert_eq!(v("wal_bytes"), Num::Null);
    }

    #[test]
    fn passthrough_rows_follow_keyed_rows() {
        let out = aggregate(vec![
            row(None, 1, 1.0, 1.0, 0.0, 1.0, 1.0),
            row(Some((1, 1, 1)), 5, 100.0, 20.0, 0.0, 1.0, 1.0),
            row(Some((1, 1, 1)), 3, 50.0, 16.0, 0.0, 1.0, 1.0),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].get(idx("calls")), Num::I(8));
        assert_eq!(out[0].get(idx("total_exec_time")), Num::F(150.0));
        assert!(out[1].key().is_none());
        // The pass-through row is not finalised: its mean stays as read.
        assert_eq!(out[1].get(idx("mean_exec_time")), Num::F(1.0));
        assert_eq!(out[1].ids()[2], Num::Null);
        assert_eq!(out[1].ids()[0], Num::I(10));
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
