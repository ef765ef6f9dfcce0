//! The byte-level view of one token-level policy: the distribution of the next byte of the
//! text (or of its end) that the policy's distribution over token sequences implies.
//!
//! For a text `b` so far, `Q(b)` is the probability that the policy's output starts with `b`:
//! the sum, over every token sequence that *covers* `b` — all its tokens but the last spell a
//! proper prefix of `b`, and with the last it spells `b` or more — of the sequence's
//! probability. Non-canonical tokenizations count: the model gives them mass. The next byte
//! `x` then has probability `Q(b·x) / Q(b)`, and the end of text has the probability of the
//! sequences that spell exactly `b` and then end generation, over `Q(b)`.
//!
//! The view keeps the tokenizations of `b` that can still cover what follows as *nodes*: a
//! token sequence spelling `b[..end]`, its probability, and (once the policy has been run on
//! it) its next-token distribution. A node contributes to the next byte `x` the mass of its
//! tokens that spell `b[end..]·x` and more; a node that ends exactly at `b` also contributes
//! its end-of-generation mass. Tokens that spell exactly `b[end..]` become new nodes, which
//! the policy must be run on ([`ByteView::wanted`]) before the next byte's distribution.
//!
//! **Pruning.** Each node carries exactly the probability of the covering sequences below
//! it, so dropping a node removes a known share of `Q(b)`. After each byte the smallest
//! nodes are dropped while the shares dropped at that byte add up to at most the tolerance
//! τ; with τ = 0 nothing is dropped and the distribution is exact. The share a dropped
//! tokenization would have had later is not bounded: it is the approximation every
//! byte-level sampler makes, and tokenizations other than the tokenizer's own usually carry
//! little mass.

use super::vocab::ByteVocab;
use super::{END, OUTCOMES};
use crate::pipeline::combine::{exp_f32, max_f32};
use std::ops::Range;
use std::sync::Arc;

/// Runs of at most this many tokens are summed directly (a difference of running sums
/// would lose the small masses to rounding).
const DIRECT_SUM: usize = 64;

/// Identifies a node of a [`ByteView`] for as long as it lives.
pub type NodeId = u64;

/// A policy's next-token distribution after a node, over the text tokens (by rank) and the
/// end of generation, normalised over them: control tokens never produce text.
struct NextToken {
    prob: Vec<f32>,
    /// `cum[r]` = Σ of `prob` below rank `r`, in f64.
    cum: Vec<f64>,
    end: f64,
}

impl NextToken {
    fn new(vocab: &ByteVocab, logits: &[f32]) -> Self {
        let logit = |t: u32| logits.get(t as usize).copied().unwrap_or(f32::NEG_INFINITY);
        // One gather into rank order; then the softmax over the text tokens and the end of
        // generation (a model's vocabulary of 262k tokens makes this the host's main cost
        // per tokenization, so the exponentials are the vectorised ones).
        let mut prob: Vec<f32> = (0..vocab.n_text()).map(|r| logit(vocab.token_at(r))).collect();
        let mut eog: Vec<f32> = vocab.eog().iter().map(|&t| logit(t)).collect();
        let max = max_f32(&prob).max(max_f32(&eog));
        if !max.is_finite() {
            // Nothing possible (or a NaN): every probability 0.
            let cum = vec![0.0; prob.len() + 1];
            prob.fill(0.0);
            return Self { prob, cum, end: 0.0 };
        }
        let weights = |x: &mut [f32]| -> f64 {
            let mut total = 0.0f64;
            for chunk in x.chunks_mut(256) {
                let mut sum = 0.0f32;
                for v in chunk.iter_mut() {
                    let d = *v - max;
                    // Below e^-87 (and for −∞) the weight is 0, as f32 would round it.
                    *v = if d > -87.0 { exp_f32(d) } else { 0.0 };
                    sum += *v;
                }
                total += f64::from(sum);
            }
            total
        };
        let (text_total, eog_total) = (weights(&mut prob), weights(&mut eog));
        let scale = 1.0 / (text_total + eog_total);
        let mut cum = Vec::with_capacity(prob.len() + 1);
        let mut acc = 0.0f64;
        cum.push(0.0);
        for p in prob.iter_mut() {
            let scaled = f64::from(*p) * scale;
            *p = scaled as f32;
            acc += scaled;
            cum.push(acc);
        }
        Self { prob, cum, end: eog_total * scale }
    }

    /// The mass of the tokens of ranks `run`.
    fn mass(&self, run: Range<usize>) -> f64 {
        if run.len() <= DIRECT_SUM {
            self.prob[run].iter().map(|&p| f64::from(p)).sum()
        } else {
            (self.cum[run.end] - self.cum[run.start]).max(0.0)
        }
    }
}

/// One tokenization of the start of the text.
struct Node {
    id: NodeId,
    /// The tokens generated, from the end of the prompt.
    tokens: Vec<u32>,
    /// They spell `text[..end]`.
    end: usize,
    /// log of their probability, relative to the text's (see [`ByteView::advance`]).
    logp: f64,
    /// The policy's next-token distribution after them, once supplied.
    next: Option<Box<NextToken>>,
}

/// A node the policy must be run on: the prompt, then `tokens`; its next-token logits go to
/// [`ByteView::supply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub id: NodeId,
    pub tokens: Vec<u32>,
}

/// The text is impossible for the policy: every tokenization of it has probability 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Impossible;

