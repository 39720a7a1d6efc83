//! Allocation-free text formatting of numbers, amounts, ids and timestamps into byte buffers.

use time::OffsetDateTime;

/// Appends `value` in decimal, left-padded with zeros to at least `width` digits.
pub(crate) fn push_uint(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut n = 0;
    loop {
        digits[n] = b'0' + (value % 10) as u8;
        value /= 10;
        n += 1;
        if value == 0 {
            break;
        }
    }
    for _ in n..width {
        out.push(b'0');
    }
    out.extend(digits[..n].iter().rev());
}

/// Appends an amount of `minor` units as a decimal string with `decimals` fraction digits
/// (`4250`, 2 → `42.50`; `4250`, 0 → `4250`).
pub(crate) fn push_amount(out: &mut Vec<u8>, minor: i64, decimals: u32) {
    if minor < 0 {
        out.push(b'-');
    }
    let abs = minor.unsigned_abs();
    if decimals == 0 {
        push_uint(out, abs, 1);
        return;
    }
    let scale = 10u64.pow(decimals);
    push_uint(out, abs / scale, 1);
    out.push(b'.');
    push_uint(out, abs % scale, decimals as usize);
}

/// Returns the number of digits customer ids are padded to for `customers` customers:
/// at least 6, so ids stay stable for any count up to a million.
pub(crate) fn id_width(customers: u64) -> usize {
    let mut width = 1;
    let mut max = customers.saturating_sub(1);
    while max >= 10 {
        max /= 10;
        width += 1;
    }
    width.max(6)
}

/// Appends the customer id `c<index>`, zero-padded to `width` digits.
pub(crate) fn push_customer_id(out: &mut Vec<u8>, index: u32, width: usize) {
    out.push(b'c');
    push_uint(out, u64::from(index), width);
}

/// Returns the customer id `c<index>`, zero-padded to `width` digits.
pub(crate) fn customer_id(index: u32, width: usize) -> String {
    let mut out = Vec::with_capacity(width + 1);
    push_customer_id(&mut out, index, width);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `unix` seconds as RFC 3339 UTC with a `Z` suffix, e.g. `2024-01-05T13:45:12Z`.
pub(crate) fn push_rfc3339(out: &mut Vec<u8>, unix: i64) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400) as u64;
    let (year, month, day) = civil_from_days(days);
    push_uint(out, year as u64, 4);
    out.push(b'-');
    push_uint(out, u64::from(month), 2);
    out.push(b'-');
    push_uint(out, u64::from(day), 2);
    out.push(b'T');
    push_uint(out, secs / 3600, 2);
    out.push(b':');
    push_uint(out, secs / 60 % 60, 2);
    out.push(b':');
    push_uint(out, secs % 60, 2);
    out.push(b'Z');
}

/// Returns `time` as RFC 3339 UTC with a `Z` suffix (whole seconds).
pub(crate) fn rfc3339(time: OffsetDateTime) -> String {
    let mut out = Vec::with_capacity(20);
    push_rfc3339(&mut out, time.unix_timestamp());
    String::from_utf8(out).unwrap_or_default()
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn amounts_use_the_currency_decimals() {
        assert_eq!(text(|o| push_amount(o, 4250, 2)), "42.50");
        assert_eq!(text(|o| push_amount(o, 5, 2)), "0.05");
        assert_eq!(text(|o| push_amount(o, -1999, 2)), "-19.99");
        assert_eq!(text(|o| push_amount(o, 4250, 0)), "4250");
    }

    #[test]
    fn timestamps_match_the_time_crate() {
        for unix in [
            0i64,
            951_782_400,
            1_704_067_199,
            1_709_164_800,
            4_102_444_800,
            1_234_567_890,
        ] {
            let expected = OffsetDateTime::from_unix_timestamp(unix)
                .unwrap()
                .format(&Rfc3339)
                .unwrap();
            assert_eq!(text(|o| push_rfc3339(o, unix)), expected);
        }
    }

    #[test]
    fn customer_ids_are_padded_to_at_least_six_digits() {
        assert_eq!(customer_id(5, id_width(10)), "c000005");
        assert_eq!(customer_id(999_999, id_width(1_000_000)), "c999999");
        assert_eq!(customer_id(12, id_width(10_000_000)), "c0000012");
    }
}
