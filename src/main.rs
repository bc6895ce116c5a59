//! The `skuwatch` command: `serve` (the default), `user`, `import`, `replay`.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use skuwatch::auth::{self, Role};
use skuwatch::replay::{self, ReplayOptions};
use skuwatch::Settings;
use skuwatch_actors::store::SkuStore;
use tracing_subscriber::EnvFilter;

/// See Cargo.toml: the write path's many small cross-thread allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Real-time inventory and price monitoring server")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Log lines as human-readable text, or as one JSON object per line.
    #[arg(long, global = true, env = "SKUWATCH_LOG_FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    log_format: String,
}

/// How a client command reaches and authenticates to a running server.
#[derive(Args, Clone)]
struct ClientArgs {
    #[arg(long, env = "SKUWATCH_URL", default_value = "http://127.0.0.1:8000")]
    server: String,
    /// An admin's bearer token.
    #[arg(long, env = "SKUWATCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Log in as this user instead; the password is read from
    /// SKUWATCH_PASSWORD, or from standard input, or a prompt.
    #[arg(long, env = "SKUWATCH_USER")]
    user: Option<String>,
}

// Parsed once at start; the size of `Serve` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve {
        #[command(flatten)]
        settings: Settings,
        /// Also create a demo admin (random password, printed once) and
        /// replay the bundled retail data, so changes arrive live at once.
        #[arg(long)]
        demo: bool,
        /// Replay speed of --demo, in multiples of real time.
        #[arg(long, default_value_t = 600.0)]
        demo_speed: f64,
    },
    /// Manage users directly in the database (works before any user exists).
    User {
        #[command(subcommand)]
        action: UserCmd,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Bring the database schema up to this build (PostgreSQL: a step of
    /// its own before `serve`, which refuses to start while migrations are
    /// pending; SQLite migrates at start anyway). Run it before starting
    /// the new version in a rolling upgrade: older instances keep serving.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Upsert a catalog CSV through a running server (`POST /api/v1/import`).
    Import {
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replay Online Retail invoice CSVs (a file or a folder; default: the
    /// bundled slice) into a running server.
    Replay {
        path: Option<PathBuf>,
        /// Multiples of real time; without it, as fast as possible.
        #[arg(long)]
        speed: Option<f64>,
        #[command(flatten)]
        client: ClientArgs,
        /// Requests in flight (each SKU stays in order).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Skip reading every SKU back at the end.
        #[arg(long)]
        no_verify: bool,
    },
    /// Judge the stock-out forecast and the fixed threshold offline on
    /// Online Retail invoice CSVs (a file or a folder): precision and
    /// recall of each rule on one simulated stock path (src/evaluate.rs).
    EvaluateForecast {
        path: PathBuf,
        /// Raise alerts in the first N weeks only (the rest of the data
        /// only judges them); default: all the data.
        #[arg(long)]
        weeks: Option<u32>,
        /// The forecast rule's lead time, and the horizon alerts are judged
        /// over.
        #[arg(long, default_value_t = 7)]
        lead_time_days: i64,
        /// The fixed rule's low-stock threshold.
        #[arg(long, default_value_t = 10)]
        threshold: i64,
        /// Count no alert or episode of the first N days (the rules still
        /// run): the SKUs' rates build up from the data's start.
        #[arg(long, default_value_t = 0)]
        warm_up_days: i64,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when URL answers 2xx within 3 s (the container health check;
    /// the runtime image has no curl).
    Probe {
        #[arg(default_value = "http://127.0.0.1:8000/readyz")]
        url: String,
    },
}

/// The database of the commands that work on it directly.
#[derive(Args)]
struct DatabaseArgs {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://skuwatch.db",
        hide_env_values = true
    )]
    database_url: String,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user; the password comes from standard input or a prompt,
    /// never from the command line.
    Add {
        name: String,
        #[arg(long, default_value = "viewer", value_parser = ["admin", "viewer", "checkout"])]
        role: String,
    },
    /// List users (never their password hashes).
    List,
    /// Disable a user: no new tokens (issued ones expire within the token TTL).
    Disable { name: String },
}

/// Targets capped at `info` whatever SKUWATCH_LOG says: at `trace` they
/// print WebSocket payloads, and an auth message carries a token.
const NEVER_TRACED: [&str; 2] = ["tungstenite=info", "tokio_tungstenite=info"];

/// Logs to standard error; `json` gives one object per line with the span
/// fields (request id, method, path) of each line.
fn init_logging(format: &str) {
    let mut filter = EnvFilter::try_from_env("SKUWATCH_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    for directive in NEVER_TRACED {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // An idle thread gives its free pages back once a load has ended.
        .on_thread_park(skuwatch::memory::on_park)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(error) => {
            eprintln!("skuwatch: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let command = cli.command.unwrap_or(Cmd::Serve {
        settings: Settings::default(),
        demo: false,
        demo_speed: 600.0,
    });
    let result = match command {
        Cmd::Serve {
            settings,
            demo,
            demo_speed,
        } => serve(settings, demo.then_some(demo_speed)).await,
        Cmd::User { action, database } => user(action, &database.database_url).await,
        Cmd::Migrate { database } => skuwatch::store::migrate(&database.database_url)
            .await
            .map(|version| println!("database schema at migration {version}"))
            .map_err(|e| format!("migration failed: {e}")),
        Cmd::Import { file, client } => import(file, client).await,
        Cmd::Replay {
            path,
            speed,
            client,
            concurrency,
            no_verify,
        } => run_replay(path, speed, client, concurrency, !no_verify).await,
        Cmd::EvaluateForecast {
            path,
            weeks,
            lead_time_days,
            threshold,
            warm_up_days,
            json,
        } => {
            let options = skuwatch::evaluate::Options {
                weeks,
                lead_time_days,
                threshold,
                warm_up_days,
            };
            skuwatch::evaluate::run_cli(&path, &options, json)
        }
        Cmd::Probe { url } => probe(&url).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("skuwatch: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A password from the environment variable, else one line of standard
/// input when it is not a terminal, else a prompt without echo.
fn read_password(env: Option<&str>, confirm: bool) -> Result<String, String> {
    if let Some(password) = env.and_then(|name| std::env::var(name).ok()) {
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    let password = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
    if confirm && rpassword::prompt_password("Again: ").map_err(|e| e.to_string())? != password {
        return Err("the passwords differ".into());
    }
    Ok(password)
}

async fn client_token(client: &ClientArgs) -> Result<String, String> {
    if let Some(token) = &client.token {
        return Ok(token.clone());
    }
    let user = client
        .user
        .as_deref()
        .ok_or("give --token (SKUWATCH_TOKEN) or --user (SKUWATCH_USER)")?;
    let password = read_password(Some("SKUWATCH_PASSWORD"), false)?;
    replay::login(&client.server, user, &password)
        .await
        .map_err(|e| e.to_string())
}

async fn serve(settings: Settings, demo_speed: Option<f64>) -> Result<(), String> {
    // Registered before start: a SIGTERM during start-up is then a graceful
    // shutdown too, not the default kill.
    let signal = shutdown_signal().map_err(|e| format!("cannot handle signals: {e}"))?;
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.bind))?;
    let app = skuwatch::start(settings, listener)
        .await
        .map_err(|e| e.to_string())?;
    println!("skuwatch listening on {}", app.base_url());
    if let Some(speed) = demo_speed {
        let password = skuwatch::demo_admin(app.state())
            .await
            .map_err(|e| e.to_string())?;
        println!("demo: admin user 'demo', password {password} (printed once)");
        let (token, _) = app
            .state()
            .jwt
            .issue("demo", Role::Admin)
            .map_err(|e| e.to_string())?;
        println!("demo: replaying the bundled Online Retail slice at {speed}x real time");
        println!(
            "demo: open the dashboard at {}/ and sign in as 'demo'",
            app.base_url().trim_end_matches('/')
        );
        println!(
            "demo: watch with  websocat -H 'Authorization: Bearer <token>' ws://{}/ws  and send {{\"type\":\"subscribe\",\"all\":true}}",
            app.addr()
        );
        let options = ReplayOptions {
            server: app.base_url(),
            speed: Some(speed),
            concurrency: 8,
            verify: true,
            token,
        };
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
        signal.await;
        token.cancel();
    });
    app.state().shutdown.cancelled().await;
    let deadline = Duration::from_secs(app.state().settings.shutdown_timeout_secs);
    tracing::info!(?deadline, "shutting down");
    app.shutdown(deadline).await;
    tracing::info!("stopped");
    Ok(())
}

/// Registers SIGTERM and SIGINT now; the future resolves on either.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

async fn probe(url: &str) -> Result<(), String> {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {}", response.status()))
    }
}

async fn user(action: UserCmd, database_url: &str) -> Result<(), String> {
    let store = skuwatch::store::connect(database_url, 2)
        .await
        .map_err(|e| e.to_string())?;
    match action {
        UserCmd::Add { name, role } => {
            if !auth::valid_username(&name) {
                return Err("a username is 1-64 letters, digits, '.', '_', '-' or '@'".into());
            }
            let password = read_password(None, true)?;
            if !auth::valid_password(&password) {
                return Err("a password is 8-1024 characters".into());
            }
            let role = Role::parse(&role).ok_or("role must be admin, viewer or checkout")?;
            let user = skuwatch::http::new_user(name.clone(), password, role)
                .await
                .map_err(|_| "cannot hash the password")?;
            if !store.create_user(&user).await.map_err(|e| e.to_string())? {
                return Err(format!("user {name} already exists"));
            }
            println!("created {role} {name}");
        }
        UserCmd::List => {
            for user in store.list_users().await.map_err(|e| e.to_string())? {
                let state = if user.disabled { "disabled" } else { "active" };
                println!(
                    "{}\t{}\t{}\t{}",
                    user.username,
                    user.role,
                    state,
                    user.created_at.to_rfc3339()
                );
            }
        }
        UserCmd::Disable { name } => {
            if !store.disable_user(&name).await.map_err(|e| e.to_string())? {
                return Err(format!("no user {name}"));
            }
            println!("disabled {name}");
        }
    }
    store.close().await;
    Ok(())
}

async fn import(file: PathBuf, client: ClientArgs) -> Result<(), String> {
    let body = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let token = client_token(&client).await?;
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/import",
            client.server.trim_end_matches('/')
        ))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{}: {e}", client.server))?;
    let status = response.status();
    println!("{}", response.text().await.unwrap_or_default());
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("import refused: HTTP {status}"))
    }
}

async fn run_replay(
    path: Option<PathBuf>,
    speed: Option<f64>,
    client: ClientArgs,
    concurrency: usize,
    verify: bool,
) -> Result<(), String> {
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
    let options = ReplayOptions {
        token: client_token(&client).await?,
        server: client.server,
        speed,
        concurrency,
        verify,
    };
    let report = replay::run(&plan, &options)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if report.failed > 0 || (verify && !report.verified) {
        return Err("replay finished with failures".into());
    }
    Ok(())
}
