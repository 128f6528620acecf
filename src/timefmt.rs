//! Timestamp formats of the wire: UTC to the second (`...Z`), UTC with trimmed nanoseconds
//! (catalog `collected_at`), and local time with offset (metrics, system info).

use std::time::{SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 → (year, month, day); proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i64 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn split(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let mut s = -(d.as_secs() as i64);
            let mut n = d.subsec_nanos();
            if n > 0 {
                s -= 1;
                n = 1_000_000_000 - n;
            }
            (s, n)
        }
    }
}

fn datetime(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// `2025-06-01T10:00:00Z`
pub fn utc_seconds(t: SystemTime) -> String {
    format!("{}Z", datetime(split(t).0))
}

/// Go's RFC3339Nano in UTC: `2025-06-01T10:00:00.123456Z`, trailing zeros trimmed.
pub fn utc_nanos(t: SystemTime) -> String {
    let (s, n) = split(t);
    let mut out = datetime(s);
    if n > 0 {
        let frac = format!("{n:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Local time with the zone's offset, to the second: `2025-06-01T12:00:00+02:00` (or `Z`).
pub fn local_seconds(t: SystemTime) -> String {
    let (s, _) = split(t);
    let off = local_offset_seconds(s);
    let mut out = datetime(s + off);
    if off == 0 {
        out.push('Z');
    } else {
        let sign = if off < 0 { '-' } else { '+' };
        let a = off.abs();
        out.push_str(&format!("{sign}{:02}:{:02}", a / 3600, (a / 60) % 60));
    }
    out
}

/// The process's UTC offset at `secs`, from the C library (reads `TZ` and /etc/localtime).
pub fn local_offset_seconds(secs: i64) -> i64 {
    // time_t is 64-bit on every target we build (musl marks the alias deprecated for 32-bit).
    #[allow(deprecated)]
    let t: libc::time_t = secs as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r writes only into `tm`, which we own.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        0
    } else {
        tm.tm_gmtoff as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats() {
        let t = UNIX_EPOCH + Duration::new(1_748_772_000, 123_456_000);
        assert_eq!(utc_seconds(t), "2025-06-01T10:00:00Z");
        assert_eq!(utc_nanos(t), "2025-06-01T10:00:00.123456Z");
        assert_eq!(
            utc_nanos(UNIX_EPOCH + Duration::from_secs(1_748_772_000)),
            "2025-06-01T10:00:00Z"
        );
        assert_eq!(
            utc_seconds(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
