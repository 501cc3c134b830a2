//! VOD playlists over the archive: `/vod/{channel}/{start}-{end}/…` (UTC seconds) has the
//! shapes of `/live/{channel}/…`, with a playlist of type VOD listing the archived segments
//! that start inside the range.

use std::fmt;

use estuary_proto::url::VodRange;
use estuary_proto::utc::UtcTime;

/// One archived segment, as a track's index lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub msn: u64,
    /// Its start and duration, in the track's timescale.
    pub start: u64,
    pub duration: u64,
    pub bytes: u64,
    /// The id of its header: the number of the first segment archived with it.
    pub init: u64,
    /// Something is missing before this segment, or its header changed.
    pub discontinuity: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VodSegment {
    pub msn: u64,
    pub duration: f64,
    pub program_date_time: String,
    /// The id of the header (`init-{id}.mp4`) this segment needs.
    pub init: u64,
    /// Something is missing before this segment, or its header changed.
    pub discontinuity: bool,
}

/// A track's archived segments in a range.
#[derive(Clone, Debug, PartialEq)]
pub struct VodPlaylist {
    pub target_duration: u64,
    pub segments: Vec<VodSegment>,
}

impl VodPlaylist {
    /// From a track's index, the segments starting in `range`; `None` when there are none.
    pub fn build(entries: &[Entry], timescale: u32, range: VodRange) -> Option<VodPlaylist> {
        let scale = f64::from(timescale.max(1));
        let mut segments: Vec<VodSegment> = Vec::new();
        for entry in entries
            .iter()
            .filter(|entry| range.holds(entry.start, timescale))
        {
            let discontinuity = segments.last().is_some_and(|previous| {
                entry.discontinuity || previous.msn + 1 != entry.msn || previous.init != entry.init
            });
            let nanos = u128::from(entry.start) * 1_000_000_000 / u128::from(timescale.max(1));
            segments.push(VodSegment {
                msn: entry.msn,
                duration: entry.duration as f64 / scale,
                program_date_time: UtcTime::from_unix_nanos(nanos as u64).iso8601(),
                init: entry.init,
                discontinuity,
            });
        }
        let longest = segments.iter().map(|s| s.duration).fold(0f64, f64::max);
        (!segments.is_empty()).then(|| VodPlaylist {
            target_duration: (longest.round() as u64).max(1),
            segments,
        })
    }
}

impl fmt::Display for VodPlaylist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "#EXTM3U")?;
        writeln!(f, "#EXT-X-VERSION:7")?;
        writeln!(f, "#EXT-X-TARGETDURATION:{}", self.target_duration)?;
        writeln!(f, "#EXT-X-PLAYLIST-TYPE:VOD")?;
        if let Some(first) = self.segments.first() {
            writeln!(f, "#EXT-X-MEDIA-SEQUENCE:{}", first.msn)?;
        }
        let mut init = None;
        for segment in &self.segments {
            if segment.discontinuity {
                writeln!(f, "#EXT-X-DISCONTINUITY")?;
            }
            if init != Some(segment.init) {
                writeln!(f, "#EXT-X-MAP:URI=\"init-{}.mp4\"", segment.init)?;
                init = Some(segment.init);
            }
            writeln!(f, "#EXT-X-PROGRAM-DATE-TIME:{}", segment.program_date_time)?;
            writeln!(f, "#EXTINF:{:.5},", segment.duration)?;
            writeln!(f, "{}.m4s", segment.msn)?;
        }
        writeln!(f, "#EXT-X-ENDLIST")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m3u8_rs::Playlist;

    fn entry(msn: u64, init: u64) -> Entry {
        Entry {
            msn,
            start: msn * 6000,
            duration: 6000,
            bytes: 1000,
            init,
            discontinuity: false,
        }
    }

    #[test]
    fn lists_the_range_with_discontinuities_and_an_end() {
        // 3000 Hz, 2 s segments: segment n starts at 2n seconds. The range 20-30 s holds
        // segments 10 to 14; 12 is missing and 14 has a new header.
        let entries = [
            entry(9, 9),
            entry(10, 9),
            entry(11, 9),
            entry(13, 9),
            entry(14, 14),
            entry(15, 14),
        ];
        let playlist = VodPlaylist::build(&entries, 3000, VodRange { start: 20, end: 30 }).unwrap();
        let text = playlist.to_string();
        let Ok(Playlist::MediaPlaylist(parsed)) = m3u8_rs::parse_playlist_res(text.as_bytes())
        else {
            panic!("not a media playlist:\n{text}")
        };
        assert_eq!(parsed.playlist_type, Some(m3u8_rs::MediaPlaylistType::Vod));
        assert!(parsed.end_list);
        assert_eq!(parsed.media_sequence, 10);
        let uris: Vec<_> = parsed.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["10.m4s", "11.m4s", "13.m4s", "14.m4s"]);
        let breaks: Vec<bool> = parsed.segments.iter().map(|s| s.discontinuity).collect();
        assert_eq!(breaks, [false, false, true, true]);
        assert_eq!(
            parsed.segments[3].map.as_ref().map(|m| m.uri.as_str()),
            Some("init-14.mp4")
        );
        assert_eq!(
            VodPlaylist::build(&entries, 3000, VodRange { start: 40, end: 50 }),
            None
        );
    }
}
