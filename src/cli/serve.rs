//! `mood serve`: wires flags to [`mood::apps::server`].

use super::wiring::{build_recipe, constraint, load_engine, model_name, session_options, settings};
use super::ServeArgs;
use anyhow::{bail, Result};
use mood::apps::chat::Chat;
use mood::apps::server::{self, Config};

pub fn run(args: ServeArgs) -> Result<()> {
    let mut recipe = build_recipe(&args.policies)?;
    if let Some(system) = &args.system {
        for p in recipe.reference.iter_mut().chain(recipe.experts.iter_mut()) {
            p.system.get_or_insert_with(|| system.clone());
        }
    }
    let mut settings = settings(args.max_tokens, &[], &args.sampling, &recipe)?;
    settings.constraint = constraint(&args.constraint)?;
    let api_key = match &args.api_key_file {
        None => args.api_key.clone(),
        Some(path) => {
            let text = mood::input::read_text(path, "API key file")?;
            let key = text.lines().next().unwrap_or_default().trim().to_string();
            if key.is_empty() {
                bail!("API key file {} is empty; put the key on its first line", path.display());
            }
            Some(key)
        }
    };
    let cors = server::Cors::new(&args.cors)?;
    let log_format: server::LogFormat = args.log_format.parse()?;
    let session = session_options(&args.run)?;
    let policies: Vec<_> = recipe.policies().cloned().collect();
    let engine = load_engine(&policies, &args.run)?;
    // Checks every policy's chat template before listening.
    Chat::new(&engine, recipe.clone(), settings.clone(), &args.template, session)?;
    let model_name = args.alias.clone().unwrap_or_else(|| model_name(&args.policies));
    let config = Config {
        host: args.host.clone(),
        port: args.port,
        parallel: usize::from(args.parallel),
        api_key,
        max_body_bytes: args.max_body_bytes as usize,
        max_queue: args.max_queue as usize,
        read_timeout: std::time::Duration::from_secs(u64::from(args.read_timeout)),
        max_connections: args.max_connections as usize,
        template: args.template.clone(),
        model_name,
        session,
        strict: args.strict,
        cors,
        log_format,
    };
    server::serve(engine, recipe, settings, config, &mut |addr| {
        eprintln!("mood serve: listening on http://{addr} (Ctrl-C or SIGTERM stops)");
    })
}
