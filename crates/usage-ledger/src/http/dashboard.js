"use strict";
const TEAM = document.body.dataset.team, MODE = document.body.dataset.mode;
const LINK = new URLSearchParams(location.search).get("link") || "";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const num = (s) => Number(s || 0);
const day = (s) => (s || "").slice(0, 10);

async function api(path, accept) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + LINK, Accept: accept || "application/json" } });
  if (!r.ok) throw new Error(path.split("?")[0] + ": " + r.status + " " + ((await r.json().catch(() => ({}))).error || ""));
  return accept === "text/csv" ? r.text() : r.json();
}

async function download(path, name) {
  const text = await api(path, "text/csv");
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  a.download = name;
  a.click();
}

function section(id, title) {
  let s = $(id);
  if (!s) {
    s = document.createElement("section");
    s.id = id;
    s.innerHTML = "<h2>" + esc(title) + "</h2><div></div>";
    $("main").appendChild(s);
  }
  return s.lastElementChild;
}

function chart(meter, forecast, cycle) {
  const W = 760, H = 260, L = 56, R = 16, T = 12, B = 28;
  const t0 = Date.parse(cycle.start), t1 = Date.parse(cycle.end);
  const limit = num(meter.value);
  const proj = forecast ? num(forecast.projected_consumed) : 0;
  const top = Math.max(limit * 1.15, proj * 1.05, ...meter.points.map((p) => num(p.consumed)), 1e-9);
  const x = (t) => L + ((Date.parse(t) - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => H - B - (v / top) * (H - T - B);
  const pts = meter.points.map((p) => x(p.at).toFixed(1) + "," + y(num(p.consumed)).toFixed(1)).join(" ");
  const last = meter.points[meter.points.length - 1];
  const rule = (v, label, cls, dash) =>
    `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="${cls}" stroke-dasharray="${dash}"/>` +
    `<text x="${W - R - 4}" y="${y(v) - 4}" text-anchor="end">${label}</text>`;
  const fc = forecast && last
    ? `<line data-k="forecast-line" x1="${x(last.at)}" y1="${y(num(last.consumed))}" x2="${x(cycle.end)}" y2="${y(proj)}" stroke="#3556d8" stroke-dasharray="5 4"/>`
    : "";
  return `<svg viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="usage over the cycle">
    <line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#98a2b3"/>
    <line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#98a2b3"/>
    <text x="${L - 6}" y="${H - B}" text-anchor="end">0</text>
    <text x="${L - 6}" y="${y(limit) + 4}" text-anchor="end">${esc(meter.value)}</text>
    <text x="${L}" y="${H - 8}">${day(cycle.start)}</text>
    <text x="${W - R}" y="${H - 8}" text-anchor="end">${day(cycle.end)}</text>
    ${rule(limit * 0.8, "80 %", "#f79009", "6 4")}
    ${rule(limit, "100 %", "#d92d20", "")}
    <polyline data-k="usage-line" fill="none" stroke="#3556d8" stroke-width="2.5" points="${pts}"/>
    ${fc}
  </svg>`;
}

// Whole images a remaining value buys at a rate, in exact integer micro-dollars.
function imagesLeft(remaining, rate) {
  const micros = (s) => BigInt(Math.round(num(s) * 1e6));
  const r = micros(rate);
  return r > 0n ? String(micros(remaining) / r) : "";
}

function allowanceRows(balance, rates) {
  return balance.allowances.map((a) => {
    const k = a.allowance + "." + a.generation;
    const left = a.allowance === "bucket"
      ? Object.entries(rates).map(([api, rate]) =>
          `<span data-k="${k}.images_left.${api}">${imagesLeft(a.remaining, rate)}</span> ${api.replace("_", " ")}`).join("<br>")
      : "";
    const cls = num(a.percent) >= 100 ? "bad" : num(a.percent) >= 80 ? "warn" : "ok";
    return `<tr><td>${esc(a.allowance)} <span class="muted">#${a.generation}</span></td>
      <td class="n" data-k="${k}.value">${esc(a.value)}</td><td class="n" data-k="${k}.consumed">${esc(a.consumed)}</td>
      <td class="n" data-k="${k}.remaining">${esc(a.remaining)}</td>
      <td class="n ${cls}" data-k="${k}.percent">${esc(a.percent)} %</td><td>${left}</td></tr>`;
  }).join("");
}

function forecastRows(balance) {
  const f = balance.forecast;
  if (!f || !f.allowances.length) return "<p class='muted'>No forecast: the cycle has just started or has ended.</p>";
  return `<table><tr><th>allowance</th><th class="n">projected at cycle end</th><th class="n">%</th><th class="n">over</th><th>runs out</th></tr>` +
    f.allowances.map((a) => `<tr><td>${esc(a.allowance)} #${a.generation}</td>
      <td class="n" data-k="forecast.${a.allowance}.${a.generation}.projected">${esc(a.projected_consumed)}</td>
      <td class="n">${esc(a.projected_percent)} %</td><td class="n">${esc(a.projected_over)}</td>
      <td>${a.runs_out_at ? esc(a.runs_out_at) : "<span class='ok'>not this cycle</span>"}</td></tr>`).join("") +
    `</table><p class="muted">${esc(f.basis)}</p>`;
}

async function invoiceRows(invoices) {
  const rows = [];
  for (const inv of invoices.slice().reverse()) {
    const start = day(inv.period.start);
    let check = "<span class='muted'>draft</span>";
    if (inv.status === "final") {
      const v = await api(`/v1/teams/${TEAM}/invoices/${start}/verification`);
      check = v.matches
        ? `<span class="ok" data-k="verified.${start}">✓ matches the ledger (${v.last_seq} entries)</span>`
        : `<span class="bad" data-k="verified.${start}">✗ ${esc(v.mismatch)}</span>`;
    }
    const csv = inv.status === "final" ? `<button data-csv="${start}">CSV</button>` : "";
    rows.push(`<tr><td>${start} → ${day(inv.period.end)}</td><td>${esc(inv.status)}</td>
      <td class="n" data-k="invoice.${start}.${inv.status}.total">${esc(inv.total)}</td><td>${check}</td><td>${csv}</td></tr>`);
  }
  return `<table><tr><th>period</th><th>status</th><th class="n">total (USD)</th><th>verification</th><th></th></tr>${rows.join("")}</table>`;
}

async function loadTeam() {
  const [balance, usage, invoices, alerts] = await Promise.all([
    api(`/v1/teams/${TEAM}/balance`), api(`/v1/teams/${TEAM}/usage`),
    api(`/v1/teams/${TEAM}/invoices?draft=true`), api(`/v1/teams/${TEAM}/alerts`),
  ]);
  $("title").textContent = TEAM;
  const c = balance.cycle;
  $("subtitle").textContent = c ? `cycle ${day(c.start)} → ${day(c.end)} · ${c.status} · price book ${c.price_book_version}` : "no cycle";
  const main = usage.meters.find((m) => m.allowance === "bucket") || usage.meters[0];
  const f = main && balance.forecast && balance.forecast.allowances.find((a) => a.allowance === main.allowance && a.generation === main.generation);
  section("s-usage", "Usage this cycle").innerHTML = main && usage.cycle
    ? `<p class="muted">${esc(main.allowance)} #${main.generation}: consumed over time against its value; dashed: 80 % and the forecast</p>${chart(main, f, usage.cycle)}`
    : "<p class='muted'>No open cycle.</p>";
  section("s-balance", "Balance").innerHTML = `<table><tr><th>allowance</th><th class="n">value</th><th class="n">consumed</th>
    <th class="n">remaining</th><th class="n">used</th><th>images left at each API's rate</th></tr>${allowanceRows(balance, usage.rates)}</table>`;
  section("s-forecast", "Forecast").innerHTML = forecastRows(balance);
  section("s-alerts", "Alerts").innerHTML = alerts.length
    ? `<table><tr><th>at</th><th>allowance</th><th class="n">threshold</th><th class="n">consumed of value</th><th>event</th></tr>` +
      alerts.slice().reverse().map((a) => `<tr data-k="alert"><td>${esc(a.occurred_at)}</td><td>${esc(a.allowance)} #${a.bucket_generation}</td>
        <td class="n">${a.threshold_percent} %</td><td class="n">${esc(a.consumed)} / ${esc(a.allowance_value)}</td>
        <td class="muted">${esc(a.triggering_event_id)}</td></tr>`).join("") + "</table>"
    : "<p class='muted'>No alerts.</p>";
  section("s-invoices", "Invoices").innerHTML = await invoiceRows(invoices);
  for (const b of document.querySelectorAll("button[data-csv]")) {
    b.onclick = () => download(`/v1/teams/${TEAM}/invoices/${b.dataset.csv}?format=csv`, `${TEAM}-${b.dataset.csv}.csv`);
  }
}

function month() {
  const m = $("month");
  if (m) return m.value;
  const asked = new URLSearchParams(location.search).get("period");
  if (/^[0-9]{4}-[0-9]{2}$/.test(asked || "")) return asked;
  const d = new Date();
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - 1, 1)).toISOString().slice(0, 7);
}

