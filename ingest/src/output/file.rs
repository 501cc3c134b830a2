//! `--out DIR`: one file per track, the CMAF header then every chunk as produced.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{TrackEvent, TrackOutput};
use crate::IngestError;
use crate::health::OutputStats;

pub struct FileOutput {
    writer: Mutex<Option<BufWriter<File>>>,
    stats: Arc<OutputStats>,
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
            writer: Mutex::new(Some(BufWriter::new(file))),
            stats: stats.clone(),
        };
        Ok((output, stats))
    }
}

impl TrackOutput for FileOutput {
    fn push(&self, event: &TrackEvent) {
        let data = match event {
            TrackEvent::Header(data) | TrackEvent::Chunk { data, .. } => data,
        };
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(file) = writer.as_mut() else { return };
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
        let file = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut file) = file
            && let Err(error) = file.flush()
        {
            self.stats.set_error(Some(error.to_string()));
        }
    }
}
