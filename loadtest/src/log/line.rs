//! One log line to a record, in each format, without allocating: fields are found by their
//! delimiters, numbers and times are read digit by digit.

use std::net::IpAddr;
use std::ops::Range;

use super::{Format, Record};
use crate::clock::days_from_civil;

/// Parses one line (without its end) in `format`; the record's `line` is 0.
pub fn parse(format: Format, line: &[u8]) -> Result<Record<'_>, &'static str> {
    let line = std::str::from_utf8(line).map_err(|_| "not UTF-8")?;
    match format {
        Format::Common => parse_clf(line, false),
        Format::Combined => parse_clf(line, true),
        Format::NginxJson => parse_json(line),
    }
}

/// The common and combined formats.
fn parse_clf(text_line: &str, combined: bool) -> Result<Record<'_>, &'static str> {
    let line = text_line.as_bytes();
    let space = memchr::memchr(b' ', line).ok_or("no client address")?;
    let client = parse_address(&line[..space]).ok_or("the client is not an IP address")?;
    let open = memchr::memchr(b'[', &line[space..]).ok_or("no [time]")? + space;
    let close = memchr::memchr(b']', &line[open..]).ok_or("no [time]")? + open;
    let time = parse_clf_time(&line[open + 1..close])
        .ok_or("the time is not dd/Mon/yyyy:HH:MM:SS +zzzz")?;
    let rest = line[close + 1..]
        .strip_prefix(b" \"")
        .ok_or("no quoted request line")?;
    let (request, rest) = quoted(rest).ok_or("the request line is not closed")?;
    let (method, target) = split_request(text_line, request)?;
    let rest = rest.strip_prefix(b" ").ok_or("no status")?;
    let (status, rest) = split_field(rest);
    let status = parse_status(status).ok_or("the status is not a number")?;
    let rest = rest.strip_prefix(b" ").ok_or("no byte count")?;
    let (bytes, rest) = split_field(rest);
    let bytes = parse_bytes(bytes).ok_or("the byte count is not a number")?;
    let mut user_agent = None;
    // A line cut short in the referer or the user agent still counts: what matters to
    // bandwidth came before, and the user agent is what is left of the line.
    if combined && let Some(rest) = rest.strip_prefix(b" \"") {
        let (_referer, rest) = quoted(rest).unwrap_or((rest, &[]));
        if let Some(rest) = rest.strip_prefix(b" \"") {
            let (agent, _) = quoted(rest).unwrap_or((rest, &[]));
            user_agent = Some(text(text_line, agent)?);
        }
    }
    Ok(Record {
        line: 0,
        time,
        client,
        method,
        target,
        status,
        bytes,
        user_agent,
    })
}

/// Splits `"METHOD TARGET PROTOCOL"`; `-` or an empty line gives empty strings.
fn split_request<'a>(line: &'a str, request: &'a [u8]) -> Result<(&'a str, &'a str), &'static str> {
    if request == b"-" {
        return Ok(("", ""));
    }
    let (method, rest) = split_field(request);
    let rest = rest.strip_prefix(b" ").unwrap_or_default();
    let (target, _) = split_field(rest);
    Ok((text(line, method)?, text(line, target)?))
}

/// `part` (a slice of `line`'s bytes that starts and ends at ASCII delimiters) as text: the
/// line is checked to be UTF-8 once, not field by field.
fn text<'a>(line: &'a str, part: &'a [u8]) -> Result<&'a str, &'static str> {
    let start = (part.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
    line.get(start..start.wrapping_add(part.len()))
        .ok_or("a field is not within its line")
}

/// The field up to the next space, and what follows it (starting with the space).
fn split_field(text: &[u8]) -> (&[u8], &[u8]) {
    let end = memchr::memchr(b' ', text).unwrap_or(text.len());
    text.split_at(end)
}

/// `text` starts just after an opening quote: the quoted part and what follows the closing
/// quote. A backslash escapes the next byte.
fn quoted(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut from = 0;
    loop {
        let at = memchr::memchr2(b'"', b'\\', &text[from..])? + from;
        if text[at] == b'\\' {
            from = at + 2;
            if from > text.len() {
                return None;
            }
        } else {
            return Some((&text[..at], &text[at + 1..]));
        }
    }
}

fn parse_address(text: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn parse_status(text: &[u8]) -> Option<u16> {
    if text.len() != 3 {
        return None;
    }
    let status = parse_decimal(text)?;
    u16::try_from(status).ok()
}

fn parse_bytes(text: &[u8]) -> Option<u64> {
    if text == b"-" {
        return Some(0);
    }
    parse_decimal(text)
}

fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    text.iter().try_fold(0u64, |value, &byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u64::from(byte - b'0'))
    })
}

fn digits(text: &[u8], range: Range<usize>) -> Option<i64> {
    let value = parse_decimal(text.get(range)?)?;
    i64::try_from(value).ok()
}

