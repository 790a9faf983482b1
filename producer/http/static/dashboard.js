// Conveyor's dashboard: polls the JSON API every two seconds and draws what it answers.
//
// Plain browser JavaScript, no build step. Every piece of data goes into the page through
// textContent or attributes, never as markup: task payloads, results and errors are user data.
"use strict";

(() => {
  const POLL_MS = 2000;
  const TOKEN_KEY = "conveyor.apiToken";
  const STATUSES = ["scheduled", "queued", "running", "retrying", "succeeded", "failed", "cancelled"];
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  const state = {
    token: readToken(),
    needsToken: false,
    live: true,
    selected: null, // task id shown in the detail drawer
    timer: null,
    refreshing: false,
    again: false,
    rendered: new Map(), // panel -> JSON of the data last drawn (skip redrawing the same)
    queueDepths: new Map(), // queue name -> {messages, atMs}: the trend between polls
    stats: null,
  };

  // ---------- the API ----------

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status; // 0: the API did not answer at all
      this.code = code;
      this.details = details;
    }

    describe() {
      if (this.status === 0) return this.message;
      const fields = this.details
        .filter((d) => d && d.field)
        .map((d) => `${d.field}: ${d.message}`);
      const extra = fields.length && !this.message.includes(fields[0]) ? ` (${fields.join("; ")})` : "";
      return `${this.status} ${this.code}: ${this.message}${extra}`;
    }
  }

  async function api(path, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      // Relative paths: the page also works behind a proxy that mounts it under a prefix.
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (error) {
      throw new ApiError(0, "unreachable", `cannot reach the API (${error.message})`, []);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!response.ok) {
      const known = data && typeof data === "object" && typeof data.error === "string";
      const error = new ApiError(
        response.status,
        known ? data.error : `http_${response.status}`,
        known && typeof data.message === "string" ? data.message : response.statusText || "request failed",
        known && Array.isArray(data.details) ? data.details : [],
      );
      if (response.status === 401) askForToken(state.token ? "The saved token was refused." : "This API needs a token.");
      throw error;
    }
    return data;
  }

  const q = encodeURIComponent;

  // ---------- the token ----------

  function readToken() {
    try {
      return localStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      return "";
    }
  }

  function storeToken(token) {
    state.token = token;
    try {
      if (token) localStorage.setItem(TOKEN_KEY, token);
      else localStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage off (private mode): the token lives as long as the page.
    }
    showTokenButton();
  }

  function showTokenButton() {
    $("token-button").textContent = state.token ? "API token ✓" : "API token";
  }

  function askForToken(reason) {
    state.needsToken = true;
    clearTimeout(state.timer);
    $("token-reason").textContent = reason;
    if ($("token-panel").hidden) {
      $("token-panel").hidden = false;
      $("token-input").focus();
    }
    setConn("token needed", "warn");
  }

  function closeTokenPanel() {
    $("token-panel").hidden = true;
  }

  // ---------- polling ----------

  function schedule() {
    clearTimeout(state.timer);
    if (state.live && !state.needsToken) state.timer = setTimeout(tick, POLL_MS);
  }

  async function tick() {
    if (!document.hidden) await refresh();
    schedule();
  }

  function refreshNow() {
    clearTimeout(state.timer);
    refresh().then(schedule);
  }

  // The panels and where their data comes from; `optional` ones answer 404 on producers
  // that do not have them yet, which is no error.
  function panels() {
    const list = [
      { name: "queues", path: "queues", render: renderQueues, optional: true },
      { name: "workers", path: "workers", render: renderWorkers, optional: true },
      { name: "throughput", path: "stats", render: renderStats },
      { name: "tasks", path: `tasks?${taskQuery()}`, render: renderTasks },
      { name: "dead", path: "dead-letters?limit=50", render: renderDeadLetters },
      { name: "schedules", path: "schedules?limit=50", render: renderSchedules },
    ];
    if (state.selected) {
      list.push({ name: "detail", path: `tasks/${q(state.selected)}`, render: renderDetail });
    }
    return list;
  }

  async function refresh() {
    if (state.refreshing) {
      state.again = true;
      return;
    }
    state.refreshing = true;
    try {
      const errors = (await Promise.all(panels().map(load))).filter(Boolean);
      if (errors.some((e) => e.status === 401)) setConn("token needed", "warn");
      else if (errors.some((e) => e.status === 0)) setConn(`API unreachable · ${clock(new Date())}`, "bad");
      else setConn(`${state.live ? "live" : "paused"} · updated ${clock(new Date())}`, errors.length ? "warn" : "ok");
    } finally {
      state.refreshing = false;
    }
    if (state.again) {
      state.again = false;
      await refresh();
    }
  }

  async function load(panel) {
    let data;
    try {
      data = await api(panel.path);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      showPanelError(panel, error);
      return error.status === 404 && panel.optional ? null : error;
    }
    showMessage(panel.name, "");
    $(`${panel.name}-panel`)?.classList.remove("stale");
    try {
      const json = JSON.stringify(data);
      if (panel.name === "queues" || state.rendered.get(panel.name) !== json) {
        panel.render(data);
        state.rendered.set(panel.name, json);
      }
    } catch (error) {
      // A drawing bug must not stop the other panels, nor hide itself.
      showMessage(panel.name, `could not show this answer: ${error.message}`);
      console.error(error);
    }
    return null;
  }

  function showPanelError(panel, error) {
    if (error.status === 404 && panel.optional) {
      showMessage(panel.name, `not available: this producer has no /${panel.path.split("?")[0]} yet`, "info");
      clearPanel(panel.name);
    } else if (error.status === 404 && panel.name === "detail") {
      showMessage("detail", `no task ${state.selected} (unknown, or its record expired)`);
      $("detail-body").replaceChildren();
      state.rendered.delete("detail");
    } else if (error.status === 401) {
      showMessage(panel.name, "needs an API token", "info");
    } else {
      // Keep the last data, marked stale, with the API's own words.
      showMessage(panel.name, error.describe());
      $(`${panel.name}-panel`)?.classList.add("stale");
    }
  }

  function clearPanel(name) {
    state.rendered.delete(name);
    const body = $(`${name}-body`);
    if (body) body.replaceChildren();
    $(`${name}-note`).textContent = "";
  }

  function showMessage(name, text, kind = "error") {
    const node = $(`${name}-msg`);
    if (!node) return;
    node.textContent = text;
    node.className = `msg ${kind}`;
    node.hidden = !text;
  }

  function setConn(text, kind) {
    const node = $("conn");
    node.textContent = text;
    node.className = `conn ${kind}`;
  }

  function taskQuery() {
    const params = new URLSearchParams({ limit: "50" });
    const status = $("status-filter").value;
    const task = $("task-filter").value.trim();
    if (status) params.set("status", status);
    if (task) params.set("task", task);
    return params.toString();
  }

  // ---------- drawing helpers ----------

  // An element with attributes and children; strings become text nodes, never markup.
  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else if (key === "title") node.title = String(value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function badge(status) {
    return h("span", { class: `badge s-${status}`, "data-status": status }, status);
  }

  function taskLink(taskId, label) {
    return h("button", { type: "button", class: "link", "data-open": taskId, title: taskId }, label || shortId(taskId));
  }

  function shortId(id) {
    return id.length > 14 ? `…${id.slice(-12)}` : id;
  }

  function emptyRow(columns, text) {
    return h("tr", { class: "empty" }, h("td", { colspan: columns }, text));
  }

  function clock(date) {
    return date.toLocaleTimeString([], { hour12: false });
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    const today = new Date().toDateString() === date.toDateString();
    const day = today ? "" : `${date.toLocaleDateString([], { month: "short", day: "numeric" })} `;
    return `${day}${clock(date)}`;
  }

  function age(iso, nowMs = Date.now()) {
    if (!iso) return "";
    const seconds = (nowMs - new Date(iso).getTime()) / 1000;
    const span = Math.abs(seconds);
    let text;
    if (span < 60) text = `${Math.round(span)} s`;
    else if (span < 3600) text = `${Math.round(span / 60)} min`;
    else if (span < 172800) text = `${Math.round(span / 3600)} h`;
    else text = `${Math.round(span / 86400)} d`;
    return seconds >= -0.5 ? `${text} ago` : `in ${text}`;
  }

  // A relative time that updateAges() keeps current between polls.
  function since(iso) {
    return h("span", { "data-since": iso, title: iso }, age(iso));
  }

  function updateAges() {
    const now = Date.now();
    for (const node of document.querySelectorAll("[data-since]")) {
      node.textContent = age(node.getAttribute("data-since"), now);
    }
  }

  function took(record) {
    if (!record.started_at || !record.finished_at) return "";
    const ms = new Date(record.finished_at) - new Date(record.started_at);
    if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  }

  function rate(perS) {
    const sign = perS > 0 ? "+" : perS < 0 ? "−" : "";
    const value = Math.abs(perS);
    return `${sign}${value >= 10 ? Math.round(value) : value.toFixed(1)}/s`;
  }

  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }

  // ---------- panels ----------

  function renderCounts(counts) {
    const chips = STATUSES.map((status) =>
      h(
        "button",
        { type: "button", class: `chip s-${status}`, "data-filter": status, title: `show only ${status} tasks` },
        h("span", { class: "chip-name" }, status),
        h("span", { class: "chip-count", "data-count": status }, String(counts[status] ?? 0)),
      ),
    );
    $("counts").replaceChildren(...chips);
  }

  function renderQueues(data) {
    const nowMs = Date.now();
    const rows = data.items.map((queue) => {
      const before = state.queueDepths.get(queue.name);
      state.queueDepths.set(queue.name, { messages: queue.messages, atMs: nowMs });
      let trend = "";
      if (before && nowMs > before.atMs) {
        trend = rate(((queue.messages - before.messages) * 1000) / (nowMs - before.atMs));
      }
      const stalled = queue.messages > 0 && queue.consumers === 0;
      return h(
        "tr",
        { "data-queue": queue.name, class: stalled ? "stalled" : "" },
        h("td", { title: queue.queue }, queue.name),
        h("td", { class: "num" }, queue.messages),
        h("td", { class: "num" }, queue.consumers),
        h("td", { class: "num" }, trend),
      );
    });
    $("queues-body").replaceChildren(...(rows.length ? rows : [emptyRow(4, "no queues")]));
    const ready = data.items.reduce((sum, queue) => sum + queue.messages, 0);
    $("queues-note").textContent = `${ready} ready`;
  }

  function renderStats(stats) {
    state.stats = stats;
    renderCounts(stats.counts);
    drawChart(stats);
    const points = stats.throughput;
    // The last bucket is still filling: count it for the time it has been filling.
    const lastMinute = points.slice(-6);
    const filling = (Date.now() - new Date(points[points.length - 1].at).getTime()) / 1000;
    const seconds = (lastMinute.length - 1) * stats.bucket_s + Math.min(stats.bucket_s, Math.max(1, filling));
    const done = lastMinute.reduce((sum, p) => sum + p.succeeded + p.failed, 0);
    const failed = lastMinute.reduce((sum, p) => sum + p.failed, 0);
    const total = points.reduce((sum, p) => sum + p.succeeded + p.failed, 0);
    $("throughput-note").textContent =
      `${rate(done / seconds).replace("+", "")} last minute · ${failed} failed · ${total} in 10 min`;
  }

  function drawChart(stats) {
    const svg = $("chart");
    const width = svg.clientWidth || 500;
    const height = svg.clientHeight || 160;
    const pad = { left: 34, right: 6, top: 8, bottom: 18 };
    const points = stats.throughput;
    const max = Math.max(1, ...points.map((p) => p.succeeded + p.failed));
    const top = niceCeiling(max);
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const barW = plotW / Math.max(1, points.length);
    const y = (value) => pad.top + plotH - (value / top) * plotH;
    const nodes = [];
    for (const value of [0, top / 2, top]) {
      nodes.push(svgEl("line", { x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value), class: "grid" }));
      nodes.push(svgEl("text", { x: pad.left - 4, y: y(value) + 4, class: "axis", "text-anchor": "end" }, fmtCount(value)));
    }
    points.forEach((point, index) => {
      const x = pad.left + index * barW + 0.5;
      const w = Math.max(1, barW - 1);
      const group = svgEl("g", { class: "bar" });
      group.append(svgEl("title", {}, `${clock(new Date(point.at))}: ${point.succeeded} succeeded, ${point.failed} failed`));
      group.append(svgEl("rect", { x, width: w, y: y(point.succeeded), height: y(0) - y(point.succeeded), class: "ok" }));
      const total = point.succeeded + point.failed;
      group.append(svgEl("rect", { x, width: w, y: y(total), height: y(point.succeeded) - y(total), class: "bad" }));
      // An invisible full-height target, so the tooltip shows over empty buckets too.
      group.append(svgEl("rect", { x, width: w, y: pad.top, height: plotH, class: "hit" }));
      nodes.push(group);
    });
    const minutes = Math.round((points.length * stats.bucket_s) / 60);
    nodes.push(svgEl("text", { x: pad.left, y: height - 4, class: "axis" }, `−${minutes} min`));
    nodes.push(svgEl("text", { x: pad.left + plotW / 2, y: height - 4, class: "axis", "text-anchor": "middle" }, `−${minutes / 2} min`));
    nodes.push(svgEl("text", { x: width - pad.right, y: height - 4, class: "axis", "text-anchor": "end" }, "now"));
    nodes.push(svgEl("text", { x: width - pad.right, y: pad.top + 10, class: "legend", "text-anchor": "end" }, "■ succeeded  ", svgEl("tspan", { class: "legend-bad" }, "■ failed")));
    svg.replaceChildren(...nodes);
  }

  function svgEl(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  function niceCeiling(value) {
    const magnitude = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 5, 10]) if (step * magnitude >= value) return step * magnitude;
    return 10 * magnitude;
  }

  function fmtCount(value) {
    return value >= 1000 ? `${(value / 1000).toFixed(value % 1000 ? 1 : 0)}k` : String(value);
  }

  function renderWorkers(data) {
    const order = { online: 0, lost: 1, offline: 2 };
    const workers = [...data.items].sort(
      (a, b) => (order[a.state] ?? 3) - (order[b.state] ?? 3) || String(a.hostname).localeCompare(String(b.hostname)),
    );
    const rows = workers.map((worker) => {
      const running = worker.running.length
        ? worker.running.map((id) => taskLink(id))
        : [h("span", { class: "dim" }, "idle")];
      return h(
        "tr",
        { "data-worker": worker.id, class: `w-${worker.state}` },
        h(
          "td",
          { title: `${worker.id}${worker.address ? ` · ${worker.address}` : ""} · queues ${worker.queues.join(", ")} · ${worker.concurrency} slot(s) · ${worker.cpu_count} CPUs · started ${worker.started_at}` },
          `${worker.hostname}:${worker.pid}`,
        ),
        h("td", {}, h("span", { class: `badge w-${worker.state}`, "data-state": worker.state }, worker.state)),
        h("td", { class: "num" }, since(worker.last_heartbeat_at)),
        h(
          "td",
          { class: worker.state === "lost" && worker.running.length ? "at-risk" : "" },
          worker.state === "lost" && worker.running.length ? h("span", { class: "risk", title: "the broker redelivers these" }, "at risk ") : null,
          running,
        ),
        h("td", { class: "num" }, `${worker.processed} / ${worker.failed}`),
      );
    });
    $("workers-body").replaceChildren(...(rows.length ? rows : [emptyRow(5, "no workers registered")]));
    const online = data.items.filter((w) => w.state === "online").length;
    const lost = data.items.filter((w) => w.state === "lost").length;
    $("workers-note").textContent = `${online} online${lost ? ` · ${lost} lost` : ""}`;
  }

  function renderTasks(page) {
    const rows = page.items.map((record) =>
      h(
        "tr",
        { "data-task-id": record.id, class: record.id === state.selected ? "selected" : "" },
        h("td", { class: "mono" }, taskLink(record.id)),
        h("td", {}, record.task),
        h("td", {}, badge(record.status)),
        h("td", { class: "num" }, record.attempts),
        h("td", {}, record.queue),
        h("td", { title: record.created_at }, when(record.created_at)),
        h("td", { class: "num" }, took(record)),
      ),
    );
    $("tasks-body").replaceChildren(...(rows.length ? rows : [emptyRow(7, "no tasks")]));
    filterById();
  }

  // Narrows the rows shown to ids containing what is typed in the search box.
  function filterById() {
    const wanted = $("search-input").value.trim().toLowerCase();
    for (const row of $("tasks-body").querySelectorAll("tr[data-task-id]")) {
      row.hidden = Boolean(wanted) && !row.getAttribute("data-task-id").toLowerCase().includes(wanted);
    }
  }

  function renderDeadLetters(page) {
    const rows = page.items.flatMap((letter) => [
      h(
        "tr",
        { "data-dead-letter": letter.task_id },
        h("td", { class: "mono" }, letter.task ? taskLink(letter.task_id) : h("span", { title: letter.task_id }, shortId(letter.task_id))),
        h("td", {}, letter.task ?? "?"),
        h("td", { title: letter.error || "" }, letter.reason),
        h("td", { class: "num" }, letter.attempts),
        h("td", { title: letter.dead_lettered_at }, when(letter.dead_lettered_at)),
        h(
          "td",
          {},
          letter.task
            ? h("button", { type: "button", class: "requeue", "data-requeue": letter.task_id, title: "publish it again with a fresh retry budget" }, "Requeue")
            : h("span", { class: "dim", title: "not a task: purge it" }, "—"),
        ),
      ),
      // Why it died, on a line of its own under the letter.
      h(
        "tr",
        { class: "sub", "data-dead-letter-error": letter.task_id },
        h("td", { colspan: 6, title: letter.error || "" }, letter.error || "no error recorded"),
      ),
    ]);
    $("dead-body").replaceChildren(...(rows.length ? rows : [emptyRow(6, "none")]));
    $("dead-note").textContent = page.next_cursor ? "newest 50" : `${page.items.length}`;
  }

  function renderSchedules(page) {
    const rows = page.items.map((schedule) => {
      const next = schedule.next_runs[0];
      return h(
        "tr",
        { "data-schedule": schedule.name, class: schedule.paused ? "paused" : "" },
        h("td", {}, schedule.name),
        h("td", { class: "mono", title: schedule.timezone }, `${schedule.cron} ${schedule.timezone === "UTC" ? "" : schedule.timezone}`),
        h("td", {}, schedule.task),
        h("td", { title: next || "" }, schedule.paused ? "paused" : next ? [when(next), " (", since(next), ")"] : "—"),
      );
    });
    $("schedules-body").replaceChildren(...(rows.length ? rows : [emptyRow(4, "none")]));
    $("schedules-note").textContent = page.leader ? `leader ${page.leader}` : "no leader";
  }

  // ---------- the task's detail ----------

  function openTask(taskId) {
    state.selected = taskId;
    state.rendered.delete("detail");
    $("detail-title").textContent = `Task ${taskId}`;
    $("detail-status").replaceChildren();
    $("detail-body").replaceChildren(h("p", { class: "dim" }, "loading…"));
    $("detail-cancel").hidden = true;
    showMessage("detail", "");
    $("detail").hidden = false;
    for (const row of $("tasks-body").querySelectorAll("tr[data-task-id]")) {
      row.classList.toggle("selected", row.getAttribute("data-task-id") === taskId);
    }
    refreshNow();
  }

  function closeTask() {
    state.selected = null;
    state.rendered.delete("detail");
    $("detail").hidden = true;
    for (const row of $("tasks-body").querySelectorAll("tr.selected")) row.classList.remove("selected");
  }

  function renderDetail(record) {
    if (record.id !== state.selected) return; // answered for a task closed meanwhile
    $("detail-title").textContent = `Task ${record.id}`;
    $("detail-status").replaceChildren(badge(record.status));
    $("detail-cancel").hidden = TERMINAL.has(record.status);
    const facts = [
      ["task", record.task],
      ["queue", record.queue],
      ["attempts", `${record.attempts} (retries allowed: ${record.max_retries})`],
      ["worker", record.worker],
      ["created", record.created_at && [when(record.created_at), " · ", since(record.created_at)]],
      ["started", when(record.started_at)],
      ["finished", record.finished_at && `${when(record.finished_at)} · took ${took(record)}`],
      ["next attempt", record.next_attempt_at && [when(record.next_attempt_at), " · ", since(record.next_attempt_at)]],
      ["due", record.eta && when(record.eta)],
      ["timeout", `${record.timeout_s} s`],
      ["idempotency key", record.idempotency_key],
      ["request id", record.request_id],
    ].filter(([, value]) => value !== null && value !== undefined && value !== "");
    const list = h("dl", { class: "facts" }, facts.map(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
    const blocks = [list, h("h3", {}, "payload"), h("pre", { "data-field": "payload" }, pretty(record.payload))];
    if (record.result !== null && record.result !== undefined) {
      blocks.push(h("h3", {}, "result"), h("pre", { "data-field": "result" }, pretty(record.result)));
    }
    if (record.error) {
      blocks.push(
        h("h3", {}, "error"),
        h("p", { class: "error-line", "data-field": "error" }, `${record.error.type}: ${record.error.message}`),
      );
      if (record.error.traceback) blocks.push(h("pre", { class: "traceback" }, record.error.traceback));
    }
    $("detail-body").replaceChildren(...blocks);
  }

  // ---------- actions ----------

  async function requeue(button) {
    const taskId = button.getAttribute("data-requeue");
    button.disabled = true;
    button.textContent = "…";
    try {
      const record = await api(`dead-letters/${q(taskId)}/requeue`, { method: "POST" });
      toast(`Requeued ${taskId}: ${record.status}`);
    } catch (error) {
      toast(`Requeue of ${taskId} failed: ${error.describe ? error.describe() : error.message}`, true);
      button.disabled = false;
      button.textContent = "Requeue";
    }
    refreshNow();
  }

  async function cancelSelected() {
    const taskId = state.selected;
    if (!taskId) return;
    $("detail-cancel").disabled = true;
    try {
      const record = await api(`tasks/${q(taskId)}/cancel`, { method: "POST" });
      toast(`Cancelled ${taskId}: ${record.status}`);
    } catch (error) {
      toast(`Cancel of ${taskId} failed: ${error.describe ? error.describe() : error.message}`, true);
    } finally {
      $("detail-cancel").disabled = false;
    }
    refreshNow();
  }

  function toast(text, isError = false) {
    const node = h("div", { class: `toast${isError ? " error" : ""}` }, text);
    $("toasts").append(node);
    setTimeout(() => node.remove(), isError ? 10000 : 4000);
  }

  // ---------- wiring ----------

  function wire() {
    showTokenButton();
    $("token-button").addEventListener("click", () => {
      $("token-reason").textContent = state.token ? "A token is saved for this API." : "No token is saved.";
      $("token-panel").hidden = !$("token-panel").hidden;
      if (!$("token-panel").hidden) $("token-input").focus();
    });
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      if (!token) return;
      storeToken(token);
      $("token-input").value = "";
      state.needsToken = false;
      closeTokenPanel();
      refreshNow();
    });
    $("token-clear").addEventListener("click", () => {
      storeToken("");
      closeTokenPanel();
      state.needsToken = false;
      refreshNow();
    });
    $("token-close").addEventListener("click", closeTokenPanel);
    $("live").addEventListener("change", (event) => {
      state.live = event.target.checked;
      if (state.live) refreshNow();
      else {
        clearTimeout(state.timer);
        setConn("paused", "warn");
      }
    });
    $("status-filter").addEventListener("change", () => {
      state.rendered.delete("tasks");
      refreshNow();
    });
    let typing = null;
    $("task-filter").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        state.rendered.delete("tasks");
        refreshNow();
      }, 300);
    });
    $("search-input").addEventListener("input", filterById);
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const id = $("search-input").value.trim();
      if (id) openTask(id);
    });
    $("counts").addEventListener("click", (event) => {
      const chip = event.target.closest("[data-filter]");
      if (!chip) return;
      const status = chip.getAttribute("data-filter");
      $("status-filter").value = $("status-filter").value === status ? "" : status;
      $("status-filter").dispatchEvent(new Event("change"));
    });
    // Delegated: rows are redrawn while the user points at them.
    document.addEventListener("click", (event) => {
      const opener = event.target.closest("[data-open]");
      if (opener) openTask(opener.getAttribute("data-open"));
      const requeueButton = event.target.closest("button[data-requeue]");
      if (requeueButton && !requeueButton.disabled) requeue(requeueButton);
    });
    $("detail-close").addEventListener("click", closeTask);
    $("detail-cancel").addEventListener("click", cancelSelected);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !$("detail").hidden) closeTask();
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.live && !state.needsToken) refreshNow();
    });
    window.addEventListener("resize", () => {
      if (state.stats) drawChart(state.stats);
    });
    setInterval(updateAges, 1000);
    renderCounts({});
    refreshNow();
  }

  wire();
})();
