#!/usr/bin/env python3
"""Makes a random-weight llama-architecture GGUF model of a chosen size, for speed checks on a
machine where the default model cannot be fetched (it produces meaningless text; its speed is
that of a real model of the same shape and type).

  models/make-bench-model.py OUT.gguf [--layers 16] [--embd 1024] [--ff 2816] [--vocab 32000]

Tensors are F16. The vocabulary is SentencePiece-style: 3 control tokens, 256 byte tokens and
made-up words, so any text tokenizes (byte fallback). Needs numpy, the gguf package and
models/llama_gguf.py beside it.
"""

import argparse

import numpy as np
import gguf

from llama_gguf import llama_writer, spm_vocabulary


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--embd", type=int, default=1024)
    ap.add_argument("--ff", type=int, default=2816)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32000)
    a = ap.parse_args()
    if a.vocab < 300 or a.embd % a.heads:
        ap.error("--vocab must be at least 300 and --embd a multiple of --heads")

    vocab = spm_vocabulary([f"▁w{i}" for i in range(a.vocab - 259)])
    rng = np.random.default_rng(7)
    w = llama_writer(
        a.out,
        "mood-bench-random",
        vocab,
        n_ctx=4096,
        n_embd=a.embd,
        n_layer=a.layers,
        n_ff=a.ff,
        n_head=a.heads,
        file_type=gguf.LlamaFileType.MOSTLY_F16,
    )

    def t(name, *shape):
        scale = 1.0 / np.sqrt(shape[-1])
        w.add_tensor(name, (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float16))

    def norm(name):
        w.add_tensor(name, np.ones(a.embd, dtype=np.float32))

    t("token_embd.weight", a.vocab, a.embd)
    norm("output_norm.weight")
    t("output.weight", a.vocab, a.embd)
    for i in range(a.layers):
        norm(f"blk.{i}.attn_norm.weight")
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t(f"blk.{i}.{name}.weight", a.embd, a.embd)
        norm(f"blk.{i}.ffn_norm.weight")
        t(f"blk.{i}.ffn_gate.weight", a.ff, a.embd)
        t(f"blk.{i}.ffn_up.weight", a.ff, a.embd)
        t(f"blk.{i}.ffn_down.weight", a.embd, a.ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    params = 2 * a.vocab * a.embd + a.layers * (4 * a.embd * a.embd + 3 * a.embd * a.ff)
    print(f"make-bench-model: wrote {a.out} ({params / 1e6:.0f}M parameters, F16)")


if __name__ == "__main__":
    main()
