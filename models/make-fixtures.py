#!/usr/bin/env python3
"""Makes the small GGUF test models in models/fixtures/ (git-ignored, made again by set-up).

tiny-a.gguf and tiny-b.gguf are two 1-layer llama-architecture models with random weights
and a 300-token SentencePiece-style vocabulary (3 control tokens, 256 byte tokens, 41 words).
They are identical except for the text of one word token, TOKEN_DIFF, so that combining them
must fail the vocabulary check with a message naming that token. Against the default model
they differ in vocabulary size. tiny-c.gguf is tiny-a.gguf declaring a final logit
soft-capping (its logits are then not linear in the hidden state, which output mixing must
notice). tiny-cycle.gguf continues short cycles of words (see write_cycle).
tiny-bytes-spm.gguf and tiny-bytes-bpe.gguf are two models with different vocabularies over the
same small alphabet {a, b, c, space}, for MOD over bytes (see write_bytes_models).
Usage: models/make-fixtures.py [OUT_DIR]
"""

import os
import sys

import numpy as np
import gguf

from llama_gguf import bpe_llama_writer, bpe_vocabulary, llama_writer, spm_vocabulary

TOKEN_DIFF = 290
N_EMBD, N_FF, N_HEAD, N_CTX = 64, 128, 4, 512
WORDS = [
    "▁the", "▁a", "▁cat", "▁dog", "▁sat", "▁on", "▁mat", "▁and", "▁ran", "▁far", "▁away",
    "▁hello", "▁world", "▁good", "▁bad", "▁day", "▁night", "▁sun", "▁moon", "▁star", "▁sky",
    "▁blue", "▁red", "▁green", "▁big", "▁small", "▁old", "▁new", "▁is", "▁was", "▁it",
    "▁he", "▁she", "▁we", "▁they", "▁up", "▁down", "▁in", "▁out", "▁yes", "▁no",
]


def vocabulary(variant):
    words = list(WORDS)
    variant = "a" if variant == "c" else variant
    if variant == "b":
        words[TOKEN_DIFF - 259] = "▁different"
    return spm_vocabulary(words)


