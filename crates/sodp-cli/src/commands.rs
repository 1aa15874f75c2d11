//! One function per subcommand, each a few calls into `sodp-client`.

use futures_util::stream::{select_all, StreamExt};
use serde_json::Value as Json;
use sodp_client::{Client, ClientBuilder, Error, Source, Value, WatchOptions, WriteOptions};
use tokio::sync::watch;

use crate::args::{Cli, Command, ConditionFlags, WriteFlags};
use crate::error::CliError;
use crate::json_arg;
use crate::output;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Watch { keys, ops, params } => {
            let params = params
                .as_deref()
                .map(|p| json_arg::parse("PARAMS", p))
                .transpose()?;
            watch(&cli, keys, *ops, params.map(Value::from)).await
        }
        Command::Get { key, meta } => get(&cli, key, *meta).await,
        Command::Set { key, json, write } => {
            let value = json_arg::parse("VALUE", json)?;
            let client = connect_once(&cli).await?;
            let version = client.set_with(key, &value, options(write)).await;
            print_version(&client, version)
        }
        Command::Patch { key, json, write } => {
            let patch = json_arg::parse_object("PATCH", json)?;
            let client = connect_once(&cli).await?;
            let version = client.patch_with(key, &patch, options(write)).await;
            print_version(&client, version)
        }
        Command::SetIn {
            key,
            path,
            json,
            write,
        } => {
            let value = json_arg::parse("VALUE", json)?;
            let client = connect_once(&cli).await?;
            let version = client.set_in_with(key, path, &value, options(write)).await;
            print_version(&client, version)
        }
        Command::Delete { key, condition } => {
            let client = connect_once(&cli).await?;
            let opts = condition_options(condition, WriteOptions::new());
            let version = client.delete_with(key, opts).await;
            print_version(&client, version)
        }
        Command::Presence { key, path, json } => {
            let value = json_arg::parse("VALUE", json)?;
            presence(&cli, key, path, value).await
        }
        Command::Keys {
            prefix,
            limit,
            after,
        } => keys(&cli, prefix.as_deref(), *limit, after.as_deref()).await,
        Command::History { key, since, limit } => history(&cli, key, *since, *limit).await,
        Command::Tx {
            json,
            idempotency_key,
        } => tx(&cli, json, idempotency_key.as_deref()).await,
        Command::Call { method, json } => {
            let a = json_arg::parse_object("ARGS", json)?;
            call(&cli, method, a).await
        }
    }
}

fn options(flags: &WriteFlags) -> WriteOptions {
    let mut opts = WriteOptions::new();
    if let Some(ttl) = flags.ttl {
        opts = opts.ttl(ttl);
    }
    condition_options(&flags.condition, opts)
}

fn condition_options(flags: &ConditionFlags, mut opts: WriteOptions) -> WriteOptions {
    if let Some(v) = flags.if_version {
        opts = opts.if_version(v);
    }
    if let Some(k) = &flags.idempotency_key {
        opts = opts.idempotency_key(k.clone());
    }
    opts
}

