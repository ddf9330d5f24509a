//! Five-field cron expressions (`minute hour day-of-month month day-of-week`, UTC) for
//! `schedule` triggers: `*`, lists, ranges and steps, as in crontab(5). Names (`mon`, `jan`)
//! and `@daily` forms are not accepted; the error says so.

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::civil::Date;
use k8s_openapi::jiff::tz::TimeZone;

use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// crontab(5): when both day fields are restricted, either may match.
    days_restricted: bool,
    weekdays_restricted: bool,
}

fn field(spec: &str, min: u32, max: u32, what: &str) -> Result<u64, Error> {
    let bad = |why: &str| Error::Unit(format!("cron {what} field {spec:?}: {why}"));
    let mut mask = 0u64;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| bad("the step must be a number"))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(bad("the step must be at least 1"));
        }
        let num = |s: &str| s.parse::<u32>().map_err(|_| bad("use numbers, *, ranges a-b, lists a,b and steps /n"));
        let (lo, hi) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None if part.contains('/') => (num(r)?, max),
                None => (num(r)?, num(r)?),
            },
        };
        if lo < min || hi > max || lo > hi {
            return Err(bad(&format!("values must lie in {min}..{max}")));
        }
        for v in (lo..=hi).step_by(step as usize) {
            mask |= 1 << v;
        }
    }
    Ok(mask)
}

impl Cron {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let f: Vec<&str> = s.split_whitespace().collect();
        if f.len() != 5 {
            return Err(Error::Unit(format!(
                "cron {s:?} must have 5 fields: minute hour day-of-month month day-of-week (e.g. \"0 3 * * *\")"
            )));
        }
        let mut weekdays = field(f[4], 0, 7, "day-of-week")?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Self {
            minutes: field(f[0], 0, 59, "minute")?,
            hours: field(f[1], 0, 23, "hour")?,
            days: field(f[2], 1, 31, "day-of-month")?,
            months: field(f[3], 1, 12, "month")?,
            weekdays,
            days_restricted: f[2] != "*",
            weekdays_restricted: f[4] != "*",
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let bit = |mask: u64, v: i8| mask & (1 << v) != 0;
        let dom = bit(self.days, date.day());
        let dow = bit(self.weekdays, date.weekday().to_sunday_zero_offset());
        let day_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        };
        bit(self.months, date.month()) && day_ok
    }

    /// The first whole minute strictly after `unix_secs` that matches, in Unix seconds (UTC).
    pub fn next_after(&self, unix_secs: u64) -> Option<u64> {
        let first_minute = unix_secs / 60 + 1;
        let start = Timestamp::from_second(i64::try_from(first_minute * 60).ok()?).ok()?.to_zoned(TimeZone::UTC);
        let mut date = start.date();
        let mut from_minute = u64::from(start.hour() as u8) * 60 + u64::from(start.minute() as u8);
        // Every expression matches within 4 years (29 Feb), else never (31 Feb).
        for _ in 0..4 * 366 {
            if self.day_matches(date) {
                let minute_of_day = (from_minute..1440)
                    .find(|m| self.hours & (1 << (m / 60)) != 0 && self.minutes & (1 << (m % 60)) != 0);
                if let Some(m) = minute_of_day {
                    let midnight = date.to_zoned(TimeZone::UTC).ok()?.timestamp().as_second();
                    return u64::try_from(midnight).ok().map(|s| s + m * 60);
                }
            }
            date = date.tomorrow().ok()?;
            from_minute = 0;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-28T02:15:00Z, a Saturday.
    const T: u64 = 1_795_832_100;

    #[test]
    fn next_occurrences() {
        let at = |c: &str| Cron::parse(c).unwrap().next_after(T).unwrap();
        assert_eq!(at("* * * * *"), T + 60);
        assert_eq!(at("0 3 * * *"), T + 45 * 60, "03:00 the same day");
        assert_eq!(at("*/20 * * * *"), T + 5 * 60, "02:20");
        assert_eq!(at("0 0 * * 1"), T + (2 * 86400 - 2 * 3600 - 15 * 60), "Monday 00:00");
        assert_eq!(at("0 0 1 * *"), T + (3 * 86400 - 2 * 3600 - 15 * 60), "1 December");
        assert_eq!(at("30 2 * * 6,7"), T + 15 * 60, "Saturday 02:30");
        assert_eq!(at("0 12 29 2 *") % 86400, 12 * 3600, "29 February exists in 2028");
        assert_eq!(Cron::parse("0 0 31 2 *").unwrap().next_after(T), None);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (bad, needle) in [
            ("0 3 * *", "5 fields"),
            ("60 * * * *", "0..59"),
            ("*/0 * * * *", "at least 1"),
            ("0 0 * * mon", "use numbers"),
        ] {
            let e = Cron::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
