//! Catalog, activity and per-table collectors against a real PostgreSQL: real content, paging
//! state machines, the DDL round trip, lock safety and the capability probe.
mod support;

use dbtune_agent::collectors::{
    probe, registry, CatalogCollector, CollectCtx, CollectorSettings, ServerInfo,
};
use dbtune_agent::config::collectors::OptionValue;
use dbtune_agent::pg::{Pg, SessionLimits};
use serde_json::Value;
use std::thread;
use std::time::{Duration, Instant};
use support::pgcluster::PgCluster;

struct Agent {
    pg: Pg,
    server: ServerInfo,
}

impl Agent {
    fn connect(url: &str) -> Agent {
        let pg = Pg::new(url, 2, SessionLimits::default()).unwrap();
        let server = probe::probe(&pg).unwrap();
        Agent { pg, server }
    }
    fn build_with(&self, name: &str, opts: &[(&str, OptionValue)]) -> Box<dyn CatalogCollector> {
        let mut s = CollectorSettings::defaults_for(name);
        for (k, v) in opts {
            s.options.insert(k.to_string(), v.clone());
        }
        (registry::find(name).unwrap().build)(&s)
    }
    fn run(&self, c: &mut Box<dyn CatalogCollector>) -> Option<Value> {
        c.collect(&CollectCtx {
            pg: &self.pg,
            server: &self.server,
        })
        .unwrap()
    }
    fn once(&self, name: &str) -> Option<Value> {
        let mut c = self.build_with(name, &[]);
        self.run(&mut c)
    }
}

fn rows(v: &Value) -> &Vec<Value> {
    v["rows"].as_array().unwrap()
}

fn by<'a>(v: &'a Value, key: &str, val: &str) -> Option<&'a Value> {
    rows(v).iter().find(|r| r[key] == val)
}

const SCHEMA: &str = r#"
CREATE EXTENSION pg_stat_statements;
CREATE SCHEMA app;
CREATE TYPE app.status AS ENUM ('active', 'inactive', 'it''s complicated');
CREATE DOMAIN public.posint AS integer NOT NULL DEFAULT 0;
CREATE TYPE public.pair AS (a integer, b text);
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, bio text, st app.status, n posint, p pair);
ALTER TABLE users ALTER COLUMN bio SET STORAGE EXTERNAL;
ALTER TABLE users ALTER COLUMN name SET STATISTICS 500;
CREATE TABLE app.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, user_id int REFERENCES users(id),
  amount numeric(10,2) CHECK (amount > 0), doubled numeric GENERATED ALWAYS AS (amount * 2) STORED, note text COLLATE "C");
CREATE INDEX orders_user_idx ON app.orders (user_id) WHERE amount > 10;
CREATE UNIQUE INDEX users_lower_name ON users (lower(name));
CREATE SEQUENCE app.standalone_seq START 10 INCREMENT 5;
CREATE TABLE measurements (ts date NOT NULL, v int) PARTITION BY RANGE (ts);
CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE UNLOGGED TABLE scratch (k int) WITH (fillfactor = 70);
CREATE VIEW active_users AS SELECT id, name FROM users WHERE st = 'active';
CREATE MATERIALIZED VIEW user_count AS SELECT count(*) AS n FROM users;
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION app.touch();
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
CREATE POLICY users_self ON users FOR SELECT USING (name = current_user);
"#;

