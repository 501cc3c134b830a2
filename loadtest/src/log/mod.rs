//! Request logs read as a stream: the common and combined formats (Apache, nginx, and the
//! edge's own access log, which is combined), and nginx's JSON lines. Input is read in large
//! blocks (gzip when it starts with gzip's magic bytes); each record borrows from the block, so
//! the hot path allocates nothing. A line that does not parse is counted, with its number, and
//! skipped.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::IpAddr;
use std::ops::{ControlFlow, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod line;

pub use line::parse;

/// How much is read at once.
const BLOCK: usize = 1 << 20;
/// How many lines format detection looks at.
const SNIFF_LINES: usize = 20;
/// How many bad lines are kept to be shown.
pub const BAD_LINES_KEPT: usize = 5;

/// The line formats understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `host ident user [time] "request" status bytes`; anything after is ignored.
    Common,
    /// Common, then `"referer" "user agent"` (both optional on a line). The edge's access
    /// log is in this format.
    Combined,
    /// One JSON object per line, as nginx's `log_format ... escape=json` writes them.
    NginxJson,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Common => "common",
            Format::Combined => "combined",
            Format::NginxJson => "json",
        }
    }
}

/// A log format name that is none of them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {0:?}: expected common, combined, estuary or json")]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(text: &str) -> Result<Format, UnknownFormat> {
        match text {
            "common" => Ok(Format::Common),
            "combined" | "estuary" => Ok(Format::Combined),
            "json" | "nginx-json" => Ok(Format::NginxJson),
            _ => Err(UnknownFormat(text.to_owned())),
        }
    }
}

/// One request, borrowed from the line it was read from. Strings are as the log writes them
/// (escapes are not undone).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Record<'a> {
    /// The line's number, counting from 1 at the start of what the reader reads.
    pub line: u64,
    /// When the request was logged, in seconds since the Unix epoch.
    pub time: i64,
    pub client: IpAddr,
    /// `GET`, `HEAD`, …; empty when the log has no request line (e.g. `"-"`).
    pub method: &'a str,
    /// The path and query.
    pub target: &'a str,
    pub status: u16,
    /// Body bytes sent (`-` counts as 0).
    pub bytes: u64,
    pub user_agent: Option<&'a str>,
}

/// A line that did not parse.
#[derive(Clone, Debug, PartialEq)]
pub struct BadLine {
    pub line: u64,
    pub reason: &'static str,
    /// The start of the line.
    pub text: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.reason, self.text)
    }
}

/// What a reader has read so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// Every line, blank ones included.
    pub lines: u64,
    pub records: u64,
    /// Body bytes over all records.
    pub bytes: u64,
    pub bad: u64,
    /// The first [`BAD_LINES_KEPT`] bad lines.
    pub first_bad: Vec<BadLine>,
}

impl Tally {
    /// Adds `later`, read after this, whose line numbers counted from 1 where this ended.
    pub fn merge(&mut self, later: Tally) {
        for mut bad in later.first_bad {
            if self.first_bad.len() < BAD_LINES_KEPT {
                bad.line += self.lines;
                self.first_bad.push(bad);
            }
        }
        self.lines += later.lines;
        self.records += later.records;
        self.bytes += later.bytes;
        self.bad += later.bad;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot read the log {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path}: no line of the first {SNIFF_LINES} looks like a request log (common, combined \
         or nginx JSON lines); the first is {first:?}"
    )]
    UnknownFormat { path: PathBuf, first: String },
}

/// Counts the bytes read from the file itself (before decompression), for progress.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.count.fetch_add(read as u64, Ordering::Relaxed);
        Ok(read)
    }
}

type Progress = Box<dyn FnMut(u64) + Send>;

/// Reads a log, block by block.
pub struct LogReader {
    path: PathBuf,
    input: Box<dyn Read + Send>,
    compressed: bool,
    format: Format,
    buffer: Vec<u8>,
    /// The unread bytes are `buffer[start..end]`.
    start: usize,
    end: usize,
    eof: bool,
    raw: Arc<AtomicU64>,
    reported: u64,
    progress: Option<Progress>,
    tally: Tally,
}

