//! `vomesh`: the command line of a vomesh node (see INTERFACE.md).

use std::path::Path;
use std::process::ExitCode;

use clap::Parser as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;
use vomesh_broker::cli::{
    AdminClient, AdminTarget, CertsCommand, Cli, ClusterCommand, Command, UserCommand,
};
use vomesh_broker::commands::{self, ClientLimits};
use vomesh_broker::config::{Config, LogFormat};
use vomesh_broker::server;

/// mimalloc instead of glibc's malloc: a publish parses a VOEvent into a
/// tree of small allocations and drops it, and glibc's arenas made
/// allocation about a third of the node's CPU under publish load (its
/// arena locks contend between the runtime's threads). Figures in the
/// README's benchmark section.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Certs(CertsCommand::Init {
            out,
            nodes,
            domain,
            sans,
        }) => {
            print!("{}", commands::certs_init(&out, &nodes, &domain, &sans)?);
            Ok(())
        }
        Command::Status { json, admin } => status(json, &admin),
        Command::Cluster(command) => cluster(command),
        Command::Publish {
            account,
            node,
            files,
        } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(commands::publish(
                &account,
                &node,
                &files,
                ClientLimits::DEFAULT,
            ))?;
            Ok(())
        }
        Command::Subscribe {
            account,
            node,
            out,
            since,
        } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(commands::subscribe(
                &account,
                &node,
                out.as_deref(),
                since.as_deref(),
                ClientLimits::DEFAULT,
                shutdown_signal(),
            ))?;
            Ok(())
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
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build()?;
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

fn status(json: bool, admin: &AdminTarget) -> anyhow::Result<()> {
    let answer = AdminClient::new(admin.resolve()?).status()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&answer.json)?);
    } else {
        print!("{}", commands::render_status(&answer.status));
    }
    anyhow::ensure!(
        answer.status.ready,
        "node {} is not ready",
        answer.status.node_id
    );
    Ok(())
}

fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Add { id, addr, admin } => {
            AdminClient::new(admin.resolve()?).add_member(id, &addr)?;
            println!("node {id} at {addr} is a voting member");
        }
        ClusterCommand::Remove { id, admin } => {
            AdminClient::new(admin.resolve()?).remove_member(id)?;
            println!("removed node {id}");
        }
        ClusterCommand::TransferLeader { id, admin } => {
            AdminClient::new(admin.resolve()?).transfer_leader(id)?;
            println!("node {id} leads");
        }
    }
    Ok(())
}
