//! MOD over bytes (`--unit bytes`, and models with different tokenizers) checked against an
//! independent brute force written here from raw llama.cpp logits: for a text `b`, every
//! token sequence that covers it (all its tokens but the last spell a proper prefix of `b`,
//! with the last it spells `b` or more) is enumerated, byte by byte, each prefix's next-token
//! logits taken from a plain llama.cpp context (cached by token path), and the distribution
//! of the next byte (or the end) summed from them in f64. Nothing of mood's byte code is used
//! (only its two defaults, tolerance and tokenizations followed, to prune as it does).
//!
//! Token probabilities are the softmax over the text tokens (non-empty `token_to_piece` with
//! special = false) and the end-of-generation tokens; control tokens get none.
//!
//! **Pruning in the brute force.** After each byte, a tokenization whose share of the text's
//! probability is below a floor is dropped (with what follows it). On the tiny fixtures the
//! floor is 1e-12 (far below anything compared); on the real models 1e-7, below what mood's
//! own rule could keep.
//!
//! **Mood's pruning.** Mood follows at most a few tokenizations and drops small ones (its
//! tolerance; `bytes.most_dropped` says how much at most at one byte). Each generation is
//! therefore checked twice: tightly (llama.cpp's batch noise only) against views pruned by
//! mood's documented rule, re-implemented here, and against the brute force within the bounds
//! that what mood says it dropped allows.

mod common;

use common::*;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use mood::pipeline::bytes::{DEFAULT_MAX_NODES, DEFAULT_TOLERANCE};

const END: usize = 256;
const OUTCOMES: usize = 257;

/// The tests of this file take turns: each keeps the machine's cores busy (llama.cpp threads
/// that wait on each other, or several `mood` processes at once), and two at a time would
/// only make both slow.
static TURNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURNS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A byte-level fixture made by models/make-fixtures.py ("spm" or "bpe").
fn fixture(kind: &str) -> PathBuf {
    let path = root().join(format!("models/fixtures/tiny-bytes-{kind}.gguf"));
    assert!(path.exists(), "{} is missing: run models/make-fixtures.py", path.display());
    path
}

/// A model's vocabulary as byte strings, written independently of mood's `ByteVocab`.
struct Vocab {
    pieces: Vec<Vec<u8>>,
    eog: Vec<bool>,
    /// Text tokens (non-empty, not an end), sorted by their bytes.
    sorted: Vec<(Vec<u8>, u32)>,
    /// Text tokens by their exact bytes.
    exact: HashMap<Vec<u8>, Vec<u32>>,
}

impl Vocab {
    fn new(model: &LlamaModel) -> Self {
        let vocab = model.vocab();
        let n = vocab.n_tokens() as u32;
        let mut pieces = Vec::with_capacity(n as usize);
        let mut eog = Vec::with_capacity(n as usize);
        for t in 0..n {
            pieces.push(vocab.token_to_piece(LlamaToken(t as i32), false, None));
            eog.push(vocab.is_eog(LlamaToken(t as i32)));
        }
        let mut sorted = Vec::new();
        let mut exact: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
        for t in 0..n {
            let p = &pieces[t as usize];
            if !p.is_empty() && !eog[t as usize] {
                sorted.push((p.clone(), t));
                exact.entry(p.clone()).or_default().push(t);
            }
        }
        sorted.sort();
        Self { pieces, eog, sorted, exact }
    }

    /// The text tokens whose bytes start with `prefix` and are longer.
    fn extending<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = &'a (Vec<u8>, u32)> + 'a {
        let start = self.sorted.partition_point(|(p, _)| p.as_slice() < prefix);
        self.sorted[start..]
            .iter()
            .take_while(move |(p, _)| p.starts_with(prefix))
            .filter(move |(p, _)| p.len() > prefix.len())
    }

    fn is_text(&self, t: usize) -> bool {
        !self.pieces[t].is_empty() && !self.eog[t]
    }
}

/// One tokenization of the start of the text: `path` (after the prompt) spells
/// `text[..end]`; `p` is its probability relative to the text's.
#[derive(Clone)]
struct Node {
    path: Vec<u32>,
    end: usize,
    p: f64,
}

/// Which tokenizations a view stops following after each byte.
#[derive(Clone, Copy)]
enum Rule {
    /// Those whose share of the text's probability is below this floor (the brute force).
    Floor(f64),
    /// Mood's documented rule (src/pipeline/bytes/view.rs): smallest share first, the dead
    /// (no mass left), then while the shares dropped at this byte add up to at most τ, then
    /// whatever exceeds the most tokenizations followed.
    Mood { tau: f64, max_nodes: usize },
}

/// A byte-level view of one model along a text: the tokenizations followed. Its
/// distributions come from a [`Reference`], which evaluates the model.
#[derive(Clone)]
struct View {
    text: Vec<u8>,
    nodes: Vec<Node>,
    rule: Rule,
    /// Per byte pushed: the share of the text's probability the rule dropped.
    dropped: Vec<f64>,
}

impl View {
    fn new(rule: Rule) -> Self {
        let root = Node { path: Vec::new(), end: 0, p: 1.0 };
        Self { text: Vec::new(), nodes: vec![root], rule, dropped: Vec::new() }
    }

    /// Mood's own pruning (its default tolerance and number of tokenizations).
    fn like_mood() -> Self {
        View::new(Rule::Mood { tau: DEFAULT_TOLERANCE, max_nodes: DEFAULT_MAX_NODES })
    }
}

/// A model evaluated in a plain llama.cpp context after a prompt: next-token probabilities
/// by token path (cached), and the brute-force byte-level distributions of views.
struct Reference<'m> {
    vocab: &'m Vocab,
    threads: i32,
    plain: Plain<'m>,
    prompt: Vec<LlamaToken>,
    /// What the plain context holds.
    held: Vec<LlamaToken>,
    /// Next-token probabilities (text tokens and ends; control tokens 0) by token path.
    cache: HashMap<Vec<u32>, Rc<Vec<f64>>>,
    /// The floor of [`Reference::exact`] views.
    floor: f64,
    /// Decode everything afresh in one batch for each path (instead of one token after the
    /// path's parent): a second way to batch, to measure llama.cpp's batch noise.
    fresh: bool,
    /// Forward passes run.
    decodes: usize,
}

