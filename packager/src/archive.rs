//! The archive (`--archive DIR`): every segment is written to disk when it is whole (the
//! archive follows the window's events), so it outlives the window, and `/vod/{channel}/{start}-{end}/…` serves any archived range.
//!
//! Layout, per track: `DIR/{channel}/{track}/{msn}.m4s` (the segment as served live),
//! `init-{id}.mp4` (a header; `id` is the number of the first segment written with it) and
//! `index.tsv`, one line per segment: number, start and duration in the track's timescale,
//! size in bytes, the header's id, and 1 when the segment follows a discontinuity. Files are
//! written on a thread of their own, never under the window's lock; a segment's file is
//! complete before its index line is appended, so a reader never sees half a segment.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use bytes::Bytes;
use estuary_packager_core::vod::Entry;
use estuary_packager_core::window::Event;
use estuary_proto::url::{ChannelName, TrackName};

/// A whole segment to keep.
pub struct ArchiveJob {
    pub channel: ChannelName,
    pub track: TrackName,
    pub header: Bytes,
    pub entry: Entry,
    pub parts: Vec<Bytes>,
}

/// A line of a track's index.
fn line(entry: &Entry) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\n",
        entry.msn,
        entry.start,
        entry.duration,
        entry.bytes,
        entry.init,
        u8::from(entry.discontinuity)
    )
}

/// An index line; `None` for one that is not six numbers.
fn parse_line(line: &str) -> Option<Entry> {
    let mut fields = line.split('\t').map(str::parse::<u64>);
    let mut next = || fields.next()?.ok();
    Some(Entry {
        msn: next()?,
        start: next()?,
        duration: next()?,
        bytes: next()?,
        init: next()?,
        discontinuity: next()? == 1,
    })
}

/// Where segments go; cloning shares the writer thread.
#[derive(Clone)]
pub struct Archive {
    dir: PathBuf,
    jobs: mpsc::Sender<ArchiveJob>,
}

impl Archive {
    /// Starts the writer thread for `dir` (created if missing).
    pub fn start(dir: &Path) -> std::io::Result<Archive> {
        fs::create_dir_all(dir)?;
        let (jobs, receiver) = mpsc::channel::<ArchiveJob>();
        let root = dir.to_owned();
        std::thread::Builder::new()
            .name("archive".into())
            .spawn(move || {
                let mut writer = Writer {
                    root,
                    headers: HashMap::new(),
                };
                for job in receiver {
                    if let Err(error) = writer.write(&job) {
                        tracing::error!(channel = %job.channel, track = %job.track, msn = job.entry.msn, %error, "archiving a segment failed");
                    }
                }
            })?;
        Ok(Archive {
            dir: dir.to_owned(),
            jobs,
        })
    }

    pub fn keep(&self, job: ArchiveJob) {
        let _ = self.jobs.send(job);
    }

    /// Follows the window: each segment is kept the moment it is whole (the writing happens
    /// on the archive's thread).
    pub fn on_event(&self, event: &Event) {
        let Event::SegmentCompleted {
            channel,
            track,
            segment,
            header,
        } = event
        else {
            return;
        };
        self.keep(ArchiveJob {
            channel: channel.clone(),
            track: track.clone(),
            header: header.clone(),
            entry: Entry {
                msn: segment.number,
                start: segment.start(),
                duration: segment.duration(),
                bytes: segment.len() as u64,
                init: 0,
                discontinuity: segment.discontinuity,
            },
            parts: segment
                .parts
                .iter()
                .map(|part| part.bytes.clone())
                .collect(),
        });
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

struct Writer {
    root: PathBuf,
    /// The header last written for each track, and its id.
    headers: HashMap<(ChannelName, TrackName), (Bytes, u64)>,
}

impl Writer {
    fn write(&mut self, job: &ArchiveJob) -> std::io::Result<()> {
        let dir = track_dir(&self.root, &job.channel, &job.track);
        fs::create_dir_all(&dir)?;
        let key = (job.channel.clone(), job.track.clone());
        let init = match self.headers.get(&key) {
            Some((header, id)) if *header == job.header => *id,
            _ => {
                let id = job.entry.msn;
                write_atomically(
                    &dir.join(format!("init-{id}.mp4")),
                    std::slice::from_ref(&job.header),
                )?;
                self.headers.insert(key, (job.header.clone(), id));
                id
            }
        };
        write_atomically(&dir.join(format!("{}.m4s", job.entry.msn)), &job.parts)?;
        let entry = Entry {
            init,
            ..job.entry.clone()
        };
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("index.tsv"))?
            .write_all(line(&entry).as_bytes())
    }
}

fn write_atomically(path: &Path, pieces: &[Bytes]) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    let mut file = fs::File::create(&partial)?;
    for piece in pieces {
        file.write_all(piece)?;
    }
    drop(file);
    fs::rename(partial, path)
}

