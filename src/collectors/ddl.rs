//! `ddl` (collectors.md §3.5): a schema dump of the connected database —
//! `{"ddl": <text>, "ddl_hash": <sha256 hex>}`, skip-unchanged on the whole payload.
//!
//! Differences from the Go agent (deliberate fixes): schema discovery excludes `pg_%` with `_`
//! taken literally (user schemas such as `pgbouncer` are dumped); `CREATE SCHEMA` names are
//! quoted; PG 18 virtual generated columns are rendered as generated columns; identity sequences
//! keep their CYCLE flag; every statement carries the `/*dbtune*/` prefix. Relations under an
//! AccessExclusiveLock are left out of that run rather than waited on, and so is everything whose
//! rendering would open one: sequences owned by a locked table, views, materialized views,
//! SQL-standard function bodies and policies reading one, its policies and partitions.

use super::rowmap::{not_exclusively_locked, table_of};
use super::skip::SkipUnchanged;
use super::{CatalogCollector, CollectCtx, PayloadSink};
use crate::error::{Context, Result};
use postgres::Row;
use serde_json::Value;
use std::collections::HashSet;
use std::fmt::Write;

#[derive(Default)]
pub struct Ddl {
    skip: SkipUnchanged,
    /// The catalogs' signature at the last dump, and the runs since then it stayed the same.
    signature: Option<String>,
    same_signature: u32,
}

/// A cheap fingerprint of every catalog the dump reads: row count and sum of `xmin` per catalog.
/// Any DDL writes new catalog rows (a new `xmin`); statistics updates by VACUUM/ANALYZE are
/// in-place and leave it alone. The dump skips relations under an AccessExclusiveLock, so the
/// number of such locks is part of it too. While it is unchanged the (costly) dump is not run;
/// the dump still runs on every 30th unchanged collection, as skip-unchanged sends then anyway
/// (which also picks up what the signature cannot see, such as a role rename: pg_authid is
/// not readable without superuser).
const SIGNATURE_SQL: &str = "SELECT concat_ws('/', \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_class), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_attribute), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_attrdef), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_constraint), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_index), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_namespace), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_type), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_enum), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_extension), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_inherits), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_policy), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_proc), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_sequence), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_trigger), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_depend), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_collation), \
     (SELECT count(*) || ':' || COALESCE(sum(xmin::text::bigint), 0) FROM pg_catalog.pg_tablespace), \
     (SELECT count(*) FROM pg_catalog.pg_locks l WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' \
      AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = current_database())))";

const COLTYPES: &str = "SELECT DISTINCT a.atttypid FROM pg_catalog.pg_attribute a \
     JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped";
const NOT_EXT_OWNED: &str =
    "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = {} AND d.deptype = 'e')";
const NOT_PARTITION_CHILD: &str = "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent \
     WHERE i.inhrelid = c.oid AND pc.relkind = 'p')";
const QNAME: &str = "quote_ident(n.nspname) || '.' || quote_ident(c.relname)";

fn not_ext_owned(expr: &str) -> String {
    NOT_EXT_OWNED.replace("{}", expr)
}

/// The lock-skip rule for what a relation's definition reads beyond the relation itself:
/// true when none of the `pg_class` rows `deps` names (a subquery of oids) is under an
/// AccessExclusiveLock. `pg_get_expr` of a serial default opens the owner table and
/// `pg_get_viewdef` locks every relation the view reads, so those must be skipped too or the
/// whole dump waits for `lock_timeout` and fails.
fn none_exclusively_locked(deps: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM ({deps}) AS dep(oid) WHERE NOT ({}))",
        not_exclusively_locked("dep.oid")
    )
}

/// The relations an object of catalog `classid` (`p.oid` of `pg_proc`, …) refers to.
fn relations_used_by(classid: &str, objid: &str) -> String {
    format!(
        "SELECT ud.refobjid FROM pg_catalog.pg_depend ud WHERE ud.classid = 'pg_catalog.{classid}'::regclass \
         AND ud.objid = {objid} AND ud.refclassid = 'pg_catalog.pg_class'::regclass"
    )
}