impl<'m> Reference<'m> {
    /// The prompt is tokenized with BOS as the model wants. `threads`: llama.cpp threads of
    /// its context (1 for the tiny fixtures: more only wait on each other, and badly when
    /// the machine is busy).
    fn new(
        model: &'m LlamaModel,
        vocab: &'m Vocab,
        prompt: &str,
        floor: f64,
        threads: i32,
    ) -> Self {
        let prompt = model.vocab().tokenize(prompt.as_bytes(), true, false);
        Self {
            vocab,
            threads,
            plain: Plain::new(model, 512, threads),
            prompt,
            held: Vec::new(),
            cache: HashMap::new(),
            floor,
            fresh: false,
            decodes: 0,
        }
    }

    /// A brute-force view (pruned only by the floor).
    fn exact(&self) -> View {
        View::new(Rule::Floor(self.floor))
    }

    /// The next-token probabilities after `path`.
    fn probs(&mut self, path: &[u32]) -> Rc<Vec<f64>> {
        if let Some(p) = self.cache.get(path) {
            return Rc::clone(p);
        }
        let mut all = self.prompt.clone();
        all.extend(path.iter().map(|&t| LlamaToken(t as i32)));
        let mut common = self.held.iter().zip(&all).take_while(|(a, b)| a == b).count();
        common = common.min(all.len() - 1);
        if self.fresh {
            common = 0;
        }
        self.plain.truncate(common);
        let logits = self.plain.decode(&all[common..]);
        self.held = all;
        self.decodes += 1;
        let v = self.vocab;
        let counts = |t: usize| v.is_text(t) || v.eog[t];
        let max = (0..logits.len())
            .filter(|&t| counts(t))
            .map(|t| f64::from(logits[t]))
            .fold(f64::NEG_INFINITY, f64::max);
        let mut p: Vec<f64> = (0..logits.len())
            .map(|t| if counts(t) { (f64::from(logits[t]) - max).exp() } else { 0.0 })
            .collect();
        let z: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= z);
        let p = Rc::new(p);
        self.cache.insert(path.to_vec(), Rc::clone(&p));
        p
    }

    /// The distribution of the next outcome (bytes, then the end at 256) after `v`'s text,
    /// normalised: each tokenization contributes its tokens that spell the rest of the text
    /// and more (by the byte that follows), and where it spells the whole text, its ends.
    fn distribution(&mut self, v: &View) -> [f64; OUTCOMES] {
        let mut q = [0.0f64; OUTCOMES];
        let mut order: Vec<&Node> = v.nodes.iter().collect();
        order.sort_by(|a, b| a.path.cmp(&b.path));
        for n in order {
            let probs = self.probs(&n.path);
            let rest = &v.text[n.end..];
            for (piece, t) in self.vocab.extending(rest) {
                q[piece[rest.len()] as usize] += n.p * probs[*t as usize];
            }
            if rest.is_empty() {
                let eog = (0..probs.len()).filter(|&t| self.vocab.eog[t]).map(|t| probs[t]);
                q[END] += n.p * eog.sum::<f64>();
            }
        }
        let total: f64 = q.iter().sum();
        q.iter_mut().for_each(|x| *x /= total);
        q
    }

    /// Appends `byte` to `v`'s text: the tokens spelling exactly the rest of the text become
    /// new tokenizations, those that can no longer cover it go, and the view's rule drops
    /// some of the others.
    fn push(&mut self, v: &mut View, byte: u8) {
        v.text.push(byte);
        let len = v.text.len();
        let mut next = Vec::new();
        let mut masses = Vec::new();
        let mut born = Vec::new();
        let mut born_masses = Vec::new();
        for n in std::mem::take(&mut v.nodes) {
            let probs = self.probs(&n.path);
            let rest = v.text[n.end..].to_vec();
            if let Some(ts) = self.vocab.exact.get(&rest) {
                for &t in ts {
                    let p = n.p * probs[t as usize];
                    if p > 0.0 {
                        let mut path = n.path.clone();
                        path.push(t);
                        born_masses.push(p);
                        born.push(Node { path, end: len, p });
                    }
                }
            }
            let mass: f64 =
                self.vocab.extending(&rest).map(|(_, t)| n.p * probs[*t as usize]).sum();
            if mass > 0.0 {
                masses.push(mass);
                next.push(n);
            }
        }
        next.extend(born);
        masses.extend(born_masses);
        let total: f64 = masses.iter().sum();
        assert!(total > 0.0, "the text {:?} is impossible", v.text);
        let mut keep = vec![true; next.len()];
        let mut dropped = 0.0;
        match v.rule {
            Rule::Floor(floor) => {
                for (k, m) in keep.iter_mut().zip(&masses) {
                    if m / total < floor {
                        *k = false;
                        dropped += m / total;
                    }
                }
            }
            Rule::Mood { tau, max_nodes } => {
                let mut order: Vec<usize> = (0..next.len()).collect();
                order.sort_by(|&a, &b| masses[a].total_cmp(&masses[b]));
                let mut kept = next.len();
                for i in order {
                    let share = masses[i] / total;
                    if dropped + share <= tau || kept > max_nodes {
                        keep[i] = false;
                        kept -= 1;
                        dropped += share;
                    }
                }
            }
        }
        v.nodes = next
            .into_iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(mut n, _)| {
                n.p /= total;
                n
            })
            .collect();
        v.dropped.push(dropped);
    }

    /// `v`'s distributions before each byte of `text` and after the last, `v` taking them.
    fn walk(&mut self, v: &mut View, text: &[u8]) -> Vec<[f64; OUTCOMES]> {
        let mut out = Vec::new();
        for &x in text {
            out.push(self.distribution(v));
            self.push(v, x);
        }
        out.push(self.distribution(v));
        out
    }
}

