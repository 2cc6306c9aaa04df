//! `kprov completion bash|zsh|fish`.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

/// Arguments of `completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell to generate for.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

/// Print the completion script.
pub fn run(a: &CompletionArgs) -> anyhow::Result<()> {
    let shell = match a.shell.as_str() {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        _ => Shell::Fish,
    };
    clap_complete::generate(
        shell,
        &mut super::Cli::command(),
        "kprov",
        &mut std::io::stdout(),
    );
    Ok(())
}
