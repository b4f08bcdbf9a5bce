// The console: plain JavaScript over the management API (same origin, HTTP basic auth
// with the user's own credentials, kept in sessionStorage for this tab only); every view
// refreshes every 2 seconds.
"use strict";

const REFRESH_MS = 2000;
let auth = sessionStorage.getItem("amqpbroker-auth");
let tab = (location.hash || "#overview").slice(1);

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;

async function api(method, path, body) {
  // X-Requested-With: the 401 of a wrong password comes without a browser login dialog
  const opts = {method, headers: {"Authorization": "Basic " + auth,
                                  "X-Requested-With": "XMLHttpRequest"}};
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch("/api" + path, opts);
  if (r.status === 401) { logout("Login failed"); throw new Error("Login failed"); }
  const text = await r.text();
  const doc = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((doc && doc.reason) || r.statusText);
  return doc;
}

function cell(row, value, numeric) {
  const td = document.createElement("td");
  td.textContent = value === undefined || value === null ? "" : String(value);
  if (numeric) td.className = "n";
  row.appendChild(td);
  return td;
}

function button(td, label, name, action) {
  const b = document.createElement("button");
  b.textContent = label;
  b.dataset.action = name;
  b.addEventListener("click", async () => {
    try { await action(); $("status").textContent = ""; await refresh(); }
    catch (e) { $("status").textContent = e.message; }
  });
  td.appendChild(b);
}

const rate = (stats, key) => {
  const d = stats && stats[key + "_details"];
  return d ? d.rate.toFixed(1) : "0.0";
};

function fill(id, items, render) {
  const body = $(id);
  body.replaceChildren();
  for (const item of items) {
    const tr = document.createElement("tr");
    render(tr, item);
    body.appendChild(tr);
  }
}

const views = {
  async overview() {
    const o = await api("GET", "/overview");
    const t = o.object_totals || {}, q = o.queue_totals || {}, m = o.message_stats || {};
    const rows = [["Product", `${o.product_name} ${o.product_version}`],
                  ["Queues", t.queues], ["Exchanges", t.exchanges],
                  ["Connections", t.connections], ["Channels", t.channels],
                  ["Consumers", t.consumers], ["Messages ready", q.messages_ready],
                  ["Messages unacknowledged", q.messages_unacknowledged],
                  ["Publish /s", rate(m, "publish")], ["Deliver /s", rate(m, "deliver_get")],
                  ["Ack /s", rate(m, "ack")]];
    fill("overview-body", rows, (tr, [k, v]) => { cell(tr, k); cell(tr, v, true); });
  },
  async queues() {
    const qs = await api("GET", "/queues");
    fill("queues-body", qs, (tr, q) => {
      tr.dataset.queue = q.name;
      cell(tr, q.vhost); cell(tr, q.name); cell(tr, q.type);
      cell(tr, q.messages_ready, true).dataset.field = "messages_ready";
      cell(tr, q.messages_unacknowledged, true); cell(tr, q.consumers, true);
      cell(tr, rate(q.message_stats, "publish"), true);
      cell(tr, rate(q.message_stats, "deliver_get"), true);
      const td = cell(tr, "");
      const path = `/queues/${enc(q.vhost)}/${enc(q.name)}`;
      button(td, "Purge", "purge", () => api("DELETE", path + "/contents"));
      button(td, "Get", "get", async () => {
        const got = await api("POST", path + "/get",
                              {count: 1, ackmode: "ack_requeue_true", encoding: "auto"});
        $("got").textContent = got.length ? JSON.stringify(got[0], null, 2) : "(empty)";
      });
      button(td, "Delete", "delete", () => {
        if (confirm(`Delete queue '${q.name}'?`)) return api("DELETE", path);
      });
    });
  },
  async exchanges() {
    const xs = await api("GET", "/exchanges");
    fill("exchanges-body", xs, (tr, x) => {
      cell(tr, x.vhost); cell(tr, x.name || "(AMQP default)"); cell(tr, x.type);
      cell(tr, x.durable); cell(tr, rate(x.message_stats, "publish_in"), true);
    });
  },
  async connections() {
    const cs = await api("GET", "/connections");
    fill("connections-body", cs, (tr, c) => {
      cell(tr, c.name); cell(tr, c.user); cell(tr, c.vhost); cell(tr, c.channels, true);
      cell(tr, c.state);
      button(cell(tr, ""), "Close", "close", () => fetch(`/api/connections/${enc(c.name)}`,
        {method: "DELETE", headers: {"Authorization": "Basic " + auth,
                                     "X-Requested-With": "XMLHttpRequest",
                                     "X-Reason": "Closed via the console"}}));
    });
  },
  async policies() {
    const ps = await api("GET", "/policies");
    fill("policies-body", ps, (tr, p) => {
      cell(tr, p.vhost); cell(tr, p.name); cell(tr, p.pattern); cell(tr, p["apply-to"]);
      cell(tr, JSON.stringify(p.definition)); cell(tr, p.priority, true);
    });
  },
};

async function refresh() {
  if (!auth) return;
  try { await views[tab](); $("status").textContent = ""; }
  catch (e) { if (auth) $("status").textContent = e.message; }
}

function show(name) {
  tab = views[name] ? name : "overview";
  for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== tab;
  for (const a of document.querySelectorAll("#tabs a")) {
    a.classList.toggle("active", a.dataset.tab === tab);
  }
  refresh();
}

function logout(message) {
  auth = null;
  sessionStorage.removeItem("amqpbroker-auth");
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

$("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  auth = btoa(unescape(encodeURIComponent($("user").value + ":" + $("password").value)));
  try {
    const me = await api("GET", "/whoami");
    sessionStorage.setItem("amqpbroker-auth", auth);
    start(me);
  } catch (e) { logout(e.message); }
});

function start(me) {
  $("login").hidden = true;
  $("app").hidden = false;
  $("who").textContent = me ? `${me.name}` : "";
  show(tab);
}

window.addEventListener("hashchange", () => show(location.hash.slice(1)));
setInterval(refresh, REFRESH_MS);
if (auth) api("GET", "/whoami").then(start, () => logout()); else logout();
