// The page of `mood serve`: a chat whose replies are steered by one weight per expert.
// It uses the server's OpenAI-compatible API (POST v1/chat/completions, streamed as SSE) and
// GET v1/mood for the recipe. The API key, when the server has one, and the conversations
// are kept in local storage.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = "mood.apiKey";
  const CHATS_STORE = "mood.conversations";
  const OLD_CHAT_STORE = "mood.conversation"; // one conversation, as earlier pages kept it
  const FREE_RANGE = [-1, 2];
  const SIMPLEX_RANGE = [0, 1];
  const STEP = 0.05;

  const state = {
    recipe: null, // GET v1/mood
    weights: [],
    divergence: "reverse-kl",
    temperature: 0,
    maxTokens: null,
    // {id, system, messages: [{role, content, meta?, error?}], updated}, newest first
    chats: [],
    current: null, // the id of the conversation shown
    busy: null, // the AbortController of the reply being streamed
  };

  // ---- Markdown ----------------------------------------------------------------------
  // Replies are shown as Markdown: paragraphs, headings, lists, quotes, fenced code, tables,
  // **bold**, *italic*, `code`, ~~struck~~ and links. Everything is built with createElement
  // and text nodes: no text of a reply is ever parsed as HTML, so markup in a reply is shown
  // as the characters it is made of. Links open in a new tab, and only http(s) ones.

  function node(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Text with its line breaks as <br>.
  function appendText(parent, text) {
    text.split("\n").forEach((line, i) => {
      if (i > 0) parent.append(node("br"));
      if (line) parent.append(document.createTextNode(line));
    });
  }

  // The URL of an http(s) link, or null for any other scheme (javascript:, data:, …).
  function safeUrl(url) {
    if (!/^https?:\/\//i.test(url)) return null;
    try {
      const u = new URL(url);
      return /^https?:$/.test(u.protocol) ? u.href : null;
    } catch (_) {
      return null;
    }
  }

  // A link to `url` showing `label` (Markdown, or plain text where `plain`).
  function link(label, url, parent, plain) {
    const href = safeUrl(url);
    let e;
    if (href) {
      e = node("a");
      e.href = href;
      e.target = "_blank";
      e.rel = "noopener noreferrer nofollow";
    } else {
      // Not a web link: its text alone.
      e = node("span", "link-off");
      e.title = url;
    }
    if (plain) appendText(e, label); else inline(label, e);
    parent.append(e);
  }

  // Whether a letter, digit or underscore comes before position i (where `_` emphasis and
  // bare URLs cannot start).
  const wordBefore = (text, i) => i > 0 && /[\p{L}\p{N}_]/u.test(text[i - 1]);

  // Inline rules, tried in order where a span can start; each matches at the position only
  // (sticky).
  const INLINE = [
    { at: "\\", re: /\\([!-/:-@[-`{-~])/y, make: (m, p) => appendText(p, m[1]) },
    {
      at: "`",
      re: /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/y,
      make: (m, p) => {
        const code = m[2].replace(/\n/g, " ");
        p.append(node("code", "", /^ .* $/.test(code) ? code.slice(1, -1) : code));
      },
    },
    {
      at: "!",
      re: /!\[([^\]]*)\]\(([^()\s]*)(?:\s+"[^"]*")?\)/y,
      // Images are not loaded: their description stands in.
      make: (m, p) => p.append(node("span", "link-off", m[1] || "image")),
    },
    {
      at: "[",
      re: /\[((?:[^[\]]|\[[^[\]]*\])*)\]\(\s*<?([^\s()<>]*(?:\([^\s()]*\)[^\s()<>]*)*)>?(?:\s+(?:"[^"]*"|'[^']*'))?\s*\)/y,
      make: (m, p) => link(m[1], m[2], p),
    },
    {
      at: "<",
      re: /<(https?:\/\/[^\s<>]+)>/y,
      make: (m, p) => link(m[1], m[1], p, true),
    },
    {
      at: "h",
      word: true,
      re: /https?:\/\/[^\s<>()[\]]*[^\s<>()[\].,;:!?'"*_~]/y,
      make: (m, p) => link(m[0], m[0], p, true),
    },
    {
      at: "*_",
      re: /(\*\*\*|___)(?=\S)([\s\S]*?\S)\1/y,
      make: (m, p) => {
        const em = node("em");
        inline(m[2], em);
        const strong = node("strong");
        strong.append(em);
        p.append(strong);
      },
    },
    { at: "*", re: /\*\*(?=\S)([\s\S]*?\S)\*\*/y, tag: "strong" },
    { at: "_", word: true, re: /__(?=\S)([\s\S]*?\S)__(?![\p{L}\p{N}_])/uy, tag: "strong" },
    { at: "*", re: /\*(?=[^\s*])((?:[^*]|\*\*[^*]+\*\*)*?[^\s*])\*(?!\*)/y, tag: "em" },
    { at: "_", word: true, re: /_(?=[^\s_])([^_]*?[^\s_])_(?![\p{L}\p{N}_])/uy, tag: "em" },
    { at: "~", re: /~~(?=\S)([\s\S]*?\S)~~/y, tag: "del" },
  ];
  const INLINE_START = new Set(INLINE.flatMap((r) => [...r.at]));

  function inline(text, parent) {
    let plain = "";
    let i = 0;
    while (i < text.length) {
      const c = text[i];
      let matched = null;
      if (INLINE_START.has(c)) {
        for (const rule of INLINE) {
          if (!rule.at.includes(c) || (rule.word && wordBefore(text, i))) continue;
          rule.re.lastIndex = i;
          const m = rule.re.exec(text);
          if (m) {
            matched = [rule, m];
            break;
          }
        }
      }
      if (!matched) {
        plain += c;
        i += 1;
        continue;
      }
      const [rule, m] = matched;
      if (plain) appendText(parent, plain);
      plain = "";
      if (rule.make) {
        rule.make(m, parent);
      } else {
        const e = node(rule.tag);
        inline(m[1], e);
        parent.append(e);
      }
      i += m[0].length;
    }
    if (plain) appendText(parent, plain);
  }

  const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$/;
  const HEADING = /^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$/;
  const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
  const QUOTE = /^ {0,3}>[ ]?(.*)$/;
  const TABLE_RULE = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;

  const indentOf = (line) => line.match(/^ */)[0].length;

  // A list item's marker: its indentation, kind, number and the column its text starts at.
  function listMarker(line) {
    let m = line.match(/^( *)([-*+])([ \t]+(.*))?$/);
    if (m && (m[3] || line.trim().length === 1)) {
      const content = m[4] || "";
      return { indent: m[1].length, ordered: false, content, offset: line.length - content.length };
    }
    m = line.match(/^( *)(\d{1,9})([.)])(?:[ \t]+(.*))?$/);
    if (m) {
      const content = m[4] || "";
      return {
        indent: m[1].length,
        ordered: true,
        start: Number(m[2]),
        content,
        offset: Math.max(line.length - content.length, m[1].length + m[2].length + 2),
      };
    }
    return null;
  }

  function tableStarts(lines, i) {
    return lines[i].includes("|") && i + 1 < lines.length &&
      lines[i + 1].includes("|") && lines[i + 1].includes("-") && TABLE_RULE.test(lines[i + 1]);
  }

  // Whether line i starts a block other than a paragraph (and so ends a paragraph).
  function startsBlock(lines, i) {
    const l = lines[i];
    return FENCE.test(l) || HEADING.test(l) || RULE.test(l) || QUOTE.test(l) ||
      !!listMarker(l) || tableStarts(lines, i);
  }

  function cells(line) {
    let s = line.trim();
    if (s.startsWith("|")) s = s.slice(1);
    if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
    return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
  }

  function table(lines, i, parent) {
    const head = cells(lines[i]);
    const align = cells(lines[i + 1]).map((c) =>
      c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "");
    const wrap = node("div", "table");
    const t = node("table");
    const row = (values, tag) => {
      const tr = node("tr");
      head.forEach((_, k) => {
        const cell = node(tag);
        if (align[k]) cell.style.textAlign = align[k];
        inline(values[k] || "", cell);
        tr.append(cell);
      });
      return tr;
    };
    const thead = node("thead");
    thead.append(row(head, "th"));
    const tbody = node("tbody");
    i += 2;
    while (i < lines.length && lines[i].trim() && lines[i].includes("|")) {
      tbody.append(row(cells(lines[i]), "td"));
      i += 1;
    }
    t.append(thead, tbody);
    wrap.append(t);
    parent.append(wrap);
    return i;
  }

  function codeBlock(code, lang) {
    const box = node("div", "code");
    if (lang) box.append(node("div", "lang", lang));
    const pre = node("pre");
    const c = node("code", "", code);
    if (/^[\w+#.-]+$/.test(lang)) c.className = "language-" + lang;
    pre.append(c);
    box.append(pre);
    return box;
  }

  function list(lines, i, parent) {
    const first = listMarker(lines[i]);
    const box = node(first.ordered ? "ol" : "ul");
    if (first.ordered && first.start !== 1) box.start = first.start;
    for (;;) {
      const m = listMarker(lines[i]);
      const item = [m.content];
      i += 1;
      while (i < lines.length) {
        const l = lines[i];
        if (!l.trim()) {
          // Blank lines stay in the item when indented text follows.
          let j = i;
          while (j < lines.length && !lines[j].trim()) j += 1;
          if (j < lines.length && indentOf(lines[j]) > m.indent) {
            for (; i < j; i += 1) item.push("");
            continue;
          }
          break;
        }
        const indent = indentOf(l);
        if (indent > m.indent) {
          item.push(l.slice(Math.min(indent, m.offset)));
        } else if (!startsBlock(lines, i) && item[item.length - 1].trim()) {
          item.push(l); // a paragraph's continuation, not indented
        } else {
          break;
        }
        i += 1;
      }
      const li = node("li");
      blocks(item, li);
      // A one-paragraph item holds its text directly.
      if (li.childNodes.length === 1 && li.firstChild.tagName === "P") li.firstChild.replaceWith(...li.firstChild.childNodes);
      box.append(li);
      let j = i;
      while (j < lines.length && !lines[j].trim()) j += 1;
      const next = j < lines.length ? listMarker(lines[j]) : null;
      if (!next || next.ordered !== first.ordered || next.indent > m.indent) break;
      i = j;
    }
    parent.append(box);
    return i;
  }

  function blocks(lines, parent) {
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (!line.trim()) {
        i += 1;
      } else if ((m = line.match(FENCE))) {
        // To the closing fence, or to the end while a reply still streams.
        const fence = m[1];
        const body = [];
        i += 1;
        const closing = new RegExp("^ {0,3}" + fence[0] + "{" + fence.length + ",}[ \\t]*$");
        while (i < lines.length && !closing.test(lines[i])) body.push(lines[i++]);
        i += 1;
        parent.append(codeBlock(body.join("\n"), m[2]));
      } else if ((m = line.match(HEADING))) {
        const h = node("h" + m[1].length);
        inline(m[2], h);
        parent.append(h);
        i += 1;
      } else if (RULE.test(line)) {
        parent.append(node("hr"));
        i += 1;
      } else if (QUOTE.test(line)) {
        const inner = [];
        while (i < lines.length && (m = lines[i].match(QUOTE))) {
          inner.push(m[1]);
          i += 1;
        }
        const q = node("blockquote");
        blocks(inner, q);
        parent.append(q);
      } else if (listMarker(line)) {
        i = list(lines, i, parent);
      } else if (tableStarts(lines, i)) {
        i = table(lines, i, parent);
      } else {
        const para = [line.trim()];
        i += 1;
        while (i < lines.length && lines[i].trim() && !startsBlock(lines, i)) para.push(lines[i++].trim());
        const p = node("p");
        inline(para.join("\n"), p);
        parent.append(p);
      }
    }
  }

  // Replaces the content of `box` with `markdown` rendered.
  function renderMarkdown(markdown, box) {
    const fragment = document.createDocumentFragment();
    blocks(markdown.replace(/\r\n?/g, "\n").replace(/\t/g, "    ").split("\n"), fragment);
    box.replaceChildren(fragment);
  }

  // ---- storage -----------------------------------------------------------------------
  function stored(name) {
    try { return localStorage.getItem(name); } catch (_) { return null; }
  }
  function store(name, value) {
    try {
      if (value === null) localStorage.removeItem(name); else localStorage.setItem(name, value);
      return true;
    } catch (_) {
      return false; // private mode or full: kept in the page only
    }
  }

  function chat() {
    return state.chats.find((c) => c.id === state.current);
  }

  function newChat() {
    const c = { id: Date.now().toString(36) + Math.random().toString(36).slice(2, 8), system: "", messages: [], updated: Date.now() };
    state.chats.unshift(c);
    state.current = c.id;
    return c;
  }

  // Saves the conversations; empty ones are dropped, except the one shown.
  function saveChats() {
    const keep = state.chats.filter((c) => c.id === state.current || c.messages.length || c.system);
    const ok = store(CHATS_STORE, JSON.stringify({ current: state.current, conversations: keep }));
    if (!ok) status("The conversations cannot be saved in this browser (storage full or off).");
  }

  function validMessages(list) {
    return Array.isArray(list) ? list.filter((m) => m && typeof m.content === "string" &&
      (m.role === "user" || m.role === "assistant")) : [];
  }

  function loadChats() {
    try {
      const saved = JSON.parse(stored(CHATS_STORE) || "null");
      if (saved && Array.isArray(saved.conversations)) {
        state.chats = saved.conversations.filter((c) => c && typeof c.id === "string").map((c) => ({
          id: c.id,
          system: typeof c.system === "string" ? c.system : "",
          messages: validMessages(c.messages),
          updated: Number(c.updated) || 0,
        }));
        state.current = saved.current;
      } else {
        const old = validMessages(JSON.parse(stored(OLD_CHAT_STORE) || "[]"));
        if (old.length) newChat().messages = old;
        store(OLD_CHAT_STORE, null);
      }
    } catch (_) { /* broken saved conversations start afresh */ }
    state.chats.sort((a, b) => b.updated - a.updated);
    if (!chat()) {
      if (state.chats.length) state.current = state.chats[0].id; else newChat();
    }
  }

  // A conversation's name in the list: its first message.
  function title(c) {
    const first = c.messages.find((m) => m.role === "user");
    const text = first ? first.content.replace(/\s+/g, " ").trim() : "";
    return text ? (text.length > 60 ? text.slice(0, 57) + "…" : text) : "New conversation";
  }

  function showChats() {
    const list = $("conversations");
    list.textContent = "";
    state.chats.forEach((c) => {
      const li = node("li", "conv" + (c.id === state.current ? " current" : ""));
      const open = node("button", "open", title(c));
      open.type = "button";
      open.title = title(c);
      if (c.id === state.current) open.setAttribute("aria-current", "true");
      open.addEventListener("click", () => switchTo(c.id));
      const del = node("button", "delete", "×");
      del.type = "button";
      del.title = "Delete this conversation";
      del.setAttribute("aria-label", "Delete conversation: " + title(c));
      // Two clicks delete: the first asks.
      del.addEventListener("click", () => {
        if (del.classList.contains("confirm")) {
          remove(c.id);
          return;
        }
        del.classList.add("confirm");
        del.textContent = "Delete?";
        setTimeout(() => {
          del.classList.remove("confirm");
          del.textContent = "×";
        }, 4000);
      });
      li.append(open, del);
      list.append(li);
    });
    const n = state.chats.filter((c) => c.messages.length).length;
    $("history-count").textContent = n ? "(" + n + ")" : "";
  }

  function stopReply() {
    if (state.busy) state.busy.abort();
  }

  function switchTo(id) {
    if (id === state.current) return;
    stopReply();
    state.current = id;
    saveChats();
    state.chats = state.chats.filter((c) => c.id === id || c.messages.length || c.system);
    render();
    status("");
  }

  function remove(id) {
    if (id === state.current) stopReply();
    state.chats = state.chats.filter((c) => c.id !== id);
    if (!chat()) {
      if (state.chats.length) state.current = state.chats[0].id; else newChat();
    }
    saveChats();
    render();
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
    state.maxTokens = recipe.max_tokens || null;
    $("model").textContent = recipe.model + " · " + recipe.experts.length +
      (recipe.experts.length === 1 ? " expert" : " experts");
    buildSliders();
    setDivergence(recipe.divergence, false);
    $("temperature").value = String(state.temperature);
    $("temperature-value").textContent = String(state.temperature);
    $("max-tokens").value = state.maxTokens ? String(state.maxTokens) : "";
    $("max-tokens").placeholder = state.maxTokens ? String(state.maxTokens) : "";
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
      const div = node("div", "slider");
      const head = node("div", "head");
      const label = node("label", "name", e.name);
      label.htmlFor = "weight-" + i;
      const out = node("output");
      out.id = "weight-" + i + "-value";
      head.append(label, out);
      const input = node("input");
      input.type = "range";
      input.id = "weight-" + i;
      input.dataset.expert = e.name;
      input.step = String(STEP);
      input.addEventListener("input", () => moveWeight(i, Number(input.value)));
      div.append(head);
      if (what[i]) {
        const p = node("div", "what dim", what[i]);
        p.title = e.system || e.prefix || "";
        div.append(p);
      }
      // The track with a mark where the weight is 0 (placed by showWeights).
      const track = node("div", "track");
      const zero = node("span", "zero");
      zero.id = "weight-" + i + "-zero";
      zero.title = "weight 0";
      zero.setAttribute("aria-hidden", "true");
      track.append(input, zero);
      div.append(track);
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
      // The zero mark, at 0's fraction of the track; shown when 0 is inside the range.
      const zero = $("weight-" + i + "-zero");
      zero.parentElement.style.setProperty("--zero", String((0 - lo) / (hi - lo)));
      zero.hidden = !(lo < 0 && hi > 0);
    });
    const names = state.recipe.experts.map((e, i) => e.name + " " + fmt(state.weights[i]));
    $("summary").textContent = names.join(" · ");
    const s = sum(state.weights);
    const rule = {
      free: "Any real weights: below 0 (left of the mark) steers away from an expert, above 1 " +
        "extrapolates; a sum other than 1 also runs the reference (sum " + fmt(s) + ").",
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

  // ---- copying -----------------------------------------------------------------------
  // Through the selection, where the Clipboard API is missing (pages served over plain
  // HTTP to another machine) or refused.
  function copyBySelection(text) {
    const area = node("textarea", "offscreen");
    area.value = text;
    area.setAttribute("readonly", "");
    document.body.append(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
    area.remove();
    return ok;
  }

  async function copy(text, button, shown) {
    let ok = false;
    if (navigator.clipboard && navigator.clipboard.writeText) {
      try {
        await navigator.clipboard.writeText(text);
        ok = true;
      } catch (_) { ok = false; }
    }
    if (!ok) ok = copyBySelection(text);
    if (!ok) {
      // Neither works: the text is selected for the reader to copy.
      const range = document.createRange();
      range.selectNodeContents(shown);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    button.textContent = ok ? "Copied" : "Selected: copy with Ctrl+C";
    button.classList.toggle("done", ok);
    clearTimeout(button.reset);
    button.reset = setTimeout(() => {
      button.textContent = "Copy";
      button.classList.remove("done");
    }, 2000);
  }

  // ---- the conversation --------------------------------------------------------------
  function status(text) {
    $("status").textContent = text;
  }

  function render() {
    const c = chat();
    const box = $("messages");
    box.querySelectorAll(".msg").forEach((m) => m.remove());
    $("empty").hidden = c.messages.length > 0;
    c.messages.forEach((m) => box.append(bubble(m)));
    box.scrollTop = box.scrollHeight;
    $("system").value = c.system;
    showChats();
    updateButtons();
  }

  // A message's text: replies as Markdown, the rest (what the user typed, errors) as typed.
  function showText(m, text) {
    if (m.role === "assistant" && !m.error) {
      text.classList.add("markdown");
      renderMarkdown(m.content, text);
    } else {
      text.textContent = m.content;
    }
  }

  function bubble(m) {
    const div = node("div", "msg " + m.role + (m.error ? " error" : ""));
    div.dataset.markdown = m.content;
    const text = node("div", "text");
    showText(m, text);
    div.append(text);
    const foot = node("div", "foot");
    const meta = node("div", "meta", m.meta || "");
    const button = node("button", "copy", "Copy");
    button.type = "button";
    button.title = "Copy this message's text (Markdown)";
    button.addEventListener("click", () => copy(m.content, button, text));
    foot.append(meta, button);
    div.append(foot);
    return div;
  }

  function updateButtons() {
    const ready = !!state.recipe && !state.busy;
    $("send").disabled = !ready;
    $("send").hidden = !!state.busy;
    $("stop").hidden = !state.busy;
    $("regenerate").disabled = !ready || !chat().messages.some((m) => m.role === "user");
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

  // The token limit of the field, or the server's when the field holds no whole number > 0.
  function maxTokens() {
    const n = Number($("max-tokens").value);
    return Number.isInteger(n) && n > 0 ? n : state.maxTokens;
  }

  // Streams the reply to the conversation so far.
  async function reply() {
    const c = chat();
    const history = c.messages.filter((m) => !m.error)
      .map((m) => ({ role: m.role, content: m.content }));
    const system = c.system.trim();
    const sent = {
      model: state.recipe.model,
      messages: system ? [{ role: "system", content: system }].concat(history) : history,
      stream: true,
      weights: state.weights.slice(),
      divergence: state.divergence,
      temperature: state.temperature,
    };
    const limit = maxTokens();
    if (limit) sent.max_tokens = limit;
    const message = { role: "assistant", content: "" };
    c.messages.push(message);
    c.updated = Date.now();
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
    // The Markdown is drawn again at most once a frame while tokens arrive.
    let drawing = false;
    const redraw = () => {
      drawing = false;
      if (!el.isConnected) return;
      const follow = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      renderMarkdown(message.content, text);
      if (follow) box.scrollTop = box.scrollHeight;
    };
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
          message.content += piece;
          el.dataset.markdown = message.content;
          if (!drawing) {
            drawing = true;
            requestAnimationFrame(redraw);
          }
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
      c.updated = Date.now();
      saveChats();
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
    chat().messages.push({ role: "user", content });
    render();
    reply();
  }

  function regenerate() {
    if (!state.recipe || state.busy) return;
    const messages = chat().messages;
    while (messages.length && messages[messages.length - 1].role !== "user") messages.pop();
    if (!messages.length) return;
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
    loadChats();
    $("composer").addEventListener("submit", send);
    $("input").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) send(e);
    });
    $("stop").addEventListener("click", stopReply);
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
    $("system").addEventListener("input", (e) => {
      chat().system = e.target.value;
      saveChats();
    });
    $("new-chat").addEventListener("click", () => {
      const c = chat();
      if (c.messages.length || c.system) {
        stopReply();
        newChat();
        saveChats();
        render();
      }
      status("");
      $("input").focus();
    });
    $("key-button").addEventListener("click", () =>
      askKey("API key of this server (empty: none)."));
    $("key-form").addEventListener("submit", keyDone);
    if (window.matchMedia("(max-width: 760px)").matches) {
      $("controls").open = false;
      $("history").open = false;
    }
    render();
    start();
  }

  init();
})();
