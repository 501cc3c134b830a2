//! Progress bars on standard error, drawn only when it is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting up to `total` bytes; hidden when standard error is not a terminal.
pub fn bar(total: u64, what: &str) -> ProgressBar {
    styled(
        total,
        what,
        "{msg} [{bar:30}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, {eta} left)",
    )
}

/// A bar counting up to `total` items (e.g. lines).
pub fn counter(total: u64, what: &str) -> ProgressBar {
    styled(
        total,
        what,
        "{msg} [{bar:30}] {human_pos}/{human_len} ({eta} left)",
    )
}

/// A line that says what is happening, for work whose end is not known in advance.
pub fn spinner(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_message(what.to_owned());
    bar
}

fn styled(total: u64, what: &str, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}
