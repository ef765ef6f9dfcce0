#!/usr/bin/env python3
"""Makes a small LoRA adapter GGUF for the default model (a *test adapter*: random weights).

It adapts attn_q, attn_v and ffn_up of every layer with rank 8. Its effect on the text is
arbitrary — it is not trained for anything — but it changes the model's logits clearly, so
tests and the LoRA demo recipe can show an adapter applied to one policy only. Shapes come
from the base model file, so a base of another size gets a matching adapter.

Usage: models/make-lora.py [BASE.gguf] [OUT.gguf] [TARGET,…]
  defaults: models/gemma-3-270m-q4_k_m.gguf → models/fixtures/test-lora.gguf,
  targets attn_q,attn_v,ffn_up ("output" adapts the output projection, as the test of
  output mixing needs)
"""

import os
import sys

import numpy as np
import gguf

RANK = 8
ALPHA = 16.0
TARGETS = ("attn_q", "attn_v", "ffn_up")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    base = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "gemma-3-270m-q4_k_m.gguf")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "fixtures", "test-lora.gguf")
    targets = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else TARGETS
    reader = gguf.GGUFReader(base)
    field = reader.fields["general.architecture"]
    arch = bytes(field.parts[field.data[0]]).decode()
    rng = np.random.default_rng(7)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    w = gguf.GGUFWriter(out, arch)
    w.add_string("general.type", "adapter")
    w.add_string("general.name", "mood test LoRA (random)")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", ALPHA)
    count = 0
    for t in reader.tensors:
        parts = t.name.split(".")
        layer = len(parts) == 4 and parts[0] == "blk" and parts[2] in targets
        whole = len(parts) == 2 and parts[0] in targets and parts[1] == "weight"
        if not (layer or whole):
            continue
        n_in, n_out = int(t.shape[0]), int(t.shape[1])  # ggml order: ne0 = inputs
        a = (rng.standard_normal((RANK, n_in)) / np.sqrt(n_in)).astype(np.float32)
        b = (rng.standard_normal((n_out, RANK)) * 0.05).astype(np.float32)
        w.add_tensor(t.name + ".lora_a", a)
        w.add_tensor(t.name + ".lora_b", b)
        count += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"make-lora: wrote {out} ({count} adapted matrices, rank {RANK})")


if __name__ == "__main__":
    main()
