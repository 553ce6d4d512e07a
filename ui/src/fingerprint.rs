//! The fingerprint of an asset's bytes, shared by `build.rs` (content-hashed
//! file names) and `lib.rs` (ETags) as a module of each (`#[path]`), so both
//! name a file's bytes the same way.

/// FNV-1a: a cheap, stable fingerprint of an asset's bytes (a cache key,
/// not a security boundary).
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The 16 lowercase hex digits of [`fnv1a`] of `bytes`.
pub const fn fingerprint_hex(bytes: &[u8]) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = fnv1a(bytes);
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = HEX[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}
