// The sandbox's live page. It polls GET /_feed with the cursor of the previous answer, so each
// poll carries only what is new, and renders every value as text (never as markup).
"use strict";

(() => {
  const POLL_MS = 1000;
  const RETRY_MS = 3000;
  const MAX_ROWS = 2000; // rows kept in the page; GET /_events has everything
  const HOST_VARIABLES = { segment: "SEGMENT_HOST", posthog: "POSTHOG_HOST" };
  const REASONS = {
    key: "wrong key",
    too_large: "too large",
    malformed: "malformed",
    not_found: "no such endpoint",
    fault: "injected fault",
    unanswered: "unanswered",
  };
  const KEY_REASONS = { missing_key: "no key", personal_api_key: "personal key", invalid_auth: "bad auth" };
  const NO_KEY = "-";

  const $ = (id) => document.getElementById(id);
  const form = $("filters");
  const state = {
    cursor: "",
    entries: [], // oldest first
    dropped: 0,
    skipped: 0,
    keys: new Set(),
    vendors: [],
    paused: false,
    timer: 0,
    polling: false,
    epoch: 0, // bumped by Clear: answers to polls sent before it are ignored
    rendered: false,
  };

  // -- building elements (text only) ---------------------------------------------------------

  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function none() {
    return el("span", "none", "—");
  }

  function clock(iso) {
    const d = new Date(iso);
    const two = (n) => String(n).padStart(2, "0");
    return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
  }

  function hue(text) {
    // FNV-1a: similar keys (…a1b2, …a1b3) still get far-apart colours.
    let h = 0x811c9dc5;
    for (const ch of text) h = Math.imul(h ^ ch.codePointAt(0), 0x01000193) >>> 0;
    return h % 360;
  }

  function keyChip(key) {
    if (!key) return none();
    const chip = el("span", "keychip", key);
    chip.style.setProperty("--chip", `hsl(${hue(key)} 70% 45%)`);
    chip.title = "masked key: the key itself is never shown";
    return chip;
  }

  function reasonOf(entry) {
    if (entry.outcome === "key") return KEY_REASONS[entry.code] || REASONS.key;
    return REASONS[entry.outcome] || entry.outcome;
  }

  function badge(entry) {
    if (entry.kind === "event") return el("span", "badge ok", "200");
    const cls = entry.outcome === "fault" ? "badge fault" : "badge bad";
    return el("span", cls, entry.status === null ? "none" : entry.status);
  }

  function cell(className, ...children) {
    const td = el("td", className, ...children);
    td.title = td.textContent;
    return td;
  }

  function rowOf(entry) {
    const tr = el("tr", "row");
    tr.dataset.id = entry.id;
    tr.dataset.kind = entry.kind;
    tr.dataset.vendor = entry.vendor;
    tr.tabIndex = 0;
    const time = cell("c-time", clock(entry.received_at));
    time.title = entry.received_at;
    const request = cell("c-request", `#${entry.request_id} ${entry.path}`);
    if (entry.kind === "event") {
      tr.dataset.messageId = entry.message_id;
      tr.append(
        el("td", "c-toggle", "▸"),
        time,
        cell(`c-vendor vendor-${entry.vendor}`, entry.vendor),
        cell("c-status", badge(entry), "accepted"),
        cell("c-type", entry.type),
        cell("c-event", entry.event === null ? none() : entry.event),
        cell("c-user", entry.distinct_id === null ? none() : entry.distinct_id),
        cell("c-key", keyChip(entry.key)),
        request,
      );
    } else {
      tr.classList.add("refused");
      if (entry.outcome === "fault") tr.classList.add("fault");
      tr.dataset.status = entry.status === null ? "" : String(entry.status);
      tr.append(
        el("td", "c-toggle", "▸"),
        time,
        cell(`c-vendor vendor-${entry.vendor}`, entry.vendor),
        cell("c-status", badge(entry), el("span", "reason", reasonOf(entry))),
        cell("c-type", none()),
        cell("c-event reason", entry.error || entry.fault || "no answer"),
        cell("c-user", none()),
        cell("c-key", keyChip(entry.key)),
        request,
      );
    }
    tr.addEventListener("click", () => toggle(entry));
    tr.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        toggle(entry);
      }
    });
    return tr;
  }

  function detailOf(entry) {
    const facts = el("dl");
    const fact = (name, value) => {
      if (value === null || value === undefined || value === "") return;
      facts.append(el("dt", null, name), el("dd", null, value));
    };
    let body;
    if (entry.kind === "event") {
      fact("message id", entry.message_id);
      fact("received", entry.received_at);
      fact("request", `#${entry.request_id} POST ${entry.path}`);
      fact("key", entry.key);
      body = el("pre", "payload", JSON.stringify(entry.payload, null, 2));
    } else {
      fact("status", entry.status === null ? "no answer (connection closed)" : entry.status);
      fact("why", reasonOf(entry));
      fact("error", entry.error);
      fact("code", entry.code);
      fact("fault", entry.fault);
      fact("received", entry.received_at);
      fact("request", `#${entry.request_id} POST ${entry.path}`);
      fact("key", entry.key);
      body = null;
    }
    const td = el("td", null, facts, body);
    td.colSpan = 9;
    return el("tr", "detail", td);
  }

  function toggle(entry) {
    entry.open = !entry.open;
    const tr = entry.tr;
    tr.classList.toggle("open", entry.open);
    tr.setAttribute("aria-expanded", String(entry.open));
    if (entry.open) {
      entry.detail = entry.detail || detailOf(entry);
      tr.after(entry.detail);
    } else if (entry.detail) {
      entry.detail.remove();
    }
  }

  // -- filters ---------------------------------------------------------------------------------

  function currentFilters() {
    const data = new FormData(form);
    return {
      vendor: data.get("vendor") || "",
      show: data.get("show") || "",
      type: data.get("type") || "",
      event: String(data.get("event") || "").trim().toLowerCase(),
      user: String(data.get("user") || "").trim().toLowerCase(),
      key: data.get("key") || "",
    };
  }

  function matches(entry, f) {
    if (f.vendor && entry.vendor !== f.vendor) return false;
    if (f.show === "accepted" && entry.kind !== "event") return false;
    if (f.show === "refused" && entry.kind === "event") return false;
    if (f.key && (entry.key || NO_KEY) !== f.key) return false;
    if (f.type && entry.type !== f.type) return false;
    if (f.event && !(entry.event || "").toLowerCase().includes(f.event)) return false;
    if (f.user && !(entry.distinct_id || "").toLowerCase().includes(f.user)) return false;
    return true;
  }

  function filtersFromHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const [name, value] of params) {
      const field = form.elements.namedItem(name);
      if (field && "value" in field) {
        if (field.tagName === "SELECT" && ![...field.options].some((o) => o.value === value)) {
          field.append(new Option(value, value)); // a key or vendor not seen yet
        }
        field.value = value;
      }
    }
  }

  function filtersToHash(f) {
    const params = new URLSearchParams();
    for (const [name, value] of Object.entries(f)) if (value) params.set(name, value);
    const hash = params.toString();
    history.replaceState(null, "", hash ? `#${hash}` : location.pathname + location.search);
  }

  function addOption(select, value, label) {
    if ([...select.options].some((o) => o.value === value)) return;
    select.append(new Option(label, value));
  }

  // -- rendering -------------------------------------------------------------------------------

  function render() {
    const f = currentFilters();
    const rows = [];
    let shown = 0;
    let refused = 0;
    for (let i = state.entries.length - 1; i >= 0; i--) {
      const entry = state.entries[i];
      if (entry.kind !== "event") refused++;
      if (!matches(entry, f)) continue;
      shown++;
      entry.tr = entry.tr || rowOf(entry);
      rows.push(entry.tr);
      if (entry.open && entry.detail) rows.push(entry.detail);
    }
    $("body").replaceChildren(...rows);
    const total = state.entries.length;
    $("empty").hidden = total > 0;
    const parts = [];
    if (total) {
      parts.push(`${total - refused} event${total - refused === 1 ? "" : "s"}, ${refused} refused request${refused === 1 ? "" : "s"}`);
      if (shown !== total) parts.push(`${shown} match the filters`);
      parts.push("newest first; click a row for its payload");
    }
    if (state.dropped || state.skipped) {
      parts.push(`${state.dropped + state.skipped} older rows are not in the page (GET /_events has them all)`);
    }
    $("summary").textContent = parts.join(" · ");
  }

  function renderSources(sources) {
    const items = sources.map((s) => {
      const variable = HOST_VARIABLES[s.vendor];
      return el(
        "li",
        null,
        el("span", `vendor-${s.vendor}`, s.vendor),
        " ",
        el("code", null, variable ? `${variable}=${s.url}` : s.url),
        ` · ${s.events} event${s.events === 1 ? "" : "s"} · ${s.refused} refused`,
      );
    });
    $("sources").replaceChildren(...items);
  }

  function setStatus(kind, text) {
    const status = $("status");
    status.className = `status ${kind}`;
    status.textContent = text;
  }

  // -- the feed --------------------------------------------------------------------------------

  function apply(feed) {
    if (document.title !== feed.title) {
      document.title = feed.title;
      $("title").textContent = feed.title;
    }
    let changed = feed.entries.length > 0;
    const vendorSelect = form.elements.namedItem("vendor");
    for (const source of feed.sources) {
      addOption(vendorSelect, source.vendor, source.vendor);
      if (source.reset && state.cursor) {
        const before = state.entries.length;
        state.entries = state.entries.filter((e) => e.vendor !== source.vendor);
        changed = changed || state.entries.length !== before;
      }
      if (source.reset) state.dropped = state.skipped = 0;
      state.skipped += source.skipped;
    }
    const keySelect = form.elements.namedItem("key");
    for (const entry of feed.entries) {
      state.entries.push(entry);
      const key = entry.key || NO_KEY;
      if (!state.keys.has(key)) {
        state.keys.add(key);
        addOption(keySelect, key, key === NO_KEY ? "(none)" : key);
      }
    }
    if (state.entries.length > MAX_ROWS) {
      const extra = state.entries.length - MAX_ROWS;
      state.entries.splice(0, extra);
      state.dropped += extra;
    }
    state.cursor = feed.cursor;
    renderSources(feed.sources);
    if (changed || !state.rendered) {
      state.rendered = true;
      render();
    }
  }

  function schedule(ms) {
    clearTimeout(state.timer);
    state.timer = setTimeout(poll, ms);
  }

  async function poll() {
    if (state.paused || state.polling) return;
    state.polling = true;
    const epoch = state.epoch;
    try {
      const answer = await fetch(`/_feed?since=${encodeURIComponent(state.cursor)}`, { cache: "no-store" });
      if (!answer.ok) throw new Error(`${answer.status}`);
      const feed = await answer.json();
      if (epoch === state.epoch) {
        apply(feed);
        if (!state.paused) setStatus("live", "live");
      }
      state.polling = false;
      schedule(epoch === state.epoch ? POLL_MS : 0);
    } catch (error) {
      state.polling = false;
      setStatus("down", "cannot reach the sandbox (stopped?); retrying");
      schedule(RETRY_MS);
    }
  }

  async function clearAll() {
    const button = $("clear");
    button.disabled = true;
    try {
      const answer = await fetch("/_clear", { method: "POST" });
      if (!answer.ok) throw new Error(`${answer.status}`);
      state.epoch++;
      state.entries = [];
      state.dropped = state.skipped = 0;
      render();
      if (!state.polling) schedule(0);
    } catch (error) {
      setStatus("down", `clearing failed (${error.message})`);
    } finally {
      button.disabled = false;
    }
  }

  function togglePause() {
    state.paused = !state.paused;
    const button = $("pause");
    button.setAttribute("aria-pressed", String(state.paused));
    button.textContent = state.paused ? "Resume" : "Pause";
    if (state.paused) {
      clearTimeout(state.timer);
      setStatus("paused", "paused: new rows wait until you resume");
    } else {
      schedule(0);
    }
  }

  const onFilter = () => {
    filtersToHash(currentFilters());
    render();
  };
  form.addEventListener("input", onFilter);
  form.addEventListener("change", onFilter); // some browsers fire only this for a <select>
  form.addEventListener("submit", (e) => e.preventDefault());
  $("clear").addEventListener("click", clearAll);
  $("pause").addEventListener("click", togglePause);
  filtersFromHash();
  poll();
})();
