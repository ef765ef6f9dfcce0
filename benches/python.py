"""MOD's speed from Python, side by side in one run: `mood` from Python against
`mood generate` (the same engine: Python must add nothing per token) and against the loop a
Python user would write by hand with llama-cpp-python and numpy (one `Llama` per policy, each
policy's logits normalised and combined in numpy, the token fed to every policy).

    pip install --no-build-isolation ./python llama-cpp-python   # the second builds llama.cpp
    python3 benches/python.py [--rounds 5] [--tokens 128]

The hand-made loop runs in a process of its own (llama-cpp-python's thread pool spins after
its work and would slow whatever shares its process). Two setups on the default model: the demo's two prompted experts (reverse KL, weights summing
to 1: the reference cancels) and JSD with the reference (every policy's distribution needed).
Greedy decoding; decode tokens per second (prompt excluded), median of the rounds, rounds
interleaved so that the machine's noise hits every contender alike.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

import mood

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "models" / "gemma-3-270m-q4_k_m.gguf")
BINARY = str(ROOT / "target" / "release" / "mood")
POET = "A short rhyming poem for children:\n\n"
SCIENTIST = "From a science textbook, chapter 4:\n\n"
PROMPT = ("The harbour town woke slowly. Fishing boats rocked against the stone quay, and "
          "everyone in town agreed that the ocean")


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def recipe_toml(divergence):
    ref = f'[reference]\nmodel = "{MODEL}"\n' if divergence != "reverse-kl" else ""
    return (f'divergence = "{divergence}"\n{ref}'
            f'[[expert]]\nname = "poet"\nmodel = "{MODEL}"\nprefix = {json.dumps(POET)}\nweight = 0.5\n'
            f'[[expert]]\nname = "scientist"\nmodel = "{MODEL}"\nprefix = {json.dumps(SCIENTIST)}\nweight = 0.5\n')


def cli_rate(recipe_file, tokens, strategy):
    out = subprocess.run([BINARY, "generate", "-r", recipe_file, "-p", PROMPT, "-n", str(tokens),
                          "--repeat-penalty", "1", "--strategy", strategy, "--json"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["timings"]["tokens_per_second"]


def python_rate(m, tokens):
    g = m.session().generate(PROMPT, max_tokens=tokens, repeat_penalty=1.0)
    return g.timings["tokens_per_second"]


class HandMade:
    """The loop by hand: llama-cpp-python contexts and numpy."""

    def __init__(self, divergence, threads):
        from llama_cpp import Llama
        self.divergence = divergence
        prefixes = ([""] if divergence != "reverse-kl" else []) + [POET, SCIENTIST]
        self.llms = [Llama(MODEL, n_ctx=512, n_threads=threads, verbose=False) for _ in prefixes]
        self.prompts = [llm.tokenize((p + PROMPT).encode()) for llm, p in zip(self.llms, prefixes)]

    def rate(self, tokens):
        for llm, p in zip(self.llms, self.prompts):
            llm.reset()
            llm.eval(p)
        started = time.perf_counter()
        w = np.array([0.5, 0.5])
        for _ in range(tokens):
            lps = []
            for llm in self.llms:
                logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
                lps.append(logits - np.logaddexp.reduce(logits))
            if self.divergence == "reverse-kl":
                score = w[0] * lps[0] + w[1] * lps[1]
            else:  # JSD, eq. 6 at Z = 0: π_ref · h(Σ w_i g(π_i/π_ref)), g(x) = log(2x/(1+x))
                ref = lps[0]
                u = sum(wi * (np.log(2) + lp - np.logaddexp(ref, lp)) for wi, lp in zip(w, lps[1:]))
                score = ref + u - np.log(2 - np.exp(u))
            token = int(np.argmax(score))
            if self.llms[0].token_eos() == token:
                break
            for llm in self.llms:
                llm.eval([token])
        return tokens / (time.perf_counter() - started)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--hand", help=argparse.SUPPRESS)  # internal: one hand-made run, printed
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    if args.hand:
        # In a process of its own: llama-cpp-python's thread pool keeps spinning after its
        # work and would slow the other contenders in the same process.
        print(HandMade(args.hand, threads).rate(args.tokens))
        return
    try:
        import llama_cpp  # noqa: F401
        have_lcp = True
    except ImportError:
        have_lcp = False
        print("llama-cpp-python is not installed: its column is left out")
    print(f"CPU: {cpu_name()}, {threads} threads; {args.tokens} greedy tokens, median of {args.rounds} rounds")
    rows = []
    for divergence in ("reverse-kl", "jsd"):
        path = ROOT / "target" / f"bench-{divergence}.toml"
        path.write_text(recipe_toml(divergence))
        m = mood.load(mood.Recipe.from_toml(path.read_text()), strategy="auto")
        # The binary runs the strategy auto chose here, so that both run the same layout.
        strategy = m.generate(PROMPT, max_tokens=4).timings["strategy"]
        hand = have_lcp
        cli, py, lcp = [], [], []
        for _ in range(args.rounds):
            cli.append(cli_rate(str(path), args.tokens, strategy))
            py.append(python_rate(m, args.tokens))
            if hand:
                out = subprocess.run([sys.executable, __file__, "--hand", divergence, "--tokens",
                                      str(args.tokens)], capture_output=True, text=True, check=True)
                lcp.append(float(out.stdout.strip().splitlines()[-1]))
        print(f"{divergence}: strategy {strategy}; mood generate {cli}, Python {[round(x, 1) for x in py]}")
        rows.append((divergence, statistics.median(cli), statistics.median(py),
                     statistics.median(lcp) if lcp else float("nan")))
    print(f"{'setup':<34} {'mood generate':>14} {'mood (Python)':>14} {'ratio':>6} "
          f"{'llama-cpp-python':>17} {'mood ÷ it':>9}")
    for divergence, cli, py, lcp in rows:
        name = "2 prompted experts, reverse KL" if divergence == "reverse-kl" else "JSD with the reference"
        print(f"{name:<34} {cli:>14.1f} {py:>14.1f} {py / cli:>6.2f} {lcp:>17.1f} {py / lcp:>9.2f}")


if __name__ == "__main__":
    main()