/// Prints a write's `{"version":N}` (the RESULT data of every write).
fn print_version(client: &Client, version: sodp_client::Result<u64>) -> Result<(), CliError> {
    client.close();
    output::print_line(&format!("{{\"version\":{}}}", version?));
    Ok(())
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

/// `state.get` when the server has one-shot reads, else the first update
/// of a watch (what servers without the extension offer).
async fn get(cli: &Cli, key: &str, meta: bool) -> Result<(), CliError> {
    let client = connect_once(cli).await?;
    let (value, version, initialized) = if client.supports("read") {
        let got = client.fetch(key).await;
        client.close();
        let got = got?;
        (got.value, got.version, got.initialized)
    } else {
        let mut sub = client.subscribe(key);
        let update = sub.recv().await;
        client.close();
        let u = update.ok_or_else(|| closed_error(&client))?;
        (u.value, u.meta.version, u.meta.initialized)
    };
    let line = if meta {
        output::meta_line(version, initialized, &value)
    } else {
        value.to_json().to_string()
    };
    output::print_line(&line);
    Ok(())
}

/// Pages through `state.keys`, printing each key on its own line.
async fn keys(
    cli: &Cli,
    prefix: Option<&str>,
    limit: Option<u64>,
    after: Option<&str>,
) -> Result<(), CliError> {
    let client = connect_once(cli).await?;
    let mut after = after.map(str::to_owned);
    let mut left = limit.unwrap_or(u64::MAX);
    while left > 0 {
        let page_size = u32::try_from(left.min(1000)).unwrap_or(1000);
        let page = client
            .keys(prefix, after.as_deref(), Some(page_size))
            .await?;
        for key in page
            .keys
            .iter()
            .take(usize::try_from(left).unwrap_or(usize::MAX))
        {
            if !output::print_line(key) {
                return Ok(());
            }
            left -= 1;
        }
        match page.next {
            Some(next) if next.as_str() > after.as_deref().unwrap_or("") => after = Some(next),
            _ => break,
        }
    }
    client.close();
    Ok(())
}

/// Pages through `state.history`, printing one change per line.
async fn history(
    cli: &Cli,
    key: &str,
    since: Option<u64>,
    limit: Option<u64>,
) -> Result<(), CliError> {
    let client = connect_once(cli).await?;
    let mut since = since;
    let mut left = limit.unwrap_or(u64::MAX);
    let mut first = true;
    while left > 0 {
        let page_size = u32::try_from(left.min(1000)).unwrap_or(1000);
        let page = client.history(key, since, Some(page_size)).await?;
        if first && !page.complete {
            eprintln!("sodp: note: older changes of {key} are no longer retained");
        }
        first = false;
        let Some(last) = page.entries.last().map(|e| e.version) else {
            break;
        };
        for entry in &page.entries {
            if !output::print_line(&output::history_line(entry)) {
                return Ok(());
            }
            left -= 1;
        }
        if since.is_some_and(|s| last <= s) {
            break; // no progress: the server repeats itself
        }
        since = Some(last);
    }
    client.close();
    Ok(())
}

/// `state.transaction` from a JSON array of `{method, args}` ops.
async fn tx(cli: &Cli, json: &str, idempotency_key: Option<&str>) -> Result<(), CliError> {
    let ops = json_arg::parse("OPS", json)?;
    let Some(ops) = ops.as_array() else {
        return Err(CliError::Usage(
            "OPS must be a JSON array of {\"method\", \"args\"} objects".into(),
        ));
    };
    let client = connect_once(cli).await?;
    let mut transaction = client.transaction();
    for (i, op) in ops.iter().enumerate() {
        let (Some(method), Some(args)) = (op["method"].as_str(), op.get("args")) else {
            client.close();
            return Err(CliError::Usage(format!(
                "op {i} of OPS needs a \"method\" string and an \"args\" object"
            )));
        };
        transaction = transaction.op(method, args.clone());
    }
    if let Some(k) = idempotency_key {
        transaction = transaction.idempotency_key(k);
    }
    let version = transaction.commit().await;
    print_version(&client, version)
}

async fn watch(
    cli: &Cli,
    keys: &[String],
    ops: bool,
    params: Option<Value>,
) -> Result<(), CliError> {
    let client = connect_lasting(cli, || {})?;
    client.ready().await?;
    if keys.iter().any(|k| k.contains('*')) && !client.supports("prefix_watch") {
        client.close();
        return Err(Error::Unsupported("prefix_watch".into()).into());
    }
    let mut unique = keys.to_vec();
    unique.sort();
    unique.dedup();
    let options = WatchOptions { params };
    let mut updates = select_all(
        unique
            .iter()
            .map(|k| client.subscribe_with(k, options.clone())),
    );
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
