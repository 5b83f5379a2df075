//! What the CLI prints on stderr: how much (`-q`, default, `-v`) and progress on long work.
//!
//! Progress is an `indicatif` bar when stderr is a terminal and a plain line every few seconds
//! otherwise (logs, CI), so a long run is never silent and a pipe never fills with escape codes.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much the CLI says on stderr. Errors are always printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// `-q`: errors only.
    Quiet,
    /// The default: one line per stage, progress on long work.
    Normal,
    /// `-v`: also the reasons behind choices (skipped backends) and per-chunk detail.
    Verbose,
}

/// The CLI's stderr.
#[derive(Clone, Copy, Debug)]
pub struct Ui {
    verbosity: Verbosity,
    terminal: bool,
}

/// Seconds between plain progress lines when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Ui {
    /// A UI printing at `verbosity`; progress bars only if stderr is a terminal.
    pub fn new(verbosity: Verbosity) -> Self {
        Self { verbosity, terminal: std::io::stderr().is_terminal() }
    }

    /// A line of the default output (not with `-q`).
    pub fn say(&self, line: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Normal {
            eprintln!("{}", line.as_ref());
        }
    }

    /// A line only `-v` prints.
    pub fn detail(&self, line: impl AsRef<str>) {
        if self.verbosity >= Verbosity::Verbose {
            eprintln!("{}", line.as_ref());
        }
    }

    /// Whether `-v` was given.
    pub fn verbose(&self) -> bool {
        self.verbosity >= Verbosity::Verbose
    }

    /// A spinner for work of unknown length (loading, encoding); plain output prints `what`
    /// once. Finished (and cleared) by dropping it.
    pub fn spinner(&self, what: &str) -> Spinner {
        if self.verbosity < Verbosity::Normal {
            return Spinner(None);
        }
        if !self.terminal {
            eprintln!("{what} ...");
            return Spinner(None);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Spinner(Some(bar))
    }

    /// Progress of a generation of at most `limit` frames at `frame_rate_hz` frames per
    /// second of audio.
    pub fn frames(&self, what: &str, limit: u32, frame_rate_hz: f64) -> FrameProgress {
        let bar = (self.verbosity >= Verbosity::Normal && self.terminal).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(u64::from(limit)), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} frames {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(what.to_string());
            bar
        });
        FrameProgress {
            what: what.to_string(),
            limit,
            frame_rate_hz,
            start: Instant::now(),
            last_plain: Instant::now(),
            plain: self.verbosity >= Verbosity::Normal && !self.terminal,
            bar,
        }
    }
}

/// A spinner that clears itself when dropped.
pub struct Spinner(Option<ProgressBar>);

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// Frames done of a limit, seconds of audio, × real time and an ETA (an upper bound: the
/// model may stop at `<|im_end|>` before the limit).
pub struct FrameProgress {
    what: String,
    limit: u32,
    frame_rate_hz: f64,
    start: Instant,
    last_plain: Instant,
    plain: bool,
    bar: Option<ProgressBar>,
}

impl FrameProgress {
    /// `frames` generated so far.
    pub fn set(&mut self, frames: usize) {
        let text = self.summary(frames);
        if let Some(b) = &self.bar {
            b.set_position(frames as u64);
            b.set_message(text);
        } else if self.plain && self.last_plain.elapsed() >= PLAIN_EVERY {
            self.last_plain = Instant::now();
            eprintln!("{}: {frames}/{} frames, {text}", self.what, self.limit);
        }
    }

    fn summary(&self, frames: usize) -> String {
        let wall = self.start.elapsed().as_secs_f64();
        let audio = frames as f64 / self.frame_rate_hz;
        let speed = if wall > 0.0 { audio / wall } else { 0.0 };
        let left = (self.limit as usize).saturating_sub(frames) as f64;
        let eta = if frames > 0 { left * wall / frames as f64 } else { f64::NAN };
        if eta.is_finite() {
            format!("{audio:.1} s of audio, {speed:.2}x real time, ETA <= {eta:.0} s")
        } else {
            format!("{audio:.1} s of audio")
        }
    }

    /// Removes the bar (the caller prints the final summary line).
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
