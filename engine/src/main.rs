//! The `tandem` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tandem: an embedded, replicated key-value storage engine.
#[derive(Parser, Debug)]
#[command(name = "tandem", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the demo: a replicated cluster on a local directory.
    Demo {
        /// Where the replicas keep their data.
        #[arg(long, default_value = "./tandem-data")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { dir } => {
            if let Err(e) = std::fs::create_dir_all(&dir) {
                eprintln!("error: cannot create {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
            println!(
                "tandem demo: created {} — the replicated cluster is not built yet in this \
                 version, so no replicas were started and nothing was written.",
                dir.display()
            );
            ExitCode::SUCCESS
        }
    }
}
