// The review workbench: the queue, the case view with overlays, the disposition form.
// Plain DOM and fetch; every request carries the reviewer's key (kept in sessionStorage).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const state = { key: sessionStorage.getItem("dxv-review-key") || "", items: [], current: 0, status: "open",
                caseData: null, corrections: [], drawing: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { "X-API-Key": state.key, ...(options.headers || {}) } });
  if (!response.ok) {
    let message = `${response.status}`;
    try { const body = await response.json(); message = `${body.error.code}: ${body.error.message}`; } catch (_) { /* not JSON */ }
    if (response.status === 401) signOut();
    throw new Error(message);
  }
  return response;
}

// ---- sign-in -----------------------------------------------------------------------------------

function signOut() {
  sessionStorage.removeItem("dxv-review-key");
  state.key = "";
  $("workbench").hidden = true; $("sign-in").hidden = false; $("sign-out").hidden = true;
  $("who").textContent = "";
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("key-input").value.trim();
  sessionStorage.setItem("dxv-review-key", state.key);
  start();
});
$("sign-out").addEventListener("click", signOut);

async function start() {
  $("sign-in").hidden = true; $("workbench").hidden = false; $("sign-out").hidden = false;
  try { await loadQueue(); $("who").textContent = "Signed in with a reviewer key"; }
  catch (error) { say(`Could not load the queue: ${error.message}`, true); }
}

// ---- the queue ---------------------------------------------------------------------------------

async function loadQueue() {
  const data = await (await api(`/v1/reviews?status=${state.status}&limit=200`)).json();
  state.items = data.items;
  state.current = Math.min(state.current, Math.max(0, state.items.length - 1));
  $("queue-count").textContent = `(${data.total} ${state.status})`;
  const body = $("queue-table").querySelector("tbody");
  body.replaceChildren(...state.items.map((item, index) => el("tr", {
    tabindex: "0", "data-item": item.item_id, "data-index": index,
    onclick: () => { state.current = index; openCase(item.item_id); },
    onkeydown: (e) => { if (e.key === "Enter") { state.current = index; openCase(item.item_id); } },
  }, el("td", {}, item.priority.toFixed(2)), el("td", {}, `${item.claim_id} / ${item.line_id}`), el("td", {}, item.code),
     el("td", {}, item.fee.toFixed(2)), el("td", { class: `action-${item.action}` }, item.action),
     el("td", {}, item.rules.join(", ")), el("td", {}, `${item.waiting_days.toFixed(1)} d`))));
  highlight();
}

function highlight() {
  const rows = [...$("queue-table").querySelectorAll("tbody tr")];
  rows.forEach((row, i) => row.classList.toggle("current", i === state.current));
}

document.querySelectorAll('input[name="queue-status"]').forEach((radio) => radio.addEventListener("change", () => {
  state.status = radio.value; state.current = 0; loadQueue().catch((e) => say(e.message, true));
}));

// ---- the case ----------------------------------------------------------------------------------

async function openCase(itemId) {
  try {
    const data = await (await api(`/v1/reviews/${itemId}`)).json();
    state.caseData = data; state.corrections = []; state.drawing = null;
    renderCase(data);
    await renderImages(data);
    say(`Case ${data.item.claim_id}, line ${data.item.line_id} opened`);
  } catch (error) { say(`Could not open the case: ${error.message}`, true); }
}

