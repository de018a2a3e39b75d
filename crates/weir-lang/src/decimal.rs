//! Rounding to decimal digits as people mean it. `round(33.035, 2)` is 33.04: the value written
//! 33.035 is rounded, not the binary double nearest to it (33.034999...), which multiplying by
//! 100 and rounding would see. The shortest decimal text that reads back as the double is the
//! value rounded here, as Flink and PostgreSQL round decimals.

/// How the dropped digits are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Half away from zero.
    Round,
    /// Towards zero.
    Trunc,
}

/// `x` rounded (or truncated) to `digits` decimal places; negative `digits` round to tens,
/// hundreds and so on.
pub fn to_digits(x: f64, digits: i64, mode: Mode) -> f64 {
    if !x.is_finite() || digits > 400 {
        return x;
    }
    let text = format!("{}", x.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let all: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    let point = int.len() as i64;
    let keep = point + digits.max(-point - 1);
    if keep >= all.len() as i64 {
        return x;
    }
    let mut kept: Vec<u8> = all[..keep.max(0) as usize].to_vec();
    let up = mode == Mode::Round && keep >= 0 && all[keep as usize] >= 5;
    if up {
        let mut i = kept.len();
        loop {
            if i == 0 {
                kept.insert(0, 1);
                break;
            }
            i -= 1;
            if kept[i] == 9 {
                kept[i] = 0;
            } else {
                kept[i] += 1;
                break;
            }
        }
    }
    if kept.is_empty() {
        return 0.0 * x.signum();
    }
    // The kept digits stand for kept × 10^(point - keep); a carry added a digit in front.
    let shift = point - keep;
    let mut s: String = kept.iter().map(|d| char::from(b'0' + d)).collect();
    if shift >= 0 {
        s.extend(std::iter::repeat_n('0', shift as usize));
    } else {
        let at = s.len() as i64 + shift;
        if at <= 0 {
            s = format!("0.{}{s}", "0".repeat((-at) as usize));
        } else {
            s.insert(at as usize, '.');
        }
    }
    let v: f64 = s.parse().unwrap_or(x.abs());
    if x.is_sign_negative() {
        -v
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_the_decimal_value_half_away_from_zero() {
        let r = |x, d| to_digits(x, d, Mode::Round);
        assert_eq!(r(33.035, 2), 33.04);
        assert_eq!(r(2.345, 2), 2.35);
        assert_eq!(r(1.005, 2), 1.01);
        assert_eq!(r(-33.035, 2), -33.04);
        assert_eq!(r(2.5, 0), 3.0);
        assert_eq!(r(-2.5, 0), -3.0);
        assert_eq!(r(9.995, 2), 10.0);
        assert_eq!(r(99.5, 0), 100.0);
        assert_eq!(r(1234.5, -2), 1200.0);
        assert_eq!(r(1250.0, -2), 1300.0);
        assert_eq!(r(49.0, -2), 0.0);
        assert_eq!(r(51.0, -2), 100.0);
        assert_eq!(r(0.000123456, 5), 0.00012);
        assert_eq!(r(0.000125, 5), 0.00013);
        assert_eq!(r(1.5, 3), 1.5);
        assert_eq!(r(1e300, 2), 1e300);
        assert!(r(f64::NAN, 2).is_nan());
    }

    #[test]
    fn truncates_the_decimal_value() {
        let t = |x, d| to_digits(x, d, Mode::Trunc);
        assert_eq!(t(0.29, 2), 0.29);
        assert_eq!(t(33.039, 2), 33.03);
        assert_eq!(t(-33.039, 2), -33.03);
        assert_eq!(t(1299.0, -2), 1200.0);
        assert_eq!(t(0.5, 0), 0.0);
    }
}
