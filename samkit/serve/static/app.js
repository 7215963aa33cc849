// samkit serve: the annotator page. Plain JS, no build step. Talks to the JSON API (/openapi.json).
"use strict";

const $ = (id) => document.getElementById(id);
const PALETTE = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
  [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
  [0, 128, 128], [170, 110, 40], [128, 0, 0], [0, 0, 128], [128, 128, 0]];

const S = {
  info: null, images: [], index: 0, imageId: null,
  img: null, width: 0, height: 0,
  view: { scale: 1, x: 0, y: 0 },
  prompts: { points: [], labels: [], box: null },
  candidates: [], chosen: 0, // [candidate(): {mask, score, source, rle (COCO, made on use)}]
  objects: [], selected: null, objectLayer: null, base: null, baseKey: null,
  proposals: [], hoverProposal: null,
  undo: [], busy: 0, decodeSeq: 0,
  timings: [], // click -> mask drawn: {mode, ms, phases} (see recordTiming)
  pendingClick: null,
};
window.samkit = S;

// fetch + JSON; `timing` (optional) gets performance.now() marks: sent, headers (the response
// began), parsed (the body read and parsed), the body's length and the Server-Timing entries (ms)
async function api(method, path, body, timing) {
  const opts = { method, headers: {} };
  if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  if (timing) timing.sent = performance.now();
  const r = await fetch(path, opts);
  if (timing) timing.headers = performance.now();
  const isJson = (r.headers.get("content-type") || "").includes("json");
  let data;
  if (isJson && timing) {
    const text = await r.text();
    data = JSON.parse(text);
    timing.parsed = performance.now();
    timing.bytes = text.length;
    timing.server = {};
    for (const part of (r.headers.get("server-timing") || "").split(",")) {
      const m = part.trim().match(/^([\w-]+);dur=([\d.]+)$/);
      if (m) timing.server[m[1]] = Number(m[2]);
    }
  } else data = isJson ? await r.json() : await r.arrayBuffer();
  if (!r.ok) throw new Error((data && data.detail) || `${r.status} ${r.statusText}`);
  return data;
}

function setStatus(text, error) {
  $("status").textContent = text || "";
  $("status").style.color = error ? "#c00" : "#a60";
}

// -- coordinates -----------------------------------------------------------------------------
function toImage(ev) {
  const r = $("canvas").getBoundingClientRect();
  return [(ev.clientX - r.left - S.view.x) / S.view.scale, (ev.clientY - r.top - S.view.y) / S.view.scale];
}
S.imageToCanvas = (x, y) => [S.view.x + x * S.view.scale, S.view.y + y * S.view.scale];

function fit() {
  const stage = $("stage"), c = $("canvas");
  c.width = stage.clientWidth; c.height = stage.clientHeight;
  if (!S.width) return;
  const scale = Math.min(c.width / S.width, c.height / S.height);
  S.view = { scale, x: (c.width - S.width * scale) / 2, y: (c.height - S.height * scale) / 2 };
  draw();
}

// -- drawing ---------------------------------------------------------------------------------
// A mask is drawn from a canvas of its box only, painted once per colour and cached on the mask;
// the image with the accepted objects is cached at the view's resolution (S.base), so drawing a
// new preview is one blit, the preview's box and the prompts.
function rgba(color, alpha) { // little-endian RGBA in one Uint32 (ImageData's byte order)
  return ((alpha << 24) | (color[2] << 16) | (color[1] << 8) | color[0]) >>> 0;
}

function paintMask(px, stride, mask, value) { // set mask pixels of a Uint32 buffer (box at 0, 0)
  const { w, h, data, runs } = mask;
  if (runs && stride === w) { // runs of the box, row-major: one fill per run
    let k = 0;
    for (let i = 0; i < runs.length; i++) { if (i & 1) px.fill(value, k, k + runs[i]); k += runs[i]; }
    return;
  }
  for (let r = 0; r < h; r++) {
    const o = r * stride, s = r * w;
    for (let c = 0; c < w; c++) if (data[s + c]) px[o + c] = value;
  }
}