def write(path, variant):
    vocab = vocabulary(variant)
    n_vocab = len(vocab[0])
    rng = np.random.default_rng(1234)
    w = llama_writer(
        path,
        f"mood-tiny-{variant}",
        vocab,
        n_ctx=N_CTX,
        n_embd=N_EMBD,
        n_layer=1,
        n_ff=N_FF,
        n_head=N_HEAD,
        file_type=gguf.LlamaFileType.ALL_F32,
    )

    if variant == "c":
        w.add_float32("llama.final_logit_softcapping", 30.0)

    def t(name, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * 0.2).astype(np.float32))

    t("token_embd.weight", n_vocab, N_EMBD)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    t("output.weight", n_vocab, N_EMBD)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        t(f"blk.0.{name}.weight", N_EMBD, N_EMBD)
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    t("blk.0.ffn_gate.weight", N_FF, N_EMBD)
    t("blk.0.ffn_up.weight", N_FF, N_EMBD)
    t("blk.0.ffn_down.weight", N_EMBD, N_FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


CYCLE = 5


def write_cycle(path):
    """tiny-cycle.gguf: tiny-a's vocabulary and shapes, with weights that make it continue
    short cycles of words: word k is followed, most likely, by the next word of its group of
    CYCLE ("the" → "a" → "cat" → "dog" → "sat" → "the" …). The token embedding dominates the
    hidden state (attention and feed-forward outputs are small), and the output matrix holds
    each token's predecessor's normalised embedding, so greedy text repeats itself: what
    speculative decoding by prompt lookup needs to be tested on a model without batch noise.
    Not deterministic text either: at temperature 1 other tokens come now and then."""
    vocab = vocabulary("a")
    n_vocab = len(vocab[0])
    rng = np.random.default_rng(4321)
    w = llama_writer(
        path,
        "mood-tiny-cycle",
        vocab,
        n_ctx=N_CTX,
        n_embd=N_EMBD,
        n_layer=1,
        n_ff=N_FF,
        n_head=N_HEAD,
        file_type=gguf.LlamaFileType.ALL_F32,
    )
    embd = (rng.standard_normal((n_vocab, N_EMBD)) * 0.2).astype(np.float32)
    unit = embd / np.sqrt((embd**2).mean(axis=1, keepdims=True))  # as RMS norm leaves it
    output = (rng.standard_normal((n_vocab, N_EMBD)) * 0.05).astype(np.float32)
    first_word = n_vocab - len(WORDS)
    for k in range(len(WORDS)):
        group = k - k % CYCLE
        size = min(CYCLE, len(WORDS) - group)
        successor = group + (k - group + 1) % size
        output[first_word + successor] = unit[first_word + k] * (9.0 / N_EMBD)
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    w.add_tensor("output.weight", output)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))

    def t(name, scale, *shape):
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    for name in ("attn_q", "attn_k", "attn_v"):
        t(f"blk.0.{name}.weight", 0.2, N_EMBD, N_EMBD)
    t("blk.0.attn_output.weight", 0.002, N_EMBD, N_EMBD)
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    t("blk.0.ffn_gate.weight", 0.2, N_FF, N_EMBD)
    t("blk.0.ffn_up.weight", 0.2, N_FF, N_EMBD)
    t("blk.0.ffn_down.weight", 0.002, N_EMBD, N_FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# The pieces of the two byte-level fixtures over the alphabet {a, b, c, space}. SentencePiece
# ("llama" tokenizer): 3 control tokens, the 256 byte tokens, then these (▁ is the space).
BYTES_SPM_PIECES = ["a", "b", "c", "▁", "ab", "bc", "▁a", "abc", "ca", "bca", "a▁"]
# GPT-2 byte-level BPE: the 256 byte symbols (Ġ is the space), the results of these merges in
# rank order, then an end-of-text token and a control token that is not an end.
BYTES_BPE_MERGES = ["b a", "c b", "Ġ c", "a a", "c a", "b ca", "ca b", "Ġ a", "Ġa b", "ba a"]
BYTES_BPE_SPECIALS = ["<|endoftext|>", "<|pad|>"]


def bytes_weights(rng, n_vocab, favoured, eog, rare=()):
    """Random F32 weights (tiny-a's shapes, 1 layer) that keep a model's text mostly within
    the alphabet: embedding dimension 0 is a constant channel, through which the output matrix
    puts the logit of every token not `favoured` (bytes outside the alphabet) far below, and
    those of the `rare` tokens and of the end `eog` somewhat below. The output matrix is scaled
    up (0.5) so that the next-token distributions are peaked but far from one-hot: several
    tokenizations of a text carry mass. Attention and feed-forward outputs are small beside
    the embedding, so the model is nearly a bigram model but still depends on the context."""
    embd = (rng.standard_normal((n_vocab, N_EMBD)) * 0.3).astype(np.float32)
    embd[:, 0] = 1.0
    output = (rng.standard_normal((n_vocab, N_EMBD)) * 0.5).astype(np.float32)
    output[:, 0] = -6.0
    output[favoured, 0] = 0.0
    output[eog, 0] = -0.3
    output[list(rare), 0] = -0.8
    tensors = {"token_embd.weight": embd, "output_norm.weight": np.ones(N_EMBD, dtype=np.float32)}
    tensors["output.weight"] = output
    tensors["blk.0.attn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
    for name, scale, shape in (
        ("attn_q", 0.2, (N_EMBD, N_EMBD)),
        ("attn_k", 0.2, (N_EMBD, N_EMBD)),
        ("attn_v", 0.2, (N_EMBD, N_EMBD)),
        ("attn_output", 0.03, (N_EMBD, N_EMBD)),
    ):
        tensors[f"blk.0.{name}.weight"] = (rng.standard_normal(shape) * scale).astype(np.float32)
    tensors["blk.0.ffn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
    for name, scale, shape in (
        ("ffn_gate", 0.2, (N_FF, N_EMBD)),
        ("ffn_up", 0.2, (N_FF, N_EMBD)),
        ("ffn_down", 0.015, (N_EMBD, N_FF)),
    ):
        tensors[f"blk.0.{name}.weight"] = (rng.standard_normal(shape) * scale).astype(np.float32)
    return tensors


def finish(w, tensors):
    for name, value in tensors.items():
        w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_bytes_models(out):
    """tiny-bytes-spm.gguf and tiny-bytes-bpe.gguf: random-weight F32 models (shapes of tiny-a)
    whose vocabularies differ but spell the same alphabet {a, b, c, space}, so that combining
    them goes over bytes. Each has a token for every byte (SentencePiece byte tokens, GPT-2
    byte symbols), hence many tokenizations of every text; their weights favour the alphabet's
    pieces, the end and the control tokens (whose mass the byte view must renormalise away);
    the SentencePiece byte tokens of the alphabet are rare beside the pieces that spell the
    same bytes (see bytes_weights)."""
    shape = dict(n_ctx=N_CTX, n_embd=N_EMBD, n_layer=1, n_ff=N_FF, n_head=N_HEAD)
    shape["file_type"] = gguf.LlamaFileType.ALL_F32
    alphabet = [ord(c) for c in "abc "]

    tokens, scores, types = spm_vocabulary(BYTES_SPM_PIECES)
    favoured = [0, 1, 2] + list(range(259, len(tokens)))
    rare = [3 + b for b in alphabet]
    path = os.path.join(out, "tiny-bytes-spm.gguf")
    w = llama_writer(path, "mood-tiny-bytes-spm", (tokens, scores, types), **shape)
    finish(w, bytes_weights(np.random.default_rng(2024), len(tokens), favoured, 2, rare))
    print(f"make-fixtures: wrote {path}")

    tokens, types, merges = bpe_vocabulary(BYTES_BPE_MERGES, BYTES_BPE_SPECIALS)
    eos = len(tokens) - 2
    favoured = alphabet + list(range(256, len(tokens)))
    path = os.path.join(out, "tiny-bytes-bpe.gguf")
    # GPT-2's conventions: no BOS added, <|endoftext|> is both BOS and EOS.
    vocab = (tokens, types, merges)
    w = bpe_llama_writer(
        path, "mood-tiny-bytes-bpe", vocab, bos=eos, eos=eos, add_bos=False, pre="gpt-2", **shape
    )
    finish(w, bytes_weights(np.random.default_rng(2025), len(tokens), favoured, eos))
    print(f"make-fixtures: wrote {path}")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "fixtures")
    os.makedirs(out, exist_ok=True)
    for variant in ("a", "b", "c"):
        path = os.path.join(out, f"tiny-{variant}.gguf")
        write(path, variant)
        print(f"make-fixtures: wrote {path}")
    path = os.path.join(out, "tiny-cycle.gguf")
    write_cycle(path)
    print(f"make-fixtures: wrote {path}")
    write_bytes_models(out)


if __name__ == "__main__":
    main()
