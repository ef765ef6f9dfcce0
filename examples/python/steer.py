"""MOD from Python, notebook style: two prompted experts on one model file, the same prompt
at several weightings, a streamed reply, and a combination of one's own step by step.

    python3 examples/python/steer.py [MODEL.gguf]
"""
# %%
import sys

import numpy as np

import mood

model = sys.argv[1] if len(sys.argv) > 1 else "models/gemma-3-270m-q4_k_m.gguf"
recipe = mood.Recipe(experts=[
    mood.Expert("poet", model, prefix="A short rhyming poem for children:\n\n"),
    mood.Expert("scientist", model, prefix="From a science textbook, chapter 4:\n\n"),
])
session = mood.load(recipe).session()

# %% The same prompt at three weightings.
for w in ([1, 0], [0.5, 0.5], [0, 1]):
    g = session.generate("The ocean", weights=w, max_tokens=32)
    print(f"{w}: The ocean{g.text}  [{g.timings['tokens_per_second']:.0f} tok/s]")

# %% Streamed, sampled.
for chunk in session.stream("The moon", weights={"poet": 0.8, "scientist": 0.2},
                            temperature=0.8, seed=1, max_tokens=32):
    print(chunk.text, end="", flush=True)
print()

# %% A combination of one's own: the weighted mean of the experts' log-probabilities.
steps = session.steps("The forest", max_tokens=24)
while not steps.done:
    poet, scientist = steps.logprobs()  # this recipe has no reference
    steps.choose(int(np.argmax(0.5 * poet + 0.5 * scientist)))
print("by hand: The forest" + steps.text)