/// The byte-level view of one policy (see the module documentation).
pub struct ByteView {
    vocab: Arc<ByteVocab>,
    text: Vec<u8>,
    nodes: Vec<Node>,
    next_id: NodeId,
    tolerance: f64,
    max_nodes: usize,
    /// Nodes dropped since [`ByteView::take_released`] was last called.
    released: Vec<NodeId>,
}

impl ByteView {
    /// A view at the start of the continuation (the prompt's end is node 0, to be run first).
    /// `tolerance` is τ of the module documentation; at most `max_nodes` tokenizations are
    /// followed (the smallest are dropped beyond, whatever τ).
    pub fn new(vocab: Arc<ByteVocab>, tolerance: f64, max_nodes: usize) -> Self {
        let root = Node { id: 0, tokens: Vec::new(), end: 0, logp: 0.0, next: None };
        Self {
            vocab,
            text: Vec::new(),
            nodes: vec![root],
            next_id: 1,
            tolerance,
            max_nodes: max_nodes.max(1),
            released: Vec::new(),
        }
    }

    /// The bytes chosen so far.
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// The tokenizations followed.
    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The vocabulary.
    pub fn vocab(&self) -> &ByteVocab {
        &self.vocab
    }

    /// The nodes the policy must be run on before [`ByteView::distribution`].
    pub fn wanted(&self) -> Vec<Wanted> {
        let pending = self.nodes.iter().filter(|n| n.next.is_none());
        pending.map(|n| Wanted { id: n.id, tokens: n.tokens.clone() }).collect()
    }

    /// Hands over the policy's next-token logits after node `id` (ignored for a node that
    /// no longer lives).
    pub fn supply(&mut self, id: NodeId, logits: &[f32]) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.id == id) {
            n.next = Some(Box::new(NextToken::new(&self.vocab, logits)));
        }
    }

    /// The nodes dropped since the last call (whatever ran the policy on them may forget
    /// them).
    pub fn take_released(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.released)
    }

    /// Writes the natural log of each outcome's probability (bytes 0..=255, then the end of
    /// text at [`END`]) to `out`. Nodes not yet supplied count as absent.
    pub fn distribution(&self, out: &mut [f64; OUTCOMES]) {
        let mut q = [0.0f64; OUTCOMES];
        for n in &self.nodes {
            let Some(next) = &n.next else { continue };
            let p = n.logp.exp();
            let rest = &self.text[n.end..];
            let run = self.vocab.starting_with(rest);
            self.vocab.by_next_byte(rest, run, |x, r| q[x as usize] += p * next.mass(r));
            if rest.is_empty() {
                q[END] += p * next.end;
            }
        }
        let total: f64 = q.iter().sum();
        for (o, &m) in out.iter_mut().zip(&q) {
            *o = if m > 0.0 && total > 0.0 { (m / total).ln() } else { f64::NEG_INFINITY };
        }
    }

    /// Appends `byte` to the text: makes the tokens that now end exactly at the text's end
    /// new nodes (to be run), drops the nodes that can no longer cover it, then prunes (see
    /// the module documentation). Returns the share of the text's probability dropped by
    /// pruning. Nodes must all have been supplied.
    pub fn advance(&mut self, byte: u8) -> Result<f64, Impossible> {
        self.text.push(byte);
        let len = self.text.len();
        let mut born = Vec::new();
        // Each node's share of Q(text): the tokens extending past the end, for the old
        // nodes; the node's own probability for the new ones (everything after it covers).
        let mut mass = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            let next = n.next.as_ref().expect("every node supplied before advancing");
            let rest = &self.text[n.end..];
            let run = self.vocab.starting_with(rest);
            let equal = self.vocab.equal_to(rest);
            for r in equal.clone() {
                let p = next.prob[r];
                if p > 0.0 {
                    let mut tokens = Vec::with_capacity(n.tokens.len() + 1);
                    tokens.extend_from_slice(&n.tokens);
                    tokens.push(self.vocab.token_at(r));
                    let logp = n.logp + f64::from(p).ln();
                    born.push(Node { id: 0, tokens, end: len, logp, next: None });
                }
            }
            mass.push(n.logp.exp() * next.mass(equal.end..run.end));
        }
        for mut b in born {
            b.id = self.next_id;
            self.next_id += 1;
            mass.push(b.logp.exp());
            self.nodes.push(b);
        }
        let total: f64 = mass.iter().sum();
        if total.is_nan() || total <= 0.0 {
            self.text.pop();
            return Err(Impossible);
        }
        // Smallest first: drop the dead (no mass), then while the shares dropped stay within
        // τ, then whatever exceeds the most nodes followed.
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        order.sort_by(|&a, &b| mass[a].total_cmp(&mass[b]));
        let mut keep = vec![true; self.nodes.len()];
        let mut dropped = 0.0;
        let mut kept = self.nodes.len();
        for &i in &order {
            let share = mass[i] / total;
            let dead = mass[i] == 0.0;
            if dead || dropped + share <= self.tolerance || kept > self.max_nodes {
                keep[i] = false;
                kept -= 1;
                if !dead {
                    dropped += share;
                }
            }
        }
        let scale = total.ln();
        let mut i = 0;
        self.nodes.retain_mut(|n| {
            let k = keep[i];
            i += 1;
            if k {
                n.logp -= scale;
            } else if n.next.is_some() {
                self.released.push(n.id);
            }
            k
        });
        Ok(dropped)
    }
}
