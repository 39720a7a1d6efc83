//! Progress bars on standard error, hidden when it is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// Returns a bar counting bytes, for reading files.
pub fn bytes(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:>12} [{bar:32}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar
}

/// Returns a bar counting items, for generating and replaying.
pub fn items(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {{msg:>12}} [{{bar:32}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, {{eta}})"
        ))
        .expect("static template")
        .progress_chars("=> "),
    );
    bar
}

/// Returns a spinner for work of unknown length.
pub fn spinner(message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
