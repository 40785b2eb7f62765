//! The `cmdb` binary: parses the command line, sets up logging, runs the command.

use std::process::ExitCode;

use clap::Parser;
use cmdb_api::cli::{Cli, run};
use cmdb_api::settings::LogFormat;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs its life; one-shot commands speak only when something is wrong.
    let default_level = if matches!(cli.command, cmdb_api::cli::Command::Serve(_)) { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("CMDB_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Pretty => subscriber.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
