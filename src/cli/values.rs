//! Flag values that clap parses into types: a strategy, a unit, a list of strategies, a list of
//! counts, a shard, a number of alternatives. A bad value is clap's usage error (exit 2)
//! naming the flag.

use mood::apps::shard::Shard;
use mood::pipeline::bytes::Unit;
use mood::pipeline::engine::Strategy;
use mood::pipeline::logprobs::MAX_TOP_LOGPROBS;

pub fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.trim().parse().map_err(|e: anyhow::Error| e.to_string())
}

pub fn parse_unit(s: &str) -> Result<Unit, String> {
    Unit::parse(s.trim()).ok_or_else(|| format!("unknown unit '{s}': use tokens, bytes or auto"))
}

pub fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse().map_err(|e: anyhow::Error| e.to_string())
}

pub fn parse_top_logprobs(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n <= MAX_TOP_LOGPROBS => Ok(n),
        _ => Err(format!("must be a whole number from 0 to {MAX_TOP_LOGPROBS}")),
    }
}

/// Positive counts, comma-separated; an empty value is an empty list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts(pub Vec<usize>);

pub fn parse_counts(s: &str) -> Result<Counts, String> {
    s.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| part.trim().parse::<usize>().ok().filter(|&k| k > 0))
        .collect::<Option<Vec<_>>>()
        .map(Counts)
        .ok_or_else(|| "takes positive whole numbers, comma-separated (e.g. 1,2,4)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_or_say_what_they_take() {
        assert_eq!(parse_counts("1, 2,4").unwrap(), Counts(vec![1, 2, 4]));
        assert_eq!(parse_counts("").unwrap(), Counts(vec![]));
        for bad in ["0", "-1", "x", "1,,y"] {
            assert!(parse_counts(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_strategy(" mixed").unwrap(), Strategy::Mixed);
        assert!(parse_strategy("fast").unwrap_err().contains("auto, threads"));
        assert_eq!(parse_top_logprobs("20").unwrap(), 20);
        assert!(parse_top_logprobs("21").unwrap_err().contains("0 to 20"));
        assert!(parse_shard("2/3").is_ok() && parse_shard("4/3").is_err());
    }
}
