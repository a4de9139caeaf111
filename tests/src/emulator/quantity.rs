//! Kubernetes resource quantities (`500m`, `2`, `1Gi`, `1G`, `1e3`).
//!
//! The scheduler compares pod requests with node allocatable amounts, so the
//! parser must follow the apiserver's rules exactly: a code path that asks for
//! `1G` where it meant `1Gi` must be refused here just as a real cluster would.
//! Values are held as integer nano-units so that `0.1` + `0.2` CPU compares
//! exactly with `300m`.

use std::fmt;
use std::str::FromStr;

/// A parsed quantity, in nano-units of the base unit (cores, bytes, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    /// The amount times 10^9; rounded up like the apiserver rounds fractions.
    nanos: i128,
}

/// Why a quantity string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)]
pub struct QuantityError;

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// The zero quantity.
    pub const ZERO: Quantity = Quantity { nanos: 0 };

    /// A whole number of base units.
    pub fn from_units(units: i64) -> Self {
        Quantity {
            nanos: i128::from(units) * NANO,
        }
    }

    /// A number of thousandths (CPU millicores).
    pub fn from_millis(millis: i64) -> Self {
        Quantity {
            nanos: i128::from(millis) * 1_000_000,
        }
    }

    /// The value rounded up to whole base units (bytes for memory).
    pub fn ceil_units(&self) -> i128 {
        let q = self.nanos.div_euclid(NANO);
        if self.nanos.rem_euclid(NANO) != 0 {
            q + 1
        } else {
            q
        }
    }

    /// The value in thousandths, rounded up (millicores).
    pub fn ceil_millis(&self) -> i128 {
        let q = self.nanos.div_euclid(1_000_000);
        if self.nanos.rem_euclid(1_000_000) != 0 {
            q + 1
        } else {
            q
        }
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Saturating subtraction, floored at zero.
    pub fn saturating_sub(self, other: Quantity) -> Quantity {
        Quantity {
            nanos: (self.nanos - other.nanos).max(0),
        }
    }
}

impl std::ops::Add for Quantity {
    type Output = Quantity;
    fn add(self, rhs: Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(rhs.nanos),
        }
    }
}

impl std::ops::AddAssign for Quantity {
    fn add_assign(&mut self, rhs: Quantity) {
        *self = *self + rhs;
    }
}

/// Splits `1.5Gi` into (`1.5`, `Gi`).
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '+' || *c == '-'))))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Parses a decimal number into (mantissa digits as integer, decimal exponent).
fn parse_decimal(num: &str) -> Result<(i128, i32), QuantityError> {
    let (neg, digits) = match num.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    if digits.is_empty() || digits == "." || digits.matches('.').count() > 1 {
        return Err(QuantityError);
    }
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let mut mantissa: i128 = 0;
    for c in int_part.chars().chain(frac_part.chars()) {
        let d = c.to_digit(10).ok_or(QuantityError)?;
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(d)))
            .ok_or(QuantityError)?;
    }
    let exp = -i32::try_from(frac_part.len()).map_err(|_| QuantityError)?;
    Ok((if neg { -mantissa } else { mantissa }, exp))
}

/// mantissa * 10^exp10 * 2^exp2, in nano-units, rounded up.
fn scale(mantissa: i128, exp10: i32, exp2: u32) -> Result<i128, QuantityError> {
    let mut value = mantissa.checked_mul(1i128 << exp2).ok_or(QuantityError)?;
    let mut e = exp10 + 9;
    while e > 0 {
        value = value.checked_mul(10).ok_or(QuantityError)?;
        e -= 1;
    }
    while e < 0 {
        let rem = value % 10;
        value /= 10;
        if rem > 0 {
            value += 1;
        }
        e += 1;
    }
    Ok(value)
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(QuantityError);
        }
        let (num, suffix) = split_number(s);
        let (mantissa, frac_exp) = parse_decimal(num)?;
        let (exp10, exp2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            other => {
                let exp = other
                    .strip_prefix('e')
                    .or_else(|| other.strip_prefix('E'))
                    .ok_or(QuantityError)?;
                let exp: i32 = exp.parse().map_err(|_| QuantityError)?;
                if !(-30..=30).contains(&exp) {
                    return Err(QuantityError);
                }
                (exp, 0)
            }
        };
        Ok(Quantity {
            nanos: scale(mantissa, exp10 + frac_exp, exp2)?,
        })
    }
}

impl fmt::Display for Quantity {
    /// Prints the canonical-looking form a person expects in a message:
    /// binary suffixes for whole multiples of 1024, `m` for fractions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos % NANO != 0 {
            return write!(f, "{}m", self.ceil_millis());
        }
        let units = self.nanos / NANO;
        if units != 0 {
            for (suffix, shift) in [
                ("Ei", 60),
                ("Pi", 50),
                ("Ti", 40),
                ("Gi", 30),
                ("Mi", 20),
                ("Ki", 10),
            ] {
                let base = 1i128 << shift;
                if units % base == 0 {
                    return write!(f, "{}{}", units / base, suffix);
                }
            }
        }
        write!(f, "{units}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_kubernetes_forms() {
        assert_eq!(q("500m"), Quantity::from_millis(500));
        assert_eq!(q("0.5"), Quantity::from_millis(500));
        assert_eq!(q("2"), Quantity::from_units(2));
        assert_eq!(q("1Gi").ceil_units(), 1 << 30);
        assert_eq!(q("1G").ceil_units(), 1_000_000_000);
        assert_eq!(q("1e3"), Quantity::from_units(1000));
        assert_eq!(q("1E3"), Quantity::from_units(1000));
        assert_eq!(q("1.5Gi").ceil_units(), 3 << 29);
        assert_eq!(q("100Mi").ceil_units(), 100 << 20);
        assert_eq!(q("1k").ceil_units(), 1000);
        assert_eq!(q("+3"), Quantity::from_units(3));
        assert!(q("1Gi") > q("1G"));
    }

    #[test]
    fn refuses_bad_forms() {
        for bad in ["", "abc", "1.2.3", "1Q", "Gi", "1 Gi", "1e", "."] {
            assert!(bad.parse::<Quantity>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn rounds_fractions_up_and_displays() {
        assert_eq!(q("1n").ceil_millis(), 1);
        assert_eq!(q("0.0001").ceil_millis(), 1);
        assert_eq!(q("100Mi").to_string(), "100Mi");
        assert_eq!(q("250m").to_string(), "250m");
        assert_eq!(q("4").to_string(), "4");
        assert_eq!((q("0.1") + q("0.2")), q("300m"));
    }
}
