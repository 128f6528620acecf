//! The collector list, in build order (= stagger order, collectors.md §3.1).

use super::generic::{Generic, Spec};
use super::{catalog, ddl, live, pg_class, pg_stats, pgss, statio_indexes, stats_views};
use super::{CatalogCollector, CollectorDef, CollectorSettings};
use std::time::Duration;

const S5: Duration = Duration::from_secs(5);
const S30: Duration = Duration::from_secs(30);
const M1: Duration = Duration::from_secs(60);
const M5: Duration = Duration::from_secs(300);
const H1: Duration = Duration::from_secs(3600);

macro_rules! generic {
    ($spec:path, $interval:expr) => {
        generic!($spec, $interval, false, true)
    };
    ($spec:path, $interval:expr, $bootstrap:expr, $configurable:expr) => {{
        fn build(_: &CollectorSettings) -> Box<dyn CatalogCollector> {
            Box::new(Generic::new(&$spec, 0))
        }
        CollectorDef {
            name: $spec.name,
            default_interval: $interval,
            bootstrap: $bootstrap,
            configurable: $configurable,
            build,
        }
    }};
}

fn sampled(spec: &'static Spec, s: &CollectorSettings) -> Box<dyn CatalogCollector> {
    Box::new(Generic::new(spec, s.int("category_limit", 200)))
}

pub static REGISTRY: &[CollectorDef] = &[
    generic!(live::AUTOVACUUM_COUNT, S5),
    generic!(live::DATABASE_CONNECTIONS, S5),
    CollectorDef {
        name: "ddl",
        default_interval: M5,
        bootstrap: false,
        configurable: false,
        build: |_| Box::new(ddl::Ddl::default()),
    },
    CollectorDef {
        name: "system_db_size",
        default_interval: S5,
        bootstrap: false,
        configurable: true,
        build: |_| Box::new(live::SystemDbSize::default()),
    },
    generic!(catalog::PG_ATTRIBUTE, M5, true, true),
    generic!(catalog::PG_CONSTRAINT, M5),
    generic!(catalog::PG_DATABASE, M1),
    generic!(catalog::PG_INDEX, M5),
    generic!(catalog::PG_INDEX_INVENTORY, H1, true, false),
    generic!(catalog::PG_LOCKS, S30),
    generic!(catalog::PG_PREPARED_XACTS, M1),
    generic!(stats_views::PG_REPLICATION_SLOTS, M1),
    generic!(catalog::PG_TYPE, M5),
    generic!(catalog::PG_STAT_ACTIVITY, M1),
    generic!(stats_views::PG_STAT_ARCHIVER, M1),
    generic!(stats_views::PG_STAT_BGWRITER, M1),
    generic!(stats_views::PG_STAT_CHECKPOINTER, M1),
    generic!(stats_views::PG_STAT_DATABASE, M1),
    generic!(stats_views::PG_STAT_DATABASE_CONFLICTS, M1),
    generic!(stats_views::PG_STAT_IO, M1),
    generic!(stats_views::PG_STAT_PROGRESS_ANALYZE, S30),
    generic!(stats_views::PG_STAT_PROGRESS_CREATE_INDEX, S30),
    generic!(stats_views::PG_STAT_PROGRESS_VACUUM, S30),
    generic!(stats_views::PG_STAT_RECOVERY_PREFETCH, M1),
    generic!(stats_views::PG_STAT_REPLICATION, M1),
    generic!(stats_views::PG_STAT_REPLICATION_SLOTS, M1),
    generic!(stats_views::PG_STAT_SLRU, M1),
    generic!(stats_views::PG_STAT_SUBSCRIPTION, M1),
    generic!(stats_views::PG_STAT_SUBSCRIPTION_STATS, M1),
    generic!(stats_views::PG_STAT_USER_FUNCTIONS, M1),
    generic!(stats_views::PG_STAT_WAL, M1),
    generic!(stats_views::PG_STAT_WAL_RECEIVER, M1),
    generic!(stats_views::PG_STATIO_USER_TABLES, M1),
    CollectorDef {
        name: "database_transactions",
        default_interval: S5,
        bootstrap: false,
        configurable: true,
        build: |_| Box::new(live::DatabaseTransactions::default()),
    },
    CollectorDef {
        name: "server_uptime",
        default_interval: S5,
        bootstrap: false,
        configurable: true,
        build: |_| Box::new(live::ServerUptime::default()),
    },
    generic!(live::WAIT_EVENTS, S5),
    CollectorDef {
        name: "pg_stat_statements",
        default_interval: S5,
        bootstrap: false,
        configurable: true,
        build: |s| Box::new(pgss::PgStatStatements::new(s)),
    },
    CollectorDef {
        name: "pg_class",
        default_interval: M1,
        bootstrap: true,
        configurable: true,
        build: |s| Box::new(pg_class::PgClass::new(s)),
    },
    CollectorDef {
        name: "pg_stats",
        default_interval: M1,
        bootstrap: true,
        configurable: true,
        build: |s| Box::new(pg_stats::PgStats::new(s)),
    },
    CollectorDef {
        name: "pg_stat_user_tables",
        default_interval: M1,
        bootstrap: true,
        configurable: true,
        build: |s| sampled(&catalog::PG_STAT_USER_TABLES, s),
    },
    CollectorDef {
        name: "pg_stat_user_indexes",
        default_interval: M1,
        bootstrap: true,
        configurable: true,
        build: |s| sampled(&catalog::PG_STAT_USER_INDEXES, s),
    },
    CollectorDef {
        name: "pg_statio_user_indexes",
        default_interval: M1,
        bootstrap: true,
        configurable: true,
        build: |s| Box::new(statio_indexes::StatioUserIndexes::new(s)),
    },
];

