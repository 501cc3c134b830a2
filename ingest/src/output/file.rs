//! `--out DIR`: one file per track, the CMAF header then every chunk as produced.
//!
//! A pipeline started again after an error sends its header again: the file keeps going when
//! the header is the same, and a new file (`v720-2.mp4`, …) begins when it is not, since one
//! CMAF file has one header.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{TrackEvent, TrackOutput};
use crate::IngestError;
use crate::health::OutputStats;

pub struct FileOutput {
    path: PathBuf,
    state: Mutex<FileState>,
    stats: Arc<OutputStats>,
}

struct FileState {
    writer: Option<BufWriter<File>>,
    header: Option<Bytes>,
    files: u32,
}

impl FileOutput {
    pub fn create(path: &Path) -> Result<(Self, Arc<OutputStats>), IngestError> {
        let io_error = |error: std::io::Error| IngestError::Output {
            target: path.display().to_string(),
            reason: error.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        let file = File::create(path).map_err(io_error)?;
        let stats = OutputStats::new("file", path.display().to_string(), true);
        let output = Self {
            path: path.to_owned(),
            state: Mutex::new(FileState {
                writer: Some(BufWriter::new(file)),
                header: None,
                files: 1,
            }),
            stats: stats.clone(),
        };
        Ok((output, stats))
    }

    /// `v720.mp4`, then `v720-2.mp4`, `v720-3.mp4`, …
    fn numbered_path(&self, number: u32) -> PathBuf {
        let stem = self.path.file_stem().unwrap_or_default().to_string_lossy();
        self.path.with_file_name(format!("{stem}-{number}.mp4"))
    }
}

impl TrackOutput for FileOutput {
    fn push(&self, event: &TrackEvent) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let data = match event {
            TrackEvent::Header(header) => match &state.header {
                Some(known) if known == header => return,
                Some(_) => {
                    state.files += 1;
                    let path = self.numbered_path(state.files);
                    tracing::info!(path = %path.display(), "the CMAF header changed: new file");
                    match File::create(&path) {
                        Ok(file) => state.writer = Some(BufWriter::new(file)),
                        Err(error) => {
                            self.stats
                                .set_error(Some(format!("{}: {error}", path.display())));
                            state.writer = None;
                            return;
                        }
                    }
                    state.header = Some(header.clone());
                    header
                }
                None => {
                    state.header = Some(header.clone());
                    header
                }
            },
            TrackEvent::Chunk { data, .. } => data,
        };
        let Some(file) = state.writer.as_mut() else {
            return;
        };
        // Flushing per chunk keeps the file readable while it grows (tail -f, ffprobe).
        match file.write_all(data).and_then(|()| file.flush()) {
            Ok(()) => {
                self.stats.sent(data.len());
                self.stats.set_error(None);
            }
            Err(error) => self.stats.set_error(Some(error.to_string())),
        }
    }

    fn finish(&self) {
        let file = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .writer
            .take();
        if let Some(mut file) = file
            && let Err(error) = file.flush()
        {
            self.stats.set_error(Some(error.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &'static str) -> TrackEvent {
        TrackEvent::Chunk {
            data: Bytes::from_static(text.as_bytes()),
            fragment_start: false,
        }
    }

    #[test]
    fn a_repeated_header_is_written_once_and_a_new_one_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v720.mp4");
        let (output, stats) = FileOutput::create(&path).unwrap();
        let header = TrackEvent::Header(Bytes::from_static(b"H1"));
        output.push(&header);
        output.push(&chunk("a"));
        output.push(&header);
        output.push(&chunk("b"));
        output.push(&TrackEvent::Header(Bytes::from_static(b"H2")));
        output.push(&chunk("c"));
        output.finish();
        assert_eq!(std::fs::read(&path).unwrap(), b"H1ab");
        assert_eq!(
            std::fs::read(dir.path().join("v720-2.mp4")).unwrap(),
            b"H2c"
        );
        assert_eq!(
            stats.bytes_sent.load(std::sync::atomic::Ordering::Relaxed),
            7
        );
    }
}
