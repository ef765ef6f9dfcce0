"""Generations from Python equal the `mood` binary's, streamed or not, one by one or on
lanes; step-by-step decoding reproduces greedy MOD; chat and scores work."""

import json
import subprocess

import numpy as np
import pytest

import mood
from conftest import ASSISTANT_MODEL, BINARY, DEMO, DEFAULT_MODEL, POET, SCIENTIST


def cli(*args):
    out = subprocess.run(
        [str(BINARY), "generate", "-r", str(DEMO), "--strategy", "threads", "--json", *args],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)


def test_greedy_and_sampled_equal_the_binary(session):
    g = session.generate("The ocean", weights=[0.3, 0.7], max_tokens=24)
    c = cli("-p", "The ocean", "--weights", "0.3,0.7", "-n", "24")
    assert g.tokens == c["tokens"] and g.text == c["text"]
    assert g.finish_reason == c["finish_reason"] and g.weights == [0.3, 0.7]
    s = session.generate("The moon", weights={"poet": 1.5, "scientist": -0.5},
                         temperature=0.9, seed=11, max_tokens=24)
    c = cli("-p", "The moon", "--weights", "1.5,-0.5", "--temperature", "0.9", "--seed", "11", "-n", "24")
    assert s.tokens == c["tokens"] and s.seed == 11


def test_streaming_equals_the_whole(session):
    whole = session.generate("A river", temperature=0.8, seed=5, max_tokens=32)
    chunks = list(session.stream("A river", temperature=0.8, seed=5, max_tokens=32))
    assert "".join(c.text for c in chunks) == whole.text
    assert [c.token for c in chunks if c.token is not None] == whole.tokens
    assert session.last().tokens == whole.tokens
    # Leaving a stream early frees the session for the next call.
    for i, _ in enumerate(session.stream("A river", temperature=0.8, seed=5, max_tokens=32)):
        if i == 2:
            break
    assert session.generate("A river", temperature=0.8, seed=5, max_tokens=32).text == whole.text


def test_steps_reproduce_greedy_mod_with_the_callers_argmax(session):
    w = np.array([0.3, 0.7], dtype=np.float64)
    lib = session.generate("The ocean", weights=list(w), repeat_penalty=1.0, draft=0, max_tokens=24)
    steps = session.steps("The ocean", max_tokens=24)
    assert steps.policies == ["reference", "poet", "scientist"]
    step = 0
    while not steps.done:
        lp = steps.logprobs()
        assert all(a.dtype == np.float32 and a.shape == lp[0].shape for a in lp)
        assert all(abs(np.exp(a.astype(np.float64)).sum() - 1) < 1e-3 for a in lp)
        score = w[0] * lp[1].astype(np.float64) + w[1] * lp[2].astype(np.float64)
        best = int(np.argmax(score))
        if step < len(lib.tokens):
            theirs = lib.tokens[step]
            assert score[best] - score[theirs] < 1e-3, (step, best, theirs)
            if best != theirs:
                break  # a tie within rounding
        steps.choose(np.int64(best))
        step += 1
    assert step >= min(len(lib.tokens), 20)


def test_lanes_agree_with_one_by_one(session):
    prompts = ["The ocean", "The moon", "A river", "The forest"]
    many = session.generate_many(prompts, lanes=4, max_tokens=12, repeat_penalty=1.0, draft=0)
    flips = 0
    for p, g in zip(prompts, many):
        assert isinstance(g, mood.Generation) and len(g.tokens) == 12
        steps = session.steps(p, max_tokens=12)
        for t in g.tokens:
            lp = steps.logprobs()
            score = 0.5 * (lp[1] + lp[2])
            best = int(np.argmax(score))
            assert score[best] - score[t] < 0.3, (p, t, best)
            flips += best != t
            steps.choose(t)
    assert flips <= 3
    bad = session.generate_many(["The sea", "  "], lanes=2, max_tokens=4)
    assert isinstance(bad[0], mood.Generation)
    assert isinstance(bad[1], mood.SettingError) and bad[1].setting == "prompt"


def test_chat_keeps_the_conversation():
    m = mood.load(mood.Recipe(experts=[
        mood.Expert("concise", str(ASSISTANT_MODEL), system="Answer in one sentence.", template="model"),
        mood.Expert("friendly", str(ASSISTANT_MODEL), system="Be warm and friendly.", template="model"),
    ]))
    s = m.session()
    messages = [{"role": "user", "content": "What is the sea?"}]
    first = s.chat(messages, max_tokens=40)
    assert first.text.strip() and "<|im_" not in first.text
    messages += [{"role": "assistant", "content": first.text.strip()},
                 {"role": "user", "content": "And the sky?"}]
    second = s.chat(messages, max_tokens=8, weights=[0.2, 0.8])
    assert second.weights == [0.2, 0.8]


def test_scores_and_a_sweep(demo, session):
    s = session.score("The ocean", " is deep and blue.", beta=0.5)
    ll = s["log_likelihood"]
    assert set(ll) == {"reference", "poet", "scientist"}
    assert s["rewards"]["poet"] == pytest.approx(0.5 * (ll["poet"] - ll["reference"]), abs=1e-9)
    rows = mood.sweep(demo, ["The ocean", "The moon"], [[1, 0], [0.5, 0.5], [0, 1]], max_tokens=8)
    assert [r["weights"] for r in rows] == [[1, 0], [0.5, 0.5], [0, 1]]
    assert any(r["pareto"] for r in rows)
    for r in rows:
        assert r["stderr_poet"] >= 0 and r["mean_tokens"] > 0


def test_a_recipe_from_keywords_equals_the_file(demo):
    kw = mood.load(mood.Recipe(
        reference=str(DEFAULT_MODEL),
        experts=[mood.Expert("poet", str(DEFAULT_MODEL), prefix=POET),
                 mood.Expert("scientist", str(DEFAULT_MODEL), prefix=SCIENTIST)],
        weights=[0.5, 0.5],
    ), threads=2, strategy="threads")
    a = kw.generate("The ocean", max_tokens=16)
    b = demo.generate("The ocean", max_tokens=16)
    assert a.tokens == b.tokens
    text = mood.load(mood.Recipe.from_toml(DEMO.read_text(), base_dir=str(DEMO.parent)), threads=2,
                     strategy="threads")
    assert text.generate("The ocean", max_tokens=16).tokens == b.tokens