/// `10/Oct/2000:13:55:36 -0700` in seconds since the epoch.
fn parse_clf_time(text: &[u8]) -> Option<i64> {
    if text.len() != 26 || text[2] != b'/' || text[6] != b'/' || text[11] != b':' {
        return None;
    }
    let day = digits(text, 0..2)?;
    let month = month(&text[3..6])?;
    let year = digits(text, 7..11)?;
    let seconds = clock_seconds(text, 12)?;
    let offset = zone_offset(&text[21..])?;
    Some(days_from_civil(year, month, day) * 86_400 + seconds - offset)
}

/// `HH:MM:SS` at `at`, in seconds.
fn clock_seconds(text: &[u8], at: usize) -> Option<i64> {
    if text.get(at + 2) != Some(&b':') || text.get(at + 5) != Some(&b':') {
        return None;
    }
    let (hour, minute, second) = (
        digits(text, at..at + 2)?,
        digits(text, at + 3..at + 5)?,
        digits(text, at + 6..at + 8)?,
    );
    (hour < 24 && minute < 60 && second < 61).then_some(hour * 3600 + minute * 60 + second)
}

/// `+hhmm`, `-hh:mm` or `Z`, in seconds east of UTC.
fn zone_offset(text: &[u8]) -> Option<i64> {
    if text == b"Z" {
        return Some(0);
    }
    let sign = match text.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, minutes) = match text.len() {
        5 => (digits(text, 1..3)?, digits(text, 3..5)?),
        6 if text[3] == b':' => (digits(text, 1..3)?, digits(text, 4..6)?),
        _ => return None,
    };
    Some(sign * (hours * 3600 + minutes * 60))
}

fn month(name: &[u8]) -> Option<i64> {
    Some(match name {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    })
}

/// `2000-10-10T13:55:36-07:00` (a fraction of a second and `Z` allowed) in seconds since the
/// epoch.
fn parse_iso_time(text: &[u8]) -> Option<i64> {
    if text.len() < 20 || text[4] != b'-' || text[7] != b'-' || !matches!(text[10], b'T' | b' ') {
        return None;
    }
    let year = digits(text, 0..4)?;
    let month = digits(text, 5..7)?;
    let day = digits(text, 8..10)?;
    let seconds = clock_seconds(text, 11)?;
    let mut zone = &text[19..];
    if let Some(fraction) = zone.strip_prefix(b".") {
        let end = fraction
            .iter()
            .position(|byte| !byte.is_ascii_digit())
            .unwrap_or(fraction.len());
        zone = &fraction[end..];
    }
    let offset = zone_offset(zone)?;
    ((1..=12).contains(&month) && (1..=31).contains(&day))
        .then(|| days_from_civil(year, month, day) * 86_400 + seconds - offset)
}

/// nginx's `$msec`: `1700000000.123`.
fn parse_msec(text: &[u8]) -> Option<i64> {
    let whole = text.split(|&byte| byte == b'.').next()?;
    digits(whole, 0..whole.len())
}

