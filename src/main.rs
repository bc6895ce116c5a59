//! The `skuwatch` command: `serve` (the default), `import`, `replay`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use skuwatch::replay::{self, ReplayOptions};
use skuwatch::Settings;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(version, about = "Real-time inventory and price monitoring server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve {
        #[command(flatten)]
        settings: Settings,
        /// Also replay the bundled retail data into this server, so changes
        /// arrive live at once.
        #[arg(long)]
        demo: bool,
        /// Replay speed of --demo, in multiples of real time.
        #[arg(long, default_value_t = 600.0)]
        demo_speed: f64,
    },
    /// Upsert a catalog CSV through a running server (`POST /api/v1/import`).
    Import {
        file: PathBuf,
        #[arg(long, env = "SKUWATCH_URL", default_value = "http://127.0.0.1:8000")]
        server: String,
    },
    /// Replay Online Retail invoice CSVs (a file or a folder; default: the
    /// bundled slice) into a running server.
    Replay {
        path: Option<PathBuf>,
        /// Multiples of real time; without it, as fast as possible.
        #[arg(long)]
        speed: Option<f64>,
        #[arg(long, env = "SKUWATCH_URL", default_value = "http://127.0.0.1:8000")]
        server: String,
        /// Requests in flight (each SKU stays in order).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Skip reading every SKU back at the end.
        #[arg(long)]
        no_verify: bool,
    },
}

fn init_logging() {
    let filter = EnvFilter::try_from_env("SKUWATCH_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Cmd::Serve {
        settings: Settings::default(),
        demo: false,
        demo_speed: 600.0,
    }) {
        Cmd::Serve {
            settings,
            demo,
            demo_speed,
        } => serve(settings, demo.then_some(demo_speed)).await,
        Cmd::Import { file, server } => import(file, server).await,
        Cmd::Replay {
            path,
            speed,
            server,
            concurrency,
            no_verify,
        } => {
            let options = ReplayOptions {
                server,
                speed,
                concurrency,
                verify: !no_verify,
            };
            run_replay(path, options).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("skuwatch: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings, demo_speed: Option<f64>) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.bind))?;
    let app = skuwatch::start(settings, listener)
        .await
        .map_err(|e| e.to_string())?;
    println!("skuwatch listening on {}", app.base_url());
    if let Some(speed) = demo_speed {
        let options = ReplayOptions {
            server: app.base_url(),
            speed: Some(speed),
            concurrency: 8,
            verify: true,
        };
        println!("demo: replaying the bundled Online Retail slice at {speed}x real time");
        println!("demo: watch it with  websocat ws://{}/ws  then send {{\"type\":\"subscribe\",\"all\":true}}", app.addr());
        tokio::spawn(async move {
            let plan = match replay::plan(&replay::bundled()) {
                Ok(plan) => plan,
                Err(e) => return tracing::error!(error = %e, "demo replay"),
            };
            match replay::run(&plan, &options).await {
                Ok(report) => tracing::info!(?report, "demo replay finished"),
                Err(e) => tracing::error!(error = %e, "demo replay failed"),
            }
        });
    }
    let token = app.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        token.cancel();
    });
    app.state().shutdown.cancelled().await;
    tracing::info!("shutting down");
    app.shutdown(Duration::from_secs(10)).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn import(file: PathBuf, server: String) -> Result<(), String> {
    let body = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/import", server.trim_end_matches('/')))
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{text}");
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("import refused: HTTP {status}"))
    }
}

async fn run_replay(path: Option<PathBuf>, options: ReplayOptions) -> Result<(), String> {
    let files = match &path {
        Some(path) => replay::read_path(path).map_err(|e| e.to_string())?,
        None => replay::bundled(),
    };
    let plan = replay::plan(&files).map_err(|e| e.to_string())?;
    eprintln!(
        "replay: {} rows read, {} skipped, {} SKUs, {} requests",
        plan.rows_read,
        plan.rows_skipped,
        plan.catalog.len(),
        plan.steps.len()
    );
    let report = replay::run(&plan, &options)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if report.failed > 0 || (options.verify && !report.verified) {
        return Err("replay finished with failures".into());
    }
    Ok(())
}
