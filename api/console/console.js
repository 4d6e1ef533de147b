// The Roomcast console: a page on the public API (/api/v1) of its own origin.
//
// The bearer token comes from logging in and is kept in sessionStorage (this tab only); logging
// out revokes it. Text from the API is only ever set with textContent or text nodes, never parsed
// as HTML. A turn's progress is read from its event stream with fetch(), because EventSource
// cannot send the Authorization header the API requires (and a token in the URL would end up
// in access logs).

const API = "/api/v1";
const STORE = "roomcast.console";
const HISTORY_PAGE = 30;
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const SPEAKER_STATUS = {
  pending: "waiting",
  running: "thinking…",
  writing: "writing…",
  done: "replied",
  skipped: "skipped",
};

const $ = (id) => document.getElementById(id);

const state = {
  auth: null, // {token, tokenId, email}
  agents: [],
  names: new Map(), // agent id -> name, also of agents deleted since (from turns' plans)
  providers: [],
  target: null, // {kind: "agent" | "room", id, name}
  sessionId: null,
  earlier: null, // the cursor of the history's older page
  shown: new Set(), // ids of the messages in the transcript
  stream: null, // the AbortController of the followed turn's stream
};

// ---- the API ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const fields = Object.entries(body?.errors || {}).map(
      ([field, messages]) => `${field}: ${[].concat(messages).map(describe).join(" ")}`,
    );
    super([body?.message || `The server answered ${status}.`, ...fields].join("\n"));
    this.status = status;
    this.code = body?.code || "";
    this.body = body || {};
  }
}