/// One JSON object of flat fields, as nginx writes them. Values may be strings or numbers.
fn parse_json(text_line: &str) -> Result<Record<'_>, &'static str> {
    let line = text_line.as_bytes();
    let mut rest = line
        .trim_ascii()
        .strip_prefix(b"{")
        .ok_or("not a JSON object")?;
    let (mut client, mut time, mut request, mut method, mut uri) = (None, None, None, None, None);
    let (mut status, mut bytes, mut sent, mut user_agent) = (None, None, None, None);
    loop {
        rest = rest.trim_ascii_start();
        if let Some(after) = rest.strip_prefix(b"}") {
            if !after.trim_ascii().is_empty() {
                return Err("text after the JSON object");
            }
            break;
        }
        let after = rest
            .strip_prefix(b"\"")
            .ok_or("a JSON key is not a string")?;
        let (key, after) = quoted(after).ok_or("a JSON key is not closed")?;
        let after = after
            .trim_ascii_start()
            .strip_prefix(b":")
            .ok_or("no : after a JSON key")?
            .trim_ascii_start();
        let (value, after) = if let Some(string) = after.strip_prefix(b"\"") {
            quoted(string).ok_or("a JSON string is not closed")?
        } else {
            let end = after
                .iter()
                .position(|&byte| byte == b',' || byte == b'}' || byte.is_ascii_whitespace())
                .unwrap_or(after.len());
            let (value, after) = after.split_at(end);
            if value.is_empty() || value.starts_with(b"{") || value.starts_with(b"[") {
                return Err("a JSON value is neither a string nor a number");
            }
            (value, after)
        };
        match key {
            b"remote_addr" => client = Some(value),
            b"time_local" => time = parse_clf_time(value).map(Some).ok_or("bad time_local")?,
            b"time_iso8601" | b"time" | b"timestamp" => {
                time = parse_iso_time(value).map(Some).ok_or("bad time_iso8601")?
            }
            b"msec" => time = parse_msec(value).map(Some).ok_or("bad msec")?,
            b"request" => request = Some(value),
            b"request_method" | b"method" => method = Some(value),
            b"request_uri" => uri = Some(value),
            b"uri" if uri.is_none() => uri = Some(value),
            b"status" => status = Some(value),
            b"body_bytes_sent" => bytes = Some(value),
            b"bytes_sent" => sent = Some(value),
            b"http_user_agent" | b"user_agent" => user_agent = Some(value),
            _ => {}
        }
        rest = after.trim_ascii_start();
        if let Some(after) = rest.strip_prefix(b",") {
            rest = after;
        } else if !rest.starts_with(b"}") {
            return Err("no , between JSON fields");
        }
    }
    let client =
        parse_address(client.ok_or("no remote_addr")?).ok_or("remote_addr is not an IP address")?;
    let time = time.ok_or("no time_local, time_iso8601 or msec")?;
    let (method, target) = match (request, method, uri) {
        (_, Some(method), Some(uri)) => (text(text_line, method)?, text(text_line, uri)?),
        (Some(request), _, _) => split_request(text_line, request)?,
        _ => return Err("no request, or request_method and request_uri"),
    };
    let status = parse_status(status.ok_or("no status")?).ok_or("the status is not a number")?;
    let bytes = parse_bytes(bytes.or(sent).ok_or("no body_bytes_sent")?)
        .ok_or("the byte count is not a number")?;
    let user_agent = user_agent
        .filter(|agent| !agent.is_empty() && *agent != b"-")
        .map(|agent| text(text_line, agent))
        .transpose()?;
    Ok(Record {
        line: 0,
        time,
        client,
        method,
        target,
        status,
        bytes,
        user_agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::rfc3339;
    use proptest::prelude::*;

    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];

    /// `seconds` as the combined format writes a time in UTC.
    fn clf_time(seconds: i64) -> String {
        let text = rfc3339(seconds);
        let month: usize = text[5..7].parse().unwrap();
        format!(
            "{}/{}/{}:{} +0000",
            &text[8..10],
            MONTHS[month - 1],
            &text[..4],
            &text[11..19]
        )
    }

    proptest! {
        #[test]
        fn no_line_makes_the_parsers_panic(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            for format in [Format::Common, Format::Combined, Format::NginxJson] {
                let _ = parse(format, &line);
            }
        }

        #[test]
        fn near_lines_make_no_parser_panic(
            cut in 0usize..200,
            noise in any::<u8>(),
            at in 0usize..200,
        ) {
            let lines = [
                r#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a\"b HTTP/1.0" 200 5 "-" "x\\""#,
                r#"{"remote_addr":"1.2.3.4","time_iso8601":"2000-10-10T13:55:36Z","request":"GET / HTTP/1.1","status":200,"body_bytes_sent":"5"}"#,
            ];
            for line in lines {
                let mut bytes = line.as_bytes()[..cut.min(line.len())].to_vec();
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = noise;
                }
                for format in [Format::Common, Format::Combined, Format::NginxJson] {
                    let _ = parse(format, &bytes);
                }
            }
        }

        #[test]
        fn combined_lines_read_back_what_was_written(
            address in any::<std::net::IpAddr>(),
            time in 0i64..4_102_444_800,
            path in "/[a-zA-Z0-9._~/-]{0,40}(\\?[a-z0-9=&]{1,20})?",
            status in 100u16..600,
            bytes in any::<u32>(),
            agent in "[ -~&&[^\"\\\\]]{1,60}",
        ) {
            let line = format!(
                "{address} - - [{}] \"GET {path} HTTP/1.1\" {status} {bytes} \"-\" \"{agent}\"",
                clf_time(time)
            );
            let record = parse(Format::Combined, line.as_bytes()).unwrap();
            prop_assert_eq!(record.client, address);
            prop_assert_eq!(record.time, time);
            prop_assert_eq!((record.method, record.target), ("GET", path.as_str()));
            prop_assert_eq!((record.status, record.bytes), (status, u64::from(bytes)));
            prop_assert_eq!(record.user_agent, Some(agent.as_str()));
        }
    }

    #[test]
    fn times_are_exact() {
        assert_eq!(parse_clf_time(b"01/Jan/1970:00:00:00 +0000"), Some(0));
        assert_eq!(
            parse_clf_time(b"29/Feb/2024:23:59:59 +0000"),
            Some(1_709_251_199)
        );
        assert_eq!(parse_clf_time(b"01/Jan/1970:01:00:00 +0100"), Some(0));
        assert_eq!(
            parse_iso_time(b"2024-02-29T23:59:59.999Z"),
            Some(1_709_251_199)
        );
        assert_eq!(
            parse_iso_time(b"2024-03-01T00:59:59+01:00"),
            Some(1_709_251_199)
        );
        assert_eq!(parse_clf_time(b"01/Jan/1970:24:00:00 +0000"), None);
        assert_eq!(parse_iso_time(b"2024-13-01T00:00:00Z"), None);
    }
}
