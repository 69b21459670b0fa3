// mixrec demo page: plain JavaScript against the public HTTP API (the same calls an app makes).
// The API key, when the server needs one, is typed by the person and kept in memory only.
"use strict";
const $ = (id) => document.getElementById(id);
// mode: {kind: "user", id} | {kind: "query", body}; types: the model's item type labels (/info)
const state = { mode: null, last: null, ids: [], types: ["product", "video", "audio"] };

function headers(json = true) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function api(path, body) {
  const r = await fetch("/" + path, { method: "POST", headers: headers(), body: JSON.stringify(body || {}) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const msg = (data.error && data.error.message) || r.statusText;
    throw new Error(`${path}: ${r.status} ${msg}`);
  }
  return data;
}

// Media: plain URLs without a key; with one, fetched with the header and shown from a blob URL.
async function setMedia(el, attr, itemId, kind) {
  const url = `/media/${encodeURIComponent(itemId)}/${kind}`;
  if (!$("api-key").value.trim()) { el[attr] = url; return; }
  const r = await fetch(url, { headers: headers(false) });
  if (r.ok) el[attr] = URL.createObjectURL(await r.blob());
}

function options() {
  const o = { k: Number($("k").value) || 12, diversity: Number($("diversity").value) };
  const mix = $("mix").value;
  if (mix === "counts") {
    o.mix = {};
    for (const part of $("mix-counts").value.split(",")) {
      const [t, n] = part.split("=").map((s) => s.trim());
      if (t && n) o.mix[t] = Number(n);
    }
  } else o.mix = mix;
  const tags = $("tags").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (tags.length) o.tags = tags;
  return o;
}

function chip(text, cls = "chip") {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

function explanationChips(e) {
  const box = document.createElement("div");
  box.className = "chips";
  if (!e) return box;
  for (const i of e.interests || []) box.append(chip(`interest: ${i.label} (${(i.user_share * 100).toFixed(0)}%)`));
  if (e.modality) box.append(chip(`strongest: ${e.modality}`));
  else if (e.modality_tie) box.append(chip("modalities tie"));
  for (const b of (e.because_you_liked || []).slice(0, 2)) box.append(chip(`like ${b.item_id}`));
  if (e.because) box.append(chip(e.because));
  if (e.note) box.append(chip(e.note, "chip note"));
  const parts = Object.entries(e.components || {}).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(" + ");
  if (parts) box.append(chip(`score = ${parts}`));
  return box;
}

function mediaFor(item) {
  const box = document.createElement("div");
  const alt = item.title;
  if (item.type === "video") {
    const v = document.createElement("video");
    v.controls = true;
    v.preload = "metadata";
    v.setAttribute("aria-label", `video: ${alt}`);
    setMedia(v, "poster", item.item_id, "poster");
    setMedia(v, "src", item.item_id, "video");
    v.addEventListener("play", () => sendEvent(item.item_id, "play"), { once: true });
    box.append(v);
  } else if (item.type === "audio") {
    const a = document.createElement("audio");
    a.controls = true;
    a.preload = "metadata";
    a.setAttribute("aria-label", `audio: ${alt}`);
    setMedia(a, "src", item.item_id, "audio");
    a.addEventListener("play", () => sendEvent(item.item_id, "play"), { once: true });
    box.append(a);
  } else {  // products and any label a catalogue chose: the item's image
    const img = document.createElement("img");
    img.alt = alt;
    img.loading = "eager";
    setMedia(img, "src", item.item_id, "image");
    box.append(img);
  }
  return box;
}

function button(text, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "small";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

function card(item, isNew) {
  const li = document.createElement("li");
  li.className = "card" + (isNew ? " new" : "");
  li.dataset.itemId = item.item_id;
  li.dataset.type = item.type;
  const head = document.createElement("div");
  head.append(chip(item.type, `badge ${item.type}`), " ", chip(`score ${item.score.toFixed(3)}`, "sub"));
  const h = document.createElement("h3");
  h.textContent = item.title;
  const actions = document.createElement("div");
  actions.className = "actions";
  const like = button("Like", `like ${item.title}`, () => { sendEvent(item.item_id, "like"); like.setAttribute("aria-pressed", "true"); });
  like.classList.add("like");
  const dislike = button("Dislike", `dislike ${item.title}`, () => { sendEvent(item.item_id, "dislike"); dislike.setAttribute("aria-pressed", "true"); });
  const heart = button("+ liked", `use ${item.title} as a liked item in the description`, () => {
    const ids = $("q-liked").value.split(",").map((s) => s.trim()).filter(Boolean);
    if (!ids.includes(item.item_id)) ids.push(item.item_id);
    $("q-liked").value = ids.join(", ");
  });
  const pick = document.createElement("select");
  pick.setAttribute("aria-label", `type of similar items for ${item.title}`);
  for (const t of ["any", ...state.types]) pick.append(new Option(t === "any" ? "any type" : t, t));
  const similar = button("Similar", `items similar to ${item.title}`, () => showSimilar(item, pick.value));
  actions.append(like, dislike, heart, similar, pick);
  li.append(head, mediaFor(item), h, explanationChips(item.explanation), actions);
  return li;
}

function render(items, label) {
  const before = new Set(state.ids);
  const grid = $("grid");
  grid.replaceChildren(...items.map((it) => card(it, state.ids.length > 0 && !before.has(it.item_id))));
  const ids = items.map((it) => it.item_id);
  const changed = state.ids.length ? ids.filter((i, n) => state.ids[n] !== i).length : 0;
  $("changed").textContent = state.ids.length ? `list changed: ${changed} of ${ids.length} positions` : "";
  $("changed").dataset.changed = String(changed);
  state.ids = ids;
  $("results-for").textContent = label;
  const types = new Set(items.map((it) => it.type));
  say(`${items.length} items (${[...types].sort().join(", ")})`);
}

function chart(interests) {
  $("interest-chart").replaceChildren(...interests.map((i) => {
    const li = document.createElement("li");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = `${Math.max(2, Math.round(i.probability * 100))}%`;
    bar.setAttribute("aria-hidden", "true");
    li.append(`${i.label}: ${(i.probability * 100).toFixed(1)}%`, bar);
    return li;
  }));
}

async function runUser(id, keepIds = false) {
  if (!keepIds) state.ids = [];
  state.mode = { kind: "user", id };
  const o = options();
  const [rec, interests] = await Promise.all([
    api("recommend", { user_id: id, exclude_seen: $("exclude-seen").checked, ...o }),
    api("user_interests", { user_id: id, top: 8 }).catch(() => ({ interests: [] })),
  ]);
  render(rec.items, `for ${id}`);
  chart(interests.interests);
}

function fileB64(file) {
  return new Promise((ok, fail) => {
    const r = new FileReader();
    r.onload = () => ok(String(r.result).split(",", 2)[1]);
    r.onerror = () => fail(r.error);
    r.readAsDataURL(file);
  });
}

let recorded = null;
async function queryBody() {
  const body = { text: $("q-text").value, ...options() };
  const img = $("q-image").files[0], aud = $("q-audio").files[0];
  if (img) body.image_b64 = [await fileB64(img)];
  if (aud) body.audio_b64 = [await fileB64(aud)];
  else if (recorded) body.audio_b64 = [await fileB64(recorded)];
  const liked = $("q-liked").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (liked.length) body.liked_item_ids = liked;
  return body;
}

async function runQuery(body, keepIds = false) {
  if (!keepIds) state.ids = [];
  state.mode = { kind: "query", body };
  const rec = await api("recommend_by_query", body);
  render(rec.items, "for your description");
  chart(rec.interests || []);
  if (!rec.interests) $("interest-chart").replaceChildren(Object.assign(document.createElement("li"), {
    textContent: "The chart shows a known user's interests; a description's are in each card's chips." }));
}

async function sendEvent(itemId, event) {
  const user = state.mode && state.mode.kind === "user" ? state.mode.id : $("user-id").value.trim();
  if (!user) { say("pick a user first: feedback belongs to a user", true); return; }
  try {
    await api("feedback", { events: [{ user_id: user, item_id: itemId, event }] });
    say(`${event} on ${itemId} recorded for ${user}; "Update model" applies it`);
  } catch (e) { say(e.message, true); }
}

async function showSimilar(item, type) {
  const body = { item_id: item.item_id, k: Number($("k").value) || 12 };
  if (type !== "any") body.types = [type];
  try {
    const r = await api("similar_items", body);
    state.ids = [];
    state.mode = null;
    render(r.items, `similar to "${item.title}"${type !== "any" ? ` (${type} only)` : ""}`);
  } catch (e) { say(e.message, true); }
}

async function guard(fn) {
  try { await fn(); } catch (e) { say(e.message, true); }
}

$("diversity").addEventListener("input", () => { $("diversity-out").value = $("diversity").value; });
$("user-form").addEventListener("submit", (ev) => { ev.preventDefault(); say("loading…"); guard(() => runUser($("user-id").value.trim())); });
$("query-form").addEventListener("submit", (ev) => { ev.preventDefault(); say("loading…"); guard(async () => runQuery(await queryBody())); });
$("update-model").addEventListener("click", () => guard(async () => {
  say("updating the model…");
  const r = await api("update_model", { wait: true });
  if (state.mode && state.mode.kind === "user") await runUser(state.mode.id, true);
  else if (state.mode && state.mode.kind === "query") await runQuery(state.mode.body, true);
  say(`model updated (${r.updates_done} updates, ${r.last_update_seconds}s); ${$("changed").textContent}`);
}));
$("add-form").addEventListener("submit", (ev) => { ev.preventDefault(); guard(async () => {
  const file = $("a-file").files[0];
  const item = { item_id: $("a-id").value.trim(), type: $("a-type").value, title: $("a-title").value.trim(),
                 tags: $("a-tags").value.split(",").map((s) => s.trim()).filter(Boolean) };
  if (file) {
    const kind = file.type.split("/")[0];
    if (!["image", "audio", "video"].includes(kind)) throw new Error("the file must be an image, audio or video");
    item[`${kind}_b64`] = await fileB64(file);
  }
  await api("add_items", { items: [item] });
  say(`added ${item.item_id}: it is recommendable now; showing items similar to it`);
  await showSimilar(item, "any");
}); });

// Drop a file: images go to the image field, audio to the audio field.
const drop = $("drop");
drop.addEventListener("dragover", (ev) => ev.preventDefault());
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  const f = ev.dataTransfer.files[0];
  if (!f) return;
  const target = f.type.startsWith("audio/") ? $("q-audio") : $("q-image");
  const dt = new DataTransfer();
  dt.items.add(f);
  target.files = dt.files;
  say(`${f.name} ready as the ${target === $("q-audio") ? "audio clip" : "image"}`);
});

// Record a 5-second clip with the microphone (when the browser allows it).
$("q-record").addEventListener("click", () => guard(async () => {
  if (!navigator.mediaDevices || !window.MediaRecorder) throw new Error("this browser cannot record audio here");
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const rec = new MediaRecorder(stream), chunks = [];
  rec.ondataavailable = (e) => chunks.push(e.data);
  $("q-record").setAttribute("aria-pressed", "true");
  rec.start();
  await new Promise((ok) => setTimeout(ok, 5000));
  await new Promise((ok) => { rec.onstop = ok; rec.stop(); });
  stream.getTracks().forEach((t) => t.stop());
  recorded = new Blob(chunks, { type: rec.mimeType });
  $("q-record").setAttribute("aria-pressed", "false");
  say("clip recorded: it is sent with the next Find");
}));

// The type pickers list the model's own labels (a catalogue chooses them); the demo's three until /info answers.
api("info").then((info) => {
  const types = info.model && info.model.item_types;
  if (!Array.isArray(types) || !types.length) return;
  state.types = types;
  $("a-type").replaceChildren(...types.map((t) => new Option(t, t)));
}).catch(() => {});

// ?user=<id> opens that user's grid at once (links from the README and `make demo`).
const params = new URLSearchParams(location.search);
if (params.get("user")) { $("user-id").value = params.get("user"); guard(() => runUser(params.get("user"))); }
