//! Hashes, MACs and RSA signatures, all from `ring`.

use ring::{digest, hmac, rand, signature};

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&sha256(data))
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A random number for jitter and session names (not for keys).
pub fn random_u64() -> u64 {
    use rand::SecureRandom;
    let mut b = [0u8; 8];
    // SystemRandom only fails when the OS has no entropy source; fall back to the clock then.
    if rand::SystemRandom::new().fill(&mut b).is_err() {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return n as u64;
    }
    u64::from_le_bytes(b)
}

/// RSASSA-PKCS1-v1_5 with SHA-256 over `msg`, with a PKCS#8 (DER) RSA private key.
/// The error never shows key material.
pub fn rsa_sha256_sign(pkcs8_der: &[u8], msg: &[u8]) -> Result<Vec<u8>, String> {
    let key = signature::RsaKeyPair::from_pkcs8(pkcs8_der)
        .map_err(|e| format!("the RSA private key is not a usable PKCS#8 key ({e})"))?;
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &rand::SystemRandom::new(),
        msg,
        &mut sig,
    )
    .map_err(|_| "RSA signing failed".to_string())?;
    Ok(sig)
}

/// The DER bytes inside the first PEM block with the given label ("PRIVATE KEY", "CERTIFICATE").
pub fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    crate::cloud::encoding::b64_decode(&b64)
}