function maskLayer(mask, color, alpha) { // the mask's box as a canvas, in one colour (cached)
  const key = rgba(color, alpha);
  mask.layers = mask.layers || new Map();
  let c = mask.layers.get(key);
  if (!c) {
    c = document.createElement("canvas");
    c.width = mask.w; c.height = mask.h;
    const ctx = c.getContext("2d");
    const im = ctx.createImageData(mask.w, mask.h);
    paintMask(new Uint32Array(im.data.buffer), mask.w, mask, key);
    ctx.putImageData(im, 0, 0);
    mask.layers.set(key, c);
  }
  return c;
}

function rebuildObjectLayer() { // all accepted objects in one image-size canvas (null: none)
  if (!S.objects.length || !S.width) { S.objectLayer = null; return; }
  const c = document.createElement("canvas");
  c.width = S.width; c.height = S.height;
  const ctx = c.getContext("2d");
  const im = ctx.createImageData(S.width, S.height);
  const px = new Uint32Array(im.data.buffer);
  for (const o of S.objects) {
    const m = o.mask;
    if (!m.w || m.width !== S.width || m.height !== S.height) continue;
    const value = rgba(PALETTE[o.category_id % PALETTE.length], o.id === S.selected ? 200 : 120);
    paintMask(px.subarray(m.y * S.width + m.x), S.width, m, value);
  }
  ctx.putImageData(im, 0, 0);
  S.objectLayer = c;
}

function previewMasks() { // [{mask, color, alpha}] drawn over the objects
  const items = [];
  if (S.hoverProposal !== null && S.proposals[S.hoverProposal]) {
    items.push({ mask: S.proposals[S.hoverProposal].mask, color: [255, 255, 255], alpha: 150 });
  }
  const cand = S.candidates[S.chosen];
  if (cand) items.push({ mask: cand.mask, color: [30, 144, 255], alpha: 150 });
  return items;
}

function base(c) { // the background, the image and the objects at the view's resolution
  const v = S.view, k = S.baseKey;
  if (S.base && k && k.w === c.width && k.h === c.height && k.scale === v.scale && k.x === v.x &&
      k.y === v.y && k.img === S.img && k.objects === S.objectLayer) return S.base;
  let b = S.base;
  if (!b || b.width !== c.width || b.height !== c.height) {
    b = document.createElement("canvas"); b.width = c.width; b.height = c.height;
  }
  const ctx = b.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#333"; ctx.fillRect(0, 0, b.width, b.height);
  if (S.img) {
    ctx.setTransform(v.scale, 0, 0, v.scale, v.x, v.y);
    ctx.imageSmoothingEnabled = v.scale < 1;
    ctx.drawImage(S.img, 0, 0);
    if (S.objectLayer) ctx.drawImage(S.objectLayer, 0, 0);
  }
  S.base = b;
  S.baseKey = { w: c.width, h: c.height, scale: v.scale, x: v.x, y: v.y, img: S.img, objects: S.objectLayer };
  return b;
}

function draw() {
  const c = $("canvas"), ctx = c.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.drawImage(base(c), 0, 0);
  if (!S.img) return;
  ctx.setTransform(S.view.scale, 0, 0, S.view.scale, S.view.x, S.view.y);
  ctx.imageSmoothingEnabled = false; // masks: solid colour, nearest pixel is enough (and cheaper)
  for (const { mask, color, alpha } of previewMasks()) {
    if (mask.w && mask.width === S.width && mask.height === S.height) ctx.drawImage(maskLayer(mask, color, alpha), mask.x, mask.y);
  }
  const r = 5 / S.view.scale;
  ctx.lineWidth = 2 / S.view.scale;
  const box = S.dragBox || S.prompts.box;
  if (box) { ctx.strokeStyle = "#0f0"; ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]); }
  S.prompts.points.forEach((p, i) => {
    ctx.beginPath(); ctx.arc(p[0], p[1], r, 0, 2 * Math.PI);
    ctx.fillStyle = S.prompts.labels[i] ? "#2d2" : "#e22"; ctx.fill();
    ctx.strokeStyle = "#fff"; ctx.stroke();
  });
}