impl LogReader {
    /// Opens the log at `path`, gzip or not, in `format` or the one its first lines show.
    pub fn open(path: &Path, format: Option<Format>) -> Result<LogReader, LogError> {
        let error = |source| LogError::Read {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(error)?;
        LogReader::new(path, file, format)
    }

    /// Reads `range` of the plain (not compressed) log at `path`, which must start and end at
    /// line boundaries (see [`line_boundaries`]).
    pub fn open_range(
        path: &Path,
        format: Format,
        range: Range<u64>,
    ) -> Result<LogReader, LogError> {
        let error = |source| LogError::Read {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(error)?;
        file.seek(SeekFrom::Start(range.start)).map_err(error)?;
        LogReader::new(path, file.take(range.end - range.start), Some(format))
    }

    /// Reads `input`, named `path` in errors.
    pub fn new(
        path: &Path,
        input: impl Read + Send + 'static,
        format: Option<Format>,
    ) -> Result<LogReader, LogError> {
        let raw = Arc::new(AtomicU64::new(0));
        let mut counted = Counted {
            inner: input,
            count: raw.clone(),
        };
        let mut magic = Vec::with_capacity(2);
        (&mut counted)
            .take(2)
            .read_to_end(&mut magic)
            .map_err(|source| LogError::Read {
                path: path.to_owned(),
                source,
            })?;
        let compressed = magic == [0x1f, 0x8b];
        let input = io::Cursor::new(magic).chain(counted);
        let input: Box<dyn Read + Send> = if compressed {
            Box::new(flate2::read::MultiGzDecoder::new(input))
        } else {
            Box::new(input)
        };
        let mut reader = LogReader {
            path: path.to_owned(),
            input,
            compressed,
            format: format.unwrap_or(Format::Combined),
            buffer: vec![0; BLOCK],
            start: 0,
            end: 0,
            eof: false,
            raw,
            reported: 0,
            progress: None,
            tally: Tally::default(),
        };
        reader.fill()?;
        if format.is_none() {
            reader.format = reader.detect()?;
        }
        Ok(reader)
    }

    /// Calls `progress` with the number of file bytes read after each block (compressed bytes
    /// for gzip).
    pub fn on_progress(&mut self, progress: impl FnMut(u64) + Send + 'static) {
        self.progress = Some(Box::new(progress));
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    pub fn into_tally(self) -> Tally {
        self.tally
    }

    /// Calls `visit` with every record, in the order of the log.
    pub fn for_each(&mut self, mut visit: impl FnMut(&Record<'_>)) -> Result<(), LogError> {
        self.try_for_each(|record| {
            visit(record);
            ControlFlow::<()>::Continue(())
        })
        .map(|_| ())
    }

    /// Calls `visit` with every record until it breaks, and returns what it broke with.
    pub fn try_for_each<B>(
        &mut self,
        mut visit: impl FnMut(&Record<'_>) -> ControlFlow<B>,
    ) -> Result<Option<B>, LogError> {
        loop {
            let Some(line) = self.next_line()? else {
                return Ok(None);
            };
            self.tally.lines += 1;
            let text = &self.buffer[line];
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match parse(self.format, text) {
                Ok(mut record) => {
                    record.line = self.tally.lines;
                    self.tally.records += 1;
                    self.tally.bytes += record.bytes;
                    if let ControlFlow::Break(value) = visit(&record) {
                        return Ok(Some(value));
                    }
                }
                Err(reason) => {
                    self.tally.bad += 1;
                    if self.tally.first_bad.len() < BAD_LINES_KEPT {
                        let shown = &text[..text.len().min(120)];
                        self.tally.first_bad.push(BadLine {
                            line: self.tally.lines,
                            reason,
                            text: String::from_utf8_lossy(shown).into_owned(),
                        });
                    }
                }
            }
        }
    }

    /// The next line (without its end), as a range of the buffer; none at the end.
    fn next_line(&mut self) -> Result<Option<Range<usize>>, LogError> {
        loop {
            let unread = &self.buffer[self.start..self.end];
            if let Some(at) = memchr::memchr(b'\n', unread) {
                let line = self.start..self.start + at;
                self.start += at + 1;
                return Ok(Some(trim_cr(&self.buffer, line)));
            }
            if self.eof {
                if self.start == self.end {
                    self.report_progress();
                    return Ok(None);
                }
                let line = self.start..self.end;
                self.start = self.end;
                return Ok(Some(trim_cr(&self.buffer, line)));
            }
            self.fill()?;
        }
    }

    /// Moves the unread bytes to the front and reads a block after them (the buffer grows
    /// only for a line longer than it).
    fn fill(&mut self) -> Result<(), LogError> {
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buffer.len() {
            self.buffer.resize(self.buffer.len() * 2, 0);
        }
        while self.end < self.buffer.len() {
            match self.input.read(&mut self.buffer[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(read) => {
                    self.end += read;
                    if self.end >= BLOCK / 2 {
                        break;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(LogError::Read {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        self.report_progress();
        Ok(())
    }

    fn report_progress(&mut self) {
        if let Some(progress) = &mut self.progress {
            let raw = self.raw.load(Ordering::Relaxed);
            if raw > self.reported {
                progress(raw - self.reported);
                self.reported = raw;
            }
        }
    }

    /// The format of the first lines in the buffer: JSON if they are objects, combined if one
    /// has a user agent, common if they parse at all.
    fn detect(&self) -> Result<Format, LogError> {
        let text = &self.buffer[self.start..self.end];
        let lines = text
            .split(|&byte| byte == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .take(SNIFF_LINES);
        let mut common = false;
        for line in lines {
            if line.trim_ascii_start().starts_with(b"{") {
                if parse(Format::NginxJson, line).is_ok() {
                    return Ok(Format::NginxJson);
                }
            } else if let Ok(record) = parse(Format::Combined, line) {
                if record.user_agent.is_some() {
                    return Ok(Format::Combined);
                }
                common = true;
            }
        }
        if common {
            return Ok(Format::Common);
        }
        let first = text.split(|&byte| byte == b'\n').next().unwrap_or_default();
        Err(LogError::UnknownFormat {
            path: self.path.clone(),
            first: String::from_utf8_lossy(&first[..first.len().min(120)]).into_owned(),
        })
    }
}

fn trim_cr(buffer: &[u8], line: Range<usize>) -> Range<usize> {
    if line.end > line.start && buffer[line.end - 1] == b'\r' {
        line.start..line.end - 1
    } else {
        line
    }
}

/// Offsets that split the plain file at `path` into `parts` pieces of about equal size, each
/// starting at a line: `parts + 1` offsets from 0 to the file's length.
pub fn line_boundaries(path: &Path, parts: usize) -> io::Result<Vec<u64>> {
    let mut file = File::open(path)?;
    let length = file.metadata()?.len();
    let mut boundaries = vec![0];
    let mut block = vec![0; 64 * 1024];
    for part in 1..parts.max(1) {
        let mut offset = length * part as u64 / parts as u64;
        let previous = *boundaries.last().unwrap_or(&0);
        if offset <= previous {
            continue;
        }
        // The boundary is just after the first newline at or after offset - 1.
        offset -= 1;
        file.seek(SeekFrom::Start(offset))?;
        let boundary = loop {
            let read = file.read(&mut block)?;
            if read == 0 {
                break length;
            }
            if let Some(at) = memchr::memchr(b'\n', &block[..read]) {
                break offset + at as u64 + 1;
            }
            offset += read as u64;
        };
        if boundary > previous && boundary < length {
            boundaries.push(boundary);
        }
    }
    boundaries.push(length);
    Ok(boundaries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMBINED: &str = r#"83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /images/kibana-search.png HTTP/1.1" 200 203023 "http://semicomplete.com/" "Mozilla/5.0 (Macintosh)""#;

    /// A record's line, time, target and bytes.
    type Seen = (u64, i64, String, u64);

    fn read_all(input: Vec<u8>, format: Option<Format>) -> (Format, Vec<Seen>, Tally) {
        let mut reader =
            LogReader::new(Path::new("test.log"), io::Cursor::new(input), format).unwrap();
        let mut seen = Vec::new();
        reader
            .for_each(|record| {
                seen.push((
                    record.line,
                    record.time,
                    record.target.to_owned(),
                    record.bytes,
                ))
            })
            .unwrap();
        (reader.format(), seen, reader.into_tally())
    }

    #[test]
    fn combined_lines_read() {
        let record = parse(Format::Combined, COMBINED.as_bytes()).unwrap();
        assert_eq!(record.client, "83.149.9.216".parse::<IpAddr>().unwrap());
        // 2015-05-17T10:05:03Z
        assert_eq!(record.time, 1_431_857_103);
        assert_eq!(
            (record.method, record.target),
            ("GET", "/images/kibana-search.png")
        );
        assert_eq!((record.status, record.bytes), (200, 203023));
        assert_eq!(record.user_agent, Some("Mozilla/5.0 (Macintosh)"));
        // Escaped quotes stay inside their field; a time zone moves the time.
        let line = r#"2001:db8::1 - alice [10/Oct/2000:13:55:36 -0700] "GET /a\"b?x=1 HTTP/1.0" 304 - "-" "curl \"7\"""#;
        let record = parse(Format::Combined, line.as_bytes()).unwrap();
        assert_eq!(record.time, 971_211_336);
        assert_eq!(record.target, r#"/a\"b?x=1"#);
        assert_eq!((record.status, record.bytes), (304, 0));
        assert_eq!(record.user_agent, Some(r#"curl \"7\""#));
        // Cut short in the user agent: a record still.
        let cut = &COMBINED[..COMBINED.len() - 5];
        let record = parse(Format::Combined, cut.as_bytes()).unwrap();
        assert_eq!(
            (record.bytes, record.user_agent),
            (203023, Some("Mozilla/5.0 (Macint"))
        );
    }

    #[test]
    fn common_lines_read_and_are_detected() {
        let log = "127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] \"GET /apache_pb.gif HTTP/1.0\" 200 2326\n\
                   127.0.0.1 - - [10/Oct/2000:13:55:37 -0700] \"-\" 400 0\n";
        let (format, seen, tally) = read_all(log.into(), None);
        assert_eq!(format, Format::Common);
        assert_eq!(seen[0], (1, 971_211_336, "/apache_pb.gif".into(), 2326));
        assert_eq!(seen[1].2, "");
        assert_eq!((tally.records, tally.bytes, tally.bad), (2, 2326, 0));
    }

    #[test]
    fn the_edges_access_log_reads_as_combined() {
        // As edge/src/metrics.rs writes it.
        let line = "203.0.113.9 - - [22/Nov/2026:01:02:03 +0000] \"GET /live/demo/v720/1712.m4s HTTP/1.1\" 200 812345 \"-\" \"hls.js\"\n";
        let (format, seen, _) = read_all(line.into(), None);
        assert_eq!(format, Format::Combined);
        assert_eq!(seen[0].2, "/live/demo/v720/1712.m4s");
        assert_eq!(seen[0].1, 1_795_309_323);
    }

    #[test]
    fn nginx_json_lines_read() {
        let log = concat!(
            r#"{"remote_addr":"198.51.100.4","time_iso8601":"2026-11-22T01:02:03+01:00","request":"GET /live/a/master.m3u8?x=1 HTTP/2.0","status":"200","body_bytes_sent":"734","http_user_agent":"AppleCoreMedia/1.0"}"#,
            "\n",
            r#"{ "remote_addr": "198.51.100.5", "time_local": "22/Nov/2026:00:02:04 +0000", "request_method": "HEAD", "request_uri": "/live/a/v1/5.m4s", "status": 206, "bytes_sent": 99, "http_user_agent": "" }"#,
            "\n",
            r#"{"remote_addr":"198.51.100.6","msec":"1795309325.250","request":"GET / HTTP/1.1","status":"404","body_bytes_sent":"0"}"#,
            "\n",
        );
        let (format, seen, tally) = read_all(log.into(), None);
        assert_eq!(format, Format::NginxJson);
        assert_eq!(tally.bad, 0, "{:?}", tally.first_bad);
        assert_eq!(
            seen[0],
            (1, 1_795_305_723, "/live/a/master.m3u8?x=1".into(), 734)
        );
        assert_eq!(seen[1], (2, 1_795_305_724, "/live/a/v1/5.m4s".into(), 99));
        assert_eq!(seen[2].1, 1_795_309_325);
        let record = parse(Format::NginxJson, log.lines().nth(1).unwrap().as_bytes()).unwrap();
        assert_eq!(
            (record.method, record.status, record.user_agent),
            ("HEAD", 206, None)
        );
    }

    #[test]
    fn bad_lines_are_counted_with_their_numbers() {
        let mut log = String::new();
        for i in 0..10 {
            if i % 3 == 1 {
                log.push_str("this is not a log line\n");
            } else {
                log.push_str(COMBINED);
                log.push('\n');
            }
        }
        log.push_str("\r\n"); // blank: neither a record nor bad
        log.push_str(&COMBINED.replace("17/May/2015", "17/Mai/2015"));
        let (format, seen, tally) = read_all(log.into_bytes(), None);
        assert_eq!(format, Format::Combined);
        assert_eq!(seen.len(), 7);
        assert_eq!((tally.lines, tally.records, tally.bad), (12, 7, 4));
        let lines: Vec<u64> = tally.first_bad.iter().map(|bad| bad.line).collect();
        assert_eq!(lines, [2, 5, 8, 12]);
        assert!(
            tally.first_bad[3]
                .to_string()
                .starts_with("line 12: the time"),
            "{}",
            tally.first_bad[3]
        );
        assert_eq!(tally.bytes, 7 * 203_023);
    }

    #[test]
    fn an_unknown_format_is_an_error_naming_the_file() {
        let error = LogReader::new(
            Path::new("x.log"),
            io::Cursor::new(b"hello\nworld\n".to_vec()),
            None,
        )
        .err()
        .unwrap();
        assert!(error.to_string().starts_with("x.log: no line"), "{error}");
    }

    #[test]
    fn gzip_is_read_by_its_magic_bytes() {
        use std::io::Write;
        let mut plain = String::new();
        for _ in 0..3 {
            plain.push_str(COMBINED);
            plain.push('\n');
        }
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(plain.as_bytes()).unwrap();
        let compressed = encoder.finish().unwrap();
        let mut reader = LogReader::new(
            Path::new("a.log.gz"),
            io::Cursor::new(compressed.clone()),
            None,
        )
        .unwrap();
        assert!(reader.is_compressed());
        let progress = Arc::new(AtomicU64::new(0));
        let seen = progress.clone();
        reader.on_progress(move |bytes| {
            seen.fetch_add(bytes, Ordering::Relaxed);
        });
        reader.for_each(|_| {}).unwrap();
        assert_eq!(reader.tally().records, 3);
        assert_eq!(progress.load(Ordering::Relaxed), compressed.len() as u64);
    }

    #[test]
    fn long_lines_and_many_blocks_read_whole() {
        let long = COMBINED.replace("Macintosh", &"x".repeat(3 * BLOCK));
        let mut log = String::new();
        log.push_str(COMBINED);
        log.push('\n');
        log.push_str(&long);
        log.push('\n');
        for _ in 0..20_000 {
            log.push_str(COMBINED);
            log.push('\n');
        }
        let (_, seen, tally) = read_all(log.into_bytes(), Some(Format::Combined));
        assert_eq!((seen.len(), tally.bad), (20_002, 0));
    }

    #[test]
    fn a_file_splits_at_lines_and_the_parts_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut log = String::new();
        for i in 0..1000 {
            log.push_str(&COMBINED.replace("203023", &i.to_string()));
            log.push('\n');
            if i == 500 {
                log.push_str("bad\n");
            }
        }
        std::fs::write(&path, &log).unwrap();
        let boundaries = line_boundaries(&path, 3).unwrap();
        assert_eq!(boundaries.len(), 4);
        let mut total = Tally::default();
        for pair in boundaries.windows(2) {
            assert!(pair[0] == 0 || log.as_bytes()[pair[0] as usize - 1] == b'\n');
            let mut reader =
                LogReader::open_range(&path, Format::Combined, pair[0]..pair[1]).unwrap();
            reader.for_each(|_| {}).unwrap();
            total.merge(reader.into_tally());
        }
        assert_eq!((total.lines, total.records, total.bad), (1001, 1000, 1));
        assert_eq!(total.bytes, 999 * 1000 / 2);
        assert_eq!(total.first_bad[0].line, 502);
    }
}