pub fn track_dir(root: &Path, channel: &ChannelName, track: &TrackName) -> PathBuf {
    root.join(channel.as_str()).join(track.as_str())
}

/// The archived segments of a track, by number (the last line for a number wins, as a
/// restarted packager may write a segment again).
pub fn read_index(root: &Path, channel: &ChannelName, track: &TrackName) -> Vec<Entry> {
    let text =
        fs::read_to_string(track_dir(root, channel, track).join("index.tsv")).unwrap_or_default();
    let mut entries: Vec<Entry> = text.lines().filter_map(parse_line).collect();
    entries.reverse();
    entries.sort_by_key(|entry| entry.msn);
    entries.dedup_by_key(|entry| entry.msn);
    entries
}

/// The tracks a channel has in the archive.
pub fn tracks(root: &Path, channel: &ChannelName) -> Vec<TrackName> {
    let mut tracks: Vec<TrackName> = fs::read_dir(root.join(channel.as_str()))
        .into_iter()
        .flatten()
        .filter_map(|entry| TrackName::new(entry.ok()?.file_name().to_str()?).ok())
        .collect();
    tracks.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    tracks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(msn: u64, header: &'static [u8]) -> ArchiveJob {
        ArchiveJob {
            channel: ChannelName::new("demo").unwrap(),
            track: TrackName::new("v720").unwrap(),
            header: Bytes::from_static(header),
            entry: Entry {
                msn,
                start: msn * 6000,
                duration: 6000,
                bytes: 6,
                init: 0,
                discontinuity: msn == 12,
            },
            parts: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"def")],
        }
    }

    #[test]
    fn segments_headers_and_index_reach_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let mut writer = Writer {
            root: root.clone(),
            headers: HashMap::new(),
        };
        for (msn, header) in [(10, &b"one"[..]), (11, b"one"), (12, b"two")] {
            writer.write(&job(msn, header)).unwrap();
        }
        let channel = ChannelName::new("demo").unwrap();
        let track = TrackName::new("v720").unwrap();
        let entries = read_index(&root, &channel, &track);
        assert_eq!(
            entries.iter().map(|e| (e.msn, e.init)).collect::<Vec<_>>(),
            [(10, 10), (11, 10), (12, 12)]
        );
        assert!(entries[2].discontinuity && !entries[1].discontinuity);
        let dir = track_dir(&root, &channel, &track);
        assert_eq!(fs::read(dir.join("11.m4s")).unwrap(), b"abcdef");
        assert_eq!(fs::read(dir.join("init-10.mp4")).unwrap(), b"one");
        assert_eq!(fs::read(dir.join("init-12.mp4")).unwrap(), b"two");
        assert_eq!(tracks(&root, &channel), [track]);
    }

    #[test]
    fn a_rewritten_segment_is_listed_once_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let channel = ChannelName::new("demo").unwrap();
        let track = TrackName::new("v720").unwrap();
        let track_dir = track_dir(dir.path(), &channel, &track);
        fs::create_dir_all(&track_dir).unwrap();
        fs::write(
            track_dir.join("index.tsv"),
            "5\t0\t6000\t10\t5\t0\nnot a line\n5\t0\t6000\t12\t5\t0\n6\t6000\t6000\t9\t5\t0\n",
        )
        .unwrap();
        let entries = read_index(dir.path(), &channel, &track);
        assert_eq!(
            entries.iter().map(|e| (e.msn, e.bytes)).collect::<Vec<_>>(),
            [(5, 12), (6, 9)]
        );
    }
}
