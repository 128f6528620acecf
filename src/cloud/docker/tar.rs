//! The one-file tar archives the Engine API's `/containers/{id}/archive` endpoint speaks:
//! a ustar header (512 bytes), the file's bytes padded to 512, two zero blocks. Enough to put
//! `postgresql.auto.conf` back into a (possibly stopped) container and to read it out.

use crate::cloud::{CloudError, Result};

const BLOCK: usize = 512;

fn octal(field: &mut [u8], v: u64) {
    // NUL-terminated, zero-padded octal, as ustar writers do.
    let s = format!("{:0width$o}\0", v, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

/// An archive holding one regular file `name` (no directories) with `mode`, `uid`, `gid`.
pub fn single_file(name: &str, data: &[u8], mode: u32, uid: u32, gid: u32) -> Result<Vec<u8>> {
    if name.is_empty() || name.len() > 100 || name.contains('/') {
        return Err(CloudError::config(
            "building a tar archive",
            format!("file name {name:?} must be 1-100 bytes without '/'"),
        ));
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], uid as u64);
    octal(&mut h[116..124], gid as u64);
    octal(&mut h[124..136], data.len() as u64);
    octal(
        &mut h[136..148],
        crate::cloud::time::now_unix().max(0) as u64,
    );
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field read as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    let mut out = Vec::with_capacity(BLOCK * 3 + data.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    out.extend_from_slice(&[0u8; BLOCK * 2]);
    Ok(out)
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .map(|&b| b as char)
        .collect();
    let s = s.trim_start_matches(' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// One regular file read from an archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub data: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The first regular file of an archive. Extended headers (`x`, `g`, GNU long names) before
/// it are skipped.
pub fn first_file(archive: &[u8]) -> Result<File> {
    let bad = |m: &str| CloudError::decode("reading a tar archive from the Docker Engine", m);
    let mut off = 0;
    while off + BLOCK <= archive.len() {
        let h = &archive[off..off + BLOCK];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let size = parse_octal(&h[124..136]).ok_or_else(|| bad("bad size field"))? as usize;
        let data_start = off + BLOCK;
        let data_end = data_start
            .checked_add(size)
            .filter(|e| *e <= archive.len())
            .ok_or_else(|| bad("entry runs past the end of the archive"))?;
        let kind = h[156];
        if kind == b'0' || kind == 0 {
            let name_end = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
            let field = |r: std::ops::Range<usize>| parse_octal(&h[r]).unwrap_or(0) as u32;
            return Ok(File {
                name: String::from_utf8_lossy(&h[..name_end]).to_string(),
                data: archive[data_start..data_end].to_vec(),
                mode: field(100..108),
                uid: field(108..116),
                gid: field(116..124),
            });
        }
        off = data_start + size.div_ceil(BLOCK) * BLOCK;
    }
    Err(bad("no regular file in the archive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_block_aligned() {
        let a = single_file(
            "postgresql.auto.conf",
            b"work_mem = '8MB'\n",
            0o600,
            101,
            104,
        )
        .unwrap();
        assert_eq!(a.len() % BLOCK, 0);
        assert_eq!(a.len(), BLOCK * 4);
        let f = first_file(&a).unwrap();
        assert_eq!(f.name, "postgresql.auto.conf");
        assert_eq!(f.data, b"work_mem = '8MB'\n");
        assert_eq!((f.mode, f.uid, f.gid), (0o600, 101, 104));
        // The checksum field is what `tar` verifies.
        let sum: u32 = a[..BLOCK]
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    b as u32
                }
            })
            .sum();
        assert_eq!(parse_octal(&a[148..156]).unwrap() as u32, sum);
        assert!(single_file("a/b", b"", 0o600, 0, 0).is_err());
        assert!(first_file(&a[..BLOCK + 3]).is_err());
    }
}
