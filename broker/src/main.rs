//! `vomesh`: the command line of a vomesh node (see INTERFACE.md).

use std::path::Path;
use std::process::ExitCode;

use clap::Parser as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;
use vomesh_broker::cli::{AdminClient, Cli, Command, UserCommand};
use vomesh_broker::config::{Config, LogFormat};
use vomesh_broker::server;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vomesh: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve(config.as_deref(), cli.log_format),
        Command::User(command) => user(command),
        Command::Certs(_) | Command::Status { .. } | Command::Cluster(_) => {
            anyhow::bail!(
                "this command arrives with the mesh (issue #4); this build serves a single node"
            )
        }
        Command::Publish { .. } | Command::Subscribe { .. } => {
            anyhow::bail!("this command arrives with the pubsub service (issue #3)")
        }
    }
}

fn serve(path: Option<&Path>, log_format: Option<LogFormat>) -> anyhow::Result<()> {
    let config = match path {
        Some(path) => Config::load(path)?,
        None => Config::development(),
    };
    init_logging(&config, log_format)?;
    if path.is_none() {
        eprintln!(
            "vomesh: development mode: domain localhost, XMPP on {} (STARTTLS) and {} (direct TLS), admin on http://{}, data in {}\n\
             vomesh: add a user with:  vomesh user add alice@localhost --password secret",
            config.xmpp.listen,
            config
                .xmpp
                .listen_tls
                .map_or_else(|| "-".to_owned(), |a| a.to_string()),
            config.admin.listen,
            config.data_dir.display(),
        );
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(server::run(config, shutdown_signal(), |_| {}))
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the node with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

fn init_logging(config: &Config, format: Option<LogFormat>) -> anyhow::Result<()> {
    // RUST_LOG, when set, wins over `[log] level`.
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(directives)?,
        Err(_) => EnvFilter::try_new(&config.log.level)?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.unwrap_or(config.log.format) {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            jid,
            password,
            admin,
        } => {
            AdminClient::new(admin.resolve()?).add_user(&jid, &password)?;
            println!("added {jid}");
        }
        UserCommand::Remove { jid, admin } => {
            AdminClient::new(admin.resolve()?).remove_user(&jid)?;
            println!("removed {jid}");
        }
        UserCommand::List { admin } => {
            for jid in AdminClient::new(admin.resolve()?).list_users()? {
                println!("{jid}");
            }
        }
    }
    Ok(())
}