// -- images ----------------------------------------------------------------------------------
async function loadList() {
  const data = await api("GET", "api/images");
  S.images = data.images;
  const ol = $("image-list");
  ol.innerHTML = "";
  data.images.forEach((im, i) => {
    const li = document.createElement("li");
    li.dataset.index = i;
    li.innerHTML = `<span class="f"></span><span class="n"></span>`;
    li.querySelector(".f").textContent = im.file_name;
    li.querySelector(".n").textContent = im.objects ? im.objects : "";
    li.onclick = () => openImage(i);
    if (i === S.index) li.className = "current";
    ol.appendChild(li);
  });
  $("progress-text").textContent = `${data.annotated} / ${data.total} annotated`;
  $("progress-bar").style.width = `${(100 * data.annotated) / Math.max(1, data.total)}%`;
}

async function openImage(i) {
  if (i < 0 || i >= S.images.length) return;
  S.index = i; S.imageId = S.images[i].id;
  S.objects = []; S.selected = null; renderObjects();
  history.replaceState(null, "", `#${i}`);
  clearPrompts(false);
  S.proposals = []; renderProposals(); S.undo = S.undo.filter((u) => u.type === "accept");
  $("file-name").textContent = S.images[i].file_name;
  document.querySelectorAll("#image-list li").forEach((li) => li.classList.toggle("current", Number(li.dataset.index) === i));
  const img = new Image();
  img.src = `api/images/${S.imageId}/file`;
  await img.decode();
  if (S.imageId !== S.images[i].id) return;
  S.img = img; S.width = img.naturalWidth; S.height = img.naturalHeight;
  S.objectLayer = null;
  fit();
  await loadObjects();
  encodeCurrent();
}

async function encodeCurrent() {
  const id = S.imageId, t0 = performance.now();
  const timer = setInterval(() => setStatus(`encoding… ${((performance.now() - t0) / 1000).toFixed(1)} s`), 200);
  setStatus("encoding…");
  try {
    const r = await api("POST", `api/images/${id}/encode`);
    if (S.imageId === id) setStatus(r.encode_ms ? `encoded in ${r.encode_ms.toFixed(0)} ms` : "ready");
    if ($("decoder-mode").value === "browser") await OrtDecoder.embedding(id);
  } catch (e) { setStatus(e.message, true); }
  finally { clearInterval(timer); }
}

async function loadObjects() {
  const id = S.imageId;
  const data = await api("GET", `api/images/${id}/annotations`);
  if (id !== S.imageId) return; // another image was opened meanwhile
  S.revision = data.revision;
  S.objects = data.objects.map((o) => ({ ...o, mask: Rle.decode(o.segmentation) }));
  S.names = data.names;
  $("names").innerHTML = "";
  for (const n of data.names) { const o = document.createElement("option"); o.value = n; $("names").appendChild(o); }
  rebuildObjectLayer(); renderObjects(); draw();
}

function renderObjects() {
  const ul = $("objects");
  ul.innerHTML = "";
  $("object-count").textContent = `(${S.objects.length})`;
  S.objects.forEach((o) => {
    const li = document.createElement("li");
    li.dataset.id = o.id;
    if (o.id === S.selected) li.className = "selected";
    const c = PALETTE[o.category_id % PALETTE.length];
    li.innerHTML = `<span class="swatch" style="background:rgb(${c})"></span><input><button title="delete">✕</button>`;
    const input = li.querySelector("input");
    input.value = o.label;
    input.onchange = () => relabel(o.id, input.value);
    input.onfocus = () => select(o.id, false);
    li.querySelector("button").onclick = () => deleteObject(o.id, true);
    li.onclick = (ev) => { if (ev.target === li) select(o.id); };
    ul.appendChild(li);
  });
}

function select(id, toggle = true) {
  S.selected = toggle && S.selected === id ? null : id;
  rebuildObjectLayer(); draw();
  // restyle in place: rebuilding the list would drop the label field being edited
  document.querySelectorAll("#objects li").forEach((li) => li.classList.toggle("selected", li.dataset.id === S.selected));
}

// -- prompts and decoding --------------------------------------------------------------------
function clearPrompts(redraw = true) {
  S.prompts = { points: [], labels: [], box: null };
  S.candidates = []; S.chosen = 0;
  renderCandidates();
  if (redraw) draw();
}

function pushPrompt(change) {
  S.undo.push({ type: "prompt", imageId: S.imageId, prev: JSON.parse(JSON.stringify(S.prompts)) });
  change();
  decode();
}

