//! One function per subcommand, each a few calls into `sodp-client`.

use futures_util::stream::{select_all, StreamExt};
use serde_json::Value as Json;
use sodp_client::{Client, ClientBuilder, Source};
use tokio::sync::watch;

use crate::args::{Cli, Command};
use crate::error::CliError;
use crate::json_arg;
use crate::output;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Watch { keys, ops } => watch(&cli, keys, *ops).await,
        Command::Get { key } => get(&cli, key).await,
        Command::Set { key, json } => {
            let value = json_arg::parse("VALUE", json)?;
            call(&cli, "state.set", args(key, [("value", value)])).await
        }
        Command::Patch { key, json } => {
            let patch = json_arg::parse_object("PATCH", json)?;
            call(&cli, "state.patch", args(key, [("patch", patch)])).await
        }
        Command::SetIn { key, path, json } => {
            let value = json_arg::parse("VALUE", json)?;
            let a = args(key, [("path", Json::from(path.as_str())), ("value", value)]);
            call(&cli, "state.set_in", a).await
        }
        Command::Delete { key } => call(&cli, "state.delete", args(key, [])).await,
        Command::Presence { key, path, json } => {
            let value = json_arg::parse("VALUE", json)?;
            presence(&cli, key, path, value).await
        }
        Command::Call { method, json } => {
            let a = json_arg::parse_object("ARGS", json)?;
            call(&cli, method, a).await
        }
    }
}

fn args<const N: usize>(key: &str, rest: [(&str, Json); N]) -> Json {
    let mut map = serde_json::Map::new();
    map.insert("state".into(), key.into());
    for (k, v) in rest {
        map.insert(k.into(), v);
    }
    Json::Object(map)
}

/// A client for one-shot commands: no retries, so an unreachable server is
/// an immediate, clear error.
async fn connect_once(cli: &Cli) -> Result<Client, CliError> {
    let builder = Client::builder(&cli.url)
        .reconnect(false)
        .connect_timeout(cli.timeout())
        .call_timeout(Some(cli.timeout()));
    let client = credentials(cli, builder)?.build()?;
    client.ready().await?;
    Ok(client)
}

/// A client for long-running commands: fails fast if the server is not
/// there at the start, reconnects (with warnings on stderr) afterwards.
fn connect_lasting(
    cli: &Cli,
    on_connect: impl Fn() + Send + Sync + 'static,
) -> Result<Client, CliError> {
    let builder = Client::builder(&cli.url)
        .retry_first_connect(false)
        .connect_timeout(cli.timeout())
        .call_timeout(Some(cli.timeout()))
        .max_reconnect_delay(std::time::Duration::from_secs(5))
        .on_connect(on_connect)
        .on_error(|e| eprintln!("sodp: warning: {e}"));
    Ok(credentials(cli, builder)?.build()?)
}

/// The token (`--token`) and the CA to trust for `wss://` (`--ca-file`).
fn credentials(cli: &Cli, mut builder: ClientBuilder) -> Result<ClientBuilder, CliError> {
    if let Some(token) = &cli.token {
        builder = builder.token(token);
    }
    if let Some(path) = &cli.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| CliError::Usage(format!("--ca-file {}: {e}", path.display())))?;
        builder = builder.tls_ca_pem(pem);
    }
    Ok(builder)
}

async fn call(cli: &Cli, method: &str, args: Json) -> Result<(), CliError> {
    let client = connect_once(cli).await?;
    let data = client.call(method, args).await?;
    client.close();
    output::print_line(&data.to_json().to_string());
    Ok(())
}

async fn get(cli: &Cli, key: &str) -> Result<(), CliError> {
    let client = connect_once(cli).await?;
    let mut sub = client.subscribe(key);
    let update = sub.recv().await;
    client.close();
    match update {
        Some(u) => {
            output::print_line(&u.value.to_json().to_string());
            Ok(())
        }
        None => Err(closed_error(&client)),
    }
}

async fn watch(cli: &Cli, keys: &[String], ops: bool) -> Result<(), CliError> {
    let client = connect_lasting(cli, || {})?;
    client.ready().await?;
    let mut unique = keys.to_vec();
    unique.sort();
    unique.dedup();
    let mut updates = select_all(unique.iter().map(|k| client.subscribe(k)));
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            update = updates.next() => match update {
                Some(u) => {
                    if u.meta.source != Source::Cache && !output::print_line(&output::update_line(&u, ops)) {
                        return Ok(()); // stdout closed
                    }
                }
                None => return Err(closed_error(&client)),
            },
            _ = &mut interrupted => {
                client.close();
                return Ok(());
            }
        }
    }
}

/// Holds a presence entry until Ctrl-C, setting it again after every
/// reconnect (the server removed it when the old connection ended).
///
/// Connects are counted in a `watch` channel, so however many happen while
/// a presence call is in flight they cost one slot and one re-set.
async fn presence(cli: &Cli, key: &str, path: &str, value: Json) -> Result<(), CliError> {
    let (connected_tx, mut connected) = watch::channel(0u64);
    let client = connect_lasting(cli, move || {
        connected_tx.send_modify(|n| *n += 1);
    })?;
    client.ready().await?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut first = true;
    loop {
        tokio::select! {
            event = connected.changed() => {
                connected.borrow_and_update();
                if event.is_err() {
                    return Err(closed_error(&client));
                }
                match client.presence(key, path, &value).await {
                    Ok(version) if first => {
                        output::print_line(&format!("{{\"version\":{version}}}"));
                        first = false;
                    }
                    Ok(_) => eprintln!("sodp: presence restored after reconnect"),
                    Err(e) if first => return Err(e.into()),
                    Err(e) => eprintln!("sodp: warning: cannot restore presence: {e}"),
                }
            }
            // Stopped for good (e.g. a static token expired): nothing will
            // connect again, so say why instead of holding nothing.
            () = client.closed() => return Err(closed_error(&client)),
            _ = &mut interrupted => {
                client.close();
                client.closed().await;
                return Ok(());
            }
        }
    }
}

fn closed_error(client: &Client) -> CliError {
    match client.status() {
        sodp_client::Status::Closed(Some(e)) => e.into(),
        _ => sodp_client::Error::Closed.into(),
    }
}