/// Whether outcome `o` keeps `text` (a valid UTF-8 prefix) a valid UTF-8 prefix, or for the
/// end, a whole valid text (by std's decoder).
fn utf8_allows(text: &[u8], o: usize) -> bool {
    if o == END {
        return std::str::from_utf8(text).is_ok();
    }
    let mut t = text.to_vec();
    t.push(o as u8);
    match std::str::from_utf8(&t) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// Reverse-KL MOD over outcomes (weights summing to 1, no reference): Σ w_i·log p_i,
/// normalised over the outcomes that keep the text valid UTF-8 and that every policy finds
/// possible. Natural logs, −∞ for the others.
fn reverse_kl(text: &[u8], dists: &[[f64; OUTCOMES]], weights: &[f64]) -> [f64; OUTCOMES] {
    let mut s = [f64::NEG_INFINITY; OUTCOMES];
    for o in 0..OUTCOMES {
        if utf8_allows(text, o) && dists.iter().all(|d| d[o] > 0.0) {
            s[o] = dists.iter().zip(weights).map(|(d, w)| w * d[o].ln()).sum();
        }
    }
    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z = max + s.iter().map(|&x| (x - max).exp()).sum::<f64>().ln();
    s.iter_mut().for_each(|x| *x -= z);
    s
}

/// One generated byte of a `--logprobs` JSON output.
#[derive(Debug)]
struct Step {
    byte: usize,
    logprob: f64,
    top: Vec<(usize, f64)>,
    policies: HashMap<String, f64>,
}

fn steps(out: &Value) -> Vec<Step> {
    let num = |v: &Value| v.as_f64().unwrap_or(f64::NEG_INFINITY);
    let none = Vec::new();
    let all = match &out["logprobs"] {
        Value::Null if out["tokens"].as_array().is_some_and(|t| t.is_empty()) => &none,
        l => l.as_array().expect("logprobs"),
    };
    all.iter()
        .map(|s| Step {
            byte: s["token"].as_u64().unwrap() as usize,
            logprob: num(&s["logprob"]),
            top: s["top_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (a["token"].as_u64().unwrap() as usize, num(&a["logprob"])))
                .collect(),
            policies: s["policies"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), num(v)))
                .collect(),
        })
        .collect()
}

