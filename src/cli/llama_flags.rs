//! llama.cpp's spellings. llama-cli and llama-server users type multi-letter short flags
//! (`-ngl 99`, `-fa`, `-cnv`) that clap would read as single letters (`-n gl`). Before the
//! command line is parsed they are rewritten to mood's flags, accepted with a note where they
//! change nothing in mood, or refused with one line saying what mood does instead.

use std::ffi::OsString;

/// What becomes of one llama.cpp flag.
enum Meaning {
    /// The same setting under mood's name.
    Is(&'static str),
    /// Accepted and changes nothing (why), with whether it may take a value of its own.
    Ignored(&'static str, &'static [&'static str]),
    /// Refused: what mood does instead.
    Refused(&'static str),
    /// `-e`: escapes in the prompt (`\n`, `\t`, `\\`, `\"`, `\'`) are read as llama.cpp does.
    Escapes,
}

const CHAT: &str = "mood generate decodes one prompt; use `mood chat` for a conversation (or \
                    `mood serve` for the OpenAI API)";

fn meaning(flag: &str) -> Option<Meaning> {
    use Meaning::*;
    const NO_DOWNLOAD: &str = "mood never downloads models: fetch the GGUF file and give its \
                               path with -m FILE (models/fetch-default.sh fetches the default model)";
    Some(match flag {
        "-ngl" | "--gpu-layers" => Is("--n-gpu-layers"),
        "-s" => Is("--seed"),
        "-sys" => Is("--system"),
        "-fa" | "--flash-attn" => Ignored(
            "llama.cpp turns flash attention on where it helps (its default, auto)",
            &["on", "off", "auto", "1", "0"],
        ),
        "-no-cnv" | "--no-conversation" => {
            Ignored("mood generate never starts a conversation", &[])
        }
        "-e" | "--escape" => Escapes,
        "-hf" | "-hfr" | "--hf-repo" | "-hff" | "--hf-file" | "-mu" | "--model-url" => {
            Refused(NO_DOWNLOAD)
        }
        "-cnv" | "--conversation" | "--interactive" | "--interactive-first" => Refused(CHAT),
        _ => return None,
    })
}

/// llama.cpp's interactive flags that are mood flags elsewhere (`batch -i` is `--input`):
/// refused only by `generate`.
const INTERACTIVE: [&str; 2] = ["-i", "-if"];

/// Flags of mood whose value is text that may itself look like a flag: never rewritten.
const TEXT_VALUED: [&str; 12] = [
    "-p",
    "--prompt",
    "--prefix",
    "--system",
    "--system-prompt",
    "--stop",
    "--reverse-prompt",
    "--grammar",
    "--json-schema",
    "--alias",
    "--api-key",
    "--chat-template",
];

/// The command line with llama.cpp's flags rewritten, and the notes to print; or the line
/// that refuses a flag.
pub fn rewrite(args: Vec<OsString>) -> Result<(Vec<OsString>, Vec<String>), String> {
    let command = args.iter().skip(1).filter_map(|a| a.to_str()).find(|a| !a.starts_with('-'));
    let generating = command == Some("generate");
    let mut out = Vec::with_capacity(args.len());
    let mut notes = Vec::new();
    let mut escapes = false;
    let mut iter = args.into_iter().peekable();
    let mut value_next = false;
    while let Some(arg) = iter.next() {
        let text = arg.to_str().map(str::to_string);
        if value_next || text.as_deref() == Some("--") {
            value_next = false;
            if text.as_deref() == Some("--") {
                out.push(arg);
                out.extend(iter);
                break;
            }
            out.push(arg);
            continue;
        }
        let Some(flag) = text else {
            out.push(arg);
            continue;
        };
        value_next = TEXT_VALUED.contains(&flag.as_str());
        if generating && INTERACTIVE.contains(&flag.as_str()) {
            return Err(format!("{flag}: {}", CHAT));
        }
        match meaning(&flag) {
            None => out.push(flag.into()),
            Some(Meaning::Is(ours)) => out.push(ours.into()),
            Some(Meaning::Ignored(why, values)) => {
                if iter.peek().and_then(|v| v.to_str()).is_some_and(|v| values.contains(&v)) {
                    iter.next();
                }
                notes.push(format!("{flag} is accepted and changes nothing: {why}"));
            }
            Some(Meaning::Refused(instead)) => return Err(format!("{flag}: {instead}")),
            Some(Meaning::Escapes) => escapes = true,
        }
    }
    if escapes {
        for i in 1..out.len() {
            let is_prompt = matches!(out[i - 1].to_str(), Some("-p" | "--prompt"));
            if let (true, Some(p)) = (is_prompt, out[i].to_str()) {
                out[i] = unescape(p).into();
            }
        }
    }
    Ok((out, notes))
}

/// llama.cpp's `-e`: `\n`, `\t`, `\r`, `\\`, `\"`, `\'` in the prompt become what they name.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(c @ ('\\' | '"' | '\'')) => out.push(c),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<(Vec<String>, Vec<String>), String> {
        let args = args.iter().map(OsString::from).collect();
        rewrite(args).map(|(a, n)| (a.into_iter().map(|s| s.into_string().unwrap()).collect(), n))
    }

    #[test]
    fn llama_cpp_flags_become_moods() {
        let (a, n) =
            run(&["mood", "generate", "-ngl", "99", "-s", "42", "-fa", "on", "-p", "-s"]).unwrap();
        assert_eq!(a, ["mood", "generate", "--n-gpu-layers", "99", "--seed", "42", "-p", "-s"]);
        assert_eq!(n.len(), 1);
        assert!(n[0].starts_with("-fa is accepted"));
        let (a, _) = run(&["mood", "chat", "-sys", "Be brief.", "--", "-ngl"]).unwrap();
        assert_eq!(a, ["mood", "chat", "--system", "Be brief.", "--", "-ngl"]);
        let (a, _) = run(&["mood", "generate", "-e", "-p", "a\\nb\\t\\\\c\\q"]).unwrap();
        assert_eq!(a, ["mood", "generate", "-p", "a\nb\t\\c\\q"]);
        assert!(run(&["mood", "generate", "-hf", "org/model"])
            .unwrap_err()
            .contains("never downloads"));
        assert!(run(&["mood", "generate", "-cnv"]).unwrap_err().contains("mood chat"));
        assert!(run(&["mood", "generate", "-m", "x", "-i"]).unwrap_err().contains("mood chat"));
        // `-i` is mood's --input elsewhere.
        let (a, _) = run(&["mood", "batch", "-i", "in.jsonl", "-o", "out.jsonl"]).unwrap();
        assert_eq!(a, ["mood", "batch", "-i", "in.jsonl", "-o", "out.jsonl"]);
        // Text values are never taken for flags.
        let (a, _) = run(&["mood", "generate", "--stop", "-cnv", "--prefix", "-hf"]).unwrap();
        assert_eq!(a, ["mood", "generate", "--stop", "-cnv", "--prefix", "-hf"]);
    }
}
