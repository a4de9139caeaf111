//! Human units: byte sizes (`512Mi`, `2G`), CPU cores (`2`, `0.5`, `500m`)
//! and durations (`10m`, `1h30m`).
//!
//! Shared by the workflow file parser and the leader's command-line flags
//! (`--maxMemory 4Gi`, `--defaultCores 0.5`), so both accept the same forms
//! and say the same thing when a value is wrong.

use std::time::Duration;

/// What `parse_size` accepts, for error messages.
const SIZE_FORMS: &str = "write a number with an optional unit: 512Mi, 2G, 1.5Gi, 1024 (bytes) \
     or 1e9; units are K, M, G, T, P (powers of 1000) and Ki, Mi, Gi, Ti, Pi (powers of 1024), \
     each with an optional B";

/// What `parse_cores` accepts, for error messages.
const CORES_FORMS: &str = "write a number of cores (2, 0.5) or of millicores (500m)";

/// Parses a byte size: `1024`, `512Mi`, `2G`, `2GB`, `1.5Gi`, `1e9`, `4 GiB`.
///
/// Units are case-insensitive; `K`/`M`/`G`/`T`/`P` are powers of 1000 and
/// `Ki`/`Mi`/`Gi`/`Ti`/`Pi` powers of 1024, each with an optional `B`.
/// Fractions of a byte round up, so a request is never made smaller.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty size; {SIZE_FORMS}"));
    }
    if s.starts_with('-') {
        return Err(format!("size \"{s}\" is negative; sizes are zero or more"));
    }
    let Some(num) = Decimal::parse_prefix(s) else {
        return Err(format!("invalid size \"{s}\"; {SIZE_FORMS}"));
    };
    let unit = s[num.len..].trim_start();
    let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "p" | "pb" => 1_000_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        "pi" | "pib" => 1 << 50,
        _ => {
            return Err(format!(
                "unknown unit \"{unit}\" in size \"{s}\"; {SIZE_FORMS}"
            ));
        }
    };
    match num.scaled_ceil(multiplier) {
        Some(v) if v <= u128::from(u64::MAX) => Ok(v as u64),
        _ => Err(format!("size \"{s}\" is too large (the most is 16 EiB)")),
    }
}

/// Parses a CPU amount into millicores: `2` is 2000, `0.5` and `500m` are
/// 500. Must be more than zero; fractions finer than a millicore round up.
pub fn parse_cores(text: &str) -> Result<u32, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty cores; {CORES_FORMS}"));
    }
    if s.starts_with('-') {
        return Err(format!("cores \"{s}\" is negative; {CORES_FORMS}"));
    }
    let millicores = if let Some(milli) = s.strip_suffix('m') {
        if milli.is_empty() || !milli.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "invalid cores \"{s}\"; millicores are a whole number before the m (500m); \
                 {CORES_FORMS}"
            ));
        }
        milli.parse::<u128>().ok()
    } else {
        match Decimal::parse_prefix(s) {
            Some(num) if num.len == s.len() => num.scaled_ceil(1000),
            _ => return Err(format!("invalid cores \"{s}\"; {CORES_FORMS}")),
        }
    };
    match millicores {
        Some(0) => Err(format!(
            "cores \"{s}\" is zero; a job needs more than 0 cores"
        )),
        Some(m) if m <= u128::from(u32::MAX) => Ok(m as u32),
        _ => Err(format!("cores \"{s}\" is too large")),
    }
}

/// Parses a duration: `30s`, `10m`, `1h30m`, `1h 30m`, `2days`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "duration \"{s}\" has no unit; write it with one: {s}s, {s}m or {s}h"
        ));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("invalid duration \"{s}\" ({e}); write a number with a unit: 30s, 10m, 1h30m, 2h")
    })
}

/// Formats a byte count with binary units and at most two decimals:
/// `512 B`, `1.5 GiB`, `1.86 GiB` (for 2G).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >= 1u64 << (10 * (unit + 1)) {
        unit += 1;
    }
    let scale = 1u128 << (10 * unit);
    // Hundredths of the unit, rounded to nearest.
    let mut hundredths = (u128::from(bytes) * 100 + scale / 2) / scale;
    if hundredths >= 1024 * 100 && unit + 1 < UNITS.len() {
        unit += 1;
        hundredths = (u128::from(bytes) * 100 + (scale << 10) / 2) / (scale << 10);
    }
    format!("{} {}", two_decimals(hundredths), UNITS[unit])
}

