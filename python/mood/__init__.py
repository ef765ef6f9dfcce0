"""mood: multi-objective decoding (MOD) on quantized GGUF models through llama.cpp.

A reference policy and expert policies (prompted, with LoRA adapters, or model files of their
own) are combined token by token with weights chosen per call::

    import mood

    recipe = mood.Recipe(
        experts=[
            mood.Expert("poet", "models/gemma-3-270m-q4_k_m.gguf",
                        prefix="A short rhyming poem for children:\\n\\n"),
            mood.Expert("scientist", "models/gemma-3-270m-q4_k_m.gguf",
                        prefix="From a science textbook, chapter 4:\\n\\n"),
        ],
    )
    session = mood.load(recipe).session()
    print(session.generate("The ocean", weights=[0.3, 0.7], max_tokens=40).text)

Decoding runs without the GIL; Ctrl-C stops it and raises KeyboardInterrupt. Errors are
the exceptions below, all subclasses of :class:`MoodError`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from ._mood import (
    CancelledError,
    ContextError,
    EngineError,
    ModelError,
    MoodError,
    RecipeError,
    RpcError,
    SettingError,
    VocabularyError,
    silence_llama_log,
)
from . import _mood

__all__ = [
    "Expert", "Recipe", "Mood", "Session", "Generation", "Chunk", "Steps", "load", "sweep",
    "silence_llama_log", "MoodError", "SettingError", "RecipeError", "ModelError",
    "VocabularyError", "ContextError", "RpcError", "CancelledError", "EngineError",
]

Weights = Union[Sequence[float], Mapping[str, float]]


@dataclass
class Expert:
    """A policy: a GGUF model file, with a prompt prefix, a system prompt, a chat template
    (``"model"``: the file's own, a llama.cpp name such as ``"chatml"``, or ``"none"``) or a
    LoRA adapter."""

    name: str
    model: str
    prefix: str = ""
    system: Optional[str] = None
    template: Optional[str] = None
    lora: Optional[str] = None
    lora_scale: float = 1.0


@dataclass
class Recipe:
    """Which policies take part and how they are weighted. ``reference`` (a model path or an
    :class:`Expert`) is needed by weights that do not sum to 1 and by divergences other than
    reverse KL; ``weights`` default to equal weights summing to 1."""

    experts: List[Expert]
    reference: Union[None, str, Expert] = None
    weights: Optional[List[float]] = None
    divergence: str = "reverse-kl"
    base_dir: str = "."
    _toml: Optional[str] = field(default=None, repr=False)

    @staticmethod
    def from_file(path: Union[str, os.PathLike]) -> "Recipe":
        """A recipe file (TOML); relative model paths are taken from its folder."""
        path = os.fspath(path)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return Recipe.from_toml(text, base_dir=os.path.dirname(os.path.abspath(path)))

    @staticmethod
    def from_toml(text: str, base_dir: str = ".") -> "Recipe":
        """A recipe as TOML text (the format of recipe files)."""
        if not isinstance(text, str):
            raise TypeError("a recipe's TOML text must be a str")
        return Recipe(experts=[], base_dir=base_dir, _toml=text)

    def toml(self) -> str:
        """The recipe as TOML text."""
        if self._toml is not None:
            return self._toml
        lines = [f"divergence = {_q(self.divergence)}"]
        if self.reference is not None:
            ref = self.reference if isinstance(self.reference, Expert) else Expert("reference", self.reference)
            lines += ["[reference]"] + _policy_lines(ref, with_name=False)
        weights = self.weights
        for i, e in enumerate(self.experts):
            if not isinstance(e, Expert):
                raise TypeError(f"experts[{i}] must be a mood.Expert, got {type(e).__name__}")
            lines += ["[[expert]]"] + _policy_lines(e, with_name=True)
            if weights is not None and i < len(weights):
                lines.append(f"weight = {_number('weights', weights[i])}")
        if weights is not None and len(weights) != len(self.experts):
            raise SettingError(
                f"weights has {len(weights)} value(s) but the recipe has {len(self.experts)} expert(s)"
            )
        return "\n".join(lines) + "\n"


def _q(s: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    if not isinstance(s, str):
        raise TypeError(f"expected a str, got {type(s).__name__}")
    return json.dumps(s, ensure_ascii=False)


def _policy_lines(e: Expert, with_name: bool) -> List[str]:
    out = []
    if with_name:
        out.append(f"name = {_q(e.name)}")
    out.append(f"model = {_q(os.fspath(e.model))}")
    if e.prefix:
        out.append(f"prefix = {_q(e.prefix)}")
    if e.system is not None:
        out.append(f"system = {_q(e.system)}")
    if e.template is not None:
        out.append(f"template = {_q(e.template)}")
    if e.lora is not None:
        out.append(f"lora = {_q(os.fspath(e.lora))}")
        out.append(f"lora_scale = {_number('lora_scale', e.lora_scale)}")
    return out


def _number(name: str, x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise _setting(name, f"must be a number, got {type(x).__name__}")
    if not math.isfinite(x):
        raise _setting(name, f"must be a finite number, got {x}")
    return repr(float(x))


def _setting(name: str, problem: str) -> SettingError:
    e = SettingError(f"{name} {problem}")
    e.setting = name
    return e


def _json_value(name: str, x: Any) -> Any:
    """A setting's value for JSON: non-finite numbers are refused (JSON has none)."""
    if isinstance(x, float) and not math.isfinite(x):
        raise _setting(name, f"must be a finite number, got {x}")
    if isinstance(x, Mapping):
        return {str(k): _json_value(name, v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_value(name, v) for v in x]
    return x


def _settings(**kwargs: Any) -> str:
    """The settings of one call as the JSON object the library reads (the keys of a batch
    line); None means the default."""
    out = {}
    for name, value in kwargs.items():
        if value is None:
            continue
        if name == "stop" and isinstance(value, str):
            value = [value]
        if name == "json_schema" and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as e:
                raise _setting("json_schema", f"is not valid JSON: {e}") from None
        if name == "draft":
            name = "draft_max"
        out[name] = _json_value(name, value)
    return json.dumps(out)


@dataclass
class Generation:
    """The result of one generation."""

    text: str
    tokens: List[int]
    finish_reason: str
    seed: int
    weights: List[float]
    divergence: str
    prompt_tokens: Dict[str, int]
    timings: Dict[str, Any]
    policies: List[str]
    logprobs: Optional[List[Dict[str, Any]]] = None

    @staticmethod
    def _of(d: Dict[str, Any]) -> "Generation":
        return Generation(
            text=d["text"], tokens=d["tokens"], finish_reason=d["finish_reason"],
            seed=d["seed"], weights=d["weights"], divergence=d["divergence"],
            prompt_tokens=d["prompt_tokens"], timings=d["timings"], policies=d["policies"],
            logprobs=d.get("logprobs"),
        )


@dataclass
class Chunk:
    """A piece of a streamed generation: the text that became printable and its token
    (``None`` for text held back until the end)."""

    text: str
    token: Optional[int]


class Steps:
    """Decoding in the caller's hands: :meth:`logprobs` gives each policy's next-token
    log-probabilities (numpy float32 arrays over the shared vocabulary, reference first),
    :meth:`choose` feeds the chosen token to every policy."""

    def __init__(self, inner: "_mood.Steps") -> None:
        self._inner = inner

    @property
    def policies(self) -> List[str]:
        return self._inner.policies()

    def logprobs(self) -> List[Any]:
        return self._inner.logprobs()

    def choose(self, token: int) -> bool:
        """Feeds ``token``; returns whether decoding goes on."""
        if isinstance(token, bool) or not isinstance(token, int):
            try:
                token = int(token)  # numpy integers
            except (TypeError, ValueError):
                raise TypeError(f"token must be an int, got {type(token).__name__}") from None
        return self._inner.choose(token)

    @property
    def done(self) -> bool:
        return self._inner.done()

    @property
    def text(self) -> str:
        return self._inner.text()

    @property
    def tokens(self) -> List[int]:
        return self._inner.tokens()

    @property
    def finish_reason(self) -> Optional[str]:
        return self._inner.finish_reason()


_SETTINGS_DOC = """
        weights: one per expert (a list) or by expert name (a dict); default the recipe's.
        divergence: reverse-kl, forward-kl, jsd, jeffreys or alpha:A.
        temperature: 0 is greedy; top_k, top_p, min_p, repeat_penalty as in llama.cpp.
        max_tokens, stop (a str or a list), seed (the same seed, the same text).
        grammar (GBNF) or json_schema (a dict or JSON text) constrain the output.
        logprobs: report each token's log-probability with this many alternatives.
        draft: the most tokens speculated per pass (0 = off; the output is the same).
"""


class Session:
    """A recipe's policies in llama.cpp contexts, kept from one call to the next (a
    conversation's next turn decodes only what is new)."""

    def __init__(self, inner: "_mood.Session") -> None:
        self._inner = inner

    def generate(self, prompt: str, *, weights: Optional[Weights] = None,
                 divergence: Optional[str] = None, temperature: Optional[float] = None,
                 max_tokens: Optional[int] = None, stop: Union[None, str, Sequence[str]] = None,
                 seed: Optional[int] = None, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, min_p: Optional[float] = None,
                 repeat_penalty: Optional[float] = None, grammar: Optional[str] = None,
                 json_schema: Union[None, str, Mapping[str, Any]] = None,
                 logprobs: Optional[int] = None, draft: Optional[int] = None,
                 normalize_weights: Optional[bool] = None) -> Generation:
        """Decodes ``prompt`` (after each policy's prefix) with MOD."""
        _prompt(prompt)
        settings = _settings(**_call_settings(locals()))
        return Generation._of(self._inner.generate(prompt, settings))

    def stream(self, prompt: str, **settings: Any) -> Iterator[Chunk]:
        """The pieces of a generation as they are decoded (same settings as
        :meth:`generate`). The whole :class:`Generation` is the iterator's return value
        (``StopIteration.value``); :meth:`last` gives it too."""
        _prompt(prompt)
        text = _settings(**_checked(settings))
        self._inner.begin(prompt, text)
        self._last: Optional[Generation] = None
        finished = False
        try:
            while True:
                chunk = self._inner.next_chunk()
                if chunk is None:
                    break
                yield Chunk(chunk[0], None if chunk[1] < 0 else chunk[1])
            finished = True
        finally:
            generation = Generation._of(self._inner.end(text)) if finished else None
            if not finished:
                # Left early: the generation is cancelled and its lane freed.
                self._inner.stop()
        self._last = generation
        return generation

    def last(self) -> Optional[Generation]:
        """The generation the last :meth:`stream` produced, once it has ended."""
        return getattr(self, "_last", None)

    def generate_many(self, prompts: Sequence[str], *, lanes: int = 4,
                      **settings: Any) -> List[Union[Generation, MoodError]]:
        """Decodes ``prompts`` side by side on up to ``lanes`` lanes (every forward pass
        shared); results in prompt order, a prompt's error (a :class:`MoodError`) in its
        place."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of str, not a str")
        prompts = list(prompts)
        for p in prompts:
            _prompt(p)
        if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= 256:
            raise _setting("lanes", f"must be a whole number from 1 to 256, got {lanes!r}")
        out = self._inner.generate_many(prompts, _settings(**_checked(settings)), lanes)
        return [r if isinstance(r, BaseException) else Generation._of(r) for r in out]

    def chat(self, messages: Sequence[Mapping[str, str]], **settings: Any) -> Generation:
        """A reply to a conversation (``[{"role": "user", "content": "…"}, …]``) through
        each policy's chat template and system prompt."""
        msgs = []
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or not isinstance(m.get("content"), str) \
                    or not isinstance(m.get("role"), str):
                raise TypeError(f"messages[{i}] must be a dict with str role and content")
            msgs.append({"role": m["role"], "content": m["content"]})
        return Generation._of(self._inner.chat(json.dumps(msgs), _settings(**_checked(settings))))

    def score(self, prompt: str, response: str, *, beta: float = 1.0) -> Dict[str, Any]:
        """Each policy's log-likelihood of ``response`` after ``prompt`` and each expert's
        implicit reward ``beta * (log π_i − log π_ref)`` (the recipe needs a reference)."""
        _prompt(prompt)
        if not isinstance(response, str):
            raise TypeError("response must be a str")
        return self._inner.score(prompt, response, float(_number("beta", beta)))

    def steps(self, prompt: str, max_tokens: int = 256) -> Steps:
        """Step-by-step decoding for a combination of one's own (see :class:`Steps`)."""
        _prompt(prompt)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= 1 << 24:
            raise _setting("max_tokens", f"must be a whole number from 1 to {1 << 24}, got {max_tokens!r}")
        return Steps(self._inner.steps(prompt, max_tokens))

    def cancel(self) -> None:
        """Cancels the running generation (from another thread); it raises CancelledError."""
        self._inner.cancel()

    def close(self) -> None:
        """Frees the contexts; later calls raise MoodError."""
        self._inner.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


Session.generate.__doc__ = (Session.generate.__doc__ or "") + _SETTINGS_DOC

_SETTING_NAMES = {
    "weights", "divergence", "temperature", "max_tokens", "stop", "seed", "top_k", "top_p",
    "min_p", "repeat_penalty", "grammar", "json_schema", "logprobs", "draft", "normalize_weights",
}


def _call_settings(local: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in local.items() if k in _SETTING_NAMES}


def _checked(settings: Mapping[str, Any]) -> Dict[str, Any]:
    unknown = sorted(set(settings) - _SETTING_NAMES)
    if unknown:
        raise TypeError(f"unknown setting {unknown[0]!r} (known: {', '.join(sorted(_SETTING_NAMES))})")
    return dict(settings)


def _prompt(prompt: Any) -> None:
    if not isinstance(prompt, str):
        raise TypeError(f"a prompt must be a str, got {type(prompt).__name__}")


class Mood:
    """A recipe's models, loaded once (policies on one file share its weights)."""

    def __init__(self, inner: "_mood.Model") -> None:
        self._inner = inner

    @property
    def experts(self) -> List[str]:
        return self._inner.experts()

    @property
    def policies(self) -> List[str]:
        return self._inner.policies()

    @property
    def weights(self) -> List[float]:
        return self._inner.weights()

    @property
    def divergence(self) -> str:
        return self._inner.divergence()

    def session(self) -> Session:
        return Session(self._inner.session())

    def generate(self, prompt: str, **settings: Any) -> Generation:
        """One generation on a session of its own."""
        return self.session().generate(prompt, **settings)


def load(recipe: Union[Recipe, str, os.PathLike], *, threads: Optional[int] = None,
         ctx_size: int = 0, strategy: str = "auto", n_gpu_layers: int = 0,
         draft_model: Optional[str] = None, quiet: bool = True) -> Mood:
    """Loads a recipe (a :class:`Recipe` or the path of a recipe file). ``quiet`` silences
    llama.cpp's own log lines."""
    if not isinstance(recipe, Recipe):
        recipe = Recipe.from_file(recipe)
    if quiet:
        silence_llama_log()
    options = {"ctx_size": ctx_size, "strategy": strategy, "n_gpu_layers": n_gpu_layers}
    if threads is not None:
        options["threads"] = threads
    if draft_model is not None:
        options["draft_model"] = os.fspath(draft_model)
    for k, v in options.items():
        if k != "strategy" and k != "draft_model" and (isinstance(v, bool) or not isinstance(v, int)):
            raise _setting(k, f"must be a whole number, got {v!r}")
    return Mood(_mood.Model(recipe.toml(), recipe.base_dir, json.dumps(options)))


def sweep(mood: Mood, prompts: Sequence[str], weights: Sequence[Sequence[float]], *,
          beta: float = 1.0, lanes: int = 4, **settings: Any) -> List[Dict[str, Any]]:
    """Decodes every prompt at every weight vector and scores each generation's implicit
    rewards (the recipe needs a reference). Returns one row per weight vector: its weights,
    each expert's mean reward and standard error, the mean length, and whether it is on the
    Pareto front (no other row is at least as good for every expert and better for one)."""
    session = mood.session()
    rows = []
    for w in weights:
        results = session.generate_many(list(prompts), lanes=lanes, weights=list(w), **settings)
        rewards: Dict[str, List[float]] = {e: [] for e in mood.experts}
        lengths = []
        for prompt, g in zip(prompts, results):
            if isinstance(g, BaseException):
                raise g
            s = session.score(prompt, g.text, beta=beta)
            for e in mood.experts:
                rewards[e].append(s["rewards"][e])
            lengths.append(len(g.tokens))
        n = len(lengths)
        row: Dict[str, Any] = {"weights": list(w), "mean_tokens": sum(lengths) / max(n, 1)}
        for e, xs in rewards.items():
            mean = sum(xs) / max(n, 1)
            var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
            row[f"reward_{e}"] = mean
            row[f"stderr_{e}"] = math.sqrt(var / n) if n > 0 else 0.0
        rows.append(row)
    keys = [f"reward_{e}" for e in mood.experts]
    for r in rows:
        r["pareto"] = not any(
            all(o[k] >= r[k] for k in keys) and any(o[k] > r[k] for k in keys)
            for o in rows if o is not r
        )
    return rows