// a mask offered for accepting; its COCO RLE (what the API stores) is made when first read
function candidate(mask, score, source, extra) {
  return {
    ...extra, mask, score, source, coco: null,
    get rle() { return this.coco || (this.coco = Rle.encode(this.mask)); },
  };
}

async function decode() {
  const seq = ++S.decodeSeq, id = S.imageId;
  const p = S.prompts;
  if (!p.points.length && !p.box) { S.candidates = []; renderCandidates(); draw(); return; }
  const multimask = $("multimask").checked, mode = $("decoder-mode").value;
  const t = { start: performance.now() };
  try {
    let cands;
    if (mode === "browser") {
      const out = await OrtDecoder.decode(id, S.info.image_size, p, multimask);
      t.parsed = performance.now();
      cands = out.masks.map((m, k) => candidate(m, out.scores[k], "browser"));
    } else {
      // the compact box RLE: only the mask's box travels, is decoded and is drawn
      const body = { points: p.points, labels: p.labels, box: p.box, multimask, mask_format: "box" };
      const out = await api("POST", `api/images/${id}/decode`, body, t);
      cands = out.masks.map((m) => candidate(Rle.decodeBox(m.box_rle, out.width, out.height), m.score, "server"));
      $("decode-time").textContent = `decode ${out.decode_ms.toFixed(0)} ms`;
    }
    t.decoded = performance.now();
    if (seq !== S.decodeSeq || id !== S.imageId) return; // a newer prompt won
    S.candidates = cands;
    S.chosen = multimask ? cands.reduce((b, c, k) => (c.score > cands[b].score ? k : b), 0) : 0;
    renderCandidates(); draw();
    t.drawn = performance.now();
    if (S.pendingClick !== null) recordTiming(mode, S.pendingClick, t);
  } catch (e) { setStatus(e.message, true); }
}

// click -> mask drawn (ms) and its phases, for benchmarks/bench_serve.py. With S.timingFlush the
// canvas is read back once after drawing, which makes the browser rasterize what draw() recorded.
function recordTiming(mode, click, t) {
  const ms = t.drawn - click;
  const phases = {
    before: (t.sent || t.start) - click, // click -> request sent
    request: t.headers !== undefined ? t.headers - t.sent : null, // HTTP round trip, server included
    parse: t.headers !== undefined ? t.parsed - t.headers : null, // body read + JSON.parse
    infer: mode === "browser" ? t.parsed - t.start : null, // onnxruntime-web + masks from logits
    decode: t.decoded - t.parsed, // masks from the box RLE (server mode)
    draw: t.drawn - t.decoded,
    bytes: t.bytes || 0,
    server: t.server || {},
  };
  if (S.timingFlush) {
    $("canvas").getContext("2d").getImageData(0, 0, 1, 1);
    phases.flush = performance.now() - t.drawn;
  }
  S.timings.push({ mode, ms, phases });
  if (mode === "browser") $("decode-time").textContent = `click→mask ${ms.toFixed(0)} ms (browser)`;
  S.pendingClick = null;
}

function renderCandidates() {
  const span = $("candidates");
  span.innerHTML = "";
  if (S.candidates.length < 2) return;
  S.candidates.forEach((c, k) => {
    const b = document.createElement("button");
    b.textContent = `${k + 1}: ${c.score.toFixed(2)}`;
    if (k === S.chosen) b.className = "chosen";
    b.onclick = () => choose(k);
    span.appendChild(b);
  });
}

function choose(k) {
  if (k < S.candidates.length) { S.chosen = k; renderCandidates(); draw(); }
}

// -- objects ---------------------------------------------------------------------------------
async function accept() {
  const cand = S.candidates[S.chosen];
  if (!cand) { setStatus("nothing to accept: click the object first", true); return; }
  const label = $("label").value.trim();
  if (!label) { setStatus("type a class label first", true); $("label").focus(); return; }
  try {
    const rle = cand.rle; // COCO RLE of the image, encoded here from the box mask
    const obj = await api("POST", `api/images/${S.imageId}/annotations`, { label, mask: rle, score: Math.min(1, Math.max(0, cand.score)) });
    S.undo = S.undo.filter((u) => u.type !== "prompt");
    S.undo.push({ type: "accept", imageId: S.imageId, id: obj.id });
    clearPrompts(false);
    setStatus(`saved ${label}`);
    await loadObjects(); await loadList();
  } catch (e) { setStatus(e.message, true); }
}

