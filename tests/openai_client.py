#!/usr/bin/env python3
"""Drives a running `mood serve` with the official openai client (run by tests/server.rs).

Environment: MOOD_BASE_URL (e.g. http://127.0.0.1:8080/v1) and MOOD_API_KEY.
"""
import os
import sys

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

print("openai client: all checks passed")
