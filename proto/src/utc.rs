//! UTC times as people read them, from nanoseconds since the Unix epoch: burnt into pictures by
//! the ingest, written as EXT-X-PROGRAM-DATE-TIME and DASH times by the packager.

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
}
