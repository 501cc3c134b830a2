//! The player page (web/player.html, with hls.js, dash.js and mpegts.js from web/node_modules),
//! served at `/` and `/play/{channel}`. Its files are read once when the packager starts.

use std::path::Path;

use bytes::Bytes;

/// The page and the scripts it loads; missing when web/ was not installed.
#[derive(Clone, Debug, Default)]
pub struct PlayerPage {
    pub html: Option<Bytes>,
    pub hls_js: Option<Bytes>,
    pub dash_js: Option<Bytes>,
    pub mpegts_js: Option<Bytes>,
}

impl PlayerPage {
    /// Reads `dir/player.html` and the players' scripts from `dir/node_modules`.
    pub fn load(dir: &Path) -> Self {
        let read = |relative: &str| {
            let path = dir.join(relative);
            match std::fs::read(&path) {
                Ok(bytes) => Some(Bytes::from(bytes)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "the player page is not served (run `npm ci` in web/)");
                    None
                }
            }
        };
        PlayerPage {
            html: read("player.html"),
            hls_js: read("node_modules/hls.js/dist/hls.min.js"),
            dash_js: read("node_modules/dashjs/dist/modern/umd/dash.all.min.js"),
            mpegts_js: read("node_modules/mpegts.js/dist/mpegts.js"),
        }
    }
}
