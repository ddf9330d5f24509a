//! Human units in policies: durations (`500ms`, `10s`, `5m`, `1h`, `1d`) and quantities
//! (`200Mi`, `1.5Gi`, `80%`, `1000`). Kubernetes users write `memory: 512Mi` every day; a
//! policy that asked for `536870912` would be a policy nobody can review.
//!
//! Both serialize back to the string the user wrote (canonicalized), so a policy round-trips.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// A non-negative duration written as `<number><unit>` with unit `ms`, `s`, `m`, `h` or `d`
/// (a bare number means seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }
    pub fn std(self) -> std::time::Duration {
        self.0
    }

    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || Error::Unit(format!("{s:?} is not a duration: write e.g. 500ms, 10s, 5m, 1h or 1d"));
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let v: f64 = num.parse().map_err(|_| bad())?;
        let secs = match unit.trim() {
            "ms" => v / 1000.0,
            "" | "s" => v,
            "m" => v * 60.0,
            "h" => v * 3600.0,
            "d" => v * 86400.0,
            _ => return Err(bad()),
        };
        if !secs.is_finite() || !(0.0..=10.0 * 365.0 * 86400.0).contains(&secs) {
            return Err(bad());
        }
        Ok(Self(std::time::Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let s = ms / 1000;
        match s {
            0 => write!(f, "0s"),
            _ if s.is_multiple_of(86400) => write!(f, "{}d", s / 86400),
            _ if s.is_multiple_of(3600) => write!(f, "{}h", s / 3600),
            _ if s.is_multiple_of(60) => write!(f, "{}m", s / 60),
            _ => write!(f, "{s}s"),
        }
    }
}

/// A number with an optional suffix: binary (`Ki`, `Mi`, `Gi`, `Ti`), decimal (`k`, `M`, `G`,
/// `T`) or `%` (divided by 100, so `cpu: {above: 80%}` and `above: 0.8` mean the same).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Quantity(pub f64);

impl Quantity {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let bad = || Error::Unit(format!("{s:?} is not a quantity: write e.g. 1000, 0.8, 80%, 200Mi or 2Gi"));
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let v: f64 = num.parse().map_err(|_| bad())?;
        let mult = match unit.trim() {
            "" => 1.0,
            "%" => 0.01,
            "k" | "K" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "Ki" => 1024.0,
            "Mi" => 1024.0 * 1024.0,
            "Gi" => 1024.0 * 1024.0 * 1024.0,
            "Ti" => 1024.0f64.powi(4),
            _ => return Err(bad()),
        };
        let q = v * mult;
        if !q.is_finite() {
            return Err(bad());
        }
        Ok(Self(q))
    }

    pub fn value(self) -> f64 {
        self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (suffix, m) in [("Gi", 1024.0f64.powi(3)), ("Mi", 1024.0 * 1024.0), ("Ki", 1024.0)] {
            if v >= m && (v / m).fract() == 0.0 {
                return write!(f, "{}{suffix}", v / m);
            }
        }
        write!(f, "{v}")
    }
}

/// Accept a YAML/JSON number or a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr<'a> {
    Num(f64),
    Str(Cow<'a, str>),
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => Duration::parse(&n.to_string()),
            NumOrStr::Str(s) => Duration::parse(&s),
        }
        .map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => Ok(Quantity(n)),
            NumOrStr::Str(s) => Quantity::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

// The schema says "string" with a pattern plus "integer-or-string" semantics, the way
// Kubernetes' own resource.Quantity is published; the apiserver then checks the shape.
impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)?$",
            // Bounds the cost the apiserver estimates for the CEL rules that compare durations.
            "maxLength": 32,
            "description": "A duration such as 500ms, 10s, 5m, 1h or 1d"
        })
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            // A CRD's structural schema has integer-or-string but no number-or-string: in a
            // DumpPolicy object a fraction is written as a string ("0.8") or a percentage.
            "description": "A number, optionally with a unit: 1000, 80%, \"0.8\", 200Mi, 2Gi, 5k (quote fractions)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (s, ms) in
            [("500ms", 500), ("10s", 10_000), ("5m", 300_000), ("1h", 3_600_000), ("2", 2000), ("1.5s", 1500)]
        {
            assert_eq!(Duration::parse(s).unwrap().0.as_millis(), ms, "{s}");
        }
        assert_eq!(Duration::from_secs(300).to_string(), "5m");
        assert_eq!(Duration::from_millis(1500).to_string(), "1500ms");
        for bad in ["", "10x", "-1s", "s", "1e400"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities_parse_units() {
        assert_eq!(Quantity::parse("200Mi").unwrap().0, 200.0 * 1048576.0);
        assert_eq!(Quantity::parse("80%").unwrap().0, 0.8);
        assert_eq!(Quantity::parse("5k").unwrap().0, 5000.0);
        assert_eq!(Quantity::parse("0.5").unwrap().0, 0.5);
        assert!(Quantity::parse("12 apples").is_err());
        assert_eq!(Quantity(50.0 * 1048576.0).to_string(), "50Mi");
    }
}
