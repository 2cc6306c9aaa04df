//! Everything kprov draws on the terminal: colours (off for `--no-color`, `NO_COLOR`,
//! `CLICOLOR=0` and output that is not a terminal), progress bars (stderr, only on a terminal;
//! plain lines otherwise), and aligned tables. The engine reports through
//! [`crate::report::Reporter`]; this module is its terminal implementation.

use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::{Paint, PhaseReporter, Progress, Reporter, Tone, Unit};

/// How this run draws: decided once from the flags, the environment and the terminals.
#[derive(Debug, Clone, Copy)]
pub struct Terminal {
    /// Colours on stdout.
    pub color: bool,
    /// Bars on stderr (else one line when a phase starts and one when it ends).
    pub bars: bool,
}

impl Terminal {
    /// Decide for this process. `no_color` is the `--no-color` flag. Colours need all of: no
    /// flag, `NO_COLOR` unset or empty (no-color.org), `CLICOLOR` not `0`, stdout a terminal.
    pub fn detect(no_color: bool) -> Terminal {
        let env_off = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var("CLICOLOR").is_ok_and(|v| v == "0");
        let color = !no_color && !env_off && console::Term::stdout().is_term();
        if no_color || env_off {
            // indicatif styles its bars through `console`: switch it off there too.
            console::set_colors_enabled(false);
            console::set_colors_enabled_stderr(false);
        }
        Terminal {
            color,
            bars: console::Term::stderr().is_term(),
        }
    }

    /// The progress handle for the engine.
    pub fn progress(&self) -> Progress {
        Progress::new(Arc::new(TerminalReporter {
            multi: self
                .bars
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }))
    }

    /// How headings are styled on stdout.
    pub fn paint(&self) -> &'static dyn Paint {
        if self.color {
            &Colors
        } else {
            &crate::report::Plain
        }
    }
}

/// ANSI colours for headings.
struct Colors;

impl Paint for Colors {
    fn paint(&self, text: &str, tone: Tone) -> String {
        let c = match tone {
            Tone::Add => console::Color::Green,
            Tone::Change => console::Color::Yellow,
            Tone::Remove => console::Color::Red,
        };
        // force_styling: the decision was made in `Terminal::detect`, for stdout.
        console::style(text)
            .fg(c)
            .bold()
            .force_styling(true)
            .to_string()
    }
}

/// Bars on a terminal, lines otherwise.
struct TerminalReporter {
    multi: Option<MultiProgress>,
}

impl Reporter for TerminalReporter {
    fn phase(&self, name: &str, total: u64, unit: Unit) -> Arc<dyn PhaseReporter> {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(total));
            b.set_style(style(unit));
            b.set_prefix(name.to_string());
            if unit == Unit::Steps {
                b.enable_steady_tick(std::time::Duration::from_millis(120));
            }
            b
        });
        // Without a terminal, step phases print a line when they start and end (logs of CI
        // jobs show what happened); byte phases print nothing (their figures are only live).
        let lines = bar.is_none() && unit == Unit::Steps;
        if lines {
            eprintln!("{name}: {total} to do");
        }
        Arc::new(TerminalPhase {
            bar,
            lines,
            name: name.to_string(),
            total,
        })
    }

    fn note(&self, message: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(message);
            }
            None => eprintln!("{message}"),
        }
    }
}

fn style(unit: Unit) -> ProgressStyle {
    let template = match unit {
        Unit::Steps => "{spinner:.green} {prefix:<18} [{bar:30.cyan/blue}] {pos}/{len} {elapsed_precise} {msg}",
        Unit::Bytes => "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
    };
    ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ")
}

struct TerminalPhase {
    bar: Option<ProgressBar>,
    lines: bool,
    name: String,
    total: u64,
}

impl PhaseReporter for TerminalPhase {
    fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn rewind(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.set_position(b.position().saturating_sub(n));
        }
    }
    fn grow(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc_length(n);
        }
    }
    fn shrink(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.set_length(b.length().unwrap_or(0).saturating_sub(n));
        }
    }
    fn finish(&self, message: &str) {
        match &self.bar {
            Some(b) => b.finish_with_message(message.to_string()),
            None if self.lines => eprintln!("{}: {message} ({} planned)", self.name, self.total),
            None => {}
        }
    }
    fn clear(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Rows as aligned columns, kubectl-style: three spaces between columns, no borders. Widths
/// are display widths, so names in Chinese (two columns per character) line up.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.iter().copied());
    for r in rows {
        t.add_row(r.iter().map(String::as_str));
    }
    let last = header.len().saturating_sub(1);
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, if i == last { 0 } else { 3 }));
    }
    let mut out = String::new();
    for line in t.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::table;

    #[test]
    fn columns_are_aligned_by_display_width() {
        let rows = vec![
            vec!["控制节点-1".to_string(), "Running".to_string()],
            vec!["worker-1".to_string(), "Stopped".to_string()],
        ];
        let t = table(&["NAME", "STATUS"], &rows);
        // 控制节点-1 is 10 columns wide (4 CJK characters × 2 + 2): STATUS starts at 13.
        assert_eq!(
            t,
            "NAME         STATUS\n控制节点-1   Running\nworker-1     Stopped\n"
        );
    }

    #[test]
    fn the_last_column_has_no_trailing_spaces() {
        let t = table(&["A", "B"], &[vec!["x".into(), String::new()]]);
        assert_eq!(t, "A   B\nx\n");
    }
}