async function loadFinance() {
  const m = month();
  $("title").textContent = "Finance";
  $("subtitle").textContent = "final invoices of every team, by the month their period starts";
  const box = section("s-month", "Invoices of the month");
  if (!$("month")) {
    box.innerHTML = `<p><input type="month" id="month" value="${m}"> <button id="csv">Download CSV</button></p><div id="month-table"></div>`;
    $("month").onchange = () => refresh();
    $("csv").onclick = () => download(`/v1/invoices?period=${$("month").value}&format=csv`, `invoices-${$("month").value}.csv`);
  }
  const items = await api(`/v1/invoices?period=${m}`);
  const total = items.reduce((s, i) => s + Math.round(num(i.total) * 100), 0);
  $("month-table").innerHTML = `<table><tr><th>team</th><th>period</th><th class="n">total (USD)</th></tr>` +
    items.map((i) => `<tr><td><a href="/teams/${esc(i.team_id)}?link=${encodeURIComponent(LINK)}">${esc(i.team_id)}</a></td>
      <td>${day(i.period.start)} → ${day(i.period.end)}</td><td class="n" data-k="total.${esc(i.team_id)}">${esc(i.total)}</td></tr>`).join("") +
    `<tr><th>${items.length} invoice(s)</th><th></th><th class="n" data-k="month-total">${(total / 100).toFixed(2)}</th></tr></table>`;
}

async function refresh() {
  try {
    await (MODE === "finance" ? loadFinance() : loadTeam());
    $("error").textContent = "";
    $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded) + 1);
  } catch (e) {
    $("error").textContent = String(e.message || e);
  }
}

refresh();
setInterval(refresh, 5000);
