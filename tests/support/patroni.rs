//! A real two-node Patroni cluster on loopback (peers.md §1): etcd (Debian) as the DCS, Patroni
//! from PyPI (`.ci/setup-patroni.sh`, found through `DBTUNE_TEST_PATRONI` / `DBTUNE_TEST_ETCD`
//! in `.cache/patroni.env`), PostgreSQL 15. Patroni runs as `postgres` (initdb refuses root),
//! started with setpriv so the recorded PID is Patroni's own; dropped: replica, leader, etcd,
//! by PID, then the directory is removed.

use super::pgcluster::{chown_postgres, free_port};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SCOPE: &str = "dbtune-test";
pub const REST_USER: &str = "patroni-admin";
pub const REST_PASSWORD: &str = "rest-s3cret";

pub struct Node {
    pub name: String,
    pub rest_port: u16,
    pub pg_port: u16,
    pub yml: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

pub struct PatroniCluster {
    pub dir: PathBuf,
    /// `https` with a test CA (`ca.pem` in `dir`) when started with [`PatroniCluster::start_tls`].
    pub scheme: &'static str,
    pub nodes: Vec<Node>,
    pub etcd_port: u16,
    etcd: Option<Child>,
    patroni: PathBuf,
    http: ureq::Agent,
}

fn log_file(p: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap()
}

fn binaries() -> Option<(PathBuf, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let patroni = std::env::var_os("DBTUNE_TEST_PATRONI")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/venv-patroni/bin/patroni"));
    let etcd = std::env::var_os("DBTUNE_TEST_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    if patroni.is_file() && etcd.is_file() {
        return Some((patroni, etcd));
    }
    let msg = format!(
        "Patroni ({}) or etcd ({}) not found — run .ci/setup-patroni.sh and source .cache/patroni.env",
        patroni.display(),
        etcd.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("\n*** SKIPPING Patroni test: {msg} ***\n");
    None
}

impl PatroniCluster {
    /// etcd + n1 (leader) + n2 (streaming replica), REST unsafe endpoints behind basic auth.
    /// None (skipped) only outside CI when the peers are not installed.
    pub fn start() -> Option<PatroniCluster> {
        Self::start_with(false)
    }

    /// The same with the REST API on HTTPS, its certificate from a throwaway CA.
    pub fn start_tls() -> Option<PatroniCluster> {
        Self::start_with(true)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn start_with(tls: bool) -> Option<PatroniCluster> {
        let (patroni, etcd_bin) = binaries()?;
        let dir = std::env::temp_dir().join(format!(
            "dbtune-patroni-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (etcd_port, peer_port) = (free_port(), free_port());
        let etcd = Command::new(&etcd_bin)
            .args(["--name", "e1", "--data-dir"])
            .arg(dir.join("etcd"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{etcd_port}"
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"
            ))
            .arg(format!("--initial-cluster=e1=http://127.0.0.1:{peer_port}"))
            .stdin(Stdio::null())
            .stdout(log_file(&dir.join("etcd.log")))
            .stderr(log_file(&dir.join("etcd.log")))
            .spawn()
            .expect("starting etcd");
        let mut tls_config = ureq::tls::TlsConfig::builder();
        if tls {
            make_certificates(&dir);
            let pem = std::fs::read(dir.join("ca.pem")).unwrap();
            let roots: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            tls_config = tls_config.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
        }
        let http = ureq::Agent::config_builder()
            .tls_config(tls_config.build())
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let mut c = PatroniCluster {
            dir: dir.clone(),
            scheme: if tls { "https" } else { "http" },
            nodes: Vec::new(),
            etcd_port,
            etcd: Some(etcd),
            patroni,
            http,
        };
        c.wait("etcd healthy", Duration::from_secs(20), |c| {
            c.get_status(&format!("http://127.0.0.1:{etcd_port}/health")) == 200
        });
        for n in 1..=2 {
            let node = c.write_node(n);
            c.nodes.push(node);
        }
        chown_postgres(&dir);
        c.start_node(0);
        c.wait("n1 to lead", Duration::from_secs(60), |c| {
            c.get_status(&format!("{}/primary", c.rest_url(0))) == 200
        });
        // The agent's start-up checks read pg_stat_statements; replicated to n2 by basebackup.
        c.sql(0, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
        c.start_node(1);
        c.wait_streaming(1, Duration::from_secs(90));
        Some(c)
    }

    fn write_node(&self, n: usize) -> Node {
        let (rest_port, pg_port) = (free_port(), free_port());
        let base = &self.dir;
        let name = format!("n{n}");
        std::fs::create_dir_all(base.join(&name)).unwrap();
        let tls = if self.scheme == "https" {
            format!(
                "  certfile: {d}/server.pem\n  keyfile: {d}/server.key\nctl:\n  cacert: {d}/ca.pem\n",
                d = base.display()
            )
        } else {
            String::new()
        };
        // loop_wait 2 s (default 10) keeps the tests short; ttl ≥ loop_wait + 2 × retry_timeout.
        let yml = format!(
            r#"scope: {SCOPE}
namespace: /service/
name: {name}
restapi:
  listen: 127.0.0.1:{rest_port}
  connect_address: 127.0.0.1:{rest_port}
  authentication: {{username: {REST_USER}, password: {REST_PASSWORD}}}
{tls}etcd3:
  hosts: 127.0.0.1:{etcd}
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      parameters: {{work_mem: 4MB, wal_level: replica, hot_standby: "on", max_wal_senders: 10, max_replication_slots: 10}}
  initdb: [{{encoding: UTF8}}, data-checksums]
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:{pg_port}
  connect_address: 127.0.0.1:{pg_port}
  data_dir: {data}
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: {pgpass}
  authentication:
    replication: {{username: replicator, password: rep-pass}}
    superuser: {{username: postgres, password: pg-pass}}
    rewind: {{username: rewinder, password: rw-pass}}
  parameters:
    unix_socket_directories: {sock}
    shared_preload_libraries: pg_stat_statements
    maintenance_work_mem: 64MB
"#,
            etcd = self.etcd_port,
            data = base.join(&name).join("data").display(),
            pgpass = base.join(&name).join("pgpass").display(),
            sock = base.join(&name).display(),
        );
        let path = base.join(format!("{name}.yml"));
        std::fs::write(&path, yml).unwrap();
        Node {
            log: base.join(format!("{name}.log")),
            name,
            rest_port,
            pg_port,
            yml: path,
            child: None,
        }
    }

    pub fn start_node(&mut self, i: usize) {
        let node = &self.nodes[i];
        let child = Command::new("setpriv")
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg("env")
            .arg("HOME=/var/lib/postgresql")
            .arg(&self.patroni)
            .arg(&node.yml)
            .stdin(Stdio::null())
            .stdout(log_file(&node.log))
            .stderr(log_file(&node.log))
            .spawn()
            .expect("starting patroni");
        self.nodes[i].child = Some(child);
    }

    /// SIGTERM to the node's Patroni (it stops PostgreSQL and releases the leader key).
    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn rest_url(&self, i: usize) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.nodes[i].rest_port)
    }

    pub fn pg_url(&self, i: usize) -> String {
        format!(
            "postgres://postgres:pg-pass@127.0.0.1:{}/postgres?sslmode=disable",
            self.nodes[i].pg_port
        )
    }

    pub fn client(&self, i: usize) -> postgres::Client {
        postgres::Client::connect(&self.pg_url(i), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.nodes[i].name))
    }

    pub fn sql(&self, i: usize, q: &str) {
        self.client(i)
            .batch_execute(q)
            .unwrap_or_else(|e| panic!("{q} on {}: {e}", self.nodes[i].name));
    }

    /// `SHOW name` in a fresh session.
    pub fn show(&self, i: usize, name: &str) -> String {
        self.client(i)
            .query_one(&format!("SHOW {name}"), &[])
            .unwrap()
            .get(0)
    }

    pub fn postmaster_start(&self, i: usize) -> String {
        self.client(i)
            .query_one("SELECT pg_postmaster_start_time()::text", &[])
            .unwrap()
            .get(0)
    }

    /// postgresql.auto.conf of node `i`.
    pub fn auto_conf(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .join(&self.nodes[i].name)
                .join("data/postgresql.auto.conf"),
        )
        .unwrap()
    }

    fn get_status(&self, url: &str) -> u16 {
        self.http
            .get(url)
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    pub fn get_json(&self, i: usize, path: &str) -> serde_json::Value {
        let mut r = self
            .http
            .get(&format!("{}{path}", self.rest_url(i)))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// Name of the member with role leader, if any (asking node `i`).
    pub fn leader(&self, i: usize) -> Option<String> {
        let c = self.get_json(i, "/cluster");
        c["members"]
            .as_array()?
            .iter()
            .find(|m| m["role"] == "leader")
            .map(|m| m["name"].as_str().unwrap_or("").to_string())
    }

    pub fn wait_streaming(&self, i: usize, timeout: Duration) {
        let name = self.nodes[i].name.clone();
        self.wait(&format!("{name} streaming"), timeout, |c| {
            let j = c.get_json(0, "/cluster");
            j["members"].as_array().is_some_and(|ms| {
                ms.iter()
                    .any(|m| m["name"] == name.as_str() && m["state"] == "streaming")
            })
        });
    }

    /// `POST /switchover` (an unsafe endpoint: basic auth).
    pub fn switchover(&self, leader: &str, candidate: &str) {
        let auth = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{REST_USER}:{REST_PASSWORD}")
            )
        );
        let mut r = self
            .http
            .post(&format!("{}/switchover", self.rest_url(0)))
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(format!(
                r#"{{"leader":"{leader}","candidate":"{candidate}"}}"#
            ))
            .expect("POST /switchover");
        let body = r.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(r.status().as_u16(), 200, "switchover: {body}");
    }

    pub fn wait(&self, what: &str, timeout: Duration, ok: impl Fn(&Self) -> bool) {
        let end = Instant::now() + timeout;
        while !ok(self) {
            if Instant::now() > end {
                panic!("timed out waiting for {what}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let l = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = l.lines().rev().take(30).collect();
            s.push_str(&format!("--- {} log (last lines) ---\n", n.name));
            for line in tail.into_iter().rev() {
                s.push_str(line);
                s.push('\n');
            }
        }
        s
    }
}

/// A throwaway CA and a server certificate for 127.0.0.1, with the openssl command line.
fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=dbtune test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        for i in (0..self.nodes.len()).rev() {
            self.stop_node(i);
        }
        if let Some(mut e) = self.etcd.take() {
            unsafe {
                libc::kill(e.id() as i32, libc::SIGTERM);
            }
            let _ = e.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