async function deleteObject(id, undoable) {
  try {
    const obj = S.objects.find((o) => o.id === id);
    await api("DELETE", `api/images/${S.imageId}/annotations/${id}`);
    if (undoable && obj) S.undo.push({ type: "delete", imageId: S.imageId, label: obj.label, rle: obj.segmentation });
    if (S.selected === id) S.selected = null;
    await loadObjects(); await loadList();
  } catch (e) { setStatus(e.message, true); }
}

async function relabel(id, label) {
  try { await api("PATCH", `api/images/${S.imageId}/annotations/${id}`, { label }); await loadObjects(); }
  catch (e) { setStatus(e.message, true); await loadObjects(); }
}

async function undo() {
  const u = S.undo.pop();
  if (!u) { setStatus("nothing to undo"); return; }
  if (u.imageId !== S.imageId) await openImage(S.images.findIndex((im) => im.id === u.imageId));
  if (u.type === "prompt") { S.prompts = u.prev; draw(); decode(); }
  else if (u.type === "accept") { await deleteObject(u.id, false); setStatus("object removed"); }
  else if (u.type === "delete") {
    await api("POST", `api/images/${S.imageId}/annotations`, { label: u.label, mask: u.rle });
    await loadObjects(); await loadList();
  }
}

// -- segment everything ----------------------------------------------------------------------
async function everything() {
  const id = S.imageId;
  setStatus("segmenting everything…");
  try {
    const out = await api("POST", `api/images/${id}/everything`, { points_stride: 16, max_masks: 64, mask_format: "box" });
    if (id !== S.imageId) return;
    S.proposals = out.masks.map((m) => candidate(Rle.decodeBox(m.box_rle, out.width, out.height), m.score, "server", { area: m.area, bbox: m.bbox }));
    setStatus(`${S.proposals.length} proposals in ${out.decode_ms.toFixed(0)} ms`);
    renderProposals();
  } catch (e) { setStatus(e.message, true); }
}

function renderProposals() {
  const ul = $("proposals");
  ul.innerHTML = "";
  $("proposals-title").hidden = !S.proposals.length;
  S.proposals.forEach((p, k) => {
    const li = document.createElement("li");
    li.innerHTML = `<span>#${k + 1} ${p.score.toFixed(2)} (${p.area} px)</span><button title="accept with the label">✓</button><button title="reject">✕</button>`;
    li.onmouseenter = () => { S.hoverProposal = k; draw(); };
    li.onmouseleave = () => { S.hoverProposal = null; draw(); };
    const [ok, no] = li.querySelectorAll("button");
    ok.onclick = async () => {
      S.candidates = [p]; S.chosen = 0;
      await accept();
      if (!S.candidates.length) dropProposal(k);
    };
    no.onclick = () => dropProposal(k);
    ul.appendChild(li);
  });
}

function dropProposal(k) {
  S.proposals.splice(k, 1); S.hoverProposal = null;
  renderProposals(); draw();
}

