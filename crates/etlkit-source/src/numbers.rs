//! Number-text helpers shared by the readers.

/// The number of decimal places `t` needs to be written exactly (`13.370` → 2, `1.5e-3` → 4,
/// `1200` → −2, `0` → 0): fractional digits without trailing zeros, shifted by the exponent.
/// `None` when `t` is not a number of that form.
pub(crate) fn decimal_places(t: &str) -> Option<i64> {
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    let places = if !frac.is_empty() {
        frac.len() as i64
    } else if int.bytes().all(|c| c == b'0') {
        return Some(0); // zero needs no places at any scale
    } else {
        -((int.len() - int.trim_end_matches('0').len()) as i64)
    };
    places.checked_sub(exp)
}

#[cfg(test)]
mod tests {
    use super::decimal_places;

    #[test]
    fn decimal_places_counts_the_digits_a_value_needs() {
        for (t, want) in [
            ("13.37", Some(2)),
            ("13.370", Some(2)),
            ("-0.5", Some(1)),
            ("+7", Some(0)),
            ("1200", Some(-2)),
            ("0.000", Some(0)),
            ("1.5e-3", Some(4)),
            ("15E2", Some(-2)),
            (".25", Some(2)),
            ("1.", Some(0)),
            ("", None),
            (".", None),
            ("1.2.3", None),
            ("12x", None),
            ("1e", None),
        ] {
            assert_eq!(decimal_places(t), want, "{t:?}");
        }
    }
}
