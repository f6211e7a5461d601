//! `quotad bench` as a command: Ctrl-C, printing, exit codes.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::BenchArgs;

/// Runs `quotad bench`: the report on stdout (a table, or one JSON object with
/// `--json`), progress and errors on stderr; 64 for usage errors, 1 for failures.
pub async fn main(args: BenchArgs) -> ExitCode {
    let json = args.json;
    let stop = CancellationToken::new();
    let options = match args.into_options(stop.clone()) {
        Ok(options) => options,
        Err(e) => return fail(&e),
    };
    tokio::spawn(interrupt(stop.clone()));
    let report = match super::run(options).await {
        Ok(report) => report,
        Err(e) => return fail(&e),
    };
    for warning in &report.warnings {
        eprintln!("quotad bench: warning: {warning}");
    }
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("a report serializes")
        );
    } else {
        print!("{report}");
    }
    ExitCode::SUCCESS
}

/// The first Ctrl-C ends the run early but still reports (and deactivates created
/// keys); a second one quits at once, e.g. while set-up waits on a slow server.
async fn interrupt(stop: CancellationToken) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!("\nquotad bench: stopping after in-flight requests; Ctrl-C again to quit now");
    stop.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        std::process::exit(130);
    }
}

fn fail(error: &super::LoadError) -> ExitCode {
    eprintln!("quotad bench: {error}");
    ExitCode::from(error.exit_code())
}