function renderCase(data) {
  const { item, claim, decision } = data;
  $("case").hidden = false;
  $("case-title").textContent = `Claim ${item.claim_id}, line ${item.line_id}`;
  $("case-summary").textContent = claim
    ? `Date of service ${claim.date_of_service}; provider ${claim.provider.provider_id}; decided as audit #${item.audit_id}`
    + (claim.narrative ? `; narrative: "${claim.narrative}"` : "") : `Decided as audit #${item.audit_id}`;
  $("disposition-line").textContent = item.line_id;
  const billed = Object.fromEntries((claim ? claim.lines : []).map((l) => [l.line_id, l]));
  $("lines-table").querySelector("tbody").replaceChildren(...decision.lines.map((line) => {
    const b = billed[line.line_id] || {};
    const fired = line.rule_hits.filter((h) => h.fired);
    const reasons = el("ul", { class: "reasons" }, ...fired.map((h) => el("li", {},
      `${h.rule_id} (${h.action}): ${h.reason}`,
      ...((h.evidence || []).length ? [el("ul", {}, ...h.evidence.map((e) => el("li", {}, e.description)))] : []))));
    return el("tr", { class: line.line_id === item.line_id ? "queued" : "" },
      el("td", {}, line.line_id), el("td", {}, b.code || ""), el("td", {}, b.tooth || ""),
      el("td", {}, b.fee !== undefined ? Number(b.fee).toFixed(2) : ""),
      el("td", { class: `action-${line.action}` }, line.action + (line.suggested_code ? ` → ${line.suggested_code}` : "")),
      el("td", {}, line.approved_amount !== undefined && line.approved_amount !== null ? line.approved_amount.toFixed(2) : ""),
      el("td", {}, reasons));
  }));
  renderAppeal(data);
  $("disposition").reset();
  const closed = item.status !== "open";
  $("submit").disabled = closed;
  $("history-list").replaceChildren(...data.dispositions.map((d) => el("li", {},
    `Line ${d.line_id}: ${d.outcome} → ${d.action}${d.code ? " " + d.code : ""} by ${d.reviewer} (audit #${d.audit_id}): ${d.reason}`)));
  renderCorrections();
}

function renderAppeal(data) {
  const appeal = data.appeal;
  $("appeal").hidden = !appeal;
  if (!appeal) return;
  $("appeal-summary").textContent = `Appeal ${appeal.appeal_id} of decision #${appeal.original_audit_id}, `
    + `submitted ${appeal.submitted_at.slice(0, 10)}` + (appeal.narrative ? `: "${appeal.narrative}"` : "");
  $("appeal-documents").replaceChildren(...appeal.documents.map((d) => el("li", {},
    el("button", { type: "button", onclick: () => download(data.item.item_id, d) },
      `${d.name} (${d.media_type}, ${(d.size_bytes / 1024).toFixed(1)} KiB)`))));
}

