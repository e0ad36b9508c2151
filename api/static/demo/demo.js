// The live demo page: plain JS against the public API, no build step, no dependencies.
// Every piece of data is put into the page with textContent, never as HTML.
"use strict";

(() => {
  const K = 10; // recommendations shown
  const SIMILAR_K = 6; // items in the "because you viewed X" row
  const PAGE = 24; // catalogue items per page
  const POLL_MS = 60; // how often to look for the folded event
  const WAIT_MS = 5000; // give up waiting for the fold after this
  const ADD_POLL_MS = 100; // how often to look for an added item in the list
  const ADD_WAIT_MS = 10000; // give up waiting for an added item after this
  const KEY_STORAGE = "recsys-demo-api-key";
  const FRESH_N = 20; // events in the freshness sparkline
  // The re-rank terms of a score breakdown, in words (an unknown term shows its name).
  const TERM_LABELS = {
    ann: "match with the query (ANN)",
    category: "category affinity",
    recent: "recently interacted",
    popularity: "popularity / trending",
    covisit: "often picked together",
    new: "new item",
    session: "this session",
    sequence: "likely next",
  };

  const $ = (id) => document.getElementById(id);
  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "dataset") Object.assign(node.dataset, v);
      else if (k in node) node[k] = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  const state = {
    user: null, // the user id shown
    session: null, // a session id per user pick, sent with every event
    recs: [], // item ids of the list on screen, in order
    features: null, // last GET /users/{user} body (null: no events, no profile)
    similarFor: null, // the item whose "because you viewed" row is (to be) shown
    expectedEvents: 0, // event_count the next fold should reach
    token: 0, // bumps on every user switch and click: stale polls stop updating
    catalog: { q: "", category: "", offset: 0, total: 0 },
    explained: new Set(), // item ids whose score breakdown is open
    fresh: [], // the last FRESH_N events: ms from click to the updated list on screen
    added: new Set(), // item ids added from this page: marked when they enter the list
  };

  // --- API ------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) {
      super(typeof detail === "string" ? detail : JSON.stringify(detail));
      this.status = status;
    }
  }

  async function api(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    const key = $("api-key").value.trim();
    if (key) headers["X-API-Key"] = key;
    const res = await fetch(path, { ...options, headers });
    const body = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
    if (!res.ok) throw new ApiError(res.status, body?.detail ?? res.statusText);
    return body;
  }

  const enc = encodeURIComponent;
  const getUser = async (user) => {
    try {
      return await api(`/users/${enc(user)}`);
    } catch (e) {
      if (e.status === 404) return null; // no events and no long-term profile yet
      throw e;
    }
  };
  // explain=true: each item's score breakdown comes along, shown on demand.
  const getRecs = (user) => api(`/recommendations/${enc(user)}?k=${K}&explain=true`);
  const getSimilar = (item) => api(`/items/${enc(item)}/similar?k=${SIMILAR_K}`);
  const postEvent = (user, item, type) =>
    api("/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        event_type: type,
        user_id: user,
        item_id: item,
        session_id: state.session,
      }),
    });

  const postItem = (item) =>
    api("/items", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(item),
    });
  const getItem = async (item) => {
    try {
      return await api(`/items/${enc(item)}`);
    } catch (e) {
      if (e.status === 404) return null; // not in the live catalogue (yet)
      throw e;
    }
  };

  // --- status line ------------------------------------------------------------

  function showStatus(text, kind = "info") {
    const box = $("status");
    box.textContent = text;
    box.className = `status ${kind}`;
    box.setAttribute("role", kind === "error" ? "alert" : "status");
  }

  function showError(e) {
    if (e.status === 401 || e.status === 403) {
      $("key-box").open = true;
      $("api-key").focus();
      showStatus(`${e.message}. Enter a key under "API key" (top right).`, "error");
    } else if (e.status === 503) {
      showStatus(`The service is not ready: ${e.message}`, "error");
    } else {
      showStatus(e.message || String(e), "error");
    }
  }

  // --- rendering ----------------------------------------------------------------

  const categoryChips = (cats) =>
    el("span", { className: "chips" }, ...cats.map((c) => el("span", { className: "chip" }, c)));

  function eventButtons(item) {
    const label = item.title || item.item_id;
    const button = (type, text) =>
      el(
        "button",
        {
          type: "button",
          className: `event-btn ${type}`,
          dataset: { testid: `${type}-${item.item_id}`, item: item.item_id, event: type, title: label },
          "aria-label": `${text} ${label}`,
        },
        text,
      );
    return el("span", { className: "actions" }, button("view", "View"), button("purchase", "Purchase"));
  }

  function renderCatalog(page, append) {
    const list = $("catalog-list");
    if (!append) list.replaceChildren();
    for (const it of page.items) {
      list.append(
        el(
          "li",
          { className: "item", dataset: { testid: "catalog-item", itemId: it.item_id } },
          el(
            "div",
            { className: "item-main" },
            el("span", { className: "title" }, it.title || it.item_id),
            categoryChips(it.categories),
          ),
          eventButtons(it),
        ),
      );
    }
    const shown = page.offset + page.items.length;
    state.catalog.offset = shown;
    state.catalog.total = page.total;
    $("catalog-meta").textContent =
      page.total === 0
        ? "No items match."
        : `${page.total.toLocaleString()} item${page.total === 1 ? "" : "s"}` +
          (state.catalog.q ? ` matching “${state.catalog.q}”` : ", most popular first") +
          ` · showing ${shown}`;
    $("catalog-more").hidden = shown >= page.total;
  }

  // The score, a button that opens the item's breakdown: each term once, adding up to it.
  function scoreButton(it) {
    const open = state.explained.has(it.item_id);
    return el(
      "button",
      {
        type: "button",
        className: "score",
        title: "Show how this score adds up",
        "aria-label": `Score ${it.score.toFixed(3)}: how it adds up`,
        "aria-expanded": String(open),
        "aria-controls": `breakdown-${it.item_id}`,
        dataset: { testid: "score", item: it.item_id, score: String(it.score) },
      },
      it.score.toFixed(3),
    );
  }

  function breakdown(it) {
    const terms = Object.entries(it.score_breakdown || {});
    const row = (label, value, props = {}) =>
      el("tr", props, el("th", { scope: "row" }, label), el("td", {}, value));
    return el(
      "table",
      {
        id: `breakdown-${it.item_id}`,
        className: "breakdown",
        hidden: !state.explained.has(it.item_id),
        dataset: { testid: "breakdown" },
      },
      el("caption", {}, "Score breakdown"),
      el(
        "tbody",
        {},
        ...terms.map(([name, value]) =>
          row(TERM_LABELS[name] || name, value.toFixed(5), {
            dataset: { testid: "term", term: name, value: String(value) },
            title: name,
          }),
        ),
        row("score (their sum)", it.score.toFixed(5), { className: "total" }),
      ),
    );
  }

  function toggleBreakdown(button) {
    const item = button.dataset.item;
    const open = !state.explained.has(item);
    if (open) state.explained.add(item);
    else state.explained.delete(item);
    button.setAttribute("aria-expanded", String(open));
    $(`breakdown-${item}`).hidden = !open;
  }

  // Freshness: how long each event took from the click to the updated list on screen.
  function renderFreshness() {
    const box = $("freshness");
    const ms = state.fresh;
    box.dataset.count = String(ms.length);
    if (!ms.length) {
      $("freshness-text").textContent = "No events sent from this page yet.";
      $("freshness-spark").replaceChildren();
      return;
    }
    const sorted = ms.slice().sort((a, b) => a - b);
    const median = sorted[Math.floor((sorted.length - 1) / 2)];
    $("freshness-text").textContent =
      `last ${ms[ms.length - 1]} ms · median ${median} ms · max ${sorted[sorted.length - 1]} ms` +
      ` over ${ms.length} event${ms.length === 1 ? "" : "s"}`;
    const W = 200;
    const H = 36;
    const pad = 3;
    const top = Math.max(...ms, 1);
    const x = (i) => pad + (ms.length === 1 ? (W - 2 * pad) / 2 : (i * (W - 2 * pad)) / (ms.length - 1));
    const y = (v) => H - pad - (v / top) * (H - 2 * pad);
    const svg = $("freshness-spark");
    const ns = svg.namespaceURI; // the page's <svg>: SVG's namespace, not HTML's
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", ms.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
    line.setAttribute("class", "spark-line");
    const dot = document.createElementNS(ns, "circle");
    dot.setAttribute("cx", x(ms.length - 1).toFixed(1));
    dot.setAttribute("cy", y(ms[ms.length - 1]).toFixed(1));
    dot.setAttribute("r", "2.5");
    dot.setAttribute("class", "spark-dot");
    svg.setAttribute("aria-label", `Click to updated list, last ${ms.length} events: ${ms.join(", ")} ms`);
    svg.replaceChildren(line, dot);
  }

  function renderRecs(body, previous) {
    const before = new Map(previous.map((id, i) => [id, i]));
    const list = $("recs-list");
    list.replaceChildren();
    body.items.forEach((it, i) => {
      const was = before.get(it.item_id);
      const added = state.added.has(it.item_id);
      const isNew = (previous.length > 0 || added) && was === undefined;
      let move = null;
      if (isNew) move = el("span", { className: "badge new-badge" }, "new");
      else if (was !== undefined && was !== i) {
        const up = was > i;
        move = el(
          "span",
          { className: `move ${up ? "up" : "down"}`, title: `was #${was + 1}` },
          `${up ? "▲" : "▼"}${Math.abs(was - i)}`,
        );
      }
      list.append(
        el(
          "li",
          {
            className: `item rec${isNew ? " is-new" : ""}`,
            dataset: { testid: "rec-item", itemId: it.item_id, new: String(isNew), added: String(added) },
          },
          el("span", { className: "rank" }, String(i + 1)),
          el(
            "div",
            { className: "item-main" },
            el(
              "div",
              { className: "title-row" },
              el("span", { className: "title" }, it.title || it.item_id),
              move,
              added ? el("span", { className: "badge added-badge", title: "Added from this page" }, "added") : null,
            ),
            categoryChips(it.categories),
            el(
              "ul",
              { className: "reasons", "aria-label": "Why" },
              ...it.reasons.map((r) => el("li", {}, r)),
            ),
            breakdown(it),
          ),
          el("div", { className: "rec-side" }, scoreButton(it), eventButtons(it)),
        ),
      );
    });
    const pct = Math.round(body.realtime_weight * 100);
    $("recs-meta").textContent =
      `${body.strategy === "cold_start" ? "Cold start (trending and popular)" : "Personalised"}` +
      ` · ${pct}% of the query from live events · model ${body.model_version}` +
      (body.variant && body.variant !== "default" ? ` · variant ${body.variant}` : "");
    state.recs = body.items.map((it) => it.item_id);
  }

  // "Because you viewed X": the items like the one just viewed, each with its reason.
  function renderSimilar(body) {
    const box = $("similar");
    if (!body || !body.items.length) {
      box.hidden = true;
      return;
    }
    $("similar-heading").textContent = `Because you viewed ${body.title || body.item_id}`;
    $("similar-list").replaceChildren(
      ...body.items.map((it) =>
        el(
          "li",
          { className: "item similar-item", dataset: { testid: "similar-item", itemId: it.item_id } },
          el(
            "div",
            { className: "item-main" },
            el("span", { className: "title" }, it.title || it.item_id),
            el("span", { className: "reason" }, it.reason),
          ),
          eventButtons(it),
        ),
      ),
    );
    box.dataset.itemId = body.item_id;
    box.hidden = false;
  }

  async function showSimilar(item) {
    try {
      const body = await getSimilar(item);
      if (state.similarFor === item) renderSimilar(body); // not a stale answer
    } catch (e) {
      if (e.status !== 404) showError(e); // an item the live model lacks: no row
    }
  }

  function ago(iso) {
    if (!iso) return "";
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 60) return `${Math.round(s)} s ago`;
    if (s < 3600) return `${Math.round(s / 60)} min ago`;
    if (s < 86400) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  // One category's share of the user's activity, as a bar scaled to the largest share.
  function affinityRow(name, share, top) {
    const fill = el("span", { className: "bar-fill" });
    fill.style.width = `${Math.max(2, (share / top) * 100)}%`;
    return el(
      "li",
      { dataset: { testid: "affinity-row", category: name } },
      el("span", { className: "bar-label" }, name),
      el(
        "span",
        {
          className: "bar",
          role: "meter",
          "aria-label": `${name} affinity`,
          "aria-valuemin": "0",
          "aria-valuemax": "100",
          "aria-valuenow": String(Math.round(share * 100)),
        },
        fill,
      ),
      el("span", { className: "bar-value" }, `${Math.round(share * 100)}%`),
    );
  }

  function renderFeatures(f) {
    const session = $("session");
    const affinity = $("affinity");
    const recent = $("recent-list");
    session.replaceChildren();
    affinity.replaceChildren();
    recent.replaceChildren();
    if (!f) {
      $("features-empty").textContent =
        "No events yet and no long-term profile: a new user. Click View or Purchase on an item.";
      return;
    }
    $("features-empty").textContent =
      f.event_count === 0
        ? "No events yet. The long-term profile from training drives the list; click an item."
        : "";
    const stat = (label, value) => [el("dt", {}, label), el("dd", {}, value)];
    session.append(
      ...stat("Events folded", String(f.event_count)),
      ...stat("This session", f.session.events ? `${f.session.events} since ${ago(f.session.start)}` : "—"),
      ...stat("Last event", f.last_event_time ? ago(f.last_event_time) : "—"),
      ...stat("Event weight (decayed)", f.realtime_mass.toFixed(2)),
      ...stat("Long-term profile", f.has_long_term_profile ? "yes" : "no"),
    );
    const cats = Object.entries(f.categories).slice(0, 8);
    if (!cats.length) affinity.append(el("li", { className: "meta" }, "—"));
    const top = cats.length ? cats[0][1] : 1;
    for (const [name, share] of cats) affinity.append(affinityRow(name, share, top));
    if (!f.recent.length) recent.append(el("li", { className: "meta" }, "—"));
    for (const r of f.recent.slice(0, 10)) {
      recent.append(
        el(
          "li",
          { dataset: { testid: "recent-item", itemId: r.item_id } },
          el("span", { className: `badge ev ev-${r.event_type}` }, r.event_type),
          el("span", { className: "title", title: r.title || r.item_id }, r.title || r.item_id),
          el("span", { className: "when", title: r.time }, ago(r.time)),
        ),
      );
    }
  }

  // --- flows --------------------------------------------------------------------

  async function loadUser(user) {
    const token = ++state.token;
    // Picking the user already shown reloads their lists and keeps open breakdowns.
    if (user !== state.user) {
      state.session = `demo-${randomHex(6)}`;
      state.explained.clear();
    }
    state.user = user;
    state.recs = [];
    $("recs-user").textContent = user;
    $("update-time").textContent = "";
    const url = new URL(location.href);
    url.searchParams.set("user", user);
    history.replaceState(null, "", url);
    const select = $("user-select");
    select.value = [...select.options].some((o) => o.value === user) ? user : "";
    try {
      const [features, recs] = await Promise.all([getUser(user), getRecs(user)]);
      if (token !== state.token) return;
      state.features = features;
      state.expectedEvents = features ? features.event_count : 0;
      renderFeatures(features);
      renderRecs(recs, []);
      const viewed = features?.recent.find((r) => r.event_type === "view");
      state.similarFor = viewed ? viewed.item_id : null;
      if (viewed) showSimilar(viewed.item_id);
      else renderSimilar(null);
      showStatus(`Showing user ${user}. Click View or Purchase on any item.`);
    } catch (e) {
      if (token === state.token) showError(e);
    }
  }

  // The event is in the features: redraw, time it (click to list on screen) and say so.
  function showFolded(features, recs, before, took, folded) {
    state.features = features;
    renderFeatures(features);
    renderRecs(recs, before);
    state.fresh = [...state.fresh, took].slice(-FRESH_N);
    renderFreshness();
    const changed = recs.items.map((it) => it.item_id).join() !== before.join();
    const added = state.recs.filter((id) => !before.includes(id)).length;
    $("update-time").className = "update-time done";
    $("update-time").textContent = changed
      ? `Updated in ${took} ms · ${added} new item${added === 1 ? "" : "s"} (event folded after ${folded} ms)`
      : `Event folded after ${folded} ms; the top ${K} stayed the same`;
  }

  async function sendEvent(item, type, button) {
    if (!state.user) return;
    const name = `${type} of “${button.dataset.title || item}”`;
    const user = state.user;
    const token = ++state.token;
    const before = state.recs.slice();
    const t0 = performance.now();
    button.classList.add("sent");
    setTimeout(() => button.classList.remove("sent"), 600);
    $("update-time").textContent = "Sending…";
    $("update-time").className = "update-time pending";
    try {
      await postEvent(user, item, type);
    } catch (e) {
      $("update-time").textContent = "";
      showError(e);
      return;
    }
    state.expectedEvents += 1;
    if (type === "view") {
      state.similarFor = item; // the row follows the last view, whatever the fold does
      showSimilar(item);
    }
    const accepted = Math.round(performance.now() - t0);
    showStatus(`${name} accepted (${accepted} ms); waiting for the dataflow to fold it…`);
    $("update-time").textContent = "Waiting for the update…";
    while (performance.now() - t0 < WAIT_MS) {
      await sleep(POLL_MS);
      if (token !== state.token) return; // another click or user took over
      let features;
      try {
        features = await getUser(user);
      } catch (e) {
        showError(e);
        return;
      }
      if (!features || features.event_count < state.expectedEvents) continue;
      const folded = Math.round(performance.now() - t0);
      let recs;
      try {
        recs = await getRecs(user);
      } catch (e) {
        showError(e);
        return;
      }
      if (token !== state.token) return;
      showFolded(features, recs, before, Math.round(performance.now() - t0), folded);
      showStatus(`${name} folded into ${user}'s features.`);
      return;
    }
    $("update-time").className = "update-time late";
    $("update-time").textContent = `Not folded after ${WAIT_MS / 1000} s`;
    showStatus(
      "The event was accepted but has not reached the feature store yet: is the dataflow running?",
      "error",
    );
  }

  // --- adding an item -------------------------------------------------------------

  function addItemStatus(text, kind = "") {
    const p = $("add-item-status");
    p.textContent = text;
    p.className = `meta${kind ? ` ${kind}` : ""}`;
    p.dataset.state = kind || "pending";
  }

  // POST /items, then poll the shown user's list until the item is in it: the dataflow
  // embeds it with the live model's item tower, no retraining.
  async function addItem() {
    const title = $("add-item-title").value.trim();
    if (!title) {
      addItemStatus("Give the item a title.", "error");
      return;
    }
    const categories = $("add-item-categories")
      .value.split(",")
      .map((c) => c.trim())
      .filter(Boolean);
    const item = {
      item_id: `demo-${randomHex(5)}`,
      title,
      description: $("add-item-description").value.trim(),
      categories,
    };
    const user = state.user;
    const t0 = performance.now();
    addItemStatus("Sending…");
    try {
      await postItem(item);
    } catch (e) {
      addItemStatus(e.status === 422 ? `Refused: ${e.message}` : e.message, "error");
      if (e.status !== 422) showError(e);
      return;
    }
    state.added.add(item.item_id);
    $("add-item-form").dataset.itemId = item.item_id;
    $("add-item-title").value = "";
    $("add-item-description").value = "";
    if (!user) {
      addItemStatus(`“${title}” accepted (${item.item_id}). Pick a user to see it enter their list.`, "done");
      return;
    }
    addItemStatus(`“${title}” accepted in ${Math.round(performance.now() - t0)} ms; waiting for it in ${user}'s list…`);
    await waitForItem(item, user, t0);
  }

  async function waitForItem(item, user, t0) {
    while (performance.now() - t0 < ADD_WAIT_MS) {
      await sleep(ADD_POLL_MS);
      if (state.user !== user) return; // another user is shown now
      let recs;
      try {
        recs = await getRecs(user);
      } catch (e) {
        showError(e);
        return;
      }
      const rank = recs.items.findIndex((it) => it.item_id === item.item_id);
      if (rank < 0 || state.user !== user) continue;
      const took = Math.round(performance.now() - t0);
      const before = state.recs.filter((id) => id !== item.item_id);
      renderRecs(recs, before);
      const text = `“${item.title}” entered ${user}'s list at #${rank + 1}, ${took} ms after it was sent`;
      $("update-time").className = "update-time done";
      $("update-time").textContent = text;
      addItemStatus(text, "done");
      $("add-item-status").dataset.ms = String(took);
      return;
    }
    let known = null;
    try {
      known = await getItem(item.item_id);
    } catch (e) {
      // the answer below says what is known
    }
    addItemStatus(
      known
        ? `“${item.title}” is in the catalogue but not in ${user}'s top ${K}: it matches other tastes better.`
        : `“${item.title}” is not in the catalogue after ${ADD_WAIT_MS / 1000} s: is the dataflow folding item writes?`,
      known ? "" : "error",
    );
  }

  // Start over: a fresh anonymous user and none of this page's history (timings, open
  // breakdowns, search). The key stays; the old user's data stays on the server.
  function resetSession() {
    state.fresh = [];
    state.explained.clear();
    state.similarFor = null;
    renderSimilar(null);
    renderFreshness();
    $("user-input").value = "";
    $("search-input").value = "";
    $("category-select").value = "";
    state.catalog.q = "";
    state.catalog.category = "";
    searchCatalog();
    window.scrollTo(0, 0);
    loadUser(`anon-${randomHex(4)}`);
  }

  async function searchCatalog(append = false) {
    const { q, category } = state.catalog;
    const params = new URLSearchParams({ limit: String(PAGE), offset: String(append ? state.catalog.offset : 0) });
    if (q) params.set("q", q);
    if (category) params.append("category", category);
    try {
      const page = await api(`/items?${params}`);
      // A slower earlier search must not overwrite a newer one.
      if (q !== state.catalog.q || category !== state.catalog.category) return;
      renderCatalog(page, append);
    } catch (e) {
      showError(e);
    }
  }

  async function loadChoices() {
    const [users, cats] = await Promise.all([api("/users?limit=20"), api("/categories")]);
    const select = $("user-select");
    select.replaceChildren(el("option", { value: "" }, "Pick a user…"));
    const group = el("optgroup", { label: `With a long-term profile (${users.total})` });
    for (const u of users.users) {
      group.append(el("option", { value: u.user_id }, `${u.user_id} · ${u.seen_items} items seen`));
    }
    select.append(group);
    const cat = $("category-select");
    cat.replaceChildren(el("option", { value: "" }, "All categories"));
    for (const c of cats.categories) cat.append(el("option", { value: c.name }, `${c.name} (${c.items})`));
    $("add-item-category-names").replaceChildren(...cats.categories.map((c) => el("option", { value: c.name })));
    return users.users.map((u) => u.user_id);
  }

  function randomHex(bytes) {
    const a = new Uint8Array(bytes);
    crypto.getRandomValues(a);
    return [...a].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  // --- wiring -------------------------------------------------------------------

  function wire() {
    $("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
      init();
    });
    $("user-select").addEventListener("change", (e) => {
      if (e.target.value) loadUser(e.target.value);
    });
    $("user-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const id = $("user-input").value.trim();
      if (id) loadUser(id);
      else if ($("user-select").value) loadUser($("user-select").value);
    });
    $("reset").addEventListener("click", resetSession);
    $("recs-list").addEventListener("click", (e) => {
      const button = e.target.closest("button.score");
      if (button) toggleBreakdown(button);
    });
    let debounce;
    $("search-input").addEventListener("input", (e) => {
      clearTimeout(debounce);
      debounce = setTimeout(() => {
        state.catalog.q = e.target.value.trim();
        searchCatalog();
      }, 180);
    });
    $("search-form").addEventListener("submit", (e) => {
      e.preventDefault();
      clearTimeout(debounce);
      state.catalog.q = $("search-input").value.trim();
      searchCatalog();
    });
    $("category-select").addEventListener("change", (e) => {
      state.catalog.category = e.target.value;
      searchCatalog();
    });
    $("catalog-more").addEventListener("click", () => searchCatalog(true));
    $("add-item-form").addEventListener("submit", (e) => {
      e.preventDefault();
      addItem();
    });
    // One listener for every View/Purchase button, in the catalogue and the list.
    document.addEventListener("click", (e) => {
      const button = e.target.closest("button.event-btn");
      if (!button) return;
      if (!state.user) {
        showStatus("Pick a user first (top right).", "error");
        return;
      }
      sendEvent(button.dataset.item, button.dataset.event, button);
    });
    // Keep the "… ago" texts honest.
    setInterval(() => {
      if (state.features) renderFeatures(state.features);
    }, 10000);
  }

  // The live model: its training date and held-out Recall@10 beside popularity's.
  async function loadModels() {
    let overview;
    try {
      overview = await api("/models");
    } catch (e) {
      return; // a read key the page does not have yet: no model line
    }
    const live = overview.models.find((m) => m.version === overview.active);
    if (!live) {
      $("model-info").textContent = "No model is active yet.";
      return;
    }
    const h = live.held_out;
    const recall =
      h.recall_at_10 == null
        ? ""
        : `; held-out Recall@10 ${h.recall_at_10.toFixed(4)}` +
          (h.popularity_recall_at_10 == null
            ? ""
            : ` (popularity ${h.popularity_recall_at_10.toFixed(4)})`);
    $("model-info").textContent =
      `Model ${live.version}, trained ${live.created_at.slice(0, 10)}${recall}; ` +
      `${overview.models.length} version(s) published.`;
  }

  async function init() {
    loadModels();
    let known = [];
    try {
      known = await loadChoices();
    } catch (e) {
      showError(e);
      return;
    }
    searchCatalog();
    const wanted = new URLSearchParams(location.search).get("user");
    const first = wanted || known[0];
    if (first) loadUser(first);
    else showStatus("Pick a user, or press \"Reset: new user\" for a fresh anonymous one.");
  }

  wire();
  renderFreshness();
  init();
})();
