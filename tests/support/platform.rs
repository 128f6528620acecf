//! A DBtune platform stand-in: real HTTP/1.1 on 127.0.0.1, following protocol.md §5. It records
//! every request (gzip bodies decompressed), serves a recommendation, and on demand answers
//! with an error status, slowly, or with garbage.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// Decompressed when Content-Encoding is gzip.
    pub body: Vec<u8>,
    pub wire_len: usize,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} body is not JSON: {e}", self.path))
    }
    /// The endpoint segment after /api/v1/agent/.
    pub fn segment(&self) -> &str {
        self.path.trim_start_matches("/api/v1/agent/")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Normal,
    /// Every request answers with this status (and Retry-After when given).
    Status(u16, Option<u32>),
    /// Every request waits this long before answering normally.
    Slow(Duration),
    /// Recommendations GET answers with a non-JSON body.
    Garbage,
}

struct State {
    requests: Vec<Recorded>,
    mode: Mode,
    recommendation: String,
    /// The next N requests answer (status, Retry-After) before normal service resumes.
    fail_next: Option<(u32, u16, Option<u32>)>,
}

pub struct PlatformStandIn {
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

fn respond(stream: &mut TcpStream, status: u16, body: &[u8], extra: &str) {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: application/json\r\n{extra}\r\n",
        if status == 204 { 0 } else { body.len() }
    );
    let _ = stream.write_all(head.as_bytes());
    if status != 204 {
        let _ = stream.write_all(body);
    }
    let _ = stream.flush();
}

fn handle(stream: TcpStream, state: Arc<Mutex<State>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut raw = vec![0u8; len];
        if reader.read_exact(&mut raw).is_err() {
            return;
        }
        let gz = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("content-encoding") && v == "gzip");
        let body = if gz {
            let mut d = flate2::read::GzDecoder::new(&raw[..]);
            let mut out = Vec::new();
            d.read_to_end(&mut out).expect("gzip body");
            out
        } else {
            raw.clone()
        };
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.clone(), String::new()),
        };
        let rec = Recorded {
            method: method.clone(),
            path: path.clone(),
            query,
            headers,
            body,
            wire_len: len,
            at: Instant::now(),
        };
        let (mode, recommendation) = {
            let mut s = state.lock().unwrap();
            s.requests.push(rec);
            let mut mode = s.mode.clone();
            if let Some((n, code, ra)) = s.fail_next {
                mode = Mode::Status(code, ra);
                s.fail_next = if n > 1 { Some((n - 1, code, ra)) } else { None };
            }
            (mode, s.recommendation.clone())
        };
        match mode {
            Mode::Status(code, ra) => {
                let extra = ra
                    .map(|s| format!("Retry-After: {s}\r\n"))
                    .unwrap_or_default();
                respond(
                    &mut stream,
                    code,
                    br#"{"error":"stand-in failure"}"#,
                    &extra,
                );
                continue;
            }
            Mode::Slow(d) => std::thread::sleep(d),
            _ => {}
        }
        let seg = path.trim_start_matches("/api/v1/agent/");
        match (method.as_str(), seg) {
            ("GET", "configurations") => {
                if mode == Mode::Garbage {
                    respond(&mut stream, 200, b"<html>oops</html>", "");
                } else {
                    respond(&mut stream, 200, recommendation.as_bytes(), "");
                }
            }
            ("POST", "configurations") => respond(&mut stream, 201, b"", ""),
            ("PUT", "system-info") => respond(&mut stream, 200, b"{}", ""),
            _ => respond(&mut stream, 204, b"", ""),
        }
    }
}

impl PlatformStandIn {
    pub fn start() -> PlatformStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(State {
            requests: Vec::new(),
            mode: Mode::Normal,
            recommendation: "[]".into(),
            fail_next: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !sp.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let st = st.clone();
                        std::thread::spawn(move || handle(s, st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        PlatformStandIn { url, state, stop }
    }

    pub fn set_mode(&self, m: Mode) {
        self.state.lock().unwrap().mode = m;
    }

    /// The next `n` requests fail with `status` (and `Retry-After: secs`), then service resumes.
    pub fn fail_next(&self, n: u32, status: u16, retry_after: Option<u32>) {
        self.state.lock().unwrap().fail_next = Some((n, status, retry_after));
    }

    pub fn set_recommendation(&self, json: &str) {
        self.state.lock().unwrap().recommendation = json.to_string();
    }

    /// Bytes received on the wire so far (bodies as sent, e.g. gzipped), without copying them.
    pub fn wire_bytes(&self) -> u64 {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|r| r.wire_len as u64)
            .sum()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn by_segment(&self, seg: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.segment() == seg)
            .collect()
    }

    pub fn clear(&self) {
        self.state.lock().unwrap().requests.clear();
    }

    /// Waits until `pred` holds over the recorded requests, or panics after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let end = Instant::now() + timeout;
        loop {
            let r = self.requests();
            if pred(&r) {
                return r;
            }
            if Instant::now() > end {
                let segs: Vec<String> = r
                    .iter()
                    .map(|x| format!("{} {}", x.method, x.segment()))
                    .collect();
                panic!("timed out waiting for {what}; seen: {segs:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PlatformStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The `setting` of `name` in a recorded `configurations` payload (Null when the row is absent).
pub fn setting_in(cf: &Recorded, name: &str) -> serde_json::Value {
    cf.json()["config"]
        .as_array()
        .expect("a configurations payload has a config array")
        .iter()
        .find(|r| r["name"] == name)
        .map(|r| r["setting"].clone())
        .unwrap_or(serde_json::Value::Null)
}

/// A recommendation body (as the platform serves it) changing integer knobs
/// `(name, setting, unit, context)`.
pub fn recommendation(knobs: &[(&str, i64, &str, &str)], application: &str) -> String {
    let config: Vec<String> = knobs
        .iter()
        .map(|(k, v, unit, ctx)| {
            format!(r#"{{"name":"{k}","setting":{v},"unit":"{unit}","vartype":"integer","context":"{ctx}"}}"#)
        })
        .collect();
    let names: Vec<String> = knobs.iter().map(|(k, ..)| format!("\"{k}\"")).collect();
    format!(
        r#"[{{"config":[{}],"knobs_overrides":[{}],"knob_application":"{application}"}}]"#,
        config.join(","),
        names.join(",")
    )
}

/// [`recommendation`] of one knob.
pub fn recommend_one(
    knob: &str,
    setting: i64,
    unit: &str,
    context: &str,
    application: &str,
) -> String {
    recommendation(&[(knob, setting, unit, context)], application)
}
