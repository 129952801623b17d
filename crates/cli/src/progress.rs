//! A progress bar for long runs (drawn only on a terminal).

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
    stage: String,
}

impl Progress {
    pub fn new() -> Self {
        Progress::default()
    }

    pub fn update(&mut self, stage: &str, done: usize, total: usize) {
        if self.stage != stage || self.bar.is_none() {
            if let Some(b) = self.bar.take() {
                b.finish_and_clear();
            }
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(stage.to_string());
            self.bar = Some(bar);
            self.stage = stage.to_string();
        }
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
