//! Progress display: one `indicatif` bar per phase on a terminal, plain log lines otherwise.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress for a run.
#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    quiet: bool,
}

/// Progress of one phase.
pub struct Phase {
    bar: Option<ProgressBar>,
    name: String,
    total: u64,
    quiet: bool,
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn auto() -> Self {
        if console::Term::stderr().is_term() {
            Progress {
                multi: Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
                quiet: false,
            }
        } else {
            Progress {
                multi: None,
                quiet: false,
            }
        }
    }

    /// No output at all (tests, benchmarks).
    pub fn hidden() -> Self {
        Progress {
            multi: None,
            quiet: true,
        }
    }

    /// Start a phase of `total` steps.
    pub fn phase(&self, name: &str, total: u64) -> Phase {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(total));
            b.set_style(
                ProgressStyle::with_template("{spinner:.green} {prefix:<18} [{bar:30.cyan/blue}] {pos}/{len} {elapsed_precise} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(name.to_string());
            b.enable_steady_tick(std::time::Duration::from_millis(120));
            b
        });
        if bar.is_none() && !self.quiet {
            eprintln!("{name}: {total} to do");
        }
        Phase {
            bar,
            name: name.to_string(),
            total,
            quiet: self.quiet,
        }
    }
}

impl Phase {
    /// One step done.
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// The phase is over.
    pub fn finish(&self, message: String) {
        match &self.bar {
            Some(b) => b.finish_with_message(message),
            None if !self.quiet => eprintln!("{}: {message} ({} planned)", self.name, self.total),
            None => {}
        }
    }
}
