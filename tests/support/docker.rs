//! A real Docker Engine for tests: Debian's dockerd started on a private socket
//! (`--iptables=false --bridge=none`, vfs storage, data under `.cache/docker-test`), once per
//! test process, stopped when the process exits. Images are made locally with `docker import`
//! (no registry is reachable): busybox plus the host's PostgreSQL binaries, bind-mounted
//! read-only (peers.md §2).

#![allow(dead_code)]

use super::pgcluster::{chown_postgres, free_port};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PG_IMAGE: &str = "dbtune-test/pg15-hostbin:15";

pub struct Engine {
    pub socket: PathBuf,
    pub root: PathBuf,
}

static ENGINE: OnceLock<Engine> = OnceLock::new();
static SEQ: AtomicU32 = AtomicU32::new(0);

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.into())
}

fn repo_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache")
}

/// The engine of this test process (started on first use).
pub fn engine() -> &'static Engine {
    ENGINE.get_or_init(start_engine)
}

fn start_engine() -> Engine {
    let dockerd = env_or("DBTUNE_TEST_DOCKERD", "/usr/sbin/dockerd");
    assert!(
        Path::new(&dockerd).exists(),
        "dockerd not found at {dockerd}: run .ci/setup-docker.sh (tests/run.sh does)"
    );
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the Docker tests start dockerd and need root"
    );
    let root = repo_cache().join("docker-test");
    let run = std::env::temp_dir().join(format!("dbtune-dockerd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    let socket = run.join("docker.sock");
    let log = std::fs::File::create(run.join("dockerd.log")).unwrap();
    let args: Vec<String> = vec![
        "--iptables=false".into(),
        "--ip-masq=false".into(),
        "--bridge=none".into(),
        "--storage-driver=vfs".into(),
        format!("--data-root={}", root.join("data").display()),
        format!("--exec-root={}", run.join("exec").display()),
        format!("--pidfile={}", run.join("dockerd.pid").display()),
        format!("--host=unix://{}", socket.display()),
    ];
    // dockerd must end with this test process. PR_SET_PDEATHSIG fires when the spawning
    // *thread* ends, so spawn from a thread that lives as long as the process.
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.try_clone().unwrap();
    std::thread::Builder::new()
        .name("dockerd-parent".into())
        .spawn(move || {
            let mut cmd = Command::new(&dockerd);
            cmd.args(&args)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2);
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let mut child = cmd.spawn().expect("starting dockerd");
            tx.send(child.id()).unwrap();
            // Lives as long as the process; reaps dockerd if it ever exits on its own.
            let _ = child.wait();
            loop {
                std::thread::park();
            }
        })
        .unwrap();
    let _pid = rx.recv().unwrap();
    let e = Engine { socket, root };
    let end = Instant::now() + Duration::from_secs(30);
    while !e
        .docker(&["version", "--format", "{{.Server.APIVersion}}"])
        .status
        .success()
    {
        assert!(
            Instant::now() < end,
            "dockerd did not answer within 30 s; log:\n{}",
            std::fs::read_to_string(run.join("dockerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    e.ensure_pg_image();
    e
}

impl Engine {
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Runs the docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new(env_or("DBTUNE_TEST_DOCKER_CLI", "docker"))
            .args(args)
            .env("DOCKER_HOST", self.host())
            .stdin(Stdio::null())
            .output()
            .expect("running the docker CLI")
    }

    /// Like `docker`, asserting success; returns stdout trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn ensure_pg_image(&self) {
        if self
            .docker(&["image", "inspect", PG_IMAGE])
            .status
            .success()
        {
            return;
        }
        let busybox = env_or("DBTUNE_TEST_BUSYBOX", "/bin/busybox");
        let rootfs = std::env::temp_dir().join(format!("dbtune-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&rootfs);
        for d in [
            "bin",
            "etc",
            "tmp",
            "usr",
            "var/run/postgresql",
            "var/lib/postgresql",
        ] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy(&busybox, rootfs.join("bin/busybox")).unwrap();
        let list = Command::new(&busybox).arg("--list").output().unwrap();
        for a in String::from_utf8_lossy(&list.stdout).lines() {
            if a != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a));
            }
        }
        std::os::unix::fs::symlink("usr/lib", rootfs.join("lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib64", rootfs.join("lib64")).unwrap();
        let id = |flag: &str| {
            let o = Command::new("id")
                .args([flag, "postgres"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        std::fs::write(
            rootfs.join("etc/passwd"),
            format!("root:x:0:0:root:/root:/bin/sh\npostgres:x:{uid}:{gid}:PostgreSQL:/var/lib/postgresql:/bin/sh\n"),
        )
        .unwrap();
        std::fs::write(
            rootfs.join("etc/group"),
            format!("root:x:0:\npostgres:x:{gid}:\n"),
        )
        .unwrap();
        std::fs::copy("/etc/ld.so.cache", rootfs.join("etc/ld.so.cache")).unwrap();
        Command::new("chmod")
            .args(["1777", rootfs.join("tmp").to_str().unwrap()])
            .status()
            .unwrap();
        Command::new("chown")
            .args([
                "-R",
                &format!("{uid}:{gid}"),
                rootfs.join("var").to_str().unwrap(),
            ])
            .status()
            .unwrap();
        let mut tar = Command::new("tar")
            .args(["-C", rootfs.to_str().unwrap(), "-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let st = Command::new(env_or("DBTUNE_TEST_DOCKER_CLI", "docker"))
            .env("DOCKER_HOST", self.host())
            .args([
                "import",
                "-c",
                "USER postgres",
                "-c",
                r#"CMD ["/usr/lib/postgresql/15/bin/postgres","-D","/var/lib/postgresql/data"]"#,
                "-",
                PG_IMAGE,
            ])
            .stdin(tar.stdout.take().unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            tar.wait().unwrap().success(),
            "tar of the image root failed"
        );
        assert!(st.success(), "docker import of {PG_IMAGE} failed");
        let _ = std::fs::remove_dir_all(&rootfs);
    }
}

/// PostgreSQL 15 in a container (host network, its own loopback port), data directory
/// bind-mounted from a temp dir on the host. Removed on drop.
pub struct PgContainer {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
    pub data: PathBuf,
    pub memory: &'static str,
}

impl PgContainer {
    pub fn start(memory: &'static str) -> PgContainer {
        let e = engine();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("dbtune-pg-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("dbtune-dpg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        chown_postgres(&dir);
        let data = dir.join("data");
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--", "/usr/lib/postgresql/15/bin/initdb"])
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
            ])
            .args(["-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str(&format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '/tmp'\n\
             shared_preload_libraries = 'pg_stat_statements'\nfsync = off\nshared_buffers = 16MB\n\
             max_connections = 30\nlogging_collector = off\n"
        ));
        std::fs::write(&conf, text).unwrap();
        let c = PgContainer {
            name,
            port,
            dir,
            data,
            memory,
        };
        e.ok(&[
            "run",
            "-d",
            "--name",
            &c.name,
            "--network",
            "host",
            "--memory",
            memory,
            "--cpus",
            "1",
            "--stop-timeout",
            "30",
            "-v",
            "/usr:/usr:ro",
            "-v",
            &format!("{}:/var/lib/postgresql/data", c.data.display()),
            PG_IMAGE,
        ]);
        c.wait_ready(Duration::from_secs(30));
        let mut cl = c.client();
        cl.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .unwrap();
        c
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).unwrap()
    }

    pub fn wait_ready(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            if postgres::Client::connect(&self.url(), postgres::NoTls).is_ok() {
                return;
            }
            assert!(
                Instant::now() < end,
                "PostgreSQL in {} not ready within {timeout:?}; logs:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn logs(&self) -> String {
        let o = engine().docker(&["logs", "--tail", "50", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    pub fn inspect(&self, format: &str) -> String {
        engine().ok(&["inspect", "--format", format, &self.name])
    }

    pub fn started_at(&self) -> String {
        self.inspect("{{.State.StartedAt}}")
    }

    pub fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    pub fn setting(&self, name: &str) -> String {
        self.client()
            .query_one("SELECT setting FROM pg_settings WHERE name = $1", &[&name])
            .unwrap()
            .get(0)
    }

    pub fn auto_conf(&self) -> String {
        std::fs::read_to_string(self.data.join("postgresql.auto.conf")).unwrap()
    }
}

impl Drop for PgContainer {
    fn drop(&mut self) {
        let _ = engine().docker(&["rm", "-f", &self.name]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
