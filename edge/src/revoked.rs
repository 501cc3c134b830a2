//! Revoked keycards: a file of keycard ids (the `id=` field), one a line, `#` comments, read
//! again whenever it changes. A keycard whose id is listed is refused, whatever the bouncers
//! say, and a continuous-stream viewer who came in with it is disconnected.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

/// How often the file is looked at for changes.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct Revoked {
    path: PathBuf,
    ids: RwLock<HashSet<String>>,
    /// The file's modification time when it was last read.
    read_at: Mutex<Option<SystemTime>>,
}

/// The ids in a revocation file's text.
pub fn parse(text: &str) -> HashSet<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Revoked {
    /// Reads the file at `path`; an error names it.
    pub fn open(path: &Path) -> Result<Arc<Revoked>, String> {
        let revoked = Revoked {
            path: path.to_owned(),
            ids: RwLock::default(),
            read_at: Mutex::default(),
        };
        revoked.reload()?;
        Ok(Arc::new(revoked))
    }

    /// A list of these ids, tied to no file (for tests, and for lists held elsewhere).
    pub fn of(ids: impl IntoIterator<Item = String>) -> Revoked {
        Revoked {
            path: PathBuf::new(),
            ids: RwLock::new(ids.into_iter().collect()),
            read_at: Mutex::default(),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    /// Reads the file again if it changed since the last read.
    pub fn reload(&self) -> Result<(), String> {
        let named = |error: std::io::Error| format!("{}: {error}", self.path.display());
        let modified = std::fs::metadata(&self.path)
            .and_then(|meta| meta.modified())
            .map_err(named)?;
        let mut read_at = self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        if *read_at == Some(modified) {
            return Ok(());
        }
        let ids = parse(&std::fs::read_to_string(&self.path).map_err(named)?);
        tracing::info!(path = %self.path.display(), revoked = ids.len(), "revoked keycards read");
        *self.ids.write().unwrap_or_else(|e| e.into_inner()) = ids;
        *read_at = Some(modified);
        Ok(())
    }

    /// Looks at the file every [`CHECK_EVERY`] for as long as the process runs; a file that
    /// cannot be read keeps the last list (and says so).
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        loop {
            tick.tick().await;
            if let Err(error) = self.reload() {
                tracing::warn!(%error, "revoked keycards not read again; the last list stands");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_one_a_line_without_comments() {
        let ids = parse("# revoked 2026-12-01\nviewer-17\n  viewer-18  # refunded\n\n");
        assert_eq!(ids.len(), 2);
        assert!(ids.contains("viewer-17") && ids.contains("viewer-18"));
    }

    #[test]
    fn the_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revoked");
        std::fs::write(&path, "a\n").unwrap();
        let revoked = Revoked::open(&path).unwrap();
        assert!(revoked.contains("a") && !revoked.contains("b"));
        std::fs::write(&path, "a\nb\n").unwrap();
        // A modification time that surely differs, whatever the file system's resolution.
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        revoked.reload().unwrap();
        assert!(revoked.contains("b"));
        let missing = Revoked::open(&dir.path().join("nothing")).err().unwrap();
        assert!(missing.contains("nothing"), "{missing}");
    }
}
