//! Resource Manager calls of the Flexible Server target with their long-running operations
//! awaited through `apply::wait` (progress, a log line every 15 s, shutdown interrupts):
//! a 201/202 names a monitor in `Azure-AsyncOperation` (JSON `status`) or `Location` (202 while
//! running); each poll waits `Retry-After` (else 2 s); `Failed` / `Canceled` is an error with
//! the service's code and message; the whole operation has a deadline.

use crate::apply::wait;
use crate::cloud::azure::Arm;
use crate::cloud::http::{retry_after, Request, Response};
use crate::error::{Error, Kind, Result};
use serde_json::Value;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_secs(2);

fn body(r: &Response) -> Option<Value> {
    serde_json::from_slice(&r.body).ok()
}

/// Sends `req`, then follows its operation to the end. Returns the final resource (from
/// `Location`, else a GET of `resource_url`), or the last monitor answer's body.
pub fn call(
    arm: &Arm,
    req: Request,
    resource_url: Option<&str>,
    what: &str,
    deadline: Duration,
) -> Result<Option<Value>> {
    let first = arm.send(req.what(what.to_string())).map_err(Error::from)?;
    if !matches!(first.status, 201 | 202) {
        return Ok(body(&first));
    }
    let async_op = first.header("Azure-AsyncOperation").map(str::to_string);
    let location = first.header("Location").map(str::to_string);
    let Some(monitor) = async_op.clone().or(location.clone()) else {
        return Ok(body(&first));
    };
    let started = Instant::now();
    let mut pause = retry_after(&first).unwrap_or(POLL);
    let mut polls = 0u32;
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(Error::new(
                Kind::Timeout,
                format!(
                    "{what}: the operation was still running after {}s ({polls} polls)",
                    deadline.as_secs()
                ),
            ));
        }
        wait::sleep(pause.min(left), what)?;
        polls += 1;
        let r = arm
            .send(Request::get(monitor.clone()).what(format!("{what}: polling the operation")))
            .map_err(Error::from)?;
        pause = retry_after(&r).unwrap_or(POLL);
        if async_op.is_some() {
            let v = body(&r).unwrap_or(Value::Null);
            match v["status"].as_str().unwrap_or("") {
                "Succeeded" => break,
                s @ ("Failed" | "Canceled" | "Cancelled") => {
                    return Err(Error::other(format!(
                        "{what}: the operation ended {s}: {}: {}",
                        v["error"]["code"].as_str().unwrap_or("(no code)"),
                        v["error"]["message"].as_str().unwrap_or("(no message)")
                    )))
                }
                _ => continue,
            }
        } else if r.status == 202 {
            continue;
        } else {
            return Ok(body(&r));
        }
    }
    // Configurations_Put and Servers_Restart declare `final-state-via: location`: the result
    // is what `Location` answers; else a GET of the resource.
    match location.as_deref().or(resource_url) {
        Some(u) => Ok(body(
            &arm.send(Request::get(u.to_string()).what(format!("{what}: reading the result")))
                .map_err(Error::from)?,
        )),
        None => Ok(None),
    }
}
