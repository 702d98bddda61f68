//! Download progress for `pull`: a bar on a terminal, plain lines otherwise (logs, CI).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// Shared by the download's chunk tasks (hf-hub clones it into each).
#[derive(Clone)]
pub struct Report(Arc<Mutex<State>>);

struct State {
    terminal: bool,
    bar: Option<ProgressBar>,
    name: String,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
    last_tenth: u64,
}

impl Report {
    /// A report for one file; a bar when stderr is a terminal.
    pub fn new() -> Self {
        let now = Instant::now();
        Report(Arc::new(Mutex::new(State {
            terminal: std::io::stderr().is_terminal(),
            bar: None,
            name: String::new(),
            total: 0,
            done: 0,
            started: now,
            last_line: now,
            last_tenth: 0,
        })))
    }

    /// Bytes counted so far (resumed ones included).
    pub fn done(&self) -> u64 {
        self.0.lock().map(|s| s.done).unwrap_or(0)
    }
}

impl State {
    fn line(&self, what: &str) {
        eprintln!(
            "pull {}: {what} {} of {}",
            self.name,
            HumanBytes(self.done),
            HumanBytes(self.total)
        );
    }
}

impl hf_hub::api::tokio::Progress for Report {
    async fn init(&mut self, size: usize, filename: &str) {
        let Ok(mut s) = self.0.lock() else { return };
        s.name = filename.to_owned();
        s.total = size as u64;
        s.started = Instant::now();
        if s.terminal {
            let bar = ProgressBar::new(size as u64).with_style(
                ProgressStyle::with_template(
                    "{msg} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(filename.to_owned());
            s.bar = Some(bar);
        } else {
            s.line("downloading,");
        }
    }

    async fn update(&mut self, size: usize) {
        let Ok(mut s) = self.0.lock() else { return };
        s.done += size as u64;
        if let Some(bar) = &s.bar {
            bar.set_position(s.done);
            return;
        }
        let tenth = s.done * 10 / s.total.max(1);
        if tenth > s.last_tenth || s.last_line.elapsed() > Duration::from_secs(10) {
            s.last_tenth = tenth;
            s.last_line = Instant::now();
            let pct = s.done * 100 / s.total.max(1);
            s.line(&format!("{pct}%,"));
        }
    }

    async fn finish(&mut self) {
        let Ok(s) = self.0.lock() else { return };
        if let Some(bar) = &s.bar {
            bar.finish();
        } else {
            eprintln!(
                "pull {}: done, {} in {:.1} s",
                s.name,
                HumanBytes(s.total),
                s.started.elapsed().as_secs_f64()
            );
        }
    }
}