// -- input -----------------------------------------------------------------------------------
let drag = null, spaceDown = false;
const canvas = $("canvas");
canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
canvas.addEventListener("pointerdown", (ev) => {
  if (!S.img) return;
  canvas.setPointerCapture(ev.pointerId);
  const pan = ev.button === 1 || spaceDown;
  drag = { button: ev.button, pan, sx: ev.clientX, sy: ev.clientY, start: toImage(ev), vx: S.view.x, vy: S.view.y, moved: false, shift: ev.shiftKey };
});
canvas.addEventListener("pointermove", (ev) => {
  if (!drag) return;
  const dx = ev.clientX - drag.sx, dy = ev.clientY - drag.sy;
  if (Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
  if (drag.pan) { S.view.x = drag.vx + dx; S.view.y = drag.vy + dy; draw(); return; }
  if (drag.button === 0 && drag.moved) {
    const [x, y] = toImage(ev), [x0, y0] = drag.start;
    S.dragBox = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
    draw();
  }
});
canvas.addEventListener("pointerup", (ev) => {
  if (!drag) return;
  const d = drag; drag = null;
  if (d.pan) return;
  const clamp = (v, hi) => Math.max(0, Math.min(hi, v));
  if (d.button === 0 && d.moved && S.dragBox) {
    const b = S.dragBox; S.dragBox = null;
    const box = [clamp(b[0], S.width), clamp(b[1], S.height), clamp(b[2], S.width), clamp(b[3], S.height)];
    S.pendingClick = performance.now();
    pushPrompt(() => { S.prompts.box = box; });
    return;
  }
  S.dragBox = null;
  if (d.moved) return;
  const [x, y] = toImage(ev);
  if (x < 0 || y < 0 || x >= S.width || y >= S.height) return;
  const label = d.button === 2 || d.shift ? 0 : 1;
  if (d.button !== 0 && d.button !== 2) return;
  S.pendingClick = performance.now();
  pushPrompt(() => { S.prompts.points.push([x, y]); S.prompts.labels.push(label); });
});
canvas.addEventListener("wheel", (ev) => {
  ev.preventDefault();
  const r = canvas.getBoundingClientRect();
  const mx = ev.clientX - r.left, my = ev.clientY - r.top;
  const f = Math.exp(-ev.deltaY * 0.0015);
  const scale = Math.min(64, Math.max(0.05, S.view.scale * f));
  S.view.x = mx - ((mx - S.view.x) * scale) / S.view.scale;
  S.view.y = my - ((my - S.view.y) * scale) / S.view.scale;
  S.view.scale = scale;
  draw();
}, { passive: false });

document.addEventListener("keydown", (ev) => {
  const typing = ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT";
  if (ev.key === "Enter" && (ev.target === $("label") || !typing)) { ev.preventDefault(); accept(); return; }
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { ev.preventDefault(); undo(); return; }
  if (typing) return;
  const k = ev.key;
  if (k === " ") { spaceDown = true; ev.preventDefault(); }
  else if (k === "Escape") clearPrompts();
  else if (k === "z") undo();
  else if (k === "n" || k === "ArrowRight") openImage(S.index + 1);
  else if (k === "p" || k === "ArrowLeft") openImage(S.index - 1);
  else if (k === "m") { $("multimask").checked = !$("multimask").checked; decode(); }
  else if (k === "e") everything();
  else if (k === "0") fit();
  else if (k === "1" || k === "2" || k === "3") choose(Number(k) - 1);
  else if ((k === "Delete" || k === "Backspace") && S.selected) deleteObject(S.selected, true);
});
document.addEventListener("keyup", (ev) => { if (ev.key === " ") spaceDown = false; });
window.addEventListener("resize", fit);

$("prev").onclick = () => openImage(S.index - 1);
$("next").onclick = () => openImage(S.index + 1);
$("accept").onclick = accept;
$("undo").onclick = undo;
$("clear").onclick = () => clearPrompts();
$("everything").onclick = everything;
$("multimask").onchange = () => decode();
$("decoder-mode").onchange = async () => {
  if ($("decoder-mode").value === "browser") {
    setStatus("loading the in-browser decoder…");
    try { await OrtDecoder.load(); await OrtDecoder.embedding(S.imageId); setStatus("in-browser decoder ready"); }
    catch (e) { setStatus(e.message, true); $("decoder-mode").value = "server"; }
  }
  decode();
};

// another tab (or an API client) changed this image's objects: show them
setInterval(async () => {
  if (!S.ready || S.imageId === null || document.hidden) return;
  try {
    const id = S.imageId;
    const meta = await api("GET", `api/images/${id}`);
    if (id === S.imageId && meta.revision !== S.revision) { await loadObjects(); await loadList(); }
  } catch (e) { /* the next tick retries */ }
}, 2000);

(async function start() {
  try {
    S.info = await api("GET", "api/info");
    $("model-name").textContent = S.info.model;
    if (!S.info.browser_decoder) {
      const opt = $("decoder-mode").querySelector('option[value="browser"]');
      opt.disabled = true; opt.textContent += ": needs ort_dir=";
    }
    await loadList();
    const fromHash = parseInt(location.hash.slice(1), 10);
    await openImage(Number.isInteger(fromHash) && fromHash < S.images.length ? fromHash : 0);
    S.ready = true;
  } catch (e) { setStatus(e.message, true); }
})();
