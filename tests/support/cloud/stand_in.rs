//! A tiny HTTP/1.1 server for stand-ins: one thread per connection, one request per connection
//! (`Connection: close`), every request recorded. Serves TCP on 127.0.0.1 or a unix socket.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    /// Path with query string, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    pub fn query(&self) -> BTreeMap<String, String> {
        decode_pairs(self.target.split_once('?').map(|x| x.1).unwrap_or(""))
    }
    pub fn form(&self) -> BTreeMap<String, String> {
        decode_pairs(&String::from_utf8_lossy(&self.body))
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn decode_pairs(s: &str) -> BTreeMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                dbtune_agent::cloud::encoding::percent_decode(k, true),
                dbtune_agent::cloud::encoding::percent_decode(v, true),
            )
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the body with chunked transfer encoding.
    pub chunked: bool,
    /// Wait this long before answering (timeouts).
    pub delay: Duration,
}

impl Resp {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Resp {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
            chunked: false,
            delay: Duration::ZERO,
        }
    }
    pub fn json(status: u16, v: serde_json::Value) -> Self {
        Self::new(status, "application/json", serde_json::to_vec(&v).unwrap())
    }
    pub fn text(status: u16, s: &str) -> Self {
        Self::new(status, "text/plain", s.as_bytes().to_vec())
    }
    pub fn empty(status: u16) -> Self {
        Resp {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, n: &str, v: &str) -> Self {
        self.headers.push((n.into(), v.into()));
        self
    }
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

pub struct StandIn {
    pub port: u16,
    pub socket: Option<PathBuf>,
    log: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

impl StandIn {
    /// Serves on 127.0.0.1 on a free port.
    pub fn start(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (log, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let handler: Handler = Arc::new(handler);
        let (l2, s2) = (log.clone(), stop.clone());
        thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let (h, l) = (handler.clone(), l2.clone());
                        thread::spawn(move || serve(s, h, l));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        StandIn {
            port,
            socket: None,
            log,
            stop,
        }
    }

    /// Serves on a unix socket at `path`.
    pub fn start_unix(
        path: &Path,
        handler: impl Fn(&Req) -> Resp + Send + Sync + 'static,
    ) -> StandIn {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (log, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let handler: Handler = Arc::new(handler);
        let (l2, s2) = (log.clone(), stop.clone());
        thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let (h, l) = (handler.clone(), l2.clone());
                        thread::spawn(move || serve(s, h, l));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        StandIn {
            port: 0,
            socket: Some(path.to_path_buf()),
            log,
            stop,
        }
    }

    /// Serves HTTPS on 127.0.0.1 with the given certificate; with `client_ca`, a client
    /// certificate signed by it is required (mutual TLS, as kube-apiserver can).
    pub fn start_tls(
        cert_pem: &str,
        key_pem: &str,
        client_ca: Option<&str>,
        handler: impl Fn(&Req) -> Resp + Send + Sync + 'static,
    ) -> StandIn {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(c.unwrap()).unwrap();
                }
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(v)
            }
            None => builder.with_no_client_auth(),
        };
        let config = Arc::new(builder.with_single_cert(certs, key).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (log, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let handler: Handler = Arc::new(handler);
        let (l2, s2) = (log.clone(), stop.clone());
        thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        let (h, l, cfg) = (handler.clone(), l2.clone(), config.clone());
                        thread::spawn(move || {
                            let conn = rustls::ServerConnection::new(cfg).unwrap();
                            serve(rustls::StreamOwned::new(conn, s), h, l)
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        StandIn {
            port,
            socket: None,
            log,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }
    pub fn count(&self, path_prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path().starts_with(path_prefix))
            .count()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve<S: Read + Write>(stream: S, handler: Handler, log: Arc<Mutex<Vec<Req>>>) {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut it = line.trim_end().splitn(3, ' ');
    let (method, target) = (
        it.next().unwrap_or("").to_string(),
        it.next().unwrap_or("").to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            return;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let req = Req {
        method,
        target,
        headers,
        body,
    };
    log.lock().unwrap().push(req.clone());
    let resp = handler(&req);
    thread::sleep(resp.delay);
    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", resp.status).into_bytes();
    for (n, v) in &resp.headers {
        out.extend(format!("{n}: {v}\r\n").as_bytes());
    }
    if resp.chunked {
        out.extend(b"Transfer-Encoding: chunked\r\n\r\n");
        for c in resp.body.chunks(7) {
            out.extend(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend(c);
            out.extend(b"\r\n");
        }
        out.extend(b"0\r\n\r\n");
    } else {
        if req.method != "HEAD" || !resp.body.is_empty() {
            out.extend(format!("Content-Length: {}\r\n", resp.body.len()).as_bytes());
        }
        out.extend(b"\r\n");
        if req.method != "HEAD" {
            out.extend(&resp.body);
        }
    }
    let s = r.get_mut();
    let _ = s.write_all(&out);
    let _ = s.flush();
}
