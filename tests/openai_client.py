#!/usr/bin/env python3
"""Drives a running `mood serve` with the official openai client (run by tests/server.rs).

Environment: MOOD_BASE_URL (e.g. http://127.0.0.1:8080/v1) and MOOD_API_KEY.
"""
import json
import math
import os
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["MOOD_BASE_URL"], api_key=os.environ["MOOD_API_KEY"])


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)


models = client.models.list()
check(len(models.data) == 1, "one model listed")
model = models.data[0].id

chat = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
    max_tokens=8,
    temperature=0,
)
reply = chat.choices[0].message.content
check(chat.choices[0].message.role == "assistant" and isinstance(reply, str), "chat reply")
check(chat.usage.completion_tokens >= 1, "usage counts tokens")

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
    max_tokens=8,
    temperature=0,
    stream=True,
)
streamed = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
check(streamed == reply, f"streamed chat equals plain chat: {streamed!r} vs {reply!r}")

poet = client.completions.create(model=model, prompt="The ocean", max_tokens=8, extra_body={"weights": [1, 0]})
scientist = client.completions.create(
    model=model, prompt="The ocean", max_tokens=8, extra_body={"weights": {"poet": 0, "scientist": 1}}
)
check(poet.choices[0].text != scientist.choices[0].text, "per-request weights change the completion")
check(poet.choices[0].finish_reason in ("length", "stop"), "finish reason")

try:
    client.completions.create(model=model, prompt="x", max_tokens=4, extra_body={"divergence": "tv"})
    check(False, "a refused divergence raises")
except Exception as e:  # openai.BadRequestError
    check(getattr(e, "status_code", None) == 400, f"400 for a bad request, got {e!r}")

# response_format: a JSON schema, and any JSON object.
schema = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
for seed in (1, 2):
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Describe a person as JSON."}],
        max_completion_tokens=48,
        temperature=0.8,
        seed=seed,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    text = r.choices[0].message.content
    check(r.choices[0].finish_reason == "stop", f"a schema-constrained reply ends by itself: {text!r}")
    obj = json.loads(text)
    check(sorted(obj) == ["age", "name"], f"the reply has the schema's keys: {text!r}")
    check(isinstance(obj["name"], str) and len(obj["name"]) <= 12, f"name: {text!r}")
    check(isinstance(obj["age"], int), f"age: {text!r}")
r = client.completions.create(
    model=model, prompt="A JSON object:", max_tokens=40, extra_body={"response_format": {"type": "json_object"}}
)
check(isinstance(json.loads(r.choices[0].text), dict), f"json_object gives an object: {r.choices[0].text!r}")

# max_completion_tokens limits the reply.
r = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Tell me a story."}], max_completion_tokens=3
)
check(r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length", "max_completion_tokens")

# logprobs and top_logprobs, in OpenAI's types.
r = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Hello!"}],
    max_tokens=6,
    temperature=0,
    logprobs=True,
    top_logprobs=3,
)
content = r.choices[0].logprobs.content
# One per token of the reply (a stop string's tokens are counted in usage, not spelled).
check(1 <= len(content) <= r.usage.completion_tokens, "one logprob per token of the reply")
check("".join(t.token for t in content) == r.choices[0].message.content, "logprob tokens spell the reply")
for t in content:
    tops = [a.logprob for a in t.top_logprobs]
    check(len(tops) == 3 and tops == sorted(tops, reverse=True), f"top_logprobs sorted: {tops}")
    check(sum(math.exp(x) for x in tops) <= 1 + 1e-6, "top_logprobs mass at most 1")
    check(t.logprob <= 0 and abs(t.logprob - tops[0]) < 1e-4, "greedy takes the most likely token")
# Streamed, the same tokens come with the text they spell.
chunks = list(
    client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        stream=True,
    )
)
streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
check([t.token for t in streamed] == [t.token for t in content], "streamed logprobs equal plain ones")
check(all(abs(a.logprob - b.logprob) < 1e-5 for a, b in zip(streamed, content)), "same log-probabilities")
r = client.completions.create(model=model, prompt="The ocean", max_tokens=4, temperature=0, logprobs=2)
lp = r.choices[0].logprobs
check(len(lp.tokens) == 4 and len(lp.token_logprobs) == 4 and len(lp.top_logprobs) == 4, "completion logprobs")
check(all(len(d) <= 2 for d in lp.top_logprobs), "completion top_logprobs has at most 2 entries")

# stream_options.include_usage: a last chunk with the usage and no choices.
chunks = list(
    client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hello!"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
)
check(chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5, "a final usage chunk")

# Unsupported fields are refused with a 400 naming them.
try:
    client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather?"}],
        tools=[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    )
    check(False, "tools raise")
except openai.BadRequestError as e:
    check(e.status_code == 400 and "tools" in str(e), f"400 naming tools, got {e!r}")

print("openai client: all checks passed")
