//! `mood serve`: wires flags to [`mood::apps::server`].

use super::wiring::{build_recipe, load_engine, session_options, settings};
use super::ServeArgs;
use anyhow::Result;
use mood::apps::chat::Chat;
use mood::apps::server::{self, Config};

pub fn run(args: ServeArgs) -> Result<()> {
    let recipe = build_recipe(&args.policies)?;
    let settings = settings(args.max_tokens, &[], &args.sampling)?;
    let session = session_options(&args.run)?;
    let engine = load_engine(&recipe, &args.run)?;
    // Checks every policy's chat template before listening.
    Chat::new(&engine, recipe.clone(), settings.clone(), &args.template, session)?;
    let model_name = args
        .policies
        .recipe
        .as_ref()
        .or(args.policies.model.as_ref())
        .and_then(|p| p.file_stem())
        .map_or_else(|| "mood".to_string(), |s| format!("mood-{}", s.to_string_lossy()));
    let config = Config {
        host: args.host.clone(),
        port: args.port,
        parallel: usize::from(args.parallel),
        api_key: args.api_key.clone(),
        max_body_bytes: args.max_body_bytes as usize,
        max_queue: args.max_queue as usize,
        read_timeout: std::time::Duration::from_secs(u64::from(args.read_timeout)),
        max_connections: args.max_connections as usize,
        template: args.template.clone(),
        model_name,
        session,
    };
    server::serve(engine, recipe, settings, config, &mut |addr| {
        eprintln!("mood serve: listening on http://{addr} (Ctrl-C or SIGTERM stops)");
    })
}
