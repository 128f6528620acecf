//! A minimal blocking HTTP/1.1 client over a unix socket (ureq cannot dial one): one request
//! per connection (`Connection: close`), deadline on every read and write, `Content-Length`,
//! chunked and read-to-EOF bodies.

use crate::cloud::http::{service_error, Response};
use crate::cloud::{CloudError, ErrorKind, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MAX_BODY: usize = 32 * 1024 * 1024;
const MAX_HEADER_LINE: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct UnixHttp {
    pub socket: PathBuf,
    /// Deadline for one whole exchange.
    pub timeout: Duration,
}

impl UnixHttp {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        UnixHttp {
            socket: socket.into(),
            timeout: Duration::from_secs(30),
        }
    }

    /// Sends one request; non-2xx answers become errors carrying the daemon's message.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        what: &str,
    ) -> Result<Response> {
        let ctx = format!(
            "{what} ({method} unix://{}{})",
            self.socket.display(),
            path.split('?').next().unwrap_or(path)
        );
        let resp = self
            .exchange(method, path, body, &ctx)
            .map_err(|(kind, msg)| CloudError::new(kind, &ctx, msg))?;
        // 304 is the Engine's "already in that state" (start of a running container).
        if (200..300).contains(&resp.status) || resp.status == 304 {
            Ok(resp)
        } else {
            Err(service_error(&ctx, &resp, &[]))
        }
    }

    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &[u8])>,
        ctx: &str,
    ) -> std::result::Result<Response, (ErrorKind, String)> {
        let deadline = Instant::now() + self.timeout;
        let io = |e: std::io::Error| {
            let kind = if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                ErrorKind::Timeout
            } else {
                ErrorKind::Transport
            };
            (kind, e.to_string())
        };
        let stream = UnixStream::connect(&self.socket).map_err(io)?;
        let left = |d: Instant| -> std::result::Result<Duration, (ErrorKind, String)> {
            let l = d.saturating_duration_since(Instant::now());
            if l.is_zero() {
                Err((
                    ErrorKind::Timeout,
                    format!("no complete answer within {:?}", self.timeout),
                ))
            } else {
                Ok(l)
            }
        };
        stream
            .set_write_timeout(Some(left(deadline)?))
            .map_err(io)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: api.moby.localhost\r\nUser-Agent: dbtune-agent/{}\r\nConnection: close\r\n",
            env!("CARGO_PKG_VERSION")
        );
        if let Some((ct, b)) = body {
            head.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n",
                b.len()
            ));
        } else if method == "POST" || method == "PUT" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        let mut w = &stream;
        w.write_all(head.as_bytes()).map_err(io)?;
        if let Some((_, b)) = body {
            w.write_all(b).map_err(io)?;
        }
        w.flush().map_err(io)?;

        let mut r = BufReader::new(&stream);
        let read_line =
            |r: &mut BufReader<&UnixStream>| -> std::result::Result<String, (ErrorKind, String)> {
                stream.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
                let mut line = String::new();
                let n = r
                    .by_ref()
                    .take(MAX_HEADER_LINE as u64)
                    .read_line(&mut line)
                    .map_err(io)?;
                if n == 0 {
                    return Err((
                        ErrorKind::Transport,
                        "connection closed before the response was complete".into(),
                    ));
                }
                Ok(line.trim_end_matches(['\r', '\n']).to_string())
            };
        let status_line = read_line(&mut r)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .filter(|_| status_line.starts_with("HTTP/1."))
            .ok_or_else(|| {
                (
                    ErrorKind::Decode,
                    format!(
                        "not an HTTP response: {:?}",
                        status_line.chars().take(60).collect::<String>()
                    ),
                )
            })?;
        let mut headers = Vec::new();
        loop {
            let l = read_line(&mut r)?;
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let mut body_bytes = Vec::new();
        let no_body =
            method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
        if !no_body {
            if header("Transfer-Encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
            {
                loop {
                    let size_line = read_line(&mut r)?;
                    let size_hex = size_line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(size_hex, 16)
                        .map_err(|_| (ErrorKind::Decode, format!("bad chunk size {size_hex:?}")))?;
                    if size == 0 {
                        // Trailers until the empty line.
                        while !read_line(&mut r)?.is_empty() {}
                        break;
                    }
                    if body_bytes.len() + size > MAX_BODY {
                        return Err((ErrorKind::Decode, "response body too large".into()));
                    }
                    let start = body_bytes.len();
                    body_bytes.resize(start + size, 0);
                    stream.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
                    r.read_exact(&mut body_bytes[start..]).map_err(io)?;
                    let crlf = read_line(&mut r)?;
                    if !crlf.is_empty() {
                        return Err((ErrorKind::Decode, "chunk not followed by CRLF".into()));
                    }
                }
            } else if let Some(len) = header("Content-Length") {
                let len: usize = len
                    .parse()
                    .map_err(|_| (ErrorKind::Decode, format!("bad Content-Length {len:?}")))?;
                if len > MAX_BODY {
                    return Err((ErrorKind::Decode, "response body too large".into()));
                }
                body_bytes.resize(len, 0);
                stream.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
                r.read_exact(&mut body_bytes).map_err(io)?;
            } else {
                stream.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
                r.by_ref()
                    .take(MAX_BODY as u64 + 1)
                    .read_to_end(&mut body_bytes)
                    .map_err(io)?;
                if body_bytes.len() > MAX_BODY {
                    return Err((ErrorKind::Decode, "response body too large".into()));
                }
            }
        }
        Ok(Response::new(status, headers, body_bytes, ctx.to_string()))
    }
}