/// Writes a recipe of `experts` (name, model file, weight) to a fresh temporary directory.
fn recipe(tag: &str, experts: &[(&str, &Path, f64)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mood-bytes-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut toml = String::from("divergence = \"reverse-kl\"\n");
    for (name, model, weight) in experts {
        toml += &format!(
            "\n[[expert]]\nname = \"{name}\"\nmodel = \"{}\"\nweight = {weight}\n",
            model.display()
        );
    }
    let path = dir.join("recipe.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// `mood generate -r RECIPE --unit bytes --json ARGS…`, parsed.
fn generate(recipe: &Path, args: &[&str]) -> Value {
    let mut all = vec!["generate", "-r", recipe.to_str().unwrap(), "--unit", "bytes", "--json"];
    all.extend_from_slice(args);
    mood_json(&all)
}

fn bytes_of(out: &Value) -> Vec<u8> {
    tokens_of(out).iter().map(|&t| u8::try_from(t).expect("a byte")).collect()
}

/// The largest share of a policy's probability of the text that mood's pruning dropped at one
/// byte (JSON `bytes.most_dropped`).
fn most_dropped(out: &Value) -> f64 {
    out["bytes"]["most_dropped"].as_f64().expect("bytes.most_dropped")
}

/// How far a pruned byte-level view may be from the exact one. If at each byte at most `s`
/// of the text's probability is dropped (tokenizations no longer followed), the share δ of
/// the exact Q(b) held by the dropped tokenizations grows as δ' ≤ δ / p(x) + s (x the byte
/// taken, p(x) its exact probability: Q(b·x) = p(x)·Q(b) while the dropped part can only
/// shrink). The exact next-byte distribution is then the mixture (1 − δ)·kept + δ·dropped,
/// so the pruned view's probability of each outcome lies in [(p − δ)/(1 − δ), p/(1 − δ)].
/// Returns δ before each byte (δ = 0 before the first: nothing dropped yet), given `s` and
/// the exact probabilities of the bytes taken.
fn pruning_deltas(s: &[f64], chosen: &[f64]) -> Vec<f64> {
    let mut d = 0.0;
    let mut out = vec![0.0];
    for (&s, &p) in s.iter().zip(chosen) {
        d = if p > 0.0 { (d / p + s).min(1.0) } else { 1.0 };
        out.push(d);
    }
    out
}

/// Bounds on the probabilities mood may give the outcomes of one policy's next-byte
/// distribution, from the reference's `p` (whose own floor dropped a share `dr` of the exact
/// distribution: exact ∈ [(1 − dr)·p, (1 − dr)·p + dr]), mood's pruning share `dm`, and
/// llama.cpp's batch noise: every probability within a factor e^±`noise`.
#[derive(Clone)]
struct Interval {
    lo: [f64; OUTCOMES],
    hi: [f64; OUTCOMES],
}

impl Interval {
    fn new(p: &[f64; OUTCOMES], dr: f64, dm: f64, noise: f64) -> Self {
        let mut lo = [0.0; OUTCOMES];
        let mut hi = [0.0; OUTCOMES];
        if dr >= 1.0 || dm >= 1.0 {
            return Self { lo, hi: [1.0; OUTCOMES] };
        }
        for o in 0..OUTCOMES {
            let (elo, ehi) = ((1.0 - dr) * p[o], (1.0 - dr) * p[o] + dr);
            lo[o] = ((elo * (-noise).exp() - dm).max(0.0) / (1.0 - dm)).min(1.0);
            hi[o] = (ehi * noise.exp() / (1.0 - dm)).min(1.0);
        }
        Self { lo, hi }
    }

    /// Whether `p` (a probability mood printed as an f32 log-probability) lies in the bounds
    /// of `o`, up to the f32's rounding and an absolute `NOISE_FLOOR`.
    fn contains(&self, o: usize, p: f64) -> bool {
        let slack = 1e-5 * p + NOISE_FLOOR;
        self.lo[o] - slack <= p && p <= self.hi[o] + slack
    }
}

/// Bounds on reverse-KL MOD's combined probabilities (weights ≥ 0 summing to 1, no
/// reference) when each policy's probabilities lie in its interval: the combined
/// probability of `o` is N(o) / (N(o) + Σ_{o' ≠ o} N(o')) with N = Π p_k^{w_k} over the
/// outcomes UTF-8 allows, increasing in every p_k; the sum over the others is bounded above
/// both term by term and by Hölder's inequality (Σ Π p_k^{w_k} ≤ Π (Σ p_k)^{w_k}, and each
/// policy's probabilities of the others sum to at most 1 − its lower bound at `o`).
fn combined_interval(text: &[u8], policies: &[Interval], weights: &[f64]) -> Interval {
    let allowed: Vec<usize> = (0..OUTCOMES).filter(|&o| utf8_allows(text, o)).collect();
    let n = |b: &dyn Fn(&Interval) -> &[f64; OUTCOMES], o: usize| -> f64 {
        policies.iter().zip(weights).map(|(i, &w)| b(i)[o].powf(w)).product()
    };
    let n_lo: Vec<f64> = (0..OUTCOMES).map(|o| n(&|i| &i.lo, o)).collect();
    let n_hi: Vec<f64> = (0..OUTCOMES).map(|o| n(&|i| &i.hi, o)).collect();
    let (sum_lo, sum_hi): (f64, f64) =
        allowed.iter().fold((0.0, 0.0), |(a, b), &o| (a + n_lo[o], b + n_hi[o]));
    let mut out = Interval { lo: [0.0; OUTCOMES], hi: [0.0; OUTCOMES] };
    for &o in &allowed {
        let others_lo = (sum_lo - n_lo[o]).max(0.0);
        let holder: f64 = policies
            .iter()
            .zip(weights)
            .map(|(i, &w)| {
                let rest: f64 = allowed.iter().filter(|&&x| x != o).map(|&x| i.hi[x]).sum();
                rest.min(1.0 - i.lo[o]).max(0.0).powf(w)
            })
            .product();
        let others_hi = (sum_hi - n_hi[o]).min(holder);
        out.lo[o] = if n_lo[o] > 0.0 { n_lo[o] / (n_lo[o] + others_hi) } else { 0.0 };
        out.hi[o] = if n_hi[o] > 0.0 { n_hi[o] / (n_hi[o] + others_lo) } else { 0.0 };
    }
    out
}

/// An expert of a comparison: its name in the recipe, its weight, its reference.
struct Expert<'r, 'm> {
    name: &'static str,
    weight: f64,
    reference: &'r mut Reference<'m>,
}

/// What a comparison saw, for the report: the largest |Δ log p| between mood and the view
/// that prunes as mood does (policies' chosen bytes, combined top outcomes), and between
/// mood and the brute force; the largest share mood said it dropped at one byte and the one
/// the emulation of its rule dropped; the largest δ (see `pruning_deltas`).
#[derive(Debug, Default)]
struct Seen {
    policy: f64,
    combined: f64,
    policy_exact: f64,
    combined_exact: f64,
    dropped: f64,
    dropped_emulated: f64,
    delta: f64,
}

/// The combined interval's checks at one step: the probability of the outcome chosen and of
/// the top K listed lie in it, no outcome missing from the top K is surely likelier than the
/// last listed, and the outcome chosen is the argmax (greedy) up to the bounds. Returns the
/// largest |Δ log p| of the listed outcomes against `reference` (log-probabilities).
fn check_step(
    c: &Interval,
    reference: &[f64; OUTCOMES],
    chosen: (usize, f64),
    top: &[(usize, f64)],
    k: usize,
    what: &dyn Fn(usize) -> String,
) -> f64 {
    let show = |o: usize| {
        format!(
            "{}: outcome {o}, bounds {:.6}..{:.6}, reference {:.6}",
            what(o),
            c.lo[o],
            c.hi[o],
            reference[o].exp()
        )
    };
    let (x, lp) = chosen;
    assert!(c.contains(x, lp.exp()), "combined, chosen: {} in mood; {}", lp.exp(), show(x));
    let mut worst = (lp - reference[x]).abs();
    for &(o, lp) in top {
        assert!(c.contains(o, lp.exp()), "combined, listed: {} in mood; {}", lp.exp(), show(o));
        worst = worst.max((lp - reference[o]).abs());
    }
    let listed: Vec<usize> = top.iter().map(|t| t.0).collect();
    let last = top.iter().map(|t| t.1.exp()).fold(f64::INFINITY, f64::min);
    for o in (0..OUTCOMES).filter(|o| !listed.contains(o)) {
        let missing = if top.len() == k { c.lo[o] > last * (1.0 + 1e-5) } else { c.lo[o] > 0.0 };
        assert!(!missing, "not in mood's top {k}: {}", show(o));
    }
    let best = (0..OUTCOMES).map(|o| c.lo[o]).fold(0.0, f64::max);
    assert!(c.hi[x] >= best, "greedy chose {x}, not the argmax: {}", show(x));
    worst
}

/// Checks a greedy `--logprobs K` generation of mood over bytes against `experts` (those of
/// weight 0 take no part, as in mood), twice:
///
/// * tightly, against views that prune as mood's documentation says (so up to llama.cpp's
///   batch noise only): at each byte, each policy's own probability of the byte chosen; the
///   combined probability of the byte and of the top K outcomes; that no outcome missing
///   from the top K is likelier than the last listed; that the byte chosen (or the end) is
///   the combined argmax; and that `bytes.most_dropped` is what the rule dropped;
/// * against the brute force, with the bounds that what mood says it dropped allows (see
///   `pruning_deltas`): the same checks.
///
/// `noise` bounds |Δ log p| of a byte's probability between two ways of batching the same
/// tokens (mood decodes branches in a batch with other lanes; see `byte_noise`).
fn check_greedy(out: &Value, experts: &mut [Expert], k: usize, noise: f64) -> Seen {
    let text = bytes_of(out);
    let st = steps(out);
    assert_eq!(st.len(), text.len(), "one logprobs entry per byte");
    let ended = out["finish_reason"] == "eog";
    if !ended {
        assert_eq!(out["finish_reason"], "length");
    }
    let s_mood = most_dropped(out);
    let active: Vec<usize> = (0..experts.len()).filter(|&i| experts[i].weight != 0.0).collect();
    let weights: Vec<f64> = active.iter().map(|&i| experts[i].weight).collect();
    let mut seen = Seen { dropped: s_mood, ..Seen::default() };
    // Per active policy: the brute force's and the emulation's distributions before each
    // byte and after the last, and the bounds' δ.
    let (mut exact, mut emulated, mut deltas) = (Vec::new(), Vec::new(), Vec::new());
    for &i in &active {
        let r = &mut *experts[i].reference;
        let mut v = r.exact();
        let d = r.walk(&mut v, &text);
        let mut m = View::like_mood();
        emulated.push(r.walk(&mut m, &text));
        seen.dropped_emulated = m.dropped.iter().copied().fold(seen.dropped_emulated, f64::max);
        let chosen: Vec<f64> = d.iter().zip(&text).map(|(d, &x)| d[x as usize]).collect();
        let dr = pruning_deltas(&v.dropped, &chosen);
        let lower: Vec<f64> = chosen.iter().zip(&dr).map(|(p, d)| (1.0 - d) * p).collect();
        let dm = pruning_deltas(&vec![s_mood; text.len()], &lower);
        seen.delta = dm.iter().copied().fold(seen.delta, f64::max);
        exact.push(d);
        deltas.push((dr, dm));
    }
    assert!(
        (seen.dropped - seen.dropped_emulated).abs() <= 1e-2 * seen.dropped.max(1e-6),
        "mood says pruning dropped at most {:.3e} of a text's probability at one byte; its rule \
         drops {:.3e}",
        seen.dropped,
        seen.dropped_emulated
    );
    let shown = String::from_utf8_lossy(&text).into_owned();
    for j in 0..=text.len() {
        // The step choosing byte j (or, after the last byte of a text that ended, the end).
        let (x, lp, top, policies) = match st.get(j) {
            Some(s) => (s.byte, s.logprob, &s.top[..], Some(&s.policies)),
            None if ended => (END, f64::NAN, &[][..], None),
            None => break,
        };
        assert!(x == END || x == text[j] as usize);
        let mut tight = Vec::new();
        let mut loose = Vec::new();
        for (a, &i) in active.iter().enumerate() {
            let (dr, dm) = (deltas[a].0[j], deltas[a].1[j]);
            let t = Interval::new(&emulated[a][j], 0.0, 0.0, noise);
            let l = Interval::new(&exact[a][j], dr, dm, noise);
            if let Some(policies) = policies {
                let name = experts[i].name;
                let lp = *policies.get(name).unwrap_or_else(|| panic!("no logprob of {name}"));
                let what = |kind: &str, iv: &Interval, p: f64| {
                    format!(
                        "byte {j} ({x}) of {shown:?}: policy {name} gives it {} in mood, {p} {kind} \
                         (bounds {}..{}, δ {dm:.2e})",
                        lp.exp(),
                        iv.lo[x],
                        iv.hi[x]
                    )
                };
                let (pe, px) = (emulated[a][j][x], exact[a][j][x]);
                assert!(t.contains(x, lp.exp()), "{}", what("pruned as mood does", &t, pe));
                assert!(l.contains(x, lp.exp()), "{}", what("exact", &l, px));
                seen.policy = seen.policy.max((lp - pe.ln()).abs());
                seen.policy_exact = seen.policy_exact.max((lp - px.ln()).abs());
            }
            tight.push(t);
            loose.push(l);
        }
        let prefix = &text[..j];
        let what = |kind: &'static str| {
            let shown = &shown;
            move |_: usize| format!("{kind}, byte {j} of {shown:?}")
        };
        let pick = |d: &Vec<Vec<[f64; OUTCOMES]>>| -> Vec<[f64; OUTCOMES]> {
            d.iter().map(|d| d[j]).collect()
        };
        let c = combined_interval(prefix, &tight, &weights);
        let reference = reverse_kl(prefix, &pick(&emulated), &weights);
        let c_exact = combined_interval(prefix, &loose, &weights);
        let reference_exact = reverse_kl(prefix, &pick(&exact), &weights);
        if x == END {
            // The end was chosen: it is the argmax.
            for (c, kind) in [(&c, "pruned as mood does"), (&c_exact, "exact")] {
                let best = (0..OUTCOMES).map(|o| c.lo[o]).fold(0.0, f64::max);
                assert!(c.hi[END] >= best, "{kind}: ended after {shown:?}, not the argmax");
            }
            break;
        }
        let w = check_step(&c, &reference, (x, lp), top, k, &what("pruned as mood does"));
        seen.combined = seen.combined.max(w);
        let w = check_step(&c_exact, &reference_exact, (x, lp), top, k, &what("exact"));
        seen.combined_exact = seen.combined_exact.max(w);
    }
    seen
}

/// llama.cpp's batch noise at the byte level: the largest |Δ log p| (outcomes with p > 1e-6)
/// between `r`'s next-byte distributions along `texts` (each prefix's tokenizations decoded
/// one token after their parent, as `r` does) and the same computed with every tokenization
/// decoded afresh, prompt included, in one batch.
fn byte_noise(model: &LlamaModel, r: &mut Reference, prompt: &str, texts: &[Vec<u8>]) -> f64 {
    let mut fresh = Reference::new(model, r.vocab, prompt, r.floor, r.threads);
    fresh.fresh = true;
    let mut worst = 0.0f64;
    for text in texts {
        let (mut v, mut w) = (r.exact(), fresh.exact());
        for (a, b) in r.walk(&mut v, text).iter().zip(fresh.walk(&mut w, text)) {
            for (p, q) in a.iter().zip(&b) {
                if *p > 1e-6 {
                    worst = worst.max((p.ln() - q.ln()).abs());
                }
            }
        }
    }
    worst
}

/// llama.cpp's batch noise allowed on the tiny F32 fixtures: |Δ log p| of a byte's
/// probability (beyond `NOISE_FLOOR`). Measured (`byte_noise`): 6e-4 between decoding each
/// tokenization after its parent and afresh; up to 4e-4 between mood and the reference on
/// outcomes above 1e-4 (2e-3 on outcomes near 1e-7, which `NOISE_FLOOR` covers).
const FIXTURE_NOISE: f64 = 2e-3;
/// Absolute noise allowed on any probability compared.
const NOISE_FLOOR: f64 = 1e-7;
/// Reference floor on the fixtures: effectively exact.
const FIXTURE_FLOOR: f64 = 1e-12;

/// The two byte fixtures (different vocabularies over one alphabet) as experts: each alone
/// (weights 1,0 and 0,1) and mixed (0.5,0.5, reverse KL), greedy, 6 bytes, checked byte by
/// byte against the brute force (see `check_greedy`); and llama.cpp's batch noise measured.
#[test]
fn fixtures_over_bytes_match_the_brute_force_alone_and_mixed() {
    let _turn = turn();
    let (spm_path, bpe_path) = (fixture("spm"), fixture("bpe"));
    let spm = load_model(&spm_path);
    let bpe = load_model(&bpe_path);
    let (vs, vb) = (Vocab::new(&spm), Vocab::new(&bpe));
    assert_ne!(vs.pieces, vb.pieces, "the two fixtures' vocabularies differ");
    let r = recipe("fixtures", &[("spm", &spm_path, 0.5), ("bpe", &bpe_path, 0.5)]);
    let mut noise = 0.0f64;
    for prompt in ["ab", "c a", "cab"] {
        let mut texts = Vec::new();
        let mut rs = Reference::new(&spm, &vs, prompt, FIXTURE_FLOOR, 1);
        let mut rb = Reference::new(&bpe, &vb, prompt, FIXTURE_FLOOR, 1);
        for w in ["1,0", "0,1", "0.5,0.5"] {
            let out =
                generate(&r, &["-p", prompt, "-n", "6", "--logprobs", "20", "-w", w, "-t", "1"]);
            let ws: Vec<f64> = w.split(',').map(|x| x.parse().unwrap()).collect();
            let mut experts = [
                Expert { name: "spm", weight: ws[0], reference: &mut rs },
                Expert { name: "bpe", weight: ws[1], reference: &mut rb },
            ];
            let seen = check_greedy(&out, &mut experts, 20, FIXTURE_NOISE);
            texts.push(bytes_of(&out));
            eprintln!(
                "prompt {prompt:?} weights {w}: {:?} (finish {}), most_dropped {:.2e}, {seen:?}",
                out["text"],
                out["finish_reason"],
                most_dropped(&out)
            );
        }
        eprintln!("prompt {prompt:?}: {} + {} forward passes", rs.decodes, rb.decodes);
        noise = noise.max(byte_noise(&spm, &mut rs, prompt, &texts));
        noise = noise.max(byte_noise(&bpe, &mut rb, prompt, &texts));
    }
    eprintln!("byte-level noise between two batchings: {noise:.2e}");
    assert!(noise <= FIXTURE_NOISE / 2.0, "batch noise {noise:.2e} above the allowance");
}

/// Reverse KL of one model with itself (weights 0.3 and 0.7) is the model: the same greedy
/// bytes, log-probabilities and top outcomes as the model alone, over bytes.
#[test]
fn two_copies_of_one_fixture_equal_the_fixture_alone() {
    let _turn = turn();
    for kind in ["spm", "bpe"] {
        let path = fixture(kind);
        let twice = recipe(&format!("twice-{kind}"), &[("one", &path, 0.3), ("two", &path, 0.7)]);
        let alone = recipe(&format!("alone-{kind}"), &[("one", &path, 1.0)]);
        for prompt in ["ab", "c a"] {
            let args = ["-p", prompt, "-n", "8", "--logprobs", "5", "-t", "1"];
            let (a, b) = (generate(&twice, &args), generate(&alone, &args));
            let what = format!("{kind}, prompt {prompt:?}: {} vs {}", a["text"], b["text"]);
            assert_eq!(bytes_of(&a), bytes_of(&b), "{what}");
            assert_eq!(a["finish_reason"], b["finish_reason"], "{what}");
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-4 || x == y;
            for (j, (sa, sb)) in steps(&a).iter().zip(steps(&b)).enumerate() {
                assert!(close(sa.logprob, sb.logprob), "{what}: byte {j}: {sa:?} vs {sb:?}");
                for name in ["one", "two"] {
                    assert!(close(sa.policies[name], sb.policies["one"]), "{what}: byte {j}");
                }
                let outcomes = |s: &Step| s.top.iter().map(|t| t.0).collect::<Vec<_>>();
                assert_eq!(outcomes(sa), outcomes(&sb), "{what}: byte {j}");
                for (ta, tb) in sa.top.iter().zip(&sb.top) {
                    assert!(close(ta.1, tb.1), "{what}: byte {j}: {sa:?} vs {sb:?}");
                }
            }
        }
    }
}

/// The 0.999 quantile of χ² with `df` degrees of freedom (Wilson–Hilferty).
fn chi2_quantile_999(df: f64) -> f64 {
    let z = 3.090_232;
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

/// What a sampled output is, for the χ² test: its bytes while they are in the alphabet
/// {a, b, c, space}, then "#" for a first byte outside it (the rest ignored) or "$" for an
/// end before `n` bytes.
fn category(text: &[u8], ended: bool) -> String {
    let mut c = String::new();
    for &x in text {
        if b"abc ".contains(&x) {
            c.push(x as char);
        } else {
            c.push('#');
            return c;
        }
    }
    if ended {
        c.push('$');
    }
    c
}

/// The probability of each category of `n`-byte samples (see `category`) when every byte is
/// drawn from the next-byte distribution of `r`'s views pruned by `rule`, restricted to the
/// outcomes that keep the text valid UTF-8 (what mood samples from, one policy alone at
/// temperature 1).
fn category_probs(r: &mut Reference, n: usize, rule: Rule) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let mut stack = vec![(Vec::<u8>::new(), 1.0f64)];
    while let Some((s, p)) = stack.pop() {
        if s.len() == n {
            *out.entry(category(&s, false)).or_insert(0.0) += p;
            continue;
        }
        let mut v = View::new(rule);
        let d = *r.walk(&mut v, &s).last().unwrap();
        let allowed: f64 = (0..OUTCOMES).filter(|&o| utf8_allows(&s, o)).map(|o| d[o]).sum();
        let mut other = 0.0;
        for o in (0..OUTCOMES).filter(|&o| utf8_allows(&s, o)) {
            let q = p * d[o] / allowed;
            if o == END {
                *out.entry(category(&s, true)).or_insert(0.0) += q;
            } else if b"abc ".contains(&(o as u8)) {
                let mut t = s.clone();
                t.push(o as u8);
                stack.push((t, q));
            } else {
                other += q;
            }
        }
        let mut t = s.clone();
        t.push(b'#');
        *out.entry(category(&t, false)).or_insert(0.0) += other;
    }
    out
}

/// Pools categories into bins of expected count ≥ 5 (the smallest merged together), and
/// returns the bins' observed and expected counts.
fn pooled(
    observed: &HashMap<String, usize>,
    probs: &HashMap<String, f64>,
    runs: usize,
) -> Vec<(f64, f64)> {
    let mut cats: Vec<(&String, f64)> = probs.iter().map(|(c, &p)| (c, p * runs as f64)).collect();
    cats.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
    let mut bins = Vec::new();
    let (mut obs, mut exp) = (0.0, 0.0);
    for (c, e) in cats {
        obs += *observed.get(c).unwrap_or(&0) as f64;
        exp += e;
        if exp >= 5.0 {
            bins.push((obs, exp));
            (obs, exp) = (0.0, 0.0);
        }
    }
    if exp > 0.0 || obs > 0.0 {
        let last = bins.last_mut().expect("at least one bin");
        last.0 += obs;
        last.1 += exp;
    }
    bins
}

/// One fixture alone, sampled over bytes at temperature 1 with nothing truncated: the first
/// bytes of 2000 generations (one process and seed each) follow the text distribution the
/// brute force gives (χ² below its 0.999 quantile, bins of expected count ≥ 5).
#[test]
fn sampling_one_fixture_over_bytes_follows_its_text_distribution() {
    let _turn = turn();
    const RUNS: usize = 2000;
    const N: usize = 3;
    let path = fixture("spm");
    let r = recipe("sample", &[("spm", &path, 1.0)]);
    let prompt = "ab";
    let n = N.to_string();
    // Every generation on its own (a fresh process), whole distribution, each its own seed.
    let samples: Vec<(Vec<u8>, bool)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let (r, n) = (&r, &n);
                scope.spawn(move || {
                    (0..RUNS)
                        .filter(|i| i % 2 == w)
                        .map(|i| {
                            let seed = (1000 + i).to_string();
                            let mut args = vec!["-p", prompt, "-n", n, "--seed", &seed, "-t", "1"];
                            args.extend(WHOLE_DISTRIBUTION);
                            args.extend(["--repeat-penalty", "1", "--plausibility", "0"]);
                            let out = generate(r, &args);
                            (bytes_of(&out), out["finish_reason"] == "eog")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let mut observed: HashMap<String, usize> = HashMap::new();
    for (text, ended) in &samples {
        assert!(text.len() == N || *ended, "{text:?} is short but did not end");
        *observed.entry(category(text, *ended)).or_insert(0) += 1;
    }

    let model = load_model(&path);
    let vocab = Vocab::new(&model);
    let mut reference = Reference::new(&model, &vocab, prompt, FIXTURE_FLOOR, 1);
    let probs = category_probs(&mut reference, N, Rule::Floor(FIXTURE_FLOOR));
    let total: f64 = probs.values().sum();
    assert!((total - 1.0).abs() < 1e-9, "categories sum to {total}");
    for c in observed.keys() {
        assert!(probs.get(c).is_some_and(|&p| p > 0.0), "sampled {c:?}, which has no probability");
    }
    let bins = pooled(&observed, &probs, RUNS);
    let chi2: f64 = bins.iter().map(|(o, e)| (o - e).powi(2) / e).sum();
    let df = (bins.len() - 1) as f64;
    let limit = chi2_quantile_999(df);
    // What the test can tell apart: the same distribution following only the likeliest
    // tokenization of each text (a view that drops every other one).
    let likeliest = Rule::Mood { tau: 0.0, max_nodes: 1 };
    let wrong = category_probs(&mut reference, N, likeliest);
    let lambda: f64 = {
        let alt: HashMap<String, usize> =
            wrong.iter().map(|(c, &p)| (c.clone(), (p * 1e6) as usize)).collect();
        pooled(&alt, &probs, RUNS)
            .iter()
            .map(|(o, e)| (o * RUNS as f64 / 1e6 - e).powi(2) / e)
            .sum()
    };
    eprintln!(
        "χ² {chi2:.1} on {df} degrees of freedom (0.999 quantile {limit:.1}); {} categories \
         observed; following only the likeliest tokenization would add about {lambda:.0}",
        observed.len()
    );
    assert!(chi2 < limit, "χ² {chi2:.1} ≥ {limit:.1}: bins (observed, expected) {bins:?}");
}

/// Reference floor on the real models (see the module documentation).
const REAL_FLOOR: f64 = 1e-7;
/// llama.cpp's batch noise allowed on the real (quantized) models (|Δ log p| of a byte,
/// beyond `NOISE_FLOOR`). Measured: none between the two ways of batching of `byte_noise`,
/// and at most 1e-6 between mood and the reference pruned as mood does.
const REAL_NOISE: f64 = 5e-3;
const PAIR_PROMPT: &str = "The capital of France is";

/// Greedy decoding over bytes with the reference alone: at most `n` bytes, each the likeliest
/// outcome that keeps the text valid UTF-8; also returns, per byte, the gap in log-probability
/// between the best and second-best outcome.
fn reference_greedy(r: &mut Reference, n: usize) -> (Vec<u8>, bool, Vec<f64>) {
    let mut v = r.exact();
    let mut gaps = Vec::new();
    while v.text.len() < n {
        let d = r.distribution(&v);
        let mut order: Vec<usize> = (0..OUTCOMES).filter(|&o| utf8_allows(&v.text, o)).collect();
        order.sort_by(|&a, &b| d[b].total_cmp(&d[a]));
        gaps.push(d[order[0]].ln() - d[order[1]].ln());
        if order[0] == END {
            return (v.text, true, gaps);
        }
        r.push(&mut v, order[0] as u8);
    }
    (v.text, false, gaps)
}

/// The real pair of models/pair.toml (Gemma 3 270M and SmolLM2 135M Instruct, different
/// tokenizers): 20 greedy bytes mixed (0.5,0.5) and each model alone (1,0 and 0,1), each byte
/// checked against the brute force from both models' raw logits (see `check_greedy`); alone,
/// the text is the model's own greedy text over bytes, computed here. Every `mood` runs with
/// one thread: on a busy two-core machine llama.cpp's threads waiting on each other make a
/// run ten times slower.
#[test]
fn real_pair_over_bytes_matches_the_brute_force() {
    let _turn = turn();
    let pair = root().join("models/pair.toml");
    let (gemma_path, smol_path) = (default_model(), assistant_model());
    let gemma = load_model(&gemma_path);
    let smol = load_model(&smol_path);
    let (vg, vs) = (Vocab::new(&gemma), Vocab::new(&smol));
    let mut rg = Reference::new(&gemma, &vg, PAIR_PROMPT, REAL_FLOOR, 1);
    let mut rs = Reference::new(&smol, &vs, PAIR_PROMPT, REAL_FLOOR, 1);
    let n = 20;
    for w in ["0.5,0.5", "1,0", "0,1"] {
        let t = std::time::Instant::now();
        let out = mood_json(&[
            "generate",
            "-r",
            pair.to_str().unwrap(),
            "-p",
            PAIR_PROMPT,
            "-n",
            "20",
            "--json",
            "--logprobs",
            "10",
            "-w",
            w,
            "-t",
            "1",
        ]);
        let mood_s = t.elapsed();
        assert_eq!(out["unit"], "bytes", "different tokenizers are combined over bytes");
        let text = bytes_of(&out);
        let s = String::from_utf8(text.clone()).expect("valid UTF-8");
        assert_eq!(out["text"], s);
        let ws: Vec<f64> = w.split(',').map(|x| x.parse().unwrap()).collect();
        let t = std::time::Instant::now();
        let mut experts = [
            Expert { name: "gemma", weight: ws[0], reference: &mut rg },
            Expert { name: "smollm", weight: ws[1], reference: &mut rs },
        ];
        let seen = check_greedy(&out, &mut experts, 10, REAL_NOISE);
        eprintln!(
            "weights {w}: {s:?} ({}), most_dropped {:.2e}, {seen:?}; mood {mood_s:?}, \
             reference {:?} ({} + {} passes)",
            out["finish_reason"],
            most_dropped(&out),
            t.elapsed(),
            rg.decodes,
            rs.decodes
        );
        // One model alone: its own greedy text over bytes, computed independently.
        if ws.contains(&0.0) {
            let r = if ws[0] != 0.0 { &mut rg } else { &mut rs };
            let (want, ended, gaps) = reference_greedy(r, n);
            let same = text.iter().zip(&want).take_while(|(a, b)| a == b).count();
            eprintln!("  greedy over bytes alone: {:?}", String::from_utf8_lossy(&want));
            if same < text.len().max(want.len()) {
                // Texts part only where two outcomes are within the noise of each other (mood's
                // pruning could also part them where the gap is below what it dropped: none
                // does on this prompt).
                assert!(
                    gaps[same] <= 2.0 * REAL_NOISE,
                    "weights {w}: mood wrote {s:?}, greedy over bytes gives {:?} (gap {})",
                    String::from_utf8_lossy(&want),
                    gaps[same]
                );
            } else {
                assert_eq!(out["finish_reason"], if ended { "eog" } else { "length" });
            }
        }
    }
    let t = std::time::Instant::now();
    let texts = [b" Paris".to_vec()];
    let noise = byte_noise(&gemma, &mut rg, PAIR_PROMPT, &texts).max(byte_noise(
        &smol,
        &mut rs,
        PAIR_PROMPT,
        &texts,
    ));
    eprintln!("byte-level noise between two batchings: {noise:.2e} ({:?})", t.elapsed());
    assert!(noise <= REAL_NOISE / 2.0, "batch noise {noise:.2e} above the allowance");
}