async function download(itemId, doc) {
  try {
    const blob = await (await api(`/v1/reviews/${itemId}/documents/${doc.document_id}`)).blob();
    const link = el("a", { href: URL.createObjectURL(blob), download: doc.name });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (error) { say(`Could not download ${doc.name}: ${error.message}`, true); }
}

async function renderImages(data) {
  const holder = $("images");
  holder.replaceChildren();
  for (const image of data.images) {
    const reading = data.readings.find((r) => r.image_id === image.radiograph_id);
    const blob = await (await api(`/v1/reviews/${data.item.item_id}/images/${encodeURIComponent(image.radiograph_id)}`)).blob();
    const img = el("img", { src: URL.createObjectURL(blob), alt: `${image.kind} radiograph ${image.radiograph_id}` });
    const stage = el("div", { class: "stage" }, img);
    if (reading) stage.append(overlay(reading));
    holder.append(el("figure", {}, stage, el("figcaption", {}, `${image.radiograph_id} (${image.kind})`)));
  }
  applyToggles();
}

function overlay(reading) {
  const svg = svgEl("svg", { viewBox: `0 0 ${reading.width_px} ${reading.height_px}`, preserveAspectRatio: "none",
                             "data-image": reading.image_id, role: "img",
                             "aria-label": `overlays: ${reading.teeth.length} teeth, ${reading.findings.length} findings` });
  const size = Math.max(12, reading.height_px / 40);
  for (const tooth of reading.teeth) {
    const [x0, y0, x1, y1] = tooth.box_xyxy_px;
    const g = svgEl("g", { class: "tooth" });
    g.append(svgEl("rect", { x: x0, y: y0, width: x1 - x0, height: y1 - y0 }));
    const label = svgEl("text", { x: x0 + 3, y: y0 + size, "font-size": size, tabindex: "0", role: "button",
                                  "aria-label": `tooth ${tooth.fdi}, renumber` });
    label.textContent = tooth.fdi;
    const renumber = () => {
      const answer = prompt(`Tooth read as ${tooth.fdi}. Correct FDI number:`, "");
      const fdi = Number(answer);
      if (answer && fdi >= 11 && fdi <= 85) addCorrection({ type: "wrong_tooth_number", image_id: reading.image_id,
        box_xyxy_px: tooth.box_xyxy_px, detected_fdi: tooth.fdi, correct_fdi: fdi });
    };
    label.addEventListener("click", renumber);
    label.addEventListener("keydown", (e) => { if (e.key === "Enter") renumber(); });
    g.append(label);
    svg.append(g);
  }
  for (const finding of reading.findings) {
    const [x0, y0, x1, y1] = finding.box_xyxy_px;
    const g = svgEl("g", { class: `finding ${finding.class}`, tabindex: "0", role: "button", "data-score": finding.score,
                           "aria-label": `${finding.class} ${finding.score.toFixed(2)}, mark wrong` });
    g.append(svgEl("rect", { x: x0, y: y0, width: x1 - x0, height: y1 - y0 }));
    const text = svgEl("text", { x: x0, y: y1 + size, "font-size": size * 0.8 });
    text.textContent = `${finding.class.replace("_", " ")} ${finding.score.toFixed(2)}${finding.caries_depth ? " " + finding.caries_depth : ""}`;
    g.append(text);
    const toggle = () => {
      const existing = state.corrections.findIndex((c) => c.type === "finding_wrong" && c.image_id === reading.image_id
        && c.box_xyxy_px.join() === finding.box_xyxy_px.join());
      if (existing >= 0) state.corrections.splice(existing, 1);
      else state.corrections.push({ type: "finding_wrong", image_id: reading.image_id, finding_class: finding.class,
                                    box_xyxy_px: finding.box_xyxy_px });
      g.classList.toggle("marked-wrong", existing < 0);
      renderCorrections();
    };
    g.addEventListener("click", (e) => { if (!$("draw-mode").checked) { e.stopPropagation(); toggle(); } });
    g.addEventListener("keydown", (e) => { if (e.key === "Enter") toggle(); });
    svg.append(g);
  }
  enableDrawing(svg, reading);
  return svg;
}

function toImage(svg, event) {
  const point = svg.createSVGPoint();
  point.x = event.clientX; point.y = event.clientY;
  return point.matrixTransform(svg.getScreenCTM().inverse());
}

function enableDrawing(svg, reading) {
  svg.addEventListener("pointerdown", (event) => {
    if (!$("draw-mode").checked) return;
    const start = toImage(svg, event);
    const g = svgEl("g", { class: "drawn" });
    const rect = svgEl("rect", { x: start.x, y: start.y, width: 0, height: 0 });
    g.append(rect); svg.append(g);
    state.drawing = { svg, start, rect, reading };
    svg.setPointerCapture(event.pointerId);
  });
  svg.addEventListener("pointermove", (event) => {
    if (!state.drawing || state.drawing.svg !== svg) return;
    const p = toImage(svg, event), s = state.drawing.start;
    Object.entries({ x: Math.min(s.x, p.x), y: Math.min(s.y, p.y), width: Math.abs(p.x - s.x), height: Math.abs(p.y - s.y) })
      .forEach(([k, v]) => state.drawing.rect.setAttribute(k, v));
  });
  svg.addEventListener("pointerup", (event) => {
    if (!state.drawing || state.drawing.svg !== svg) return;
    const p = toImage(svg, event), s = state.drawing.start;
    const box = [Math.min(s.x, p.x), Math.min(s.y, p.y), Math.max(s.x, p.x), Math.max(s.y, p.y)].map((v) => Math.round(v * 10) / 10);
    state.drawing = null;
    if (box[2] - box[0] < 3 || box[3] - box[1] < 3) { say("The drawn box is too small; drag to draw it", true); return; }
    addCorrection({ type: "missed_finding", image_id: reading.image_id, finding_class: $("draw-class").value, box_xyxy_px: box });
  });
}

function addCorrection(correction) {
  state.corrections.push(correction);
  renderCorrections();
}

function describe(c) {
  const box = c.box_xyxy_px.map((v) => Math.round(v)).join(", ");
  if (c.type === "finding_wrong") return `Wrong finding: ${c.finding_class} at [${box}] on ${c.image_id}`;
  if (c.type === "missed_finding") return `Missed finding: ${c.finding_class} at [${box}] on ${c.image_id}`;
  return `Tooth ${c.detected_fdi} is really ${c.correct_fdi} on ${c.image_id}`;
}

function renderCorrections() {
  $("corrections").replaceChildren(...state.corrections.map((c, i) => el("li", {}, describe(c), " ",
    el("button", { type: "button", onclick: () => { state.corrections.splice(i, 1); renderCorrections(); } }, "remove"))));
}

function applyToggles() {
  document.querySelectorAll("svg .tooth").forEach((n) => n.classList.toggle("hidden", !$("show-teeth").checked));
  const least = Number($("min-score").value) || 0;
  document.querySelectorAll("svg .finding").forEach((n) => n.classList.toggle("hidden",
    !$("show-findings").checked || Number(n.dataset.score) < least));
  document.querySelectorAll(".stage").forEach((n) => n.classList.toggle("drawing", $("draw-mode").checked));
}
["show-teeth", "show-findings", "draw-mode", "min-score"].forEach((id) => $(id).addEventListener("change", applyToggles));
$("min-score").addEventListener("input", applyToggles);

// ---- the disposition ---------------------------------------------------------------------------

$("disposition").addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = state.caseData;
  if (!data) return;
  const outcome = document.querySelector('input[name="outcome"]:checked');
  if (!outcome) { say("Choose an outcome (1, 2 or 3)", true); return; }
  const body = { outcome: outcome.value, reason: $("reason").value.trim(), corrections: state.corrections };
  if ($("final-action").value) body.action = $("final-action").value;
  if ($("final-code").value.trim()) body.code = $("final-code").value.trim();
  try {
    const recorded = await (await api(`/v1/reviews/${data.item.item_id}/disposition`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();
    say(`Recorded: line ${recorded.line_id} ${recorded.outcome} → ${recorded.action} (audit #${recorded.audit_id})`);
    await loadQueue();
    await openCase(data.item.item_id);
    say(`Recorded: line ${recorded.line_id} ${recorded.outcome} → ${recorded.action} (audit #${recorded.audit_id})`);
  } catch (error) { say(`Not recorded: ${error.message}`, true); }
});

function backToQueue() {
  $("case").hidden = true; state.caseData = null;
  loadQueue().then(() => { const row = $("queue-table").querySelectorAll("tbody tr")[state.current]; if (row) row.focus(); })
    .catch((e) => say(e.message, true));
}
$("back").addEventListener("click", backToQueue);

// ---- keyboard ----------------------------------------------------------------------------------

document.addEventListener("keydown", (event) => {
  if ($("workbench").hidden) return;
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)
    && !["radio", "checkbox"].includes(document.activeElement.type);
  if (event.key === "Enter" && event.ctrlKey && state.caseData) { event.preventDefault(); $("disposition").requestSubmit(); return; }
  if (event.key === "Escape" && state.caseData) { event.preventDefault(); backToQueue(); return; }
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  const toggle = (id) => { $(id).checked = !$(id).checked; applyToggles(); };
  const choose = (value) => { document.querySelector(`input[name="outcome"][value="${value}"]`).checked = true; };
  const actions = {
    j: () => { state.current = Math.min(state.current + 1, state.items.length - 1); highlight(); focusRow(); },
    k: () => { state.current = Math.max(state.current - 1, 0); highlight(); focusRow(); },
    t: () => toggle("show-teeth"), f: () => toggle("show-findings"), d: () => toggle("draw-mode"),
    1: () => choose("confirm"), 2: () => choose("override_pass"), 3: () => choose("change"),
    r: () => $("reason").focus(),
  };
  if (!state.caseData && (event.key === "t" || event.key === "f" || event.key === "d" || "123r".includes(event.key))) return;
  const run = actions[event.key];
  if (run) { event.preventDefault(); run(); }
});

function focusRow() {
  const row = $("queue-table").querySelectorAll("tbody tr")[state.current];
  if (row) row.focus();
}

if (state.key) start(); else { $("sign-in").hidden = false; }
