//! A chunk (`[styp] moof mdat`): its timing, for the window, and its samples, for the
//! muxers. Both step through the samples in [`walk`], which first checks the counts and sizes
//! the `trun` boxes declare against the chunk's own `mdat`: a run that claims more samples or
//! bytes than the chunk carries is refused before a single sample is visited, so the work is
//! bounded by the bytes received (and by [`MAX_SAMPLES_PER_CHUNK`]).

use std::ops::Range;

use bytes::Bytes;
use mp4_atom::{Tfdt, Tfhd, Trun};

use super::reader::{RawBox, boxes, find};
use super::{CmafError, MAX_CHUNK_BYTES, MAX_SAMPLE_BYTES, MAX_SAMPLES_PER_CHUNK, TrackHeader};

/// ISO/IEC 14496-12 sample flags: `sample_is_non_sync_sample`.
const NON_SYNC_SAMPLE: u32 = 0x1_0000;

/// One sample of a chunk, with its data cut from the `mdat` (shared, not copied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Decode time in the track's timescale.
    pub decode: u64,
    /// Presentation time minus decode time.
    pub composition_offset: i64,
    pub duration: u32,
    pub sync: bool,
    pub data: Bytes,
}

/// One CMAF chunk: an LL-HLS part, and the building block of segments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// `[styp] moof mdat`, as received.
    pub bytes: Bytes,
    /// `tfdt`: the decode time of the first sample, in the track's timescale.
    pub start: u64,
    pub duration: u64,
    pub samples: u32,
    /// The first sample is a sync sample (a keyframe): a player can start here.
    pub independent: bool,
}

/// Parses a chunk cut by [`CmafReader`](super::CmafReader), with its track's header for
/// sample defaults.
pub fn parse_chunk(bytes: Bytes, header: &TrackHeader) -> Result<Chunk, CmafError> {
    let (mut duration, mut samples, mut first_sync) = (0u64, 0u32, None);
    let start = walk(&bytes, header, |sample| {
        duration += u64::from(sample.duration);
        samples += 1;
        first_sync.get_or_insert(sample.sync);
    })?;
    Ok(Chunk {
        bytes,
        start,
        duration,
        samples,
        independent: first_sync == Some(true),
    })
}

/// The samples of a chunk (`[styp] moof mdat`, one track), their timing and their data.
pub fn samples(bytes: &Bytes, header: &TrackHeader) -> Result<Vec<Sample>, CmafError> {
    let mut samples = Vec::new();
    walk(bytes, header, |sample| {
        samples.push(Sample {
            decode: sample.decode,
            composition_offset: sample.composition_offset,
            duration: sample.duration,
            sync: sample.sync,
            data: bytes.slice(sample.data),
        })
    })?;
    Ok(samples)
}

/// One sample as [`walk`] finds it: its data is a range of the chunk's bytes.
struct Entry {
    decode: u64,
    composition_offset: i64,
    duration: u32,
    sync: bool,
    data: Range<usize>,
}

/// What a chunk's `moof` says of its first track fragment, and where the chunk's parts are.
struct Layout {
    tfhd: Tfhd,
    tfdt: Option<Tfdt>,
    trun: Vec<Trun>,
    /// Where the `moof` begins (the default base of data offsets).
    moof_offset: usize,
    /// The `mdat`'s payload.
    mdat: Range<usize>,
}

/// Finds the `moof` and the `mdat` by their box headers, and in the `moof`'s first `traf`
/// decodes its `tfhd`, `tfdt` and `trun` boxes alone: nothing else the sender put there is
/// decoded, and the `mdat` is neither decoded nor copied.
fn layout(bytes: &[u8]) -> Result<Layout, CmafError> {
    let top = boxes(bytes)?;
    let moof = top
        .iter()
        .find(|found| &found.kind == b"moof")
        .ok_or(CmafError::MissingInChunk("moof"))?;
    let mdat = top
        .iter()
        .find(|found| &found.kind == b"mdat")
        .ok_or(CmafError::MissingInChunk("mdat"))?;
    let traf = find(moof.body, b"traf")?.ok_or(CmafError::MissingInChunk("traf"))?;
    let inside = boxes(traf.body)?;
    let header = mdat.bytes.len() - mdat.body.len();
    Ok(Layout {
        tfhd: decoded(&inside, "tfhd")
            .next()
            .ok_or(CmafError::MissingInChunk("tfhd"))??,
        tfdt: decoded(&inside, "tfdt").next().transpose()?,
        trun: decoded(&inside, "trun").collect::<Result<_, _>>()?,
        moof_offset: moof.offset,
        mdat: mdat.offset + header..mdat.offset + mdat.bytes.len(),
    })
}

