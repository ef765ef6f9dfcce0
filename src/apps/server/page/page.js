// The page of `mood serve`: a chat whose replies are steered by one weight per expert.
// It uses the server's OpenAI-compatible API (POST v1/chat/completions, streamed as SSE) and
// GET v1/mood for the recipe; the API key, when the server has one, is kept in local storage.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = "mood.apiKey";
  const CHAT_STORE = "mood.conversation";
  const FREE_RANGE = [-1, 2];
  const SIMPLEX_RANGE = [0, 1];
  const STEP = 0.05;

  const state = {
    recipe: null, // GET v1/mood
    weights: [],
    divergence: "reverse-kl",
    temperature: 0,
    messages: [], // {role, content, meta?, error?}
    busy: null, // the AbortController of the reply being streamed
  };

  // ---- storage -----------------------------------------------------------------------
  function stored(name) {
    try { return localStorage.getItem(name); } catch (_) { return null; }
  }
  function store(name, value) {
    try {
      if (value === null) localStorage.removeItem(name); else localStorage.setItem(name, value);
    } catch (_) { /* private mode: kept in the page only */ }
  }
  function saveChat() {
    store(CHAT_STORE, JSON.stringify(state.messages));
  }

  // ---- the API -----------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function headers() {
    const h = { "Content-Type": "application/json" };
    const key = stored(KEY_STORE);
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }

  async function errorOf(res) {
    let message = res.status + " " + res.statusText;
    try {
      const body = await res.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_) { /* not JSON */ }
    if (res.status === 401) askKey("The server refused the key: " + message);
    return new ApiError(res.status, message);
  }

  async function loadRecipe() {
    const res = await fetch("v1/mood", { headers: headers() });
    if (!res.ok) throw await errorOf(res);
    const recipe = await res.json();
    state.recipe = recipe;
    state.weights = recipe.weights.slice();
    state.divergence = recipe.divergence;
    state.temperature = recipe.temperature || 0;
    $("model").textContent = recipe.model + " · " + recipe.experts.length +
      (recipe.experts.length === 1 ? " expert" : " experts");
    buildSliders();
    setDivergence(recipe.divergence, false);
    $("temperature").value = String(state.temperature);
    $("temperature-value").textContent = String(state.temperature);
    status("");
    updateButtons();
  }

  // ---- weights -----------------------------------------------------------------------
  // free: reverse KL with a reference, any real weights; affine: reverse KL without a
  // reference, weights summing to 1; simplex: the other divergences, w >= 0 summing to 1.
  function mode() {
    if (state.divergence === "reverse-kl") return state.recipe.reference ? "free" : "affine";
    return "simplex";
  }
  function range() {
    return mode() === "simplex" ? SIMPLEX_RANGE : FREE_RANGE;
  }
  const clean = (x) => Math.round(x * 1e6) / 1e6;
  const sum = (w) => w.reduce((a, b) => a + b, 0);

  // Weights summing to exactly 1 (up to rounding): the largest one takes the remainder.
  function unitSum(w) {
    let k = 0;
    w.forEach((x, i) => { if (Math.abs(x) > Math.abs(w[k])) k = i; });
    w[k] = 1 - sum(w.filter((_, i) => i !== k));
    return w;
  }

  // Expert i set to v; in the constrained modes the others make the sum 1 again.
  function moveWeight(i, v) {
    const w = state.weights.slice();
    const [lo, hi] = range();
    w[i] = Math.min(hi, Math.max(lo, v));
    const m = mode();
    if (m !== "free" && w.length > 1) {
      const others = w.map((_, j) => j).filter((j) => j !== i);
      const rest = 1 - w[i];
      if (m === "simplex") {
        // The others keep their ratios.
        const s = sum(others.map((j) => w[j]));
        others.forEach((j) => { w[j] = s > 1e-9 ? w[j] * rest / s : rest / others.length; });
      } else {
        // The others shift equally, within the slider range.
        let free = others.slice();
        for (let round = 0; round < w.length && free.length; round++) {
          const gap = (rest - sum(others.map((j) => w[j]))) / free.length;
          if (Math.abs(gap) < 1e-12) break;
          free.forEach((j) => { w[j] = Math.min(hi, Math.max(lo, w[j] + gap)); });
          free = free.filter((j) => w[j] > lo && w[j] < hi);
        }
      }
      state.weights = unitSum(w.map(clean));
    } else {
      state.weights = w.map(clean);
    }
    showWeights();
  }

  // The weights moved onto the simplex (for a divergence that needs it).
  function toSimplex() {
    let w = state.weights.map((x) => Math.max(0, x));
    const s = sum(w);
    w = s > 1e-9 ? w.map((x) => x / s) : w.map(() => 1 / w.length);
    state.weights = unitSum(w.map(clean));
  }

  function fmt(x) {
    const r = Math.round(x * 100) / 100;
    return (Object.is(r, -0) ? 0 : r).toFixed(2);
  }

  // What sets each expert apart: its system prompt (or prefix) without the part all share.
  function descriptions(experts) {
    const texts = experts.map((e) => e.system || e.prefix || "");
    if (texts.length < 2) return texts;
    let n = 0;
    while (texts.every((t) => n < t.length && t[n] === texts[0][n])) n++;
    const cut = texts[0].lastIndexOf(" ", n) + 1;
    return texts.map((t) => (cut > 0 && t.length > cut ? t.slice(cut) : t));
  }

  function buildSliders() {
    const box = $("sliders");
    box.textContent = "";
    const what = descriptions(state.recipe.experts);
    state.recipe.experts.forEach((e, i) => {
      const div = document.createElement("div");
      div.className = "slider";
      const head = document.createElement("div");
      head.className = "head";
      const label = document.createElement("label");
      label.className = "name";
      label.htmlFor = "weight-" + i;
      label.textContent = e.name;
      const out = document.createElement("output");
      out.id = "weight-" + i + "-value";
      head.append(label, out);
      const input = document.createElement("input");
      input.type = "range";
      input.id = "weight-" + i;
      input.dataset.expert = e.name;
      input.step = String(STEP);
      input.addEventListener("input", () => moveWeight(i, Number(input.value)));
      div.append(head);
      if (what[i]) {
        const p = document.createElement("div");
        p.className = "what dim";
        p.textContent = what[i];
        p.title = e.system || e.prefix || "";
        div.append(p);
      }
      div.append(input);
      box.append(div);
    });
  }

  function showWeights() {
    const [lo, hi] = range();
    const one = mode() !== "free" && state.weights.length === 1;
    state.weights.forEach((w, i) => {
      const input = $("weight-" + i);
      input.min = String(lo);
      input.max = String(hi);
      input.value = String(w);
      input.disabled = one;
      $("weight-" + i + "-value").textContent = fmt(w);
    });
    const names = state.recipe.experts.map((e, i) => e.name + " " + fmt(state.weights[i]));
    $("summary").textContent = names.join(" · ");
    const s = sum(state.weights);
    const rule = {
      free: "Any real weights: below 0 steers away from an expert, above 1 extrapolates; " +
        "a sum other than 1 also runs the reference (sum " + fmt(s) + ").",
      affine: "Any real weights summing to 1 (this recipe has no reference): " +
        "moving one slider moves the others.",
      simplex: "This divergence needs weights ≥ 0 summing to 1: moving one slider moves the others.",
    }[mode()];
    $("rule").textContent = rule;
  }

  function setDivergence(name, project) {
    const select = $("divergence");
    if (![...select.options].some((o) => o.value === name)) {
      const o = document.createElement("option");
      o.value = o.textContent = name;
      select.append(o);
    }
    // Divergences other than reverse KL need the reference.
    [...select.options].forEach((o) => {
      o.disabled = o.value !== "reverse-kl" && !state.recipe.reference;
    });
    select.value = name;
    state.divergence = name;
    if (project && mode() !== "free") {
      if (mode() === "simplex") toSimplex(); else state.weights = unitSum(state.weights.slice());
    }
    showWeights();
  }

  // ---- the conversation --------------------------------------------------------------
  function status(text) {
    $("status").textContent = text;
  }

  function render() {
    const box = $("messages");
    box.querySelectorAll(".msg").forEach((m) => m.remove());
    $("empty").hidden = state.messages.length > 0;
    state.messages.forEach((m) => box.append(bubble(m)));
    box.scrollTop = box.scrollHeight;
    updateButtons();
  }

  function bubble(m) {
    const div = document.createElement("div");
    div.className = "msg " + m.role + (m.error ? " error" : "");
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = m.content;
    div.append(text);
    if (m.meta) {
      const meta = document.createElement("div");
      meta.className = "meta";
      meta.textContent = m.meta;
      div.append(meta);
    }
    return div;
  }

  function updateButtons() {
    const ready = !!state.recipe && !state.busy;
    $("send").disabled = !ready;
    $("send").hidden = !!state.busy;
    $("stop").hidden = !state.busy;
    $("regenerate").disabled = !ready || !state.messages.some((m) => m.role === "user");
    $("defaults").disabled = !state.recipe;
  }

  function describe(reply, sent) {
    const parts = [];
    const mood = reply.mood;
    const weights = mood ? mood.weights : sent.weights;
    const names = state.recipe.experts.map((e, i) => e.name + " " + fmt(weights[i]));
    parts.push(names.join(", "));
    parts.push(mood ? mood.divergence : sent.divergence);
    parts.push("T " + sent.temperature);
    if (mood && mood.timings) {
      const t = mood.timings;
      if (reply.usage) parts.push(reply.usage.completion_tokens + " tokens");
      parts.push(t.tokens_per_second.toFixed(1) + " tok/s");
      parts.push("prompt " + t.prompt_ms.toFixed(0) + " ms");
      parts.push("decode " + t.decode_ms.toFixed(0) + " ms (forward " + t.forward_ms.toFixed(0) +
        ", combine " + t.combine_ms.toFixed(1) + ", sample " + t.sample_ms.toFixed(1) + ")");
    }
    if (reply.finish) parts.push(reply.finish);
    return parts.join(" · ");
  }

  // Streams the reply to the conversation so far.
  async function reply() {
    const history = state.messages.filter((m) => !m.error)
      .map((m) => ({ role: m.role, content: m.content }));
    const sent = {
      model: state.recipe.model,
      messages: history,
      stream: true,
      weights: state.weights.slice(),
      divergence: state.divergence,
      temperature: state.temperature,
    };
    const message = { role: "assistant", content: "" };
    state.messages.push(message);
    const el = bubble(message);
    el.classList.add("streaming");
    const box = $("messages");
    $("empty").hidden = true;
    box.append(el);
    const text = el.querySelector(".text");
    const controller = new AbortController();
    state.busy = controller;
    updateButtons();
    status("");
    const got = {};
    try {
      const res = await fetch("v1/chat/completions", {
        method: "POST",
        headers: headers(),
        body: JSON.stringify(sent),
        signal: controller.signal,
      });
      if (!res.ok) throw await errorOf(res);
      await readEvents(res, (data) => {
        if (data.error) throw new ApiError(500, data.error.message);
        const choice = data.choices && data.choices[0];
        const piece = choice && choice.delta && choice.delta.content;
        if (piece) {
          const follow = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
          message.content += piece;
          text.textContent = message.content;
          if (follow) box.scrollTop = box.scrollHeight;
        }
        if (choice && choice.finish_reason) got.finish = choice.finish_reason;
        if (data.mood) got.mood = data.mood;
        if (data.usage) got.usage = data.usage;
      });
      message.meta = describe(got, sent);
    } catch (e) {
      if (e.name === "AbortError") {
        got.finish = "stopped";
        message.meta = describe(got, sent);
      } else {
        message.error = true;
        message.content = message.content ? message.content + "\n\n" + e.message : e.message;
      }
    } finally {
      controller.abort(); // nothing left to read (a no-op after [DONE])
      state.busy = null;
      saveChat();
      render();
    }
  }

  // Calls `on(json)` for every `data:` event of an SSE response, until `data: [DONE]`.
  async function readEvents(res, on) {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
        const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (!data) continue;
        if (data === "[DONE]") {
          reader.cancel().catch(() => {});
          return;
        }
        on(JSON.parse(data));
      }
    }
  }

  function send(event) {
    event.preventDefault();
    const input = $("input");
    const content = input.value.trim();
    if (!content || !state.recipe || state.busy) return;
    input.value = "";
    state.messages.push({ role: "user", content });
    render();
    reply();
  }

  function regenerate() {
    if (!state.recipe || state.busy) return;
    while (state.messages.length && state.messages[state.messages.length - 1].role !== "user") {
      state.messages.pop();
    }
    if (!state.messages.length) return;
    render();
    reply();
  }

  // ---- the API key -------------------------------------------------------------------
  function askKey(why) {
    const dialog = $("key-dialog");
    $("key-why").textContent = why;
    $("key-input").value = stored(KEY_STORE) || "";
    if (!dialog.open) dialog.showModal();
    $("key-input").focus();
  }

  function keyDone(event) {
    event.preventDefault();
    const save = event.submitter && event.submitter.value === "save";
    $("key-dialog").close();
    if (!save) return;
    const key = $("key-input").value.trim();
    store(KEY_STORE, key || null);
    if (!state.recipe) start();
    else status("Key saved.");
  }

  // ---- start -------------------------------------------------------------------------
  async function start() {
    try {
      await loadRecipe();
    } catch (e) {
      $("model").textContent = "not connected";
      status(e.status === 401 ? "This server needs an API key (Key, above)." :
        "Cannot read the server's recipe: " + e.message);
    }
  }

  function init() {
    try {
      const saved = JSON.parse(stored(CHAT_STORE) || "[]");
      if (Array.isArray(saved)) {
        state.messages = saved.filter((m) => m && typeof m.content === "string" &&
          (m.role === "user" || m.role === "assistant"));
      }
    } catch (_) { /* a broken saved conversation starts afresh */ }
    $("composer").addEventListener("submit", send);
    $("input").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) send(e);
    });
    $("stop").addEventListener("click", () => state.busy && state.busy.abort());
    $("regenerate").addEventListener("click", regenerate);
    $("defaults").addEventListener("click", () => {
      if (!state.recipe) return;
      state.weights = state.recipe.weights.slice();
      setDivergence(state.recipe.divergence, false);
    });
    $("divergence").addEventListener("change", (e) => setDivergence(e.target.value, true));
    $("temperature").addEventListener("input", (e) => {
      state.temperature = Number(e.target.value);
      $("temperature-value").textContent = e.target.value;
    });
    $("new-chat").addEventListener("click", () => {
      if (state.busy) state.busy.abort();
      state.messages = [];
      saveChat();
      render();
      status("");
    });
    $("key-button").addEventListener("click", () =>
      askKey("API key of this server (empty: none)."));
    $("key-form").addEventListener("submit", keyDone);
    if (window.matchMedia("(max-width: 760px)").matches) $("controls").open = false;
    render();
    start();
  }

  init();
})();