/// The table owning sequence `c` (serial or identity column).
const SEQ_OWNER: &str = "SELECT od.refobjid FROM pg_catalog.pg_depend od WHERE od.objid = c.oid \
     AND od.classid = 'pg_catalog.pg_class'::regclass AND od.refclassid = 'pg_catalog.pg_class'::regclass \
     AND od.deptype IN ('a', 'i')";

/// The relations view (or materialized view) `c` reads, through its rewrite rule.
const VIEW_READS: &str = "SELECT vd.refobjid FROM pg_catalog.pg_rewrite rw JOIN pg_catalog.pg_depend vd \
     ON vd.classid = 'pg_catalog.pg_rewrite'::regclass AND vd.objid = rw.oid \
     WHERE rw.ev_class = c.oid AND vd.refclassid = 'pg_catalog.pg_class'::regclass AND vd.refobjid <> c.oid";

fn s(r: &Row, col: &str) -> String {
    r.get::<_, Option<String>>(col).unwrap_or_default()
}
fn os(r: &Row, col: &str) -> Option<String> {
    r.get::<_, Option<String>>(col)
}

struct Seq {
    name: String,
    data_type: String,
    start: i64,
    increment: i64,
    min: i64,
    max: i64,
    cache: i64,
    cycle: bool,
    kind: String,
    owner_table: Option<String>,
    owner_column: Option<String>,
    identity_kind: Option<String>,
    default_expr: Option<String>,
    owner_relkind: Option<String>,
}

impl Seq {
    fn options(&self, sep: &str) -> String {
        format!(
            "{sep}START WITH {}{sep}INCREMENT BY {}{sep}MINVALUE {}{sep}MAXVALUE {}{sep}CACHE {}{sep}{}",
            self.start,
            self.increment,
            self.min,
            self.max,
            self.cache,
            if self.cycle { "CYCLE" } else { "NO CYCLE" }
        )
    }
}

fn emit(out: &mut String, item: &str) {
    out.push('\n');
    out.push_str(item);
    out.push('\n');
}

fn trim_def(d: &str) -> &str {
    d.trim_end_matches([';', ' ', '\n', '\t'])
}

