//! UTC times as people read them, from nanoseconds since the Unix epoch: burnt into pictures by
//! the ingest, written as EXT-X-PROGRAM-DATE-TIME and DASH times by the packager.

/// The time since the Unix epoch, now (zero on a clock set before 1970).
pub fn unix_now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// A calendar date and time of day in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millisecond: u32,
}

impl UtcTime {
    pub fn from_unix_nanos(nanos: u64) -> Self {
        let seconds = nanos / 1_000_000_000;
        let days = (seconds / 86_400) as i64;
        let of_day = seconds % 86_400;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: (of_day / 3600) as u32,
            minute: (of_day / 60 % 60) as u32,
            second: (of_day % 60) as u32,
            millisecond: (nanos / 1_000_000 % 1000) as u32,
        }
    }

    /// `2026-11-21T18:40:12.033Z`
    pub fn iso8601(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millisecond
        )
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date, by the era arithmetic of Howard
/// Hinnant's "chrono-Compatible Low-Level Date Algorithms".
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A moment given as Unix seconds (`1795286412`) or as a UTC date and time
/// (`2026-11-21T18:40:12Z`, seconds optional), in Unix seconds.
pub fn parse_moment(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    let invalid =
        || format!("{text:?} is neither Unix seconds nor a UTC time like 2026-11-21T20:00:00Z");
    let body = text.strip_suffix('Z').ok_or_else(invalid)?;
    let (date, time) = body.split_once('T').ok_or_else(invalid)?;
    let numbers = |part: &str, separator: char| -> Result<Vec<u32>, String> {
        part.split(separator)
            .map(|field| field.parse::<u32>().map_err(|_| invalid()))
            .collect()
    };
    let (date, time) = (numbers(date, '-')?, numbers(time, ':')?);
    let ([year, month, day], [hour, minute, rest @ ..]) = (date.as_slice(), time.as_slice()) else {
        return Err(invalid());
    };
    let second = rest.first().copied().unwrap_or(0);
    if rest.len() > 1
        || !(1..=12).contains(month)
        || !(1..=31).contains(day)
        || *hour > 23
        || *minute > 59
        || second > 60
    {
        return Err(invalid());
    }
    let days = days_from_civil(i64::from(*year), *month, *day);
    if days < 0 || civil_from_days(days) != (i64::from(*year), *month, *day) {
        return Err(invalid());
    }
    Ok(
        days as u64 * 86_400
            + u64::from(*hour) * 3600
            + u64::from(*minute) * 60
            + u64::from(second),
    )
}

/// A proleptic Gregorian date to days since 1970-01-01 (the inverse of `civil_from_days`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_index = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let day_of_year = (153 * month_index + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(
            UtcTime::from_unix_nanos(0).iso8601(),
            "1970-01-01T00:00:00.000Z"
        );
        // `date -u -d @1795286412` prints Sat Nov 21 18:40:12 UTC 2026.
        let time = UtcTime::from_unix_nanos(1_795_286_412_033_000_000);
        assert_eq!(time.iso8601(), "2026-11-21T18:40:12.033Z");
        // 2024-02-29 exists; 951782400 is 2000-02-29 00:00:00 UTC.
        assert_eq!(
            UtcTime::from_unix_nanos(951_782_400 * 1_000_000_000).iso8601(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            UtcTime::from_unix_nanos(1_709_164_800 * 1_000_000_000).iso8601(),
            "2024-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn moments_parse_both_ways() {
        assert_eq!(parse_moment("1795286412"), Ok(1_795_286_412));
        assert_eq!(parse_moment("2026-11-21T18:40:12Z"), Ok(1_795_286_412));
        assert_eq!(parse_moment("2000-02-29T00:00Z"), Ok(951_782_400));
        assert!(parse_moment("2026-02-30T00:00:00Z").is_err());
        assert!(parse_moment("2026-11-21 18:40:12").is_err());
        assert!(parse_moment("tomorrow").is_err());
    }
}
