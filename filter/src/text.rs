//! Text written on every request, without `core::fmt`: in Wasm its machinery (dynamic
//! dispatch, padding logic) costs more than the few bytes it writes.

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    // Wasm has no 64-bit multiply-high, so there a u64 divided by ten is a real division, two
    // per digit; a u32 divided by ten is a multiply. Every number a request writes (a time in
    // seconds, a status, a length) fits in a u32.
    let mut wide = n;
    while wide > u64::from(u32::MAX) {
        start -= 1;
        digits[start] = b'0' + (wide % 10) as u8;
        wide /= 10;
    }
    let mut narrow = wide as u32;
    loop {
        start -= 1;
        digits[start] = b'0' + (narrow % 10) as u8;
        narrow /= 10;
        if narrow == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimals_are_what_display_writes() {
        let edges = [u64::from(u32::MAX), u64::from(u32::MAX) + 1, 10_000_000_000, 42_949_672_960];
        for n in [0, 7, 10, 99, 1_764_000_000, u64::MAX].into_iter().chain(edges) {
            let mut out = String::from("x");
            super::push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }
}