#[test]
fn ddl_is_complete_and_replays_into_an_identical_schema() {
    let pg = PgCluster::start();
    let mut admin = pg.client();
    admin.batch_execute("CREATE DATABASE src").unwrap();
    admin.batch_execute("CREATE DATABASE replay").unwrap();
    let mut src = postgres::Client::connect(&pg.url_db("src"), postgres::NoTls).unwrap();
    src.batch_execute(SCHEMA).unwrap();

    let agent = Agent::connect(&pg.url_db("src"));
    let mut c = agent.build_with("ddl", &[]);
    let v = agent.run(&mut c).expect("ddl sent");
    assert_eq!(
        v.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["ddl", "ddl_hash"]
    );
    let ddl = v["ddl"].as_str().unwrap();
    assert_eq!(
        v["ddl_hash"],
        dbtune_agent::gojson::sha256_hex(ddl.as_bytes())
    );
    for needle in [
        "CREATE SCHEMA IF NOT EXISTS app;\n\n",
        "\nCREATE TYPE app.status AS ENUM ('active', 'inactive', 'it''s complicated');\n",
        "\nCREATE DOMAIN public.posint AS integer NOT NULL DEFAULT 0;\n",
        "\nCREATE TYPE public.pair AS (\n    a integer, b text\n);\n",
        "\nCREATE SEQUENCE app.standalone_seq\n    AS bigint\n    START WITH 10\n    INCREMENT BY 5\n",
        "\nCREATE TABLE public.users (\n    id integer,\n    name text NOT NULL,\n",
        "    doubled numeric GENERATED ALWAYS AS ((amount * (2)::numeric)) STORED",
        "    note text COLLATE \"C\"",
        "\nPARTITION BY RANGE (ts);\n",
        "CREATE UNLOGGED TABLE public.scratch (\n    k integer\n)\nWITH (fillfactor=70);\n",
        "\nCREATE TABLE public.measurements_2024 PARTITION OF public.measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');\n",
        "\nALTER TABLE ONLY public.users ALTER COLUMN id SET DEFAULT nextval('users_id_seq'::regclass);\n",
        "\nALTER TABLE ONLY app.orders ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (\n    SEQUENCE NAME app.orders_id_seq\n",
        "\nALTER SEQUENCE public.users_id_seq OWNED BY public.users.id;\n",
        "\nALTER TABLE ONLY public.users ALTER COLUMN bio SET STORAGE EXTERNAL;\n",
        "\nALTER TABLE ONLY public.users ALTER COLUMN name SET STATISTICS 500;\n",
        "\nCREATE VIEW public.active_users AS\n",
        "\nCREATE MATERIALIZED VIEW public.user_count AS\n",
        "\nWITH NO DATA;\n",
        "CREATE OR REPLACE FUNCTION app.touch()",
        "\nALTER TABLE ONLY public.users\n    ADD CONSTRAINT users_pkey PRIMARY KEY (id);\n",
        "ADD CONSTRAINT orders_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id);\n",
        "\nCREATE INDEX orders_user_idx ON app.orders USING btree (user_id) WHERE (amount > (10)::numeric);\n",
        "\nCREATE TRIGGER users_touch BEFORE UPDATE ON public.users FOR EACH ROW EXECUTE FUNCTION app.touch();\n",
        "\nALTER TABLE public.users ENABLE ROW LEVEL SECURITY;\n",
        "\nCREATE POLICY users_self ON public.users FOR SELECT\n  USING ((name = CURRENT_USER));\n",
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public;\n\n",
    ] {
        assert!(ddl.contains(needle), "missing {needle:?} in:\n{ddl}");
    }
    assert!(
        !ddl.contains("CREATE TABLE public.measurements_2024 (\n"),
        "partition children are not tables"
    );
    // Unchanged schema → nothing sent until the 30th time.
    assert!(agent.run(&mut c).is_none());

    // The dump is executable and reproduces itself.
    let mut replay = postgres::Client::connect(&pg.url_db("replay"), postgres::NoTls).unwrap();
    replay
        .batch_execute(ddl)
        .unwrap_or_else(|e| panic!("replaying DDL: {e:?}\n{ddl}"));
    let again = Agent::connect(&pg.url_db("replay")).once("ddl").unwrap();
    assert_eq!(again["ddl"].as_str().unwrap(), ddl);
}