/// The registry entry of `name`.
pub fn find(name: &str) -> Option<&'static CollectorDef> {
    REGISTRY.iter().find(|d| d.name == name)
}

/// The declarative specs of the generic collectors (field lists and gates), for checks and docs.
pub static GENERIC_SPECS: &[&Spec] = &[
    &live::AUTOVACUUM_COUNT,
    &live::DATABASE_CONNECTIONS,
    &live::WAIT_EVENTS,
    &catalog::PG_ATTRIBUTE,
    &catalog::PG_CONSTRAINT,
    &catalog::PG_DATABASE,
    &catalog::PG_INDEX,
    &catalog::PG_INDEX_INVENTORY,
    &catalog::PG_LOCKS,
    &catalog::PG_PREPARED_XACTS,
    &catalog::PG_TYPE,
    &catalog::PG_STAT_ACTIVITY,
    &catalog::PG_STAT_USER_TABLES,
    &catalog::PG_STAT_USER_INDEXES,
    &stats_views::PG_REPLICATION_SLOTS,
    &stats_views::PG_STAT_ARCHIVER,
    &stats_views::PG_STAT_BGWRITER,
    &stats_views::PG_STAT_CHECKPOINTER,
    &stats_views::PG_STAT_DATABASE,
    &stats_views::PG_STAT_DATABASE_CONFLICTS,
    &stats_views::PG_STAT_IO,
    &stats_views::PG_STAT_PROGRESS_ANALYZE,
    &stats_views::PG_STAT_PROGRESS_CREATE_INDEX,
    &stats_views::PG_STAT_PROGRESS_VACUUM,
    &stats_views::PG_STAT_RECOVERY_PREFETCH,
    &stats_views::PG_STAT_REPLICATION,
    &stats_views::PG_STAT_REPLICATION_SLOTS,
    &stats_views::PG_STAT_SLRU,
    &stats_views::PG_STAT_SUBSCRIPTION,
    &stats_views::PG_STAT_SUBSCRIPTION_STATS,
    &stats_views::PG_STAT_USER_FUNCTIONS,
    &stats_views::PG_STAT_WAL,
    &stats_views::PG_STAT_WAL_RECEIVER,
    &stats_views::PG_STATIO_USER_TABLES,
];

pub fn generic_spec(name: &str) -> Option<&'static Spec> {
    GENERIC_SPECS.iter().copied().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forty_two_collectors_in_spec_order() {
        assert_eq!(REGISTRY.len(), 42);
        let names: Vec<&str> = REGISTRY.iter().map(|d| d.name).collect();
        assert_eq!(
            &names[..5],
            [
                "autovacuum_count",
                "database_connections",
                "ddl",
                "system_db_size",
                "pg_attribute"
            ]
        );
        assert_eq!(names[36], "pg_stat_statements");
        assert_eq!(names[41], "pg_statio_user_indexes");
        let boot: Vec<&str> = REGISTRY
            .iter()
            .filter(|d| d.bootstrap)
            .map(|d| d.name)
            .collect();
        assert_eq!(
            boot,
            [
                "pg_attribute",
                "pg_index_inventory",
                "pg_class",
                "pg_stats",
                "pg_stat_user_tables",
                "pg_stat_user_indexes",
                "pg_statio_user_indexes"
            ]
        );
        let fixed: Vec<&str> = REGISTRY
            .iter()
            .filter(|d| !d.configurable)
            .map(|d| d.name)
            .collect();
        assert_eq!(fixed, ["ddl", "pg_index_inventory"]);
        for d in REGISTRY {
            if d.configurable {
                assert!(
                    crate::config::collectors::ACCEPTED.contains(&d.name),
                    "{}",
                    d.name
                );
            }
        }
        assert_eq!(GENERIC_SPECS.len() + 8, REGISTRY.len());
    }
}
