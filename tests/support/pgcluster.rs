//! Throwaway PostgreSQL clusters for tests: `initdb` into a temp directory, start on a free
//! loopback port with pg_stat_statements preloaded, stop and delete on drop. When the tests run
//! as root the cluster runs as the `postgres` user (initdb refuses root).
//!
//! Binaries: `DBTUNE_TEST_PG_BINDIR` (with `DBTUNE_TEST_PG_LIBDIR` for bundled libraries, used
//! for the server only), else `/usr/lib/postgresql/15/bin`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

pub struct PgBin {
    pub bin: PathBuf,
    pub lib: Option<PathBuf>,
}

impl PgBin {
    pub fn from_env() -> PgBin {
        let bin = std::env::var("DBTUNE_TEST_PG_BINDIR")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
        let lib = std::env::var("DBTUNE_TEST_PG_LIBDIR")
            .ok()
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        PgBin {
            bin: PathBuf::from(bin),
            lib,
        }
    }
}

pub struct PgCluster {
    pub bin: PgBin,
    pub dir: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    as_postgres: bool,
    stopped: bool,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgCluster {
    /// Starts a cluster with the default extra settings.
    pub fn start() -> PgCluster {
        PgCluster::start_with(&[])
    }

    /// Starts a cluster; `extra` lines are appended to postgresql.conf.
    pub fn start_with(extra: &[&str]) -> PgCluster {
        PgCluster::start_bin(PgBin::from_env(), extra)
    }

    /// Starts a cluster from the given binaries (the version matrix uses this).
    pub fn start_bin(bin: PgBin, extra: &[&str]) -> PgCluster {
        let dir = std::env::temp_dir().join(format!(
            "dbtune-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres = is_root();
        if as_postgres {
            chown_postgres(&dir);
        }
        let data = dir.join("data");
        let port = free_port();
        let mut c = PgCluster {
            bin,
            dir: dir.clone(),
            data,
            port,
            log: dir.join("server.log"),
            as_postgres,
            stopped: true,
        };
        let out = c.run_tool(
            "initdb",
            &[
                "-D",
                c.data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\n\
             shared_buffers = 16MB\n",
            dir.display()
        );
        for l in extra {
            conf.push_str(l);
            conf.push('\n');
        }
        let path = c.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&conf);
        std::fs::write(&path, text).unwrap();
        c.pg_ctl_start();
        let mut cl = c.client();
        cl.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .unwrap();
        c
    }

    fn cmd(&self, tool: &str) -> Command {
        let path = self.bin.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        // Bundled libraries are for the server tools only, never for the test process.
        if let Some(lib) = &self.bin.lib {
            if self.as_postgres {
                // runuser resets nothing we need; pass through env explicitly.
            }
            cmd.env("LD_LIBRARY_PATH", lib);
        }
        cmd
    }

    pub fn run_tool(&self, tool: &str, args: &[&str]) -> Output {
        self.cmd(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"))
    }

    /// The argv of `pg_ctl restart` for this cluster, for restart scripts.
    pub fn restart_command(&self) -> String {
        let lib = match &self.bin.lib {
            Some(l) => format!("LD_LIBRARY_PATH={} ", l.display()),
            None => String::new(),
        };
        let pg_ctl = format!(
            "{lib}{} -D {} -l {} -w -t 60 restart -m fast",
            self.bin.bin.join("pg_ctl").display(),
            self.data.display(),
            self.log.display()
        );
        if self.as_postgres {
            format!("runuser -u postgres -- env {pg_ctl}")
        } else {
            pg_ctl
        }
    }

    fn start_with_wait(&mut self, wait_secs: &str) -> Output {
        let out = self.run_tool(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                self.log.to_str().unwrap(),
                "-w",
                "-t",
                wait_secs,
                "start",
            ],
        );
        self.stopped = !out.status.success();
        out
    }

    pub fn pg_ctl_start(&mut self) {
        let out = self.start_with_wait("60");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Tries to start; returns false (with the log) when the server refuses to come up.
    pub fn try_start(&mut self) -> bool {
        self.start_with_wait("30").status.success()
    }

    pub fn stop(&mut self) {
        let _ = self.run_tool(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "stop",
                "-m",
                "fast",
            ],
        );
        self.stopped = true;
    }

    pub fn is_running(&self) -> bool {
        let out = self.run_tool("pg_ctl", &["-D", self.data.to_str().unwrap(), "status"]);
        out.status.success()
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    pub fn url_db(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    pub fn client(&self) -> postgres::Client {
        let mut last = None;
        for _ in 0..50 {
            match postgres::Client::connect(&self.url(), postgres::NoTls) {
                Ok(c) => return c,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("connecting to test cluster: {last:?}");
    }

    pub fn major(&self) -> u32 {
        let mut c = self.client();
        let v: i32 = c
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .unwrap()
            .get(0);
        (v / 10000) as u32
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

pub fn chown_postgres(p: &Path) {
    let st = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.run_tool(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-w",
                "-t",
                "20",
                "stop",
                "-m",
                "immediate",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