#[test]
fn activity_locks_prepared_and_database_collectors_show_real_state() {
    let pg = PgCluster::start_with(&["max_prepared_transactions = 5"]);
    let mut admin = pg.client();
    admin
        .batch_execute("CREATE TABLE t(id int); CREATE TABLE t2(id int)")
        .unwrap();
    admin
        .batch_execute("BEGIN; INSERT INTO t2 VALUES (1); PREPARE TRANSACTION 'gx1';")
        .unwrap();
    let agent = Agent::connect(&pg.url());

    // A blocked session and its blocker.
    let mut holder = pg.client();
    holder
        .batch_execute("SET application_name = 'lock-holder'; SET lock_timeout = '5s'; BEGIN; LOCK TABLE t IN SHARE MODE")
        .unwrap();
    let url = pg.url();
    let waiter = thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute("SET application_name = 'lock-waiter'; SET lock_timeout = '5s'; LOCK TABLE t IN EXCLUSIVE MODE").ok();
    });
    thread::sleep(Duration::from_millis(500));

    let v = agent.once("pg_locks").unwrap();
    let locks = rows(&v);
    assert!(
        locks
            .iter()
            .any(|r| r["granted"] == false && r["mode"] == "ExclusiveLock"),
        "{v}"
    );
    assert!(
        locks
            .iter()
            .any(|r| r["granted"] == true && r["mode"] == "ShareLock"),
        "{v}"
    );
    let first = locks[0].as_object().unwrap();
    assert_eq!(first.len(), 17);
    assert!(first["pid"].is_i64() && first["relation"].is_u64());

    let v = agent.once("pg_stat_activity").unwrap();
    let holder_row = by(&v, "application_name", "lock-holder").expect("holder listed");
    assert_eq!(holder_row.as_object().unwrap().len(), 23);
    assert_eq!(holder_row["client_addr"], "127.0.0.1");
    assert_eq!(holder_row["state"], "idle in transaction");
    let bs = holder_row["backend_start"].as_str().unwrap();
    assert!(bs.len() >= 20 && bs.as_bytes()[10] == b'T', "{bs}");
    let waiter_row = by(&v, "application_name", "lock-waiter").unwrap();
    assert_eq!(waiter_row["wait_event_type"], "Lock");
    assert!(waiter_row["backend_xmin"].is_string() || waiter_row["backend_xmin"].is_null());
    if agent.server.major() >= 14 {
        // compute_query_id is auto with pg_stat_statements loaded.
        let qid = waiter_row["query_id"].as_str().unwrap();
        assert_eq!(qid.split('_').count(), 3, "{qid}");
    }
    waiter.join().unwrap();
    holder.batch_execute("ROLLBACK").unwrap();

    let v = agent.once("pg_prepared_xacts").unwrap();
    let r = by(&v, "gid", "gx1").unwrap();
    assert!(
        r["transaction"].as_str().unwrap().parse::<u64>().is_ok(),
        "xid is a string: {r}"
    );
    assert!(r["transaction_age"].as_i64().unwrap() >= 0);
    assert_eq!(r["owner"], "postgres");
    admin.batch_execute("ROLLBACK PREPARED 'gx1'").unwrap();

    let v = agent.once("pg_database").unwrap();
    let names: Vec<&str> = rows(&v)
        .iter()
        .map(|r| r["datname"].as_str().unwrap())
        .collect();
    for n in ["postgres", "template0", "template1"] {
        assert!(names.contains(&n), "{names:?}");
    }
    let t0 = by(&v, "datname", "template0").unwrap();
    assert_eq!(t0["datistemplate"], true);
    assert!(
        t0["datfrozenxid"].is_string()
            && t0["datfrozenxid_age"].is_i64()
            && t0["datminmxid_age"].is_i64()
    );
}