/// The boxes named `name` among `found`, each decoded as `T`.
fn decoded<'a, T: mp4_atom::Decode>(
    found: &'a [RawBox<'a>],
    name: &'static str,
) -> impl Iterator<Item = Result<T, CmafError>> + 'a {
    found
        .iter()
        .filter(move |raw| raw.kind == *name.as_bytes())
        .map(move |raw| raw.decode(name))
}

/// Visits every sample of the chunk in decode order, and returns the chunk's start (`tfdt`).
/// The counts and sizes the runs declare are checked before the first visit and as each
/// sample is reached, against [`MAX_SAMPLES_PER_CHUNK`], [`MAX_SAMPLE_BYTES`] and the
/// `mdat`: no sample lies outside it, and together they fit in it.
fn walk(
    bytes: &Bytes,
    header: &TrackHeader,
    mut visit: impl FnMut(Entry),
) -> Result<u64, CmafError> {
    if bytes.len() > MAX_CHUNK_BYTES {
        return Err(CmafError::UnitTooLarge {
            unit: "chunk",
            kind: "mdat".into(),
            size: bytes.len() as u64,
            limit: MAX_CHUNK_BYTES,
        });
    }
    let Layout {
        tfhd,
        tfdt,
        trun,
        moof_offset,
        mdat,
    } = layout(bytes)?;
    let start = tfdt
        .as_ref()
        .ok_or(CmafError::MissingInChunk("tfdt"))?
        .base_media_decode_time;
    // A run without per-sample fields is only a count (mp4-atom keeps it as one): this is
    // where a count of 2^32 - 1 is stopped, before anything steps through it.
    let declared: u64 = trun.iter().map(|run| run.samples.len() as u64).sum();
    if declared == 0 {
        return Err(CmafError::MissingInChunk("samples"));
    }
    if declared > MAX_SAMPLES_PER_CHUNK {
        return Err(CmafError::TooManySamples { declared });
    }
    if declared > mdat.len() as u64 {
        return Err(CmafError::SamplesBeyondMdat {
            declared,
            bytes: mdat.len(),
        });
    }
    let default_duration = tfhd.default_sample_duration.or(header.default_duration);
    let default_size = tfhd.default_sample_size.or(header.default_size);
    let default_flags = tfhd
        .default_sample_flags
        .or(header.default_flags)
        .unwrap_or(0);
    let base = match tfhd.base_data_offset {
        Some(offset) => usize::try_from(offset).unwrap_or(usize::MAX),
        None => moof_offset,
    };
    let (mut position, mut decode, mut index, mut total) = (base, start, 0u64, 0usize);
    for run in &trun {
        if let Some(offset) = run.data_offset {
            position = base.saturating_add_signed(offset as isize);
        }
        for entry in run.samples.iter() {
            let duration = entry
                .duration
                .or(default_duration)
                .ok_or(CmafError::MissingInChunk(
                    "sample duration (trun, tfhd or trex)",
                ))?;
            let size = entry
                .size
                .or(default_size)
                .ok_or(CmafError::MissingInChunk(
                    "sample size (trun, tfhd or trex)",
                ))?;
            if size > MAX_SAMPLE_BYTES {
                return Err(CmafError::SampleTooLarge { index, size });
            }
            let size = size as usize;
            total += size;
            if total > mdat.len() {
                return Err(CmafError::SamplesOverflowMdat {
                    index,
                    bytes: mdat.len(),
                });
            }
            let end = position.saturating_add(size);
            if position < mdat.start || end > mdat.end {
                return Err(CmafError::SampleOutsideMdat { index });
            }
            visit(Entry {
                decode,
                composition_offset: entry.cts.unwrap_or(0),
                duration,
                sync: entry.flags.unwrap_or(default_flags) & NON_SYNC_SAMPLE == 0,
                data: position..end,
            });
            position = end;
            decode = decode
                .checked_add(u64::from(duration))
                .ok_or(CmafError::TimeOverflow)?;
            index += 1;
        }
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use mp4_atom::{Tfhd, TrunEntry, TrunSamples};

    use super::*;
    use crate::cmaf::CodecConfig;
    use crate::testing::{self, TrackSpec};

    fn video_header() -> TrackHeader {
        testing::parsed_header(&TrackSpec::video())
    }

    /// Sample defaults in the `tfhd`, so that a run may carry no per-sample field at all.
    fn defaults(duration: u32, size: u32) -> Tfhd {
        Tfhd {
            default_sample_duration: Some(duration),
            default_sample_size: Some(size),
            ..Default::default()
        }
    }

    fn explicit(sizes: &[u32]) -> TrunSamples {
        sizes
            .iter()
            .map(|size| TrunEntry {
                duration: Some(100),
                size: Some(*size),
                ..Default::default()
            })
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn samples_are_cut_from_the_mdat_with_their_timing() {
        let spec = TrackSpec::video();
        let header = video_header();
        assert!(matches!(
            &header.config,
            CodecConfig::Avc { length_size: 4, parameter_sets } if parameter_sets.len() == 2
        ));
        let start = spec.segment_ticks() * 7;
        let bytes = Bytes::from(testing::chunk(&spec, 3, start, spec.samples_per_chunk));
        let samples = samples(&bytes, &header).unwrap();
        assert_eq!(samples.len(), spec.samples_per_chunk as usize);
        for (index, sample) in samples.iter().enumerate() {
            assert_eq!(
                sample.decode,
                start + index as u64 * u64::from(spec.sample_duration)
            );
            assert_eq!(sample.sync, index == 0);
            assert_eq!(sample.data.len(), 50);
            assert_eq!(
                &sample.data[..5],
                &[0, 0, 0, 46, if index == 0 { 0x65 } else { 0x41 }]
            );
            assert!(sample.data[5..].iter().all(|byte| *byte == 3));
        }
        let chunk = parse_chunk(bytes.clone(), &header).unwrap();
        assert_eq!(
            (
                chunk.start,
                chunk.duration,
                chunk.samples,
                chunk.independent
            ),
            (start, spec.chunk_ticks(), spec.samples_per_chunk, true)
        );
    }

    #[test]
    fn runs_of_inherited_samples_are_read_from_the_defaults() {
        let header = video_header();
        let inherited = TrunSamples::Inherited {
            count: 10,
            first_flags: Some(0x0200_0000),
        };
        let bytes = Bytes::from(testing::crafted_chunk(0, defaults(100, 50), inherited, 500));
        let chunk = parse_chunk(bytes.clone(), &header).unwrap();
        assert_eq!((chunk.samples, chunk.duration), (10, 1000));
        assert!(chunk.independent);
        let samples = samples(&bytes, &header).unwrap();
        assert_eq!(samples.len(), 10);
        assert!(samples.iter().all(|sample| sample.data.len() == 50));
    }

    /// The run an attacker writes: 2^32 - 1 samples and no per-sample field, twelve bytes
    /// of `trun` body. Refused from its count, never stepped through.
    #[test]
    fn a_run_of_four_billion_samples_is_refused_at_once() {
        let header = video_header();
        let crafted = TrunSamples::Inherited {
            count: u32::MAX,
            first_flags: None,
        };
        let bytes = Bytes::from(testing::crafted_chunk(0, defaults(1, 1), crafted, 64));
        let error = parse_chunk(bytes.clone(), &header).unwrap_err();
        assert_eq!(
            error,
            CmafError::TooManySamples {
                declared: u64::from(u32::MAX)
            }
        );
        assert!(samples(&bytes, &header).is_err());
        let mut took: Vec<Duration> = (0..2000)
            .map(|_| {
                let started = Instant::now();
                let outcome = parse_chunk(bytes.clone(), &header);
                let took = started.elapsed();
                assert!(outcome.is_err());
                took
            })
            .collect();
        took.sort();
        let median = took[took.len() / 2];
        println!(
            "the crafted trun (2^32-1 samples, {} bytes of chunk) is refused in {:.1} µs (median of {}), {:.1} µs at the 99th percentile",
            bytes.len(),
            median.as_secs_f64() * 1e6,
            took.len(),
            took[took.len() * 99 / 100].as_secs_f64() * 1e6
        );
        assert!(median < Duration::from_millis(1), "median {median:?}");
    }

    #[test]
    fn a_run_may_not_declare_more_samples_than_its_mdat_can_hold() {
        let header = video_header();
        let run = |count| TrunSamples::Inherited {
            count,
            first_flags: None,
        };
        // 100 samples of (the tfhd says) no bytes in a 99-byte mdat.
        let bytes = Bytes::from(testing::crafted_chunk(0, defaults(1, 0), run(100), 99));
        assert_eq!(
            parse_chunk(bytes, &header).unwrap_err(),
            CmafError::SamplesBeyondMdat {
                declared: 100,
                bytes: 99
            }
        );
        // Under the count cap and the mdat's size, but the sizes add up to more than it holds.
        let bytes = Bytes::from(testing::crafted_chunk(0, defaults(1, 10), run(50), 400));
        assert_eq!(
            parse_chunk(bytes, &header).unwrap_err(),
            CmafError::SamplesOverflowMdat {
                index: 40,
                bytes: 400
            }
        );
        let at_cap = MAX_SAMPLES_PER_CHUNK as u32;
        let bytes = Bytes::from(testing::crafted_chunk(
            0,
            defaults(1, 1),
            run(at_cap + 1),
            at_cap as usize + 1,
        ));
        assert_eq!(
            parse_chunk(bytes, &header).unwrap_err(),
            CmafError::TooManySamples {
                declared: MAX_SAMPLES_PER_CHUNK + 1
            }
        );
        let bytes = Bytes::from(testing::crafted_chunk(
            0,
            defaults(1, 1),
            run(at_cap),
            at_cap as usize,
        ));
        assert_eq!(parse_chunk(bytes, &header).unwrap().samples, at_cap);
    }

    /// A track fragment may carry sample groups and other boxes; the packager decodes its
    /// tfhd, tfdt and trun alone, so an `sgpd` that would make mp4-atom 0.17 allocate without
    /// end is passed over.
    #[test]
    fn boxes_of_a_fragment_beside_its_runs_are_never_decoded() {
        let spec = TrackSpec::video();
        let header = video_header();
        let mut bytes = testing::chunk(&spec, 0, 0, spec.samples_per_chunk);
        let sgpd = testing::endless_sgpd();
        testing::insert_box(&mut bytes, &[b"moof", b"traf"], &sgpd);
        // The samples moved by as much as the moof grew.
        let trun = bytes.windows(4).position(|w| w == b"trun").unwrap();
        let at = trun + 12;
        let offset = i32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        bytes[at..at + 4].copy_from_slice(&(offset + sgpd.len() as i32).to_be_bytes());
        let chunk = parse_chunk(Bytes::from(bytes), &header).unwrap();
        assert_eq!(chunk.samples, spec.samples_per_chunk);
    }

    #[test]
    fn samples_are_bounded_in_size_and_kept_inside_the_mdat() {
        let header = video_header();
        let bytes = Bytes::from(testing::crafted_chunk(
            0,
            Tfhd::default(),
            explicit(&[10, MAX_SAMPLE_BYTES + 1]),
            100,
        ));
        assert_eq!(
            parse_chunk(bytes, &header).unwrap_err(),
            CmafError::SampleTooLarge {
                index: 1,
                size: MAX_SAMPLE_BYTES + 1
            }
        );
        // A data offset that points back into the moof.
        let mut bytes = testing::crafted_chunk(0, Tfhd::default(), explicit(&[10, 10]), 100);
        let trun = bytes.windows(4).position(|w| w == b"trun").unwrap();
        // The data offset follows the box header's version and flags and the sample count.
        bytes[trun + 12..trun + 16].copy_from_slice(&8i32.to_be_bytes());
        assert_eq!(
            parse_chunk(Bytes::from(bytes), &header).unwrap_err(),
            CmafError::SampleOutsideMdat { index: 0 }
        );
        // Decode times that run past u64.
        let bytes = Bytes::from(testing::crafted_chunk(
            u64::MAX - 150,
            Tfhd::default(),
            explicit(&[10, 10, 10]),
            100,
        ));
        assert_eq!(
            parse_chunk(bytes, &header).unwrap_err(),
            CmafError::TimeOverflow
        );
        let missing = testing::crafted_chunk(0, Tfhd::default(), explicit(&[10]), 100);
        let without_mdat = &missing[..missing.len() - 108];
        assert_eq!(
            parse_chunk(Bytes::copy_from_slice(without_mdat), &header).unwrap_err(),
            CmafError::MissingInChunk("mdat")
        );
    }
}
