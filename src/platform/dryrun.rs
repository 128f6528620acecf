//! Dry-run output: each payload that would be sent, as one JSON line
//! `{"method":..,"endpoint":..,"gzip":..,"body":<payload>}` on stdout or `--output FILE`.

use super::http::Method;
use crate::error::{Error, Result};
use std::io::Write;
use std::sync::Mutex;

pub struct DryRun {
    out: Mutex<Box<dyn Write + Send>>,
    pub summary: super::summary::Summary,
}

impl DryRun {
    pub fn new(out: Box<dyn Write + Send>) -> DryRun {
        DryRun {
            out: Mutex::new(out),
            summary: Default::default(),
        }
    }

    pub fn write(&self, method: Method, segment: &str, gzip: bool, body: &[u8]) -> Result<()> {
        let mut line = Vec::with_capacity(body.len() + 96);
        line.extend_from_slice(
            format!(
                "{{\"method\":\"{}\",\"endpoint\":\"{segment}\",\"gzip\":{gzip},\"body\":",
                method.as_str()
            )
            .as_bytes(),
        );
        line.extend_from_slice(body);
        line.extend_from_slice(b"}\n");
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(&line)
            .and_then(|_| out.flush())
            .map_err(|e| Error::other(format!("writing dry-run output: {e}")))?;
        self.summary.note(segment, gzip, body);
        Ok(())
    }
}
