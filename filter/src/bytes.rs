//! Byte comparison a word at a time, for the module's `memcmp`.
//!
//! wasi-libc's `memcmp` is a byte loop, which V8 runs byte by byte: on every request the verify
//! cache compares the caller's whole bearer token (hundreds of bytes) with its key that way, and
//! header and policy lookups compare names. In a profile of the module in V8 (`node --cpu-prof`
//! on bench/v8) `memcmp` took 6 % of the module's time, most of it from the verify cache. Eight
//! bytes at a time it takes an eighth of the steps.

/// `memcmp`'s contract over `n` bytes at `a` and `b`: zero when equal, else the difference of
/// the first unequal bytes as unsigned values.
///
/// # Safety
/// `a` and `b` must be valid for reads of `n` bytes.
pub unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut at = 0;
    while at + 8 <= n {
        // SAFETY: at + 8 <= n, and the caller vouches for n bytes at each pointer.
        let (x, y) = unsafe { (a.add(at).cast::<u64>().read_unaligned(), b.add(at).cast::<u64>().read_unaligned()) };
        if x != y {
            // Read as little-endian words, the first unequal byte in memory order is the
            // lowest unequal byte of the words.
            let first = (u64::from_le(x) ^ u64::from_le(y)).trailing_zeros() as usize / 8;
            at += first;
            break;
        }
        at += 8;
    }
    while at < n {
        // SAFETY: at < n.
        let (x, y) = unsafe { (*a.add(at), *b.add(at)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        at += 1;
    }
    0
}

/// The C library's `memcmp`, in place of wasi-libc's: the linker takes a symbol the program
/// defines before it looks into libc. Slices' `==` and `cmp` in the core and its dependencies
/// come here.
///
/// Not inlined: with LTO every slice comparison would take a copy (36 KB of code), and the
/// module's code falls out of the CPU caches between callbacks as it is.
#[cfg(target_arch = "wasm32")]
#[no_mangle]
#[inline(never)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: memcmp's caller vouches for n bytes at each pointer, as `compare` needs.
    unsafe { compare(a, b, n) }
}

#[cfg(test)]
mod tests {
    use super::compare;

    fn sign(v: i32) -> i32 {
        v.signum()
    }

    /// What memcmp must return, from the slices' own ordering.
    fn reference(a: &[u8], b: &[u8]) -> i32 {
        match a.iter().zip(b).find(|(x, y)| x != y) {
            Some((x, y)) => i32::from(*x) - i32::from(*y),
            None => 0,
        }
    }

    #[test]
    fn agrees_with_the_byte_loop_at_every_length_offset_and_difference() {
        let base: Vec<u8> = (0..80u32).map(|i| (i * 37 + 11) as u8).collect();
        for offset in 0..8 {
            for len in 0..(base.len() - offset) {
                let a = &base[offset..offset + len];
                assert_eq!(unsafe { compare(a.as_ptr(), a.to_vec().as_ptr(), len) }, 0, "{offset} {len}");
                for at in 0..len {
                    for delta in [1u8, 0x80, 0xff] {
                        let mut b = a.to_vec();
                        b[at] = b[at].wrapping_add(delta);
                        // A second difference later must not change the answer.
                        if at + 1 < len {
                            b[len - 1] ^= 0x55;
                        }
                        let got = unsafe { compare(a.as_ptr(), b.as_ptr(), len) };
                        assert_eq!(got, reference(a, &b), "{offset} {len} {at} {delta}");
                        assert_eq!(sign(unsafe { compare(b.as_ptr(), a.as_ptr(), len) }), -sign(got));
                    }
                }
            }
        }
    }

    #[test]
    fn bytes_compare_as_unsigned() {
        let (low, high) = ([0x01u8; 9], [0xffu8; 9]);
        for len in [1, 8, 9] {
            assert!(unsafe { compare(low.as_ptr(), high.as_ptr(), len) } < 0);
            assert_eq!(unsafe { compare(high.as_ptr(), low.as_ptr(), len) }, 0xfe);
        }
    }
}