#[test]
fn per_table_collectors_page_sample_and_follow_changes() {
    let pg = PgCluster::start();
    let mut admin = pg.client();
    for i in 0..5 {
        admin
            .batch_execute(&format!(
                "CREATE TABLE tab{i}(id int PRIMARY KEY, cat text, tags text[]); \
                 INSERT INTO tab{i} SELECT g, 'c' || (g % 3), ARRAY['x', 'y' || (g % 2)] FROM generate_series(1, 300) g; \
                 CREATE INDEX tab{i}_cat ON tab{i}(cat);"
            ))
            .unwrap();
    }
    admin.batch_execute("ANALYZE").unwrap();
    let agent = Agent::connect(&pg.url());

    // pg_class: pages of 4 relations (5 tables + 10 indexes + …), then an empty page ends the backfill.
    let mut c = agent.build_with("pg_class", &[("backfill_batch_size", OptionValue::Int(4))]);
    let mut seen = Vec::new();
    loop {
        match agent.run(&mut c) {
            Some(v) => {
                assert!(rows(&v).len() <= 4);
                seen.extend(
                    rows(&v)
                        .iter()
                        .map(|r| r["relname"].as_str().unwrap().to_string()),
                );
            }
            None => break,
        }
        assert!(seen.len() < 100);
    }
    assert!(
        seen.contains(&"tab3".to_string())
            && seen.contains(&"tab3_cat".to_string())
            && seen.contains(&"tab0_pkey".to_string())
    );
    assert_eq!(seen.len(), 15);
    // Delta mode: nothing changed → nothing; VACUUM one table → only that one.
    thread::sleep(Duration::from_millis(1100));
    assert!(agent.run(&mut c).is_none());
    admin.batch_execute("VACUUM tab2").unwrap();
    thread::sleep(Duration::from_millis(1100));
    let v = agent.run(&mut c).expect("vacuumed table is sent");
    assert_eq!(rows(&v).len(), 1);
    let r = &rows(&v)[0];
    assert_eq!(r["relname"], "tab2");
    assert_eq!(r["relkind"], "r");
    assert!(r["reltuples"].as_f64().unwrap() >= 299.0);
    assert!(r["relfrozenxid"].is_string() && r["access_method"] == "heap");
    assert_eq!(
        r.as_object().unwrap().contains_key("relallfrozen"),
        agent.server.major() >= 18
    );

    // pg_stats: bootstrap without values, then (with include_table_data) values as strings.
    let v = agent.once("pg_stats").unwrap();
    let cat = rows(&v)
        .iter()
        .find(|r| r["tablename"] == "tab1" && r["attname"] == "cat")
        .unwrap();
    assert!(
        cat["most_common_vals"].is_null(),
        "bootstrap never carries values"
    );
    assert!(
        cat["most_common_freqs"].is_array(),
        "frequencies are sent: {cat}"
    );
    let mut st = agent.build_with(
        "pg_stats",
        &[
            ("include_table_data", OptionValue::Bool(true)),
            ("backfill_batch_size", OptionValue::Int(2)),
        ],
    );
    agent.run(&mut st).unwrap(); // bootstrap
    let page = agent.run(&mut st).expect("first backfill page");
    let tables: std::collections::BTreeSet<&str> = rows(&page)
        .iter()
        .map(|r| r["tablename"].as_str().unwrap())
        .collect();
    assert_eq!(tables.len(), 2, "a page is two tables: {tables:?}");
    let cat = rows(&page).iter().find(|r| r["attname"] == "cat").unwrap();
    let mcv = cat["most_common_vals"].as_array().unwrap();
    assert_eq!(mcv.len(), 3);
    assert!(mcv.iter().all(|x| x.as_str().unwrap().starts_with('c')));
    let tags = rows(&page).iter().find(|r| r["attname"] == "tags").unwrap();
    assert!(
        tags["most_common_elems"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_string),
        "{tags}"
    );
    agent.run(&mut st).unwrap(); // tab2, tab3
    agent.run(&mut st).unwrap(); // tab4
    assert!(agent.run(&mut st).is_none(), "backfill done");
    // Only the exact (schema, table) pairs analyzed since the last poll: other.tab4 has
    // statistics but was not analyzed again, so it must not come along with public.tab4.
    admin
        .batch_execute(
            "CREATE SCHEMA other; CREATE TABLE other.tab4(a int); CREATE TABLE other.x(a int); \
             INSERT INTO other.tab4 SELECT generate_series(1, 50); INSERT INTO other.x SELECT generate_series(1, 50); \
             ANALYZE other.tab4; ANALYZE other.x",
        )
        .unwrap();
    thread::sleep(Duration::from_millis(1100));
    let v = agent.run(&mut st).expect("the new schema's tables");
    assert!(rows(&v).iter().all(|r| r["schemaname"] == "other"));
    thread::sleep(Duration::from_millis(1100));
    assert!(agent.run(&mut st).is_none(), "nothing analyzed since");
    admin
        .batch_execute("ANALYZE tab4; ANALYZE other.x")
        .unwrap();
    let v = agent.run(&mut st).expect("analyzed table");
    let pairs: std::collections::BTreeSet<(String, String)> = rows(&v)
        .iter()
        .map(|r| {
            (
                r["schemaname"].as_str().unwrap().to_string(),
                r["tablename"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: std::collections::BTreeSet<(String, String)> = [("other", "x"), ("public", "tab4")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(pairs, want);

    // pg_stat_user_tables: three samples of category_limit each.
    admin
        .batch_execute(
            "SELECT count(*) FROM tab0; SELECT count(*) FROM tab0; DELETE FROM tab1 WHERE id < 50",
        )
        .unwrap();
    drop(admin);
    thread::sleep(Duration::from_millis(1200));
    let mut t = agent.build_with(
        "pg_stat_user_tables",
        &[("category_limit", OptionValue::Int(1))],
    );
    let v = agent.run(&mut t).unwrap();
    let names: Vec<&str> = rows(&v)
        .iter()
        .map(|r| r["relname"].as_str().unwrap())
        .collect();
    assert!(!names.is_empty() && names.len() <= 3, "{names:?}");
    assert!(names.contains(&"tab1"), "most dead tuples: {names:?}");
    let r = by(&v, "relname", "tab1").unwrap();
    assert_eq!(r.as_object().unwrap().len(), 30);
    assert!(r["n_dead_tup"].as_i64().unwrap() >= 49);
    let v = agent.once("pg_stat_user_indexes").unwrap();
    assert!(rows(&v).len() <= 600 && rows(&v).iter().any(|r| r["indexrelname"] == "tab0_cat"));
    let mut z = agent.build_with(
        "pg_stat_user_tables",
        &[("category_limit", OptionValue::Int(0))],
    );
    assert_eq!(rows(&agent.run(&mut z).unwrap()).len(), 0);

    // pg_statio_user_indexes: pages, an empty tick, then only changes.
    let mut io = agent.build_with(
        "pg_statio_user_indexes",
        &[("backfill_batch_size", OptionValue::Int(6))],
    );
    let mut n = 0;
    while let Some(v) = agent.run(&mut io) {
        n += rows(&v).len();
    }
    assert_eq!(n, 10);
    let mut cl = pg.client();
    cl.batch_execute("SET enable_seqscan = off; SELECT * FROM tab3 WHERE cat = 'c1'")
        .unwrap();
    drop(cl);
    thread::sleep(Duration::from_millis(1200));
    let mut changed = Vec::new();
    for _ in 0..3 {
        // two pages and the empty tick that closes the pass
        if let Some(v) = agent.run(&mut io) {
            changed.extend(
                rows(&v)
                    .iter()
                    .map(|r| r["indexrelname"].as_str().unwrap().to_string()),
            );
        }
    }
    // Planning reads every index's metapage of the table; nothing else changed.
    assert!(changed.contains(&"tab3_cat".to_string()), "{changed:?}");
    assert!(
        changed.iter().all(|n| n.starts_with("tab3_")),
        "{changed:?}"
    );

    // pg_index / pg_index_inventory / pg_attribute / pg_constraint / pg_type.
    let v = agent.once("pg_index").unwrap();
    let r = by(&v, "indexname", "tab0_cat").unwrap();
    assert_eq!(r["schemaname"], "public");
    assert_eq!(r["indisvalid"], true);
    let v = agent.once("pg_index_inventory").unwrap();
    let r = by(&v, "indexname", "tab0_cat").unwrap();
    assert_eq!(
        r["indexdef"],
        "CREATE INDEX tab0_cat ON public.tab0 USING btree (cat)"
    );
    assert_eq!(r["indkey"], serde_json::json!([2]));
    assert_eq!(r["indnatts"], 1);
    assert_eq!(
        r["indnullsnotdistinct"].is_boolean(),
        agent.server.major() >= 15
    );
    let v = agent.once("pg_attribute").unwrap();
    let r = rows(&v).iter().find(|r| r["attname"] == "tags").unwrap();
    assert_eq!(r["atttypid"], 1009);
    assert!(r["attcompression"].is_null());
    assert_eq!(r["attstorage"], "x");
    let v = agent.once("pg_constraint").unwrap();
    let r = by(&v, "conname", "tab0_pkey").unwrap();
    assert_eq!(r["contype"], "p");
    assert_eq!(r["conkey"], serde_json::json!([1]));
    let v = agent.once("pg_type").unwrap();
    assert_eq!(by(&v, "typname", "int4").unwrap()["typlen"], 4);
    assert!(
        by(&v, "typname", "tab0").is_some(),
        "user row types are listed"
    );
}

#[test]
fn relations_under_access_exclusive_lock_are_skipped_not_waited_on() {
    let pg = PgCluster::start();
    let mut admin = pg.client();
    admin
        .batch_execute(
            "CREATE TABLE busy(id int PRIMARY KEY, v text); CREATE TABLE calm(id int PRIMARY KEY, v text); \
             INSERT INTO busy SELECT g, 'x' FROM generate_series(1, 100) g; INSERT INTO calm SELECT g, 'y' FROM generate_series(1, 100) g; ANALYZE",
        )
        .unwrap();
    let agent = Agent::connect(&pg.url());
    let mut oid = |n: &str| -> u32 {
        admin
            .query_one("SELECT $1::text::regclass::oid", &[&n])
            .unwrap()
            .get(0)
    };
    let (busy, calm) = (oid("busy"), oid("calm"));
    let mut locker = pg.client();
    locker
        .batch_execute("BEGIN; LOCK TABLE busy IN ACCESS EXCLUSIVE MODE")
        .unwrap();

    for name in [
        "pg_class",
        "pg_attribute",
        "pg_index",
        "pg_index_inventory",
        "pg_stats",
        "ddl",
    ] {
        let t = Instant::now();
        let v = agent
            .once(name)
            .unwrap_or_else(|| panic!("{name} sent nothing"));
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{name} waited on the lock"
        );
        let text = v.to_string();
        let mentions =
            |n: &str, oid: u32| text.contains(n) || text.contains(&format!("\"attrelid\":{oid},"));
        assert!(
            !mentions("busy", busy),
            "{name} must skip the locked table: {text}"
        );
        assert!(
            mentions("calm", calm),
            "{name} still reports the others: {text}"
        );
    }
    locker.batch_execute("COMMIT").unwrap();
    assert!(agent
        .once("pg_attribute")
        .unwrap()
        .to_string()
        .contains(&format!("\"attrelid\":{busy},")));
}

#[test]
fn probe_turns_off_collectors_whose_functions_fail_without_repeated_errors() {
    let pg = PgCluster::start();
    let major = pg.major();
    let mut admin = pg.client();
    // Like Aurora, where pg_stat_get_wal() exists but raises: an unprivileged role cannot run it.
    admin
        .batch_execute("CREATE ROLE agent LOGIN; GRANT pg_monitor TO agent")
        .unwrap();
    for f in ["pg_stat_get_wal", "pg_stat_get_io"] {
        admin
            .batch_execute(&format!("REVOKE EXECUTE ON FUNCTION {f} FROM PUBLIC"))
            .ok(); // absent on older majors
    }
    let url = format!(
        "postgres://agent@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port
    );
    let agent = Agent::connect(&url);
    assert!(agent.server.has("fn:pg_stat_get_wal()") == (major >= 14));
    assert!(
        !agent.server.has("view:pg_stat_wal"),
        "{:?}",
        agent.server.caps
    );
    assert!(agent.server.has("view:pg_stat_bgwriter"));
    assert!(agent.server.has("col:pg_stat_activity.pid"));
    assert!(agent
        .server
        .caps
        .iter()
        .any(|c| c.starts_with("ext:pg_stat_statements=")));
    if major >= 16 {
        assert!(!agent.server.has("view:pg_stat_io"));
    }
    let mut wal = agent.build_with("pg_stat_wal", &[]);
    for _ in 0..5 {
        assert!(agent.run(&mut wal).is_none(), "no payload and no error");
    }
    let failing: i64 = admin
        .query_one("SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query LIKE '%pg_stat_wal%' AND query LIKE '%/*dbtune*/%'", &[])
        .unwrap()
        .get(0);
    assert!(
        failing <= 1,
        "the failing view is touched once by the probe at most: {failing}"
    );
    // With the privilege restored and a fresh probe, the collector works.
    admin
        .batch_execute("GRANT EXECUTE ON FUNCTION pg_stat_get_wal TO PUBLIC")
        .ok();
    if major >= 14 {
        let agent = Agent::connect(&url);
        let v = agent.once("pg_stat_wal").unwrap();
        assert!(rows(&v)[0]["wal_records"].as_i64().unwrap() > 0);
    }
}
