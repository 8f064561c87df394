//! BLAKE2b (RFC 7693), unkeyed, with a chosen digest size: the ids of the Python side are
//! `hashlib.blake2b(data, digest_size=n).hexdigest()`.  Written out here (about 80 lines)
//! instead of pulling a hashing crate and its trait stack into the build.

const IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

const SIGMA: [[usize; 16]; 12] = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
    [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
    [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
    [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
    [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
    [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
    [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
    [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
    [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
];

fn compress(h: &mut [u64; 8], block: &[u8; 128], counter: u128, last: bool) {
    let mut m = [0u64; 16];
    for (word, bytes) in m.iter_mut().zip(block.chunks_exact(8)) {
        *word = u64::from_le_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
        ]);
    }
    // The 16 working words as locals, so they live in registers.
    let (mut v0, mut v1, mut v2, mut v3, mut v4, mut v5, mut v6, mut v7) =
        (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]);
    let (mut v8, mut v9, mut v10, mut v11) = (IV[0], IV[1], IV[2], IV[3]);
    let mut v12 = IV[4] ^ counter as u64;
    let mut v13 = IV[5] ^ (counter >> 64) as u64;
    let mut v14 = if last { !IV[6] } else { IV[6] };
    let mut v15 = IV[7];
    macro_rules! g {
        ($a:ident, $b:ident, $c:ident, $d:ident, $x:expr, $y:expr) => {
            $a = $a.wrapping_add($b).wrapping_add($x);
            $d = ($d ^ $a).rotate_right(32);
            $c = $c.wrapping_add($d);
            $b = ($b ^ $c).rotate_right(24);
            $a = $a.wrapping_add($b).wrapping_add($y);
            $d = ($d ^ $a).rotate_right(16);
            $c = $c.wrapping_add($d);
            $b = ($b ^ $c).rotate_right(63);
        };
    }
    // Each round spelled out with constant message indices (no bounds checks, no loop).
    macro_rules! round {
        ($r:expr) => {{
            const S: [usize; 16] = SIGMA[$r];
            g!(v0, v4, v8, v12, m[S[0]], m[S[1]]);
            g!(v1, v5, v9, v13, m[S[2]], m[S[3]]);
            g!(v2, v6, v10, v14, m[S[4]], m[S[5]]);
            g!(v3, v7, v11, v15, m[S[6]], m[S[7]]);
            g!(v0, v5, v10, v15, m[S[8]], m[S[9]]);
            g!(v1, v6, v11, v12, m[S[10]], m[S[11]]);
            g!(v2, v7, v8, v13, m[S[12]], m[S[13]]);
            g!(v3, v4, v9, v14, m[S[14]], m[S[15]]);
        }};
    }
    round!(0);
    round!(1);
    round!(2);
    round!(3);
    round!(4);
    round!(5);
    round!(6);
    round!(7);
    round!(8);
    round!(9);
    round!(10);
    round!(11);
    h[0] ^= v0 ^ v8;
    h[1] ^= v1 ^ v9;
    h[2] ^= v2 ^ v10;
    h[3] ^= v3 ^ v11;
    h[4] ^= v4 ^ v12;
    h[5] ^= v5 ^ v13;
    h[6] ^= v6 ^ v14;
    h[7] ^= v7 ^ v15;
}

/// The lower-case hex digest of `data` (digest of `size` bytes, 1 to 64), as
/// `hashlib.blake2b(data, digest_size=size).hexdigest()` gives it.
pub fn hex_digest(data: &[u8], size: usize, out: &mut Vec<u8>) {
    assert!((1..=64).contains(&size));
    let mut h = IV;
    h[0] ^= 0x0101_0000 ^ size as u64;
    let mut counter: u128 = 0;
    let mut block = [0u8; 128];
    let mut rest = data;
    // Every full block but the last is compressed as not final; the last block (full or
    // partial, or the single empty block of an empty message) carries the final flag.
    while rest.len() > 128 {
        block.copy_from_slice(&rest[..128]);
        counter += 128;
        compress(&mut h, &block, counter, false);
        rest = &rest[128..];
    }
    block = [0u8; 128];
    block[..rest.len()].copy_from_slice(rest);
    counter += rest.len() as u128;
    compress(&mut h, &block, counter, true);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..size {
        let byte = (h[i / 8] >> (8 * (i % 8))) as u8;
        out.push(HEX[(byte >> 4) as usize]);
        out.push(HEX[(byte & 15) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::hex_digest;

    fn hex(data: &[u8], size: usize) -> String {
        let mut out = Vec::new();
        hex_digest(data, size, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn known_answers() {
        // RFC 7693 appendix A ("abc", 64 bytes) and hashlib's values for the sizes we use.
        assert_eq!(
            hex(b"abc", 64),
            "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1\
             7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923"
        );
        assert_eq!(hex(b"", 16), "cae66941d9efbd404e4d88758ea67670");
        assert_eq!(hex(b"abc", 12), "48b4f1f9042a2d5033b382b5");
    }

    #[test]
    fn block_boundaries() {
        // Lengths around the 128-byte block (values from hashlib).
        let data = vec![b'x'; 300];
        assert_eq!(hex(&data[..127], 16), "faeac286ccce46d5273182d599dd943b");
        assert_eq!(hex(&data[..128], 16), "874acca82a22239ec64a3e70c3ae494e");
        assert_eq!(hex(&data[..129], 16), "b9ee96f69e8210c624fee55d71d5a54f");
        assert_eq!(hex(&data[..256], 16), "0b2c2b0de02938ad7a728b51e8da3357");
    }
}
