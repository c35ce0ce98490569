//! WAL positions (`pg_lsn`): parsed from and printed as Postgres does, `XXXXXXXX/XXXXXXXX` in hex.

use std::fmt;
use std::str::FromStr;

/// A WAL position. Ordered; `Lsn(0)` means "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The zero position, used for "unknown".
    pub const ZERO: Lsn = Lsn(0);

    /// Bytes from `other` up to `self`, zero when `other` is ahead.
    pub fn bytes_after(self, other: Lsn) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text was not of the form `hi/lo` with hexadecimal halves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLsn;

impl fmt::Display for BadLsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid LSN: expected the form 16/B374D848")
    }
}

impl std::error::Error for BadLsn {}

impl FromStr for Lsn {
    type Err = BadLsn;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s.trim().split_once('/').ok_or(BadLsn)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(BadLsn);
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| BadLsn)?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| BadLsn)?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_postgres_format() {
        let l: Lsn = "16/B374D848".parse().expect("valid");
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>(), Ok(Lsn::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "/", "1/", "/1", "x/1", "123456789/0", "1/2/3"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn distance_saturates() {
        assert_eq!(Lsn(10).bytes_after(Lsn(4)), 6);
        assert_eq!(Lsn(4).bytes_after(Lsn(10)), 0);
    }
}
