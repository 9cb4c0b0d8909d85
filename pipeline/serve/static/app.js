// The curate service's page: plain JS over the JSON API. The token lives in sessionStorage
// (given in the login box, or once as #token=... in the URL, which is then cleared). A link may
// also name a run and a query: #run=NAME&sql=SELECT... opens the run and runs the query.
"use strict";
const $ = (id) => document.getElementById(id);
let current = null;
let link = {};

function token() { return sessionStorage.getItem("curate-token") || ""; }

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token() }, options.headers || {});
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401) { showLogin("the token was refused"); throw new Error("401"); }
  if (!r.ok) { const body = await r.json().catch(() => ({})); throw new Error(body.detail || r.statusText); }
  return r;
}

function cell(row, text, tag = "td") {
  const c = document.createElement(tag); c.textContent = text == null ? "" : String(text); row.appendChild(c); return c;
}

function showLogin(message) {
  $("login").hidden = false; $("main").hidden = true; $("login-error").textContent = message || "";
}

async function start() {
  if (location.hash.length > 1) {
    link = Object.fromEntries(new URLSearchParams(location.hash.slice(1)));
    if (link.token) sessionStorage.setItem("curate-token", link.token);
    history.replaceState(null, "", location.pathname);
  }
  if (!token()) { showLogin(""); return; }
  const me = await (await api("/api/whoami")).json();
  $("who").textContent = me.name + " (" + me.scopes.join(", ") + ")";
  $("login").hidden = true; $("main").hidden = false;
  const list = await (await api("/api/runs")).json();
  const ul = $("runs"); ul.textContent = "";
  for (const name of list.runs) {
    const li = document.createElement("li"); li.textContent = name; li.dataset.run = name;
    li.onclick = () => openRun(name); ul.appendChild(li);
  }
  const first = list.runs.includes(link.run) ? link.run : list.runs[0];
  if (!first) return;
  await openRun(first);
  if (link.sql) { $("sql").value = link.sql; await runQuery(); }
}

async function openRun(name) {
  current = name;
  for (const li of $("runs").children) li.classList.toggle("current", li.dataset.run === name);
  $("run-name").textContent = name;
  const s = await (await api("/api/runs/" + name + "/status")).json();
  const running = s.jobs_running && s.jobs_running.length ? "job running: " + s.jobs_running.join(", ") : "no job running";
  $("run-state").textContent = (s.complete ? "complete" : "in progress") + "; " + running;
  const body = $("stages").tBodies[0]; body.textContent = "";
  for (const st of s.stages) {
    const tr = body.insertRow(); tr.dataset.stage = st.stage;
    cell(tr, st.stage); cell(tr, st.shards_done + " / " + st.shards_total);
    for (const k of ["docs_in", "kept", "rejected", "quarantined", "seconds"]) cell(tr, st[k]);
  }
  await showFile(s.files["plan.png"], "plan.png", $("plan"), "img");
  await showFile(s.files["report.html"], "report.html", $("report"), "iframe");
}

async function showFile(present, file, where, tag) {
  where.textContent = present ? "" : "none yet";
  if (!present) return;
  const blob = await (await api("/api/runs/" + current + "/files/" + file)).blob();
  const el = document.createElement(tag); el.src = URL.createObjectURL(blob);
  if (tag === "iframe") el.setAttribute("sandbox", "");  // the report shows; its scripts do not run
  where.appendChild(el);
}

async function runQuery(event) {
  if (event) event.preventDefault();
  $("sql-error").textContent = "";
  const table = $("sql-result"); table.tHead.textContent = ""; table.tBodies[0].textContent = "";
  try {
    const r = await api("/api/runs/" + current + "/query", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sql: $("sql").value, format: "json", max_rows: 500 }) });
    const res = await r.json();
    const head = table.tHead.insertRow();
    for (const c of res.columns) cell(head, c, "th");
    for (const row of res.rows) { const tr = table.tBodies[0].insertRow(); for (const c of res.columns) cell(tr, row[c]); }
    table.dataset.rows = res.rows.length;
  } catch (e) { $("sql-error").textContent = e.message; }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").onsubmit = (e) => { e.preventDefault(); sessionStorage.setItem("curate-token", $("token").value.trim()); start().catch(() => {}); };
  $("sql-form").onsubmit = runQuery;
  start().catch((e) => console.error(e));
});
