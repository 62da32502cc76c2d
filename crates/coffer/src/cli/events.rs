//! `coffer events subscribe`: Vault's event notifications as `vault events subscribe` prints
//! them, one JSON object a line, flushed as each arrives (so a pipe sees it at once).

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};

use super::client::{Global, client};

#[derive(Subcommand, Debug)]
pub(crate) enum EventsCmd {
    /// Print events as they happen, one JSON object a line: `coffer events subscribe
    /// kv-v2/data-write`, or a pattern such as `kv*`
    #[command(after_help = "The token needs `read` on sys/events/subscribe/EVENT_TYPE; the \
server sends only events on paths the token may read.\n\nExamples:\n  \
coffer events subscribe kv-v2/data-write\n  \
coffer events subscribe -timeout=30s 'kv*'")]
    Subscribe(SubscribeArgs),
}

#[derive(Args, Debug)]
pub(crate) struct SubscribeArgs {
    /// The event type; `*` matches any run of characters (`kv-v2/*`)
    pub(crate) event_type: String,
    /// Stop after this long (e.g. 30s); default: until interrupted or the server ends the stream
    #[arg(long)]
    pub(crate) timeout: Option<String>,
}

pub(crate) async fn run(g: &Global, cmd: EventsCmd) -> Result<ExitCode> {
    match cmd {
        EventsCmd::Subscribe(a) => subscribe(g, a).await,
    }
}

async fn subscribe(g: &Global, a: SubscribeArgs) -> Result<ExitCode> {
    let limit = match &a.timeout {
        Some(t) => Some(
            coffer_core::time::parse_duration(t)
                .ok_or_else(|| anyhow!("-timeout={t:?} is not a duration like 30s"))?,
        ),
        None => None,
    };
    let c = client(g)?;
    let mut stream = c.subscribe_events(&a.event_type).await?;
    let print = async {
        while let Some(event) = stream.next().await? {
            // Flushed line by line: a reader waits for each event, not for a buffer to fill.
            crate::stdio::stdout_bytes(format!("{}\n", serde_json::to_string(&event)?).as_bytes());
        }
        Ok::<_, anyhow::Error>(())
    };
    match limit {
        Some(d) => match tokio::time::timeout(d, print).await {
            Ok(r) => r?,
            Err(_) => return Ok(ExitCode::SUCCESS),
        },
        None => print.await?,
    }
    Ok(ExitCode::SUCCESS)
}