function describe(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function headers(extra = {}) {
  const all = { Accept: "application/json", ...extra };
  if (state.auth) all.Authorization = `Bearer ${state.auth.token}`;
  return all;
}

async function api(path, { method = "GET", json, form, signal } = {}) {
  const extra = json === undefined ? {} : { "Content-Type": "application/json" };
  const body = json === undefined ? form : JSON.stringify(json);
  let response;
  try {
    response = await fetch(API + path, { method, headers: headers(extra), body, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { message: `The server could not be reached (${error.message}).` });
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) throw failed(response.status, data);
  return data;
}

function failed(status, data) {
  if (status === 401 && state.auth) forget(); // revoked or expired: back to the login form
  return new ApiError(status, data);
}

async function listAll(path) {
  const items = [];
  let cursor = "";
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${sep}limit=100&cursor=${encodeURIComponent(cursor)}`);
    items.push(...page.data);
    cursor = page.has_more ? page.next_cursor : "";
  } while (cursor);
  return items;
}

// ---- small DOM helpers ------------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key === "on") for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

function showError(error) {
  if (error?.name === "AbortError") return;
  const box = $("error");
  const title = error instanceof ApiError && error.status ? `Error ${error.status}` : "Error";
  const code = error instanceof ApiError && error.code ? ` (${error.code})` : "";
  box.replaceChildren(
    el("strong", { text: `${title}${code}: ` }),
    el("span", { class: "message", text: error?.message || String(error) }),
    el("button", { type: "button", class: "link", text: "Dismiss", on: { click: clearError } }),
  );
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

function announce(text) {
  $("announce").textContent = text;
}

// Runs a UI action: clears the last error, shows the next one, and (unless the action keeps
// its own state) marks the form busy meanwhile.
function action(fn, { busy = true } = {}) {
  return async (event) => {
    event?.preventDefault?.();
    const form = busy ? event?.target?.closest?.("form") : null;
    const buttons = [...(form?.querySelectorAll("button:not([disabled])") || [])];
    clearError();
    form?.setAttribute("aria-busy", "true");
    buttons.forEach((button) => (button.disabled = true));
    try {
      await fn(event);
    } catch (error) {
      showError(error);
    } finally {
      form?.removeAttribute("aria-busy");
      buttons.forEach((button) => (button.disabled = false));
    }
  };
}

function saved() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE)) || {};
  } catch {
    return {};
  }
}

function save(changes) {
  sessionStorage.setItem(STORE, JSON.stringify({ ...saved(), ...changes }));
}

// ---- log in, register, log out ----------------------------------------------------------

async function logIn(email, password) {
  const token = await api("/auth/tokens", {
    method: "POST",
    json: { email, password, name: "console" },
  });
  state.auth = { token: token.token, tokenId: token.id, email };
  sessionStorage.setItem(STORE, JSON.stringify({ auth: state.auth }));
  await start();
}

const submitAuth = action(async (event) => {
  const email = $("auth-email").value.trim();
  const password = $("auth-password").value;
  if (event.submitter?.id === "register") {
    await api("/auth/register", { method: "POST", json: { email, password } });
  }
  await logIn(email, password);
  $("auth-password").value = "";
});

const logOut = action(async () => {
  const auth = state.auth;
  try {
    if (auth) await api(`/auth/tokens/${auth.tokenId}`, { method: "DELETE" });
  } catch (error) {
    // Already revoked or expired: logged out all the same.
    if (!(error instanceof ApiError && [401, 404].includes(error.status))) throw error;
  } finally {
    forget();
    announce("Logged out.");
  }
});

function forget() {
  state.stream?.abort();
  Object.assign(state, { auth: null, target: null, sessionId: null, agents: [], stream: null });
  sessionStorage.removeItem(STORE);
  $("app-view").hidden = true;
  $("account").hidden = true;
  $("auth-view").hidden = false;
  $("auth-email").focus();
}

async function start() {
  const me = await api("/auth/me");
  $("whoami").textContent = me.email;
  $("auth-view").hidden = true;
  $("account").hidden = false;
  $("app-view").hidden = false;
  await Promise.all([loadCatalog(), loadAgents(), loadRooms(), loadFiles()]);
  const { target, sessionId } = saved();
  if (!target) {
    document.querySelector("#agent-new summary").focus();
    return;
  }
  try {
    await openTarget(target, sessionId);
  } catch (error) {
    save({ target: null, sessionId: null }); // deleted since: not reopened at the next load
    throw error;
  }
}

// ---- agents, rooms and files -------------------------------------------------------------

// Tools and room modes are enums of the OpenAPI document; providers are the server's catalog.
async function loadCatalog() {
  const [spec, providers] = await Promise.all([
    fetch(`${API}/docs/openapi.json`).then((r) => r.json()),
    api("/providers"),
  ]);
  const schemas = spec.components.schemas;
  const tools = schemas.Agent.properties.tools.items.enum || [];
  const modes = schemas.Orchestration.properties.mode.enum || [];
  $("agent-tools").replaceChildren(
    el("legend", { text: "Tools" }),
    ...tools.map((tool) =>
      el(
        "div",
        { class: "check" },
        el("input", { type: "checkbox", id: `tool-${tool}`, name: "tools", value: tool }),
        el("label", { for: `tool-${tool}`, text: tool }),
      ),
    ),
  );
  $("room-mode").replaceChildren(...modes.map((mode) => el("option", { value: mode, text: mode })));
  state.providers = providers.data;
  $("agent-provider").replaceChildren(
    ...providers.data.map((p) =>
      el("option", { value: p.name, text: p.name, selected: p.default ? "" : null }),
    ),
  );
  showModels();
}

function showModels() {
  const provider = state.providers.find((p) => p.name === $("agent-provider").value);
  $("agent-model").placeholder = provider?.default_model || "";
  $("agent-models").replaceChildren(
    ...(provider?.models || []).map((model) => el("option", { value: model })),
  );
}

async function loadAgents() {
  state.agents = await listAll("/agents");
  for (const agent of state.agents) state.names.set(agent.id, agent.name);
  $("agent-list").replaceChildren(
    ...state.agents.map((agent) =>
      el(
        "li",
        {},
        el("span", { class: "name", text: agent.name }),
        el("span", { class: "muted", text: ` ${agent.provider} / ${agent.model}` }),
        agent.tools.length ? el("span", { class: "tag", text: agent.tools.join(", ") }) : null,
        chatButton({ kind: "agent", id: agent.id, name: agent.name }),
      ),
    ),
  );
  if (!state.agents.length) $("agent-list").append(el("li", { class: "muted", text: "No agents yet." }));
}

function chatButton(target) {
  const label = target.kind === "agent" ? `Chat with ${target.name}` : `Chat in ${target.name}`;
  return el("button", {
    type: "button",
    class: "small",
    text: "Chat",
    "aria-label": label,
    on: { click: action(() => openTarget(target)) },
  });
}

const createAgent = action(async () => {
  const form = $("agent-form");
  const json = {
    name: $("agent-name").value,
    provider: $("agent-provider").value,
    system_prompt: $("agent-prompt").value,
    tools: [...form.querySelectorAll("input[name=tools]:checked")].map((box) => box.value),
  };
  if ($("agent-model").value.trim()) json.model = $("agent-model").value.trim();
  const agent = await api("/agents", { method: "POST", json });
  form.reset();
  showModels();
  await Promise.all([loadAgents(), loadRooms()]);
  announce(`Agent ${agent.name} created.`);
  $("agent-name").focus();
});

async function loadRooms() {
  const rooms = await listAll("/rooms");
  $("room-list").replaceChildren(...rooms.map(roomItem));
  if (!rooms.length) $("room-list").append(el("li", { class: "muted", text: "No rooms yet." }));
}

function roomItem(room) {
  const members = room.agents.map((member) => member.agent);
  for (const agent of members) state.names.set(agent.id, agent.name);
  const outside = state.agents.filter((agent) => !members.some((m) => m.id === agent.id));
  const selectId = `room-${room.id}-add`;
  const memberList = el(
    "ol",
    { class: "members", "aria-label": `Members of ${room.name}` },
    ...members.map((agent) =>
      el(
        "li",
        {},
        el("span", { text: agent.name }),
        el("button", {
          type: "button",
          class: "small link",
          text: "Remove",
          "aria-label": `Remove ${agent.name} from ${room.name}`,
          on: { click: action(() => changeMember(room, agent, "DELETE")) },
        }),
      ),
    ),
  );
  const add = outside.length ? el(
    "form",
    { class: "inline add-member", on: { submit: action(() => addMember(room, $(selectId).value)) } },
    el("label", { for: selectId, text: "Add agent" }),
    el(
      "select",
      { id: selectId, required: "" },
      ...outside.map((agent) => el("option", { value: agent.id, text: agent.name })),
    ),
    el("button", { type: "submit", class: "small", text: "Add" }),
  ) : null;
  return el(
    "li",
    { class: "room" },
    el("span", { class: "name", text: room.name }),
    el("span", { class: "muted", text: ` ${room.orchestration.mode}` }),
    chatButton({ kind: "room", id: room.id, name: room.name }),
    members.length ? memberList : el("p", { class: "muted", text: "No members yet." }),
    add,
  );
}

async function addMember(room, agentId) {
  await changeMember(room, { id: Number(agentId) }, "POST");
}

async function changeMember(room, agent, method) {
  if (method === "POST") {
    await api(`/rooms/${room.id}/agents`, { method, json: { agent_id: agent.id } });
  } else {
    await api(`/rooms/${room.id}/agents/${agent.id}`, { method });
  }
  await loadRooms();
  const name = state.names.get(agent.id) || agent.name;
  announce(method === "POST" ? `${name} joined ${room.name}.` : `${name} left ${room.name}.`);
}

const createRoom = action(async () => {
  const json = { name: $("room-name").value, orchestration: { mode: $("room-mode").value } };
  const room = await api("/rooms", { method: "POST", json });
  $("room-form").reset();
  await loadRooms();
  announce(`Room ${room.name} created.`);
  $("room-name").focus();
});

async function loadFiles() {
  const files = await listAll("/files?order=desc");
  $("file-list").replaceChildren(
    ...files.map((file) =>
      el(
        "li",
        {},
        el("span", { class: "name", text: file.name }),
        el("span", { class: "muted", text: ` ${formatBytes(file.size_bytes)}, ${file.text_status}` }),
      ),
    ),
  );
  if (!files.length) $("file-list").append(el("li", { class: "muted", text: "No files yet." }));
}

function formatBytes(size) {
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KiB`;
  return `${(size / 1024 / 1024).toFixed(1)} MiB`;
}

const uploadFile = action(async () => {
  const input = $("file-input");
  if (!input.files.length) return;
  const form = new FormData();
  form.append("file", input.files[0]);
  const file = await api("/files", { method: "POST", form });
  $("file-form").reset();
  await loadFiles();
  announce(`File ${file.name} uploaded.`);
});

// ---- sessions and history ----------------------------------------------------------------

async function openTarget(target, sessionId = null) {
  const base = `/${target.kind}s/${target.id}/sessions`;
  let sessions = (await api(`${base}?order=desc&limit=50`)).data;
  if (!sessions.length) sessions = [await api(base, { method: "POST", json: {} })];
  state.target = target;
  $("chat-title").textContent =
    target.kind === "agent" ? `Chat with ${target.name}` : `Room ${target.name}`;
  $("chat-empty").hidden = true;
  $("chat-body").hidden = false;
  $("session-select").replaceChildren(...sessions.map(sessionOption));
  const chosen = sessions.some((s) => s.id === sessionId) ? sessionId : sessions[0].id;
  $("session-select").value = String(chosen);
  await openSession(chosen);
  $("message").focus();
}

function sessionOption(session) {
  const when = new Date(session.created_at).toLocaleString();
  return el("option", { value: session.id, text: `#${session.id} ${session.title || when}` });
}

const newSession = action(async () => {
  const { kind, id } = state.target;
  const session = await api(`/${kind}s/${id}/sessions`, { method: "POST", json: {} });
  $("session-select").prepend(sessionOption(session));
  $("session-select").value = String(session.id);
  await openSession(session.id);
  announce(`Session ${session.id} opened.`);
});

async function openSession(sessionId) {
  state.stream?.abort();
  state.sessionId = sessionId;
  state.shown = new Set();
  state.earlier = null;
  save({ target: state.target, sessionId });
  $("transcript").replaceChildren();
  $("turn").hidden = true;
  setSending(false);
  await loadHistory();
  // A turn still running (a reload in the middle of one): follow it to its end.
  const [last] = (await api(`/sessions/${sessionId}/turns?order=desc&limit=1`)).data;
  if (last && !TERMINAL.has(last.status)) follow(last.id);
}

async function loadHistory() {
  const cursor = state.earlier ? `&cursor=${encodeURIComponent(state.earlier)}` : "";
  const older = Boolean(cursor);
  const page = await api(
    `/sessions/${state.sessionId}/messages?order=desc&limit=${HISTORY_PAGE}${cursor}`,
  );
  const items = page.data
    .filter((message) => !state.shown.has(message.id))
    .reverse()
    .map(messageItem);
  const transcript = $("transcript");
  if (older) transcript.prepend(...items);
  else {
    transcript.append(...items);
    transcript.scrollTop = transcript.scrollHeight;
  }
  state.earlier = page.has_more ? page.next_cursor : null;
  $("load-earlier").hidden = !page.has_more;
}

const loadEarlier = action(async () => {
  if (state.earlier) await loadHistory();
});

function speakerName(agentId) {
  return state.names.get(agentId) || `agent ${agentId}`;
}

function messageItem(message) {
  state.shown.add(message.id);
  const author = message.role === "user" ? "You" : message.role === "tool" ? "Tool result" : speakerName(message.agent_id);
  const item = el(
    "li",
    { class: `message ${message.role}`, "data-id": message.id, "data-step": message.step },
    el(
      "p",
      { class: "author" },
      el("span", { class: "name", text: author }),
      message.visibility === "private" ? el("span", { class: "tag", text: "private" }) : null,
      el("time", { datetime: message.created_at, text: new Date(message.created_at).toLocaleTimeString() }),
    ),
  );
  for (const call of message.tool_calls || []) {
    const fn = call.function || call;
    item.append(el("p", { class: "tool", text: `calls ${fn.name}(${describe(fn.arguments ?? "")})` }));
  }
  if (message.content) item.append(el("p", { class: "content", text: message.content }));
  return item;
}

// ---- a turn, live ------------------------------------------------------------------------

function setSending(busy) {
  $("composer").querySelector("button").disabled = busy;
  $("composer").setAttribute("aria-busy", String(busy));
}

const sendMessage = action(async () => {
  const content = $("message").value;
  if (!content.trim()) return;
  setSending(true);
  try {
    const turn = await api(`/sessions/${state.sessionId}/turns`, {
      method: "POST",
      json: { content },
    });
    $("message").value = "";
    appendMessage({
      id: turn.input_message_id,
      role: "user",
      step: 0,
      content,
      visibility: "shared",
      created_at: turn.created_at,
    });
    follow(turn.id);
  } catch (error) {
    setSending(false);
    // Another turn of this session is running (from another tab or client): show it.
    if (error.code === "turn_active" && error.body.active_turn_id) follow(error.body.active_turn_id);
    throw error;
  }
}, { busy: false });

function appendMessage(message) {
  if (state.shown.has(message.id)) return;
  const transcript = $("transcript");
  const item = messageItem(message);
  const drafts = [...transcript.querySelectorAll("li.draft")];
  const draft = drafts.find((d) => Number(d.dataset.step) === message.step);
  // A later speaker's draft may already be there (its tokens came before this commit).
  const later = drafts.find((d) => Number(d.dataset.step) > message.step);
  if (draft) draft.replaceWith(item);
  else if (later) later.before(item);
  else transcript.append(item);
  transcript.scrollTop = transcript.scrollHeight;
}

// One turn's view: its status, its speakers' progress, its drafts and its usage.
class TurnView {
  constructor(turnId) {
    this.turnId = turnId;
    this.speakers = [];
    $("turn").hidden = false;
    $("turn-speakers").replaceChildren();
    $("turn-usage").textContent = "";
    this.status("queued");
  }

  status(status, extra = "") {
    $("turn-status").textContent = `Turn ${this.turnId}: ${status}${extra}`;
  }

  plan(speakers) {
    for (const speaker of speakers) {
      if (speaker.agent_id != null) state.names.set(speaker.agent_id, speaker.name);
      const known = this.speakers[speaker.index];
      this.speakers[speaker.index] = { ...speaker, status: known?.status || "pending", tokens: known?.tokens || 0 };
    }
    this.render();
  }

  progress(progress) {
    (progress.speakers || []).forEach((speaker, index) => {
      const known = this.speakers[index] || { index, tokens: 0 };
      const status = known.status === "writing" && speaker.status === "running" ? "writing" : speaker.status;
      this.speakers[index] = { ...known, ...speaker, index, status };
    });
    this.render();
  }

  usage(record) {
    const speaker = this.speakers.find((s) => s && s.agent_id === record.agent_id);
    if (speaker) speaker.tokens += record.total_tokens;
    this.render();
  }

  render() {
    $("turn-speakers").replaceChildren(
      ...this.speakers.filter(Boolean).map((speaker) =>
        el(
          "li",
          { class: `speaker ${speaker.status}` },
          el("span", { class: "name", text: speaker.name || speakerName(speaker.agent_id) }),
          el("span", { text: ` ${SPEAKER_STATUS[speaker.status] || speaker.status}` }),
          speaker.tokens ? el("span", { class: "muted", text: ` · ${speaker.tokens} tokens` }) : null,
        ),
      ),
    );
  }

  delta(delta) {
    const transcript = $("transcript");
    let draft = transcript.querySelector(`li.draft[data-step="${delta.step}"]`);
    if (!draft || draft.dataset.attempt !== String(delta.attempt)) {
      const fresh = el(
        "li",
        { class: "message assistant draft", "data-step": delta.step, "data-attempt": delta.attempt },
        el("p", { class: "author" }, el("span", { class: "name", text: delta.agent || speakerName(delta.agent_id) }), el("span", { class: "tag", text: "writing…" })),
        el("p", { class: "content" }),
      );
      if (draft) draft.replaceWith(fresh);
      else transcript.append(fresh);
      draft = fresh;
    }
    draft.querySelector(".content").append(document.createTextNode(delta.text));
    transcript.scrollTop = transcript.scrollHeight;
    const speaker = this.speakers[delta.speaker];
    if (speaker && speaker.status !== "done") {
      speaker.status = "writing";
      this.render();
    }
  }

  superseded(mark) {
    for (const draft of $("transcript").querySelectorAll(`li.draft[data-attempt="${mark.attempt}"]`)) {
      if (mark.step == null || draft.dataset.step === String(mark.step)) draft.remove();
    }
  }

  message(message) {
    const fresh = !state.shown.has(message.id);
    appendMessage(message);
    if (fresh && message.role === "assistant" && message.content) {
      announce(`${speakerName(message.agent_id)}: ${message.content}`);
    }
  }

  end(turn) {
    const usage = turn.usage;
    const reason = turn.error ? ` (${turn.error.message})` : "";
    this.status(turn.status, reason);
    $("turn-status").classList.toggle("failed", turn.status !== "completed");
    $("turn-usage").textContent =
      `Usage: ${usage.total_tokens} tokens (${usage.prompt_tokens} prompt, ` +
      `${usage.completion_tokens} completion) · cost $${usage.cost}`;
    for (const draft of $("transcript").querySelectorAll("li.draft")) draft.remove();
    setSending(false);
  }
}

function follow(turnId) {
  state.stream?.abort();
  const controller = new AbortController();
  state.stream = controller;
  const view = new TurnView(turnId);
  setSending(true);
  const handlers = {
    status: (data) => view.status(data.status),
    plan: (data) => view.plan(data.speakers),
    progress: (data) => view.progress(data.progress),
    message: (data) => view.message(data),
    tool_call: (data) => view.message(data),
    tool_result: (data) => view.message(data),
    usage: (data) => view.usage(data),
    delta: (data) => view.delta(data),
    superseded: (data) => view.superseded(data),
    end: (data) => view.end(data),
  };
  readEvents(`/turns/${turnId}/events?tokens=true`, handlers, controller.signal)
    .catch((error) => {
      showError(error);
      setSending(false);
    })
    .finally(() => {
      if (state.stream === controller) state.stream = null;
    });
}

// A text/event-stream read with fetch (the header carries the token), reconnecting with
// Last-Event-ID until the `end` event, as an EventSource would.
async function readEvents(path, handlers, signal) {
  let lastId = null;
  let retryMs = 2000;
  let failures = 0;
  for (;;) {
    const extra = { Accept: "text/event-stream" };
    if (lastId) extra["Last-Event-ID"] = lastId;
    let response;
    try {
      response = await fetch(API + path, { headers: headers(extra), signal, cache: "no-store" });
    } catch (error) {
      if (signal.aborted) return;
      if (++failures > 5) throw new ApiError(0, { message: `The event stream failed: ${error.message}` });
      await sleep(retryMs, signal);
      continue;
    }
    if (response.status === 204) return; // everything was sent already
    if (!response.ok) throw failed(response.status, await response.json().catch(() => null));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = parseEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (event.retry) retryMs = event.retry;
          if (event.id !== undefined) lastId = event.id;
          if (event.data === undefined) continue;
          failures = 0;
          handlers[event.name]?.(JSON.parse(event.data));
          if (event.name === "end") {
            reader.cancel().catch(() => {});
            return;
          }
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof SyntaxError) throw error;
      if (++failures > 5) throw new ApiError(0, { message: `The event stream failed: ${error.message}` });
    }
    await sleep(retryMs, signal); // closed before the end (the stream's longest duration): resume
    if (signal.aborted) return;
  }
}

function parseEvent(block) {
  const event = { name: "message" };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // a comment: a heartbeat
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.name = value;
    else if (field === "data") data.push(value);
    else if (field === "id") event.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) event.retry = Number(value);
  }
  if (data.length) event.data = data.join("\n");
  return event;
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

// ---- wiring ------------------------------------------------------------------------------

function init() {
  $("auth-form").addEventListener("submit", submitAuth);
  $("logout").addEventListener("click", logOut);
  $("agent-form").addEventListener("submit", createAgent);
  $("agent-provider").addEventListener("change", showModels);
  $("room-form").addEventListener("submit", createRoom);
  $("file-form").addEventListener("submit", uploadFile);
  $("session-new").addEventListener("click", newSession);
  $("session-select").addEventListener(
    "change",
    action(() => openSession(Number($("session-select").value))),
  );
  $("load-earlier").addEventListener("click", loadEarlier);
  $("composer").addEventListener("submit", sendMessage);
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  state.auth = saved().auth || null;
  if (state.auth) action(start)();
  else $("auth-email").focus();
}

init();