/// Formats millicores as cores, the way `parse_cores` reads them back:
/// `2`, `0.5`, `0.25`, `0.001`.
pub fn format_cores(millicores: u32) -> String {
    let whole = millicores / 1000;
    let frac = millicores % 1000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:03}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// `150` -> `1.5`, `100` -> `1`, `123` -> `1.23`.
fn two_decimals(hundredths: u128) -> String {
    let (whole, frac) = (hundredths / 100, hundredths % 100);
    match frac {
        0 => whole.to_string(),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

// === impl Decimal ===

/// A non-negative decimal number read exactly: `digits * 10^exp10`.
struct Decimal {
    /// All the mantissa's digits, without the point.
    digits: u128,
    /// Power of ten to apply (fraction digits and exponent combined).
    exp10: i64,
    /// How many bytes of the input the number used.
    len: usize,
}

impl Decimal {
    /// Reads `DIGITS[.DIGITS][e[+-]DIGITS]` from the start of `s`; at least
    /// one mantissa digit is required. Returns `None` when `s` does not
    /// start with a number (or has more digits than we can hold exactly).
    fn parse_prefix(s: &str) -> Option<Decimal> {
        let b = s.as_bytes();
        let mut i = 0;
        let mut digits: u128 = 0;
        let mut n_digits = 0usize;
        let mut frac_digits: i64 = 0;
        let mut seen_point = false;
        while i < b.len() {
            match b[i] {
                c @ b'0'..=b'9' => {
                    digits = digits.checked_mul(10)?.checked_add(u128::from(c - b'0'))?;
                    n_digits += 1;
                    if seen_point {
                        frac_digits += 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                _ => break,
            }
            i += 1;
        }
        if n_digits == 0 {
            return None;
        }
        let mut exp10 = -frac_digits;
        // An exponent only when digits follow: "1e9", "2.5E+3"; a bare "E"
        // is left for the unit check to reject.
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            let mut j = i + 1;
            let negative = match b.get(j) {
                Some(b'-') => {
                    j += 1;
                    true
                }
                Some(b'+') => {
                    j += 1;
                    false
                }
                _ => false,
            };
            let start = j;
            let mut e: i64 = 0;
            while j < b.len() && b[j].is_ascii_digit() {
                e = e.checked_mul(10)?.checked_add(i64::from(b[j] - b'0'))?;
                if e > 1000 {
                    return None;
                }
                j += 1;
            }
            if j > start {
                exp10 += if negative { -e } else { e };
                i = j;
            }
        }
        Some(Decimal {
            digits,
            exp10,
            len: i,
        })
    }

    /// `self * multiplier`, rounded up to a whole number; `None` on overflow.
    fn scaled_ceil(&self, multiplier: u128) -> Option<u128> {
        let value = self.digits.checked_mul(multiplier)?;
        if value == 0 {
            return Some(0);
        }
        if self.exp10 >= 0 {
            let pow = 10u128.checked_pow(u32::try_from(self.exp10).ok()?)?;
            value.checked_mul(pow)
        } else {
            match 10u128.checked_pow(u32::try_from(-self.exp10).ok()?) {
                Some(pow) => Some(value.div_ceil(pow)),
                // Smaller than any representable fraction: round up to 1.
                None => Some(1),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const KI: u64 = 1024;
    const MI: u64 = 1024 * KI;
    const GI: u64 = 1024 * MI;

    #[test]
    fn sizes_parse() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("1024", 1024),
            ("1024B", 1024),
            ("512Mi", 512 * MI),
            ("512MiB", 512 * MI),
            ("512mi", 512 * MI),
            ("2G", 2_000_000_000),
            ("2GB", 2_000_000_000),
            ("2gb", 2_000_000_000),
            ("1.5Gi", 3 * GI / 2),
            ("1.5 GiB", 3 * GI / 2),
            ("4 Gi", 4 * GI),
            ("1e9", 1_000_000_000),
            ("2.5E3", 2_500),
            ("1e+3K", 1_000_000),
            ("1k", 1_000),
            ("1Ki", 1024),
            ("1T", 1_000_000_000_000),
            ("1Ti", 1 << 40),
            ("1P", 1_000_000_000_000_000),
            ("1Pi", 1 << 50),
            ("0.5", 1),
            ("0.1Ki", 103),
            ("1e-3", 1),
            (" 7 ", 7),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_size(text), Ok(want), "parse_size({text:?})");
        }
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn bad_sizes_say_why() {
        let cases: &[(&str, &str)] = &[
            ("", "empty size"),
            ("  ", "empty size"),
            ("-1G", "negative"),
            ("lots", "invalid size"),
            ("G", "invalid size"),
            ("1.2.3G", "unknown unit"),
            ("2X", "unknown unit \"X\""),
            ("2 gigs", "unknown unit \"gigs\""),
            ("1E", "unknown unit \"E\""),
            ("20Pi000", "unknown unit"),
            ("16385Pi", "too large"),
            ("1e400", "too large"),
            ("1e4000", "invalid size"),
            ("18446744073709551616", "too large"),
        ];
        for &(text, want) in cases {
            let err = parse_size(text).expect_err(text);
            assert!(
                err.contains(want),
                "parse_size({text:?}) = {err:?}, want {want:?}"
            );
        }
        // Every error says what is accepted.
        assert!(parse_size("2X").unwrap_err().contains("512Mi, 2G"));
    }

    #[test]
    fn cores_parse() {
        let cases: &[(&str, u32)] = &[
            ("1", 1000),
            ("2", 2000),
            ("0.5", 500),
            ("0.25", 250),
            ("1.5", 1500),
            ("500m", 500),
            ("2000m", 2000),
            ("1m", 1),
            ("0.0001", 1),
            ("0.0015", 2),
            (" 4 ", 4000),
            ("64", 64_000),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_cores(text), Ok(want), "parse_cores({text:?})");
        }
    }

    #[test]
    fn bad_cores_say_why() {
        let cases: &[(&str, &str)] = &[
            ("", "empty cores"),
            ("0", "zero"),
            ("0m", "zero"),
            ("0.0", "zero"),
            ("-1", "negative"),
            ("two", "invalid cores"),
            ("1.5m", "whole number"),
            ("m", "whole number"),
            ("2 cores", "invalid cores"),
            ("5000000", "too large"),
        ];
        for &(text, want) in cases {
            let err = parse_cores(text).expect_err(text);
            assert!(
                err.contains(want),
                "parse_cores({text:?}) = {err:?}, want {want:?}"
            );
            if want == "invalid cores" {
                assert!(err.contains("500m"), "{err}");
            }
        }
    }

    #[test]
    fn durations_parse() {
        let cases: &[(&str, u64)] = &[
            ("30s", 30),
            ("10m", 600),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("2h", 7200),
            ("1day", 86_400),
        ];
        for &(text, secs) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert!(parse_duration("600").unwrap_err().contains("600s"));
        assert!(parse_duration("soon").unwrap_err().contains("1h30m"));
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_format() {
        let cases: &[(u64, &str)] = &[
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (1536, "1.5 KiB"),
            (512 * MI, "512 MiB"),
            (3 * GI / 2, "1.5 GiB"),
            (2_000_000_000, "1.86 GiB"),
            (GI - 1, "1 GiB"),
            (1 << 40, "1 TiB"),
            (u64::MAX, "16 EiB"),
        ];
        for &(bytes, want) in cases {
            assert_eq!(format_size(bytes), want, "format_size({bytes})");
        }
    }

    #[test]
    fn cores_format_and_round_trip() {
        let cases: &[(u32, &str)] = &[
            (1000, "1"),
            (2000, "2"),
            (500, "0.5"),
            (250, "0.25"),
            (1, "0.001"),
            (1500, "1.5"),
            (12_345, "12.345"),
        ];
        for &(m, want) in cases {
            assert_eq!(format_cores(m), want);
            assert_eq!(parse_cores(want), Ok(m), "round trip of {m}");
        }
    }
}
