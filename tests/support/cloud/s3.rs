//! An S3 peer for the audit tests: moto's S3 (objects, buckets) behind
//! `s3_presign_check.py`, which verifies every presigned request's SigV4 signature with
//! botocore (moto itself verifies header-signed requests only). The test reads and sets up the
//! bucket by talking to moto directly.

use super::moto::Moto;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY_ID: &str = "AKIAAUDITTEST0000001";
pub const SECRET: &str = "audit-test-secret-do-not-log-0123456789";

pub struct S3Peer {
    bin: PathBuf,
    pub moto: Option<Moto>,
    check: Option<Child>,
    pub moto_port: u16,
    pub port: u16,
    log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listen(port: u16, what: &str, log: &std::path::Path) {
    let end = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < end,
            "{what} did not listen: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain HTTP exchange with moto (no auth: the checking front is not in the way).
fn raw(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        // moto (auth off) does not check this header, but without one a request is anonymous
        // and private objects are refused.
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIATESTREADER000000/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(out.len());
    let mut body = out[split..].to_vec();
    if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(i) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
}

impl S3Peer {
    pub fn start(bin: &std::path::Path) -> S3Peer {
        let mut p = S3Peer {
            bin: bin.to_path_buf(),
            moto: None,
            check: None,
            moto_port: free_port(),
            port: free_port(),
            log: std::env::temp_dir().join(format!("dbtune-s3check-{}.log", std::process::id())),
        };
        p.up();
        p
    }

    /// The endpoint the agent uses (`audit.s3_endpoint`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (Re)starts moto and the checking front on their ports.
    pub fn up(&mut self) {
        self.moto = Some(Moto::start_on(&self.bin, self.moto_port, u32::MAX));
        let python = self.bin.parent().unwrap().join("python");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support/cloud/s3_presign_check.py");
        let log = std::fs::File::create(&self.log).unwrap();
        self.check = Some(
            Command::new(python)
                .arg(script)
                .args([
                    &self.port.to_string(),
                    &self.moto_port.to_string(),
                    KEY_ID,
                    SECRET,
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting s3_presign_check.py"),
        );
        wait_listen(self.port, "s3_presign_check.py", &self.log);
    }

    /// Stops both: the bucket is unreachable (connection refused); moto forgets everything.
    pub fn down(&mut self) {
        if let Some(mut c) = self.check.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.moto = None;
    }

    pub fn check_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn create_bucket(&self, name: &str) {
        let (st, body) = raw(self.moto_port, "PUT", &format!("/{name}"), b"");
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// Object keys under `prefix`, in S3's (lexicographic) order.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (st, body) = raw(
            self.moto_port,
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}"),
            b"",
        );
        assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
        let text = String::from_utf8_lossy(&body).into_owned();
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let (st, body) = raw(self.moto_port, "GET", &format!("/{bucket}/{key}"), b"");
        assert_eq!(st, 200, "GET {key}: {}", String::from_utf8_lossy(&body));
        body
    }
}

impl Drop for S3Peer {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_file(&self.log);
    }
}
