"""Shared fixtures: the repository's models (models/setup.sh fetches them) and the `mood`
binary the Python results are compared with."""

import os
import pathlib

import pytest

import mood

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
ASSISTANT_MODEL = ROOT / "models" / "smollm2-135m-instruct-q4_1.gguf"
DEMO = ROOT / "models" / "demo.toml"
BINARY = pathlib.Path(os.environ.get("MOOD_BINARY", ROOT / "target" / "release" / "mood"))
POET = "A short rhyming poem for children:\n\n"
SCIENTIST = "From a science textbook, chapter 4:\n\n"


@pytest.fixture(scope="session")
def demo():
    """The demo recipe (a reference, a poet and a scientist on the default model), each
    policy in a context of its own, as the binary is run in the comparisons."""
    assert DEFAULT_MODEL.exists(), "run models/setup.sh first"
    return mood.load(DEMO, threads=2, strategy="threads")


@pytest.fixture()
def session(demo):
    with demo.session() as s:
        yield s
