"""Bad arguments raise mood's exceptions (or TypeError for a wrong type), never crash the
interpreter: hand-picked cases and property tests."""

import math

import pytest
from hypothesis import given, settings, strategies as st

import mood
from conftest import ASSISTANT_MODEL, DEFAULT_MODEL, ROOT


def test_the_exceptions_form_a_hierarchy_and_name_what_is_wrong(session):
    for cls in (mood.SettingError, mood.RecipeError, mood.ModelError, mood.VocabularyError,
                mood.ContextError, mood.RpcError, mood.CancelledError, mood.EngineError):
        assert issubclass(cls, mood.MoodError)
    with pytest.raises(mood.SettingError) as e:
        session.generate("The ocean", weights=[1.0])
    assert e.value.setting == "weights"
    with pytest.raises(mood.SettingError) as e:
        session.generate("The ocean", temperature=-1)
    assert e.value.setting == "temperature"
    with pytest.raises(mood.ModelError) as e:
        mood.load(mood.Recipe(experts=[mood.Expert("a", "/nonexistent/m.gguf")]))
    assert e.value.path == "/nonexistent/m.gguf"
    with pytest.raises(mood.VocabularyError):
        mood.load(mood.Recipe(experts=[mood.Expert("g", str(DEFAULT_MODEL)),
                                       mood.Expert("s", str(ASSISTANT_MODEL))]))
    with pytest.raises(mood.RecipeError):
        mood.load(mood.Recipe.from_toml("[[expert"))
    with pytest.raises(mood.RecipeError):
        mood.load(mood.Recipe(experts=[mood.Expert("a", str(DEFAULT_MODEL)),
                                       mood.Expert("a", str(DEFAULT_MODEL))]))
    with pytest.raises(mood.SettingError):
        mood.load(mood.Recipe(experts=[mood.Expert("a", str(DEFAULT_MODEL))]), threads=0)


def test_wrong_types_and_a_closed_session(demo):
    s = demo.session()
    for bad in (None, 3, b"bytes", ["a"]):
        with pytest.raises(TypeError):
            s.generate(bad)
    with pytest.raises(TypeError):
        s.generate("x", colour="blue")
    with pytest.raises(mood.SettingError):
        s.generate("x", max_tokens=10**30)
    with pytest.raises(mood.SettingError):
        s.generate("x", max_tokens=-5)
    with pytest.raises(mood.SettingError):
        s.generate("x", weights=[math.nan, 0.5])
    with pytest.raises(mood.SettingError):
        s.generate("x", seed=-1)
    with pytest.raises(mood.SettingError):
        s.steps("x").choose(-1)
    s.close()
    with pytest.raises(mood.MoodError):
        s.generate("The ocean", max_tokens=2)


def test_a_cancellation_from_another_thread(demo):
    import threading
    s = demo.session()
    threading.Timer(0.3, s.cancel).start()
    with pytest.raises(mood.CancelledError):
        s.generate("The ocean", max_tokens=4000, draft=0)
    assert len(s.generate("The ocean", max_tokens=3).tokens) == 3


finite = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=40, deadline=None)
@given(weights=st.one_of(st.lists(finite, max_size=4), st.dictionaries(st.text(max_size=8), finite, max_size=3)),
       temperature=st.one_of(st.none(), finite),
       max_tokens=st.one_of(st.none(), st.integers(min_value=-10**20, max_value=10**20)),
       top_p=st.one_of(st.none(), finite))
def test_any_settings_give_a_result_or_a_setting_error(demo, weights, temperature, max_tokens, top_p):
    s = demo.session()
    try:
        g = s.generate("The sea", weights=weights, temperature=temperature,
                       max_tokens=None if max_tokens is None else max_tokens % 3 if max_tokens > 0 else max_tokens,
                       top_p=top_p, seed=1)
    except mood.SettingError as e:
        assert e.setting and "\n" not in str(e)
    else:
        assert isinstance(g.text, str)


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=64))
def test_any_prompt_text_is_decoded_or_refused(demo, prompt):
    s = demo.session()
    try:
        g = s.generate(prompt, max_tokens=2)
    except mood.SettingError as e:
        assert e.setting == "prompt"
    else:
        assert len(g.tokens) <= 2


def test_ctrl_c_stops_a_generation_and_the_session_goes_on(demo):
    import os
    import signal
    import threading
    s = demo.session()
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        s.generate("The ocean", max_tokens=4000, draft=0)
    assert len(s.generate("The ocean", max_tokens=3).tokens) == 3
    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        for _ in s.stream("The ocean", max_tokens=4000, draft=0):
            pass
    assert len(s.generate("The ocean", max_tokens=3).tokens) == 3


def test_a_session_used_by_two_threads_at_once_says_so(demo):
    import threading
    s = demo.session()
    errors = []

    def second():
        try:
            s.generate("The moon", max_tokens=2)
        except mood.MoodError as e:
            errors.append(str(e))

    t = threading.Timer(0.2, second)
    t.start()
    s.generate("The ocean", max_tokens=200, draft=0)
    t.join()
    assert errors and "another thread" in errors[0]
