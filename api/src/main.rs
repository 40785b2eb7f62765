//! The `cmdb` binary: parses the command line, sets up logging, runs the command.

use std::process::ExitCode;

use clap::Parser;
use cmdb_api::cli::{Cli, run};
use cmdb_api::settings::LogFormat;

/// mimalloc instead of the system allocator: a GraphQL answer is a tree of many small values
/// built and freed per request, and glibc's malloc and free took about 30 % of the server's time
/// on large answers (perf, a day's diff on the large estate).
///
/// Built with `no_thp`: mimalloc otherwise marks its regions `MADV_HUGEPAGE`, and the kernel then
/// zeroes a 2 MiB page at each first touch (10-12 % of a rebuild's CPU in `clear_page`). Without
/// it, a rebuild of the large estate took 8.9-9.3 s of CPU instead of 9.6-14 s (5 alternated
/// pairs, BENCHMARKS.md), and the assessment's walks were unchanged within the runs' spread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs its life; one-shot commands speak only when something is wrong.
    let default_level = if matches!(cli.command, cmdb_api::cli::Command::Serve(_)) { "info" } else { "warn" };
    let requested = std::env::var("CMDB_LOG").ok();
    let filter = cmdb_api::logging::filter(requested.as_deref(), default_level);
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(cmdb_api::logging::RedactingStderr);
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
