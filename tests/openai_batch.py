#!/usr/bin/env python3
"""Checks a `mood batch` output of an OpenAI batch file against OpenAI's documented output
format, each answer parsed with the openai package's own types (run by tests/openai_batch.rs).

Usage: openai_batch.py INPUT OUTPUT. Prints "openai batch: all checks passed" or a failure.
"""
import json
import sys

from openai.types import Completion
from openai.types.chat import ChatCompletion


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)


urls = {}
with open(sys.argv[1]) as f:
    for line in f:
        try:
            request = json.loads(line)
            urls.setdefault(request["custom_id"], request["url"])  # the first line of an id runs
        except (ValueError, KeyError, TypeError):
            pass  # a bad line of the test's own making

answers = 0
with open(sys.argv[2]) as f:
    for n, line in enumerate(f, 1):
        record = json.loads(line)
        what = f"output line {n}"
        check({"id", "custom_id", "response", "error"} <= record.keys(), f"{what}: the documented keys")
        check(isinstance(record["id"], str), f"{what}: id is a string")
        response, error = record["response"], record["error"]
        check((response is None) != (error is None), f"{what}: a response or an error")
        if error is not None:
            check(isinstance(error["code"], str) and isinstance(error["message"], str), f"{what}: error")
            continue
        check(isinstance(response["status_code"], int), f"{what}: status_code")
        check(isinstance(response["request_id"], str), f"{what}: request_id")
        body = response["body"]
        if response["status_code"] != 200:
            check(isinstance(body["error"]["message"], str), f"{what}: an error body")
            continue
        url = urls[record["custom_id"]]
        if url == "/v1/chat/completions":
            answer = ChatCompletion.model_validate(body)
            check(isinstance(answer.choices[0].message.content, str), f"{what}: chat content")
        else:
            answer = Completion.model_validate(body)
            check(isinstance(answer.choices[0].text, str), f"{what}: completion text")
        check(answer.usage.completion_tokens >= 1, f"{what}: usage")
        answers += 1

check(answers >= 1, "some answers")
print("openai batch: all checks passed")