/// Builds the DDL text (empty when the database has no user schema).
pub fn dump(ctx: &CollectCtx<'_>) -> Result<String> {
    let mut c = ctx.pg.conn().context("failed to collect DDL")?;
    let q = |c: &mut crate::pg::Conn,
             what: &str,
             sql: &str,
             params: &[&(dyn postgres::types::ToSql + Sync)]| {
        crate::pg::query(c, sql, params).with_context(|| format!("failed to collect DDL: {what}"))
    };
    let schemas = q(
        &mut c,
        "schemas",
        "SELECT nspname::text AS nspname, quote_ident(nspname) AS quoted FROM pg_catalog.pg_namespace \
         WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' ORDER BY nspname",
        &[],
    )?;
    if schemas.is_empty() {
        return Ok(String::new());
    }
    let names: Vec<String> = schemas.iter().map(|r| s(r, "nspname")).collect();
    let quoted: Vec<String> = schemas.iter().map(|r| s(r, "quoted")).collect();
    let p: [&(dyn postgres::types::ToSql + Sync); 1] = [&names];

    let enums = q(
        &mut c,
        "enums",
        &format!(
            "SELECT quote_ident(tn.nspname) AS schema_name, quote_ident(t.typname) AS type_name, \
             array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels FROM pg_catalog.pg_type t \
             JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace JOIN pg_catalog.pg_enum e ON e.enumtypid = t.oid \
             WHERE t.typtype = 'e' AND t.oid IN ({COLTYPES}) GROUP BY tn.nspname, t.typname ORDER BY tn.nspname, t.typname"
        ),
        &p,
    )?;
    let domains = q(
        &mut c,
        "domains",
        &format!(
            "SELECT quote_ident(tn.nspname) AS schema_name, quote_ident(t.typname) AS type_name, \
             format_type(t.typbasetype, t.typtypmod) AS base_type, \
             (t.typnotnull AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.contypid = t.oid \
               AND pg_get_constraintdef(k.oid) LIKE 'NOT NULL%')) AS not_null, t.typdefault AS default_val, \
             COALESCE((SELECT array_agg(pg_get_constraintdef(k.oid) ORDER BY k.conname) FROM pg_catalog.pg_constraint k \
               WHERE k.contypid = t.oid), '{{}}'::text[]) AS constraint_defs \
             FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace \
             WHERE t.typtype = 'd' AND t.oid IN ({COLTYPES}) ORDER BY tn.nspname, t.typname"
        ),
        &p,
    )?;
    let composites = q(
        &mut c,
        "composite types",
        &format!(
            "SELECT quote_ident(tn.nspname) AS schema_name, quote_ident(t.typname) AS type_name, \
             string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum) AS attributes \
             FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped \
             WHERE t.typtype = 'c' AND t.typrelid <> 0 \
             AND (SELECT rc.relkind FROM pg_catalog.pg_class rc WHERE rc.oid = t.typrelid) = 'c' \
             AND t.oid IN ({COLTYPES}) GROUP BY tn.nspname, t.typname ORDER BY tn.nspname, t.typname"
        ),
        &p,
    )?;
    let functions = q(
        &mut c,
        "functions",
        &format!(
            "SELECT p.oid, p.proname::text AS name, pg_get_functiondef(p.oid) AS function_def FROM pg_catalog.pg_proc p \
             JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = ANY($1) AND p.prokind IN ('f', 'p') AND {} AND {} ORDER BY n.nspname, p.proname, p.oid",
            not_ext_owned("p.oid"),
            // A SQL-standard body (BEGIN ATOMIC) is deparsed like a view: it locks what it reads.
            none_exclusively_locked(&relations_used_by("pg_proc", "p.oid"))
        ),
        &p,
    )?;
    let lock_ok = not_exclusively_locked("c.oid");
    let tables = q(
        &mut c,
        "tables",
        &format!(
            "SELECT c.oid, c.relname::text AS name, {QNAME} AS quoted_name, c.relkind::text AS relkind, \
             c.relpersistence::text AS persistence, \
             CASE WHEN c.reloptions IS NOT NULL THEN array_to_string(c.reloptions, ', ') END AS rel_options, \
             CASE WHEN c.reltablespace <> 0 THEN (SELECT quote_ident(spcname) FROM pg_catalog.pg_tablespace WHERE oid = c.reltablespace) END AS tablespace, \
             CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key, \
             (SELECT string_agg(quote_ident(pn.nspname) || '.' || quote_ident(pc.relname), ', ' ORDER BY i.inhseqno) \
               FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent \
               JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace WHERE i.inhrelid = c.oid AND pc.relkind = 'r') AS inherits_from \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND {NOT_PARTITION_CHILD} AND {lock_ok} \
             ORDER BY n.nspname, c.relname"
        ),
        &p,
    )?;
    let columns = q(
        &mut c,
        "columns",
        &format!(
            "SELECT c.oid AS table_oid, {QNAME} AS table_name, a.attnum::int AS attnum, quote_ident(a.attname) AS name, \
             format_type(a.atttypid, a.atttypmod) AS type_name, \
             CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation \
               THEN (SELECT quote_ident(collname) FROM pg_catalog.pg_collation WHERE oid = a.attcollation) END AS collation, \
             NULLIF(a.attidentity::text, '') AS identity, NULLIF(a.attgenerated::text, '') AS generated, \
             a.attnotnull AS not_null, CASE WHEN d.adbin IS NOT NULL THEN pg_get_expr(d.adbin, d.adrelid) END AS default_expr, \
             CASE WHEN a.attstorage <> t.typstorage THEN a.attstorage::text END AS storage, \
             CASE WHEN a.attstattarget >= 0 THEN a.attstattarget::int END AS statistics \
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped \
             AND {NOT_PARTITION_CHILD} AND (a.attislocal OR a.attinhcount = 0) AND {lock_ok} ORDER BY c.oid, a.attnum"
        ),
        &p,
    )?;
    let constraints = q(
        &mut c,
        "constraints",
        &format!(
            "SELECT {QNAME} AS quoted_table, quote_ident(con.conname) AS quoted_con_name, pg_get_constraintdef(con.oid) AS constraint_def \
             FROM pg_catalog.pg_constraint con JOIN pg_catalog.pg_class c ON c.oid = con.conrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ANY($1) AND con.contype IN ('p', 'u', 'c', 'x') AND {lock_ok} ORDER BY n.nspname, c.relname, con.conname"
        ),
        &p,
    )?;
    let dep = "FROM pg_catalog.pg_depend d WHERE d.objid = c.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass";
    let sequences = q(
        &mut c,
        "sequences",
        &format!(
            "SELECT {QNAME} AS name, format_type(s.seqtypid, NULL) AS data_type, s.seqstart, s.seqincrement, s.seqmin, \
             s.seqmax, s.seqcache, s.seqcycle, \
             CASE WHEN EXISTS (SELECT 1 {dep} AND d.deptype = 'i') THEN 'identity' \
                  WHEN EXISTS (SELECT 1 {dep} AND d.deptype = 'a') THEN 'serial' ELSE 'standalone' END AS seq_kind, \
             (SELECT quote_ident(rn.nspname) || '.' || quote_ident(rc.relname) {dep} AND d.deptype IN ('a', 'i') LIMIT 1) AS owner_table_x, \
             (SELECT quote_ident(ra.attname) FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attribute ra \
               ON ra.attrelid = d.refobjid AND ra.attnum = d.refobjsubid WHERE d.objid = c.oid \
               AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0 LIMIT 1) AS owner_column, \
             (SELECT ra.attidentity::text FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attribute ra \
               ON ra.attrelid = d.refobjid AND ra.attnum = d.refobjsubid WHERE d.objid = c.oid \
               AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'i' AND d.refobjsubid > 0 LIMIT 1) AS identity_kind, \
             (SELECT pg_get_expr(ad.adbin, ad.adrelid) FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_attrdef ad \
               ON ad.adrelid = d.refobjid AND ad.adnum = d.refobjsubid WHERE d.objid = c.oid \
               AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'a' AND d.refobjsubid > 0 LIMIT 1) AS default_expr, \
             (SELECT rc.relkind::text FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class rc ON rc.oid = d.refobjid \
               WHERE d.objid = c.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1) AS owner_relkind \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid \
             WHERE n.nspname = ANY($1) AND c.relkind = 'S' AND {} AND {lock_ok} AND {} ORDER BY n.nspname, c.relname",
            not_ext_owned("c.oid"),
            none_exclusively_locked(SEQ_OWNER)
        )
        .replace(
            &format!("(SELECT quote_ident(rn.nspname) || '.' || quote_ident(rc.relname) {dep}"),
            "(SELECT quote_ident(rn.nspname) || '.' || quote_ident(rc.relname) FROM pg_catalog.pg_depend d \
             JOIN pg_catalog.pg_class rc ON rc.oid = d.refobjid JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace \
             WHERE d.objid = c.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass",
        ),
        &p,
    )?;
    let partitions = q(
        &mut c,
        "partitions",
        &format!(
            "SELECT {QNAME} AS child_name, quote_ident(pn.nspname) || '.' || quote_ident(pc.relname) AS parent_name, \
             pg_get_expr(c.relpartbound, c.oid) AS bound_expr FROM pg_catalog.pg_inherits i \
             JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace \
             WHERE n.nspname = ANY($1) AND pc.relkind = 'p' AND {lock_ok} AND {} ORDER BY pn.nspname, pc.relname, c.relname",
            not_exclusively_locked("pc.oid")
        ),
        &p,
    )?;
    let indexes = q(
        &mut c,
        "indexes",
        &format!(
            "SELECT x.indexname::text AS indexname, x.indexdef FROM pg_catalog.pg_indexes x \
             JOIN pg_catalog.pg_namespace n ON n.nspname = x.schemaname \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = x.indexname \
             WHERE x.schemaname = ANY($1) AND x.indexname NOT IN (SELECT ic.relname FROM pg_catalog.pg_constraint con \
               JOIN pg_catalog.pg_class ic ON ic.oid = con.conindid JOIN pg_catalog.pg_namespace inn ON inn.oid = ic.relnamespace \
               WHERE inn.nspname = ANY($1)) AND {lock_ok} AND {} ORDER BY x.schemaname, x.indexname",
            not_exclusively_locked(&table_of("c.oid"))
        ),
        &p,
    )?;
    let fks = q(
        &mut c,
        "foreign keys",
        &format!(
            "SELECT {QNAME} AS table_name, quote_ident(con.conname) AS con_name, pg_get_constraintdef(con.oid) AS constraint_def \
             FROM pg_catalog.pg_constraint con JOIN pg_catalog.pg_class c ON c.oid = con.conrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ANY($1) AND con.contype = 'f' AND {lock_ok} ORDER BY n.nspname, c.relname, con.conname"
        ),
        &p,
    )?;
    let opts = "CASE WHEN c.reloptions IS NOT NULL THEN array_to_string(c.reloptions, ', ') END AS rel_options";
    let views = q(
        &mut c,
        "views",
        &format!(
            "SELECT {QNAME} AS name, pg_get_viewdef(c.oid) AS view_def, {opts} \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ANY($1) AND c.relkind = 'v' AND {} AND {lock_ok} AND {} ORDER BY n.nspname, c.relname",
            not_ext_owned("c.oid"),
            none_exclusively_locked(VIEW_READS)
        ),
        &p,
    )?;
    let matviews = q(
        &mut c,
        "materialized views",
        &format!(
            "SELECT {QNAME} AS name, pg_get_viewdef(c.oid) AS view_def, {opts}, \
             CASE WHEN c.reltablespace <> 0 THEN (SELECT quote_ident(spcname) FROM pg_catalog.pg_tablespace WHERE oid = c.reltablespace) END AS tablespace \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ANY($1) AND c.relkind = 'm' AND {lock_ok} AND {} ORDER BY n.nspname, c.relname",
            none_exclusively_locked(VIEW_READS)
        ),
        &p,
    )?;
    let rls = q(
        &mut c,
        "row level security",
        &format!(
            "SELECT {QNAME} AS table_name, c.relforcerowsecurity AS force FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1) AND c.relrowsecurity \
             AND {lock_ok} ORDER BY n.nspname, c.relname"
        ),
        &p,
    )?;
    let policies = q(
        &mut c,
        "policies",
        &format!(
            "SELECT quote_ident(pol.polname) AS policy_name, {QNAME} AS table_name, pol.polcmd::text AS command, \
             pol.polpermissive AS permissive, \
             CASE WHEN pol.polroles = '{{0}}'::oid[] THEN ARRAY['PUBLIC']::text[] \
               ELSE ARRAY(SELECT quote_ident(rolname) FROM pg_catalog.pg_roles WHERE oid = ANY(pol.polroles) ORDER BY rolname) END AS roles, \
             pg_get_expr(pol.polqual, pol.polrelid) AS using_expr, pg_get_expr(pol.polwithcheck, pol.polrelid) AS with_check \
             FROM pg_catalog.pg_policy pol JOIN pg_catalog.pg_class c ON c.oid = pol.polrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1) AND {lock_ok} \
             AND {} ORDER BY n.nspname, c.relname, pol.polname",
            // A subquery in a policy is deparsed like a view: it locks what it reads.
            none_exclusively_locked(&relations_used_by("pg_policy", "pol.oid"))
        ),
        &p,
    )?;
    let triggers = q(
        &mut c,
        "triggers",
        &format!(
            "SELECT pg_get_triggerdef(t.oid) AS trigger_def FROM pg_catalog.pg_trigger t \
             JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = ANY($1) AND NOT t.tgisinternal AND {lock_ok} ORDER BY n.nspname, c.relname, t.tgname"
        ),
        &p,
    )?;
    let pk: HashSet<(u32, i32)> = q(
        &mut c,
        "primary keys",
        "SELECT con.conrelid, k::int AS attnum FROM pg_catalog.pg_constraint con \
         JOIN pg_catalog.pg_class c ON c.oid = con.conrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace, \
         unnest(con.conkey) AS k WHERE n.nspname = ANY($1) AND con.contype = 'p'",
        &p,
    )?
    .iter()
    .map(|r| (r.get::<_, u32>(0), r.get::<_, i32>(1)))
    .collect();
    // Extension statements; a failure here only loses these lines (as in the Go agent).
    let extensions = crate::pg::query(
        &mut c,
        "SELECT 'CREATE EXTENSION IF NOT EXISTS ' || quote_ident(e.extname) || ' WITH SCHEMA ' || quote_ident(n.nspname) || ';' \
         FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace \
         WHERE e.extname <> 'plpgsql' ORDER BY e.extname",
        &[],
    )
    .unwrap_or_default();
    drop(c);

    let seqs: Vec<Seq> = sequences
        .iter()
        .map(|r| Seq {
            name: s(r, "name"),
            data_type: s(r, "data_type"),
            start: r.get("seqstart"),
            increment: r.get("seqincrement"),
            min: r.get("seqmin"),
            max: r.get("seqmax"),
            cache: r.get("seqcache"),
            cycle: r.get("seqcycle"),
            kind: s(r, "seq_kind"),
            owner_table: os(r, "owner_table_x"),
            owner_column: os(r, "owner_column"),
            identity_kind: os(r, "identity_kind"),
            default_expr: os(r, "default_expr"),
            owner_relkind: os(r, "owner_relkind"),
        })
        .collect();
    let serial: Vec<&Seq> = seqs
        .iter()
        .filter(|q| {
            q.kind == "serial"
                && q.owner_table.is_some()
                && q.owner_column.is_some()
                && q.default_expr.is_some()
        })
        .collect();
    let identity: Vec<&Seq> = seqs
        .iter()
        .filter(|q| {
            q.kind == "identity"
                && q.owner_table.is_some()
                && q.owner_column.is_some()
                && q.identity_kind.is_some()
        })
        .collect();
    let standalone: Vec<&Seq> = seqs
        .iter()
        .filter(|q| q.kind != "serial" && q.kind != "identity")
        .collect();
    let owned = |list: &[&Seq]| -> HashSet<String> {
        list.iter()
            .map(|q| {
                format!(
                    "{}.{}",
                    q.owner_table.as_deref().unwrap_or(""),
                    q.owner_column.as_deref().unwrap_or("")
                )
            })
            .collect()
    };
    let serial_cols = owned(&serial);
    let identity_cols = owned(&identity);

    let mut out = String::new();
    for r in &extensions {
        out.push_str(&r.get::<_, String>(0));
        out.push_str("\n\n");
    }
    for (raw, qn) in names.iter().zip(&quoted) {
        if raw != "public" {
            let _ = write!(out, "CREATE SCHEMA IF NOT EXISTS {qn};\n\n");
        }
    }
    let mut extra_schemas: Vec<String> = Vec::new();
    for r in enums.iter().chain(&domains).chain(&composites) {
        let sn = s(r, "schema_name");
        if !quoted.contains(&sn) && !extra_schemas.contains(&sn) {
            let _ = write!(out, "CREATE SCHEMA IF NOT EXISTS {sn};\n\n");
            extra_schemas.push(sn);
        }
    }
    for r in &enums {
        let labels: Vec<String> = r
            .get::<_, Vec<String>>("labels")
            .iter()
            .map(|l| format!("'{}'", l.replace('\'', "''")))
            .collect();
        emit(
            &mut out,
            &format!(
                "CREATE TYPE {}.{} AS ENUM ({});",
                s(r, "schema_name"),
                s(r, "type_name"),
                labels.join(", ")
            ),
        );
    }
    for r in &domains {
        let mut d = format!(
            "CREATE DOMAIN {}.{} AS {}",
            s(r, "schema_name"),
            s(r, "type_name"),
            s(r, "base_type")
        );
        if r.get::<_, bool>("not_null") {
            d.push_str(" NOT NULL");
        }
        let defs: Vec<String> = r.get("constraint_defs");
        if !defs.is_empty() {
            d.push(' ');
            d.push_str(&defs.join(" "));
        }
        if let Some(def) = os(r, "default_val") {
            let _ = write!(d, " DEFAULT {def}");
        }
        d.push(';');
        emit(&mut out, &d);
    }
    for r in &composites {
        emit(
            &mut out,
            &format!(
                "CREATE TYPE {}.{} AS (\n    {}\n);",
                s(r, "schema_name"),
                s(r, "type_name"),
                s(r, "attributes")
            ),
        );
    }
    for q in standalone.iter().chain(&serial) {
        emit(
            &mut out,
            &format!(
                "CREATE SEQUENCE {}\n    AS {}{};",
                q.name,
                q.data_type,
                q.options("\n    ")
            ),
        );
    }
    for t in &tables {
        let oid: u32 = t.get("oid");
        let tq = s(t, "quoted_name");
        let mut lines = Vec::new();
        for col in columns
            .iter()
            .filter(|c| c.get::<_, u32>("table_oid") == oid)
        {
            let name = s(col, "name");
            let key = format!("{tq}.{name}");
            let mut l = format!("    {name} {}", s(col, "type_name"));
            if let Some(coll) = os(col, "collation") {
                let _ = write!(l, " COLLATE {coll}");
            }
            let ident = os(col, "identity").is_some() || identity_cols.contains(&key);
            match (os(col, "generated").as_deref(), os(col, "default_expr")) {
                (Some("s"), Some(e)) => {
                    let _ = write!(l, " GENERATED ALWAYS AS ({e}) STORED");
                }
                (Some("v"), Some(e)) => {
                    let _ = write!(l, " GENERATED ALWAYS AS ({e}) VIRTUAL");
                }
                (_, Some(e)) if !serial_cols.contains(&key) && !ident => {
                    let _ = write!(l, " DEFAULT {e}");
                }
                _ => {}
            }
            let attnum: i32 = col.get("attnum");
            if ident || (col.get::<_, bool>("not_null") && !pk.contains(&(oid, attnum))) {
                l.push_str(" NOT NULL");
            }
            lines.push(l);
        }
        let mut text = String::from(if s(t, "persistence") == "u" {
            "CREATE UNLOGGED TABLE "
        } else {
            "CREATE TABLE "
        });
        let _ = write!(text, "{tq} (\n{}\n)", lines.join(",\n"));
        if let Some(x) = os(t, "inherits_from") {
            let _ = write!(text, "\nINHERITS ({x})");
        }
        if let Some(x) = os(t, "partition_key") {
            let _ = write!(text, "\nPARTITION BY {x}");
        }
        if let Some(x) = os(t, "rel_options") {
            let _ = write!(text, "\nWITH ({x})");
        }
        if let Some(x) = os(t, "tablespace") {
            let _ = write!(text, "\nTABLESPACE {x}");
        }
        text.push_str(";\n");
        out.push('\n');
        out.push_str(&text);
    }
    for r in &partitions {
        emit(
            &mut out,
            &format!(
                "CREATE TABLE {} PARTITION OF {} {};",
                s(r, "child_name"),
                s(r, "parent_name"),
                s(r, "bound_expr")
            ),
        );
    }
    for q in &serial {
        emit(
            &mut out,
            &format!(
                "ALTER TABLE ONLY {} ALTER COLUMN {} SET DEFAULT {};",
                q.owner_table.as_deref().unwrap_or(""),
                q.owner_column.as_deref().unwrap_or(""),
                q.default_expr.as_deref().unwrap_or("")
            ),
        );
    }
    for q in &identity {
        let alter = if q.owner_relkind.as_deref() == Some("p") {
            "ALTER TABLE"
        } else {
            "ALTER TABLE ONLY"
        };
        let how = if q.identity_kind.as_deref() == Some("a") {
            "ALWAYS"
        } else {
            "BY DEFAULT"
        };
        emit(
            &mut out,
            &format!(
                "{alter} {} ALTER COLUMN {} ADD GENERATED {how} AS IDENTITY (\n    SEQUENCE NAME {}{}\n);",
                q.owner_table.as_deref().unwrap_or(""),
                q.owner_column.as_deref().unwrap_or(""),
                q.name,
                q.options("\n    ")
            ),
        );
    }
    for q in &serial {
        emit(
            &mut out,
            &format!(
                "ALTER SEQUENCE {} OWNED BY {}.{};",
                q.name,
                q.owner_table.as_deref().unwrap_or(""),
                q.owner_column.as_deref().unwrap_or("")
            ),
        );
    }
    for col in &columns {
        if let Some(st) = os(col, "storage") {
            let word = match st.as_str() {
                "p" => "PLAIN",
                "e" => "EXTERNAL",
                "m" => "MAIN",
                _ => "EXTENDED",
            };
            emit(
                &mut out,
                &format!(
                    "ALTER TABLE ONLY {} ALTER COLUMN {} SET STORAGE {word};",
                    s(col, "table_name"),
                    s(col, "name")
                ),
            );
        }
    }
    for col in &columns {
        if let Some(n) = col.get::<_, Option<i32>>("statistics") {
            emit(
                &mut out,
                &format!(
                    "ALTER TABLE ONLY {} ALTER COLUMN {} SET STATISTICS {n};",
                    s(col, "table_name"),
                    s(col, "name")
                ),
            );
        }
    }
    for v in &views {
        let with = os(v, "rel_options")
            .map(|o| format!(" WITH ({o})"))
            .unwrap_or_default();
        emit(
            &mut out,
            &format!(
                "CREATE VIEW {}{with} AS\n{};",
                s(v, "name"),
                trim_def(&s(v, "view_def"))
            ),
        );
    }
    for v in &matviews {
        let with = os(v, "rel_options")
            .map(|o| format!("\nWITH ({o})"))
            .unwrap_or_default();
        let ts = os(v, "tablespace")
            .map(|o| format!("\nTABLESPACE {o}"))
            .unwrap_or_default();
        emit(
            &mut out,
            &format!(
                "CREATE MATERIALIZED VIEW {}{with}{ts} AS\n{}\nWITH NO DATA;",
                s(v, "name"),
                trim_def(&s(v, "view_def"))
            ),
        );
    }
    for (i, f) in functions.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "\n{};", s(f, "function_def"));
    }
    for r in &constraints {
        emit(
            &mut out,
            &format!(
                "ALTER TABLE ONLY {}\n    ADD CONSTRAINT {} {};",
                s(r, "quoted_table"),
                s(r, "quoted_con_name"),
                s(r, "constraint_def")
            ),
        );
    }
    for r in &fks {
        emit(
            &mut out,
            &format!(
                "ALTER TABLE ONLY {}\n    ADD CONSTRAINT {} {};",
                s(r, "table_name"),
                s(r, "con_name"),
                s(r, "constraint_def")
            ),
        );
    }
    for r in &indexes {
        emit(&mut out, &format!("{};", s(r, "indexdef")));
    }
    for r in &triggers {
        emit(&mut out, &format!("{};", s(r, "trigger_def")));
    }
    for r in &rls {
        let t = s(r, "table_name");
        let mut x = format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;");
        if r.get::<_, bool>("force") {
            let _ = write!(x, "\nALTER TABLE {t} FORCE ROW LEVEL SECURITY;");
        }
        emit(&mut out, &x);
    }
    for r in &policies {
        let mut x = format!(
            "CREATE POLICY {} ON {}",
            s(r, "policy_name"),
            s(r, "table_name")
        );
        match s(r, "command").as_str() {
            "r" => x.push_str(" FOR SELECT"),
            "a" => x.push_str(" FOR INSERT"),
            "w" => x.push_str(" FOR UPDATE"),
            "d" => x.push_str(" FOR DELETE"),
            _ => {}
        }
        if !r.get::<_, bool>("permissive") {
            x.push_str(" AS RESTRICTIVE");
        }
        let roles: Vec<String> = r.get("roles");
        if !roles.is_empty() && roles != ["PUBLIC"] {
            let _ = write!(x, " TO {}", roles.join(", "));
        }
        if let Some(u) = os(r, "using_expr") {
            let _ = write!(x, "\n  USING ({u})");
        }
        if let Some(w) = os(r, "with_check") {
            let _ = write!(x, "\n  WITH CHECK ({w})");
        }
        x.push(';');
        emit(&mut out, &x);
    }
    Ok(out)
}

impl CatalogCollector for Ddl {
    fn collect_into(&mut self, ctx: &CollectCtx<'_>, out: &mut PayloadSink) -> Result<bool> {
        let sig: String = ctx
            .pg
            .query_one(SIGNATURE_SQL, &[])
            .context("failed to collect DDL: catalog signature")?
            .get(0);
        if self.signature.as_deref() == Some(sig.as_str())
            && self.same_signature + 1 < crate::collectors::skip::FORCE_AFTER
        {
            self.same_signature += 1;
            return Ok(false);
        }
        let forced = self.signature.as_deref() == Some(sig.as_str());
        let ddl = dump(ctx)?;
        // Remembered only once the dump worked, so a failed dump is retried next time.
        self.same_signature = 0;
        self.signature = Some(sig);
        if ddl.is_empty() {
            return Ok(false);
        }
        let hash = crate::gojson::sha256_hex(ddl.as_bytes());
        // The text's SHA-256 stands for the whole payload in skip-unchanged.
        if !self.skip.should_send(hash.as_bytes()) && !forced {
            return Ok(false);
        }
        out.begin_with_text("ddl", &ddl)?;
        out.member("ddl_hash", &Value::from(hash))?;
        Ok(true)
    }
}
