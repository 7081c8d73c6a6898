/* ModelShield dashboard: refreshes the server-rendered page from metrics.json every few seconds.
 * No inline code anywhere (the CSP forbids it); data is written with textContent only. */
(function () {
  "use strict";

  var body = document.body;
  var seconds = Math.max(2, parseInt(body.getAttribute("data-refresh-seconds"), 10) || 5);
  var params = new URLSearchParams(window.location.search);
  var state = {
    filters: { outcome: params.get("outcome") || "", principal: params.get("principal") || "",
               artifact: params.get("artifact") || "" },
    cursor: params.get("cursor") || "",
    failing: false,
    refreshes: 0
  };
  var chart = null;

  function lookup(doc, path) {
    return path.split(".").reduce(function (v, k) { return v && typeof v === "object" ? v[k] : undefined; }, doc);
  }
  function count(n) { return Number(n || 0).toLocaleString("en-US"); }
  function bytes(n) {
    var size = Number(n || 0), units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (size >= 1024 && i < units.length - 1) { size /= 1024; i++; }
    return i === 0 ? size + " B" : size.toFixed(1) + " " + units[i];
  }
  function chainText(problems) {
    return problems ? "broken: " + problems + " problem" + (problems === 1 ? "" : "s") : "intact";
  }
  function el(tag, text, attrs) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }
  function outcome(decision, words) {
    var span = el("span", decision, { "class": "outcome", "data-outcome": decision });
    var frag = document.createDocumentFragment();
    frag.appendChild(span);
    frag.appendChild(document.createTextNode(" " + words));
    return frag;
  }
  function link(href, text) { return el("a", text, { href: href }); }
  function fillTable(id, rows, emptyText) {
    var table = document.getElementById(id);
    if (!table) { return; }
    var tbody = table.tBodies[0], cols = table.tHead.rows[0].cells.length;
    var fresh = document.createElement("tbody");
    if (!rows.length) {
      var tr = el("tr", null, { "class": "empty" });
      tr.appendChild(el("td", emptyText, { colspan: String(cols) }));
      fresh.appendChild(tr);
    }
    rows.forEach(function (cells) {
      var tr = document.createElement("tr");
      cells.forEach(function (c) {
        var td = document.createElement("td");
        if (c instanceof Node) { td.appendChild(c); } else { td.textContent = c === null || c === undefined ? "-" : String(c); }
        tr.appendChild(td);
      });
      fresh.appendChild(tr);
    });
    table.replaceChild(fresh, tbody);
  }
  function time(iso) { return el("time", String(iso || "").slice(0, 19).replace("T", " "), { datetime: iso || "" }); }
  function query(obj) {
    var q = new URLSearchParams();
    Object.keys(obj).forEach(function (k) { if (obj[k]) { q.set(k, obj[k]); } });
    return q.toString();
  }

  function renderTiles(doc) {
    document.querySelectorAll("[data-metric]").forEach(function (node) {
      var value = Number(lookup(doc, node.getAttribute("data-metric")) || 0);
      node.setAttribute("data-value", String(value));
      var kind = node.getAttribute("data-kind");
      if (kind === "chain") { node.textContent = chainText(value); }
      else if (/bytes$/.test(node.getAttribute("data-metric"))) { node.textContent = bytes(value); }
      else { node.textContent = count(value); }
      var tile = node.closest(".tile");
      if (tile && node.classList.contains("value")) {
        var bad = value > 0 && (kind === "chain" || node.getAttribute("data-metric") === "keys_overdue");
        tile.setAttribute("data-state", bad ? "bad" : "ok");
      }
    });
    var generated = document.getElementById("generated-at");
    generated.textContent = doc.generated_at;
    generated.setAttribute("datetime", doc.generated_at);
    var problems = document.getElementById("chain-problems");
    problems.replaceChildren.apply(problems, (doc.audit_chain.recent_problems || []).map(function (p) { return el("li", p); }));
  }

  function renderTables(doc) {
    var verdicts = ["ALLOWED", "ALLOWED_WITH_WARNINGS", "BLOCKED", "ERROR"];
    fillTable("verdicts-table", Object.keys(doc.verdicts_by_group).map(function (g) {
      return [g].concat(verdicts.map(function (v) { return count(doc.verdicts_by_group[g][v]); }));
    }), "no artifacts yet");
    fillTable("rules-table", doc.rule_failures.slice(0, 10).map(function (r) {
      return [r.rule, r.blocking ? "blocking" : "non-blocking", count(r.failures)];
    }), "no rule has failed");
    fillTable("keys-table", doc.keys.map(function (k) {
      var status = el("span", k.overdue ? "OVERDUE" : "OK",
                      { "class": "outcome", "data-outcome": k.overdue ? "DENIED" : "ALLOWED" });
      return [el("code", k.key_arn), k.groups.join(", ") || "-",
              k.rotation_enabled === true ? "on" : (k.rotation_enabled === false ? "off" : "unknown"),
              (k.last_rotation || "-").slice(0, 10), (k.next_rotation || "-").slice(0, 10), status,
              count(k.artifacts), k.oldest_data_key_days === null ? "-" : k.oldest_data_key_days + " days"];
    }), "no keys");
    fillTable("ages-table", doc.data_key_ages.map(function (a) { return [a.age, count(a.objects)]; }), "no data keys");
    fillTable("capacity-table", doc.capacity_history.slice(-14).map(function (p) {
      return [p.date, bytes(p.encrypted_bytes), bytes(p.quarantined_bytes)];
    }), "no history yet");
    fillTable("jobs-table", doc.jobs.map(function (j) {
      var progress = el("progress", (j.done || 0) + "/" + (j.total || 0), { max: String(Math.max(j.total || 0, 1)), value: String(j.done || 0) });
      var frag = document.createDocumentFragment();
      frag.appendChild(progress);
      frag.appendChild(document.createTextNode(" " + (j.done || 0) + "/" + (j.total || 0)));
      return [j.job_id, j.operation, j.source, j.status, frag, count(j.failed),
              link("/jobs/errors.json?" + query({ job: j.job_id }), "errors")];
    }), "no jobs");
  }

  function renderChart(history) {
    var host = document.getElementById("capacity-chart");
    var xs = history.map(function (p) { return Date.parse(p.date + "T00:00:00Z") / 1000; });
    var data = [xs, history.map(function (p) { return p.encrypted_bytes; }),
                history.map(function (p) { return p.quarantined_bytes; })];
    if (typeof window.uPlot !== "function") { return; }
    if (chart === null) {
      chart = new window.uPlot({
        width: Math.max(320, host.clientWidth - 16), height: 240,
        scales: {
          // One day of history would otherwise stretch over years; bytes start at zero.
          x: { time: true, range: function (u) {
            var xs = u.data[0], lo = xs[0], hi = xs[xs.length - 1];
            if (lo === undefined) { var now = Date.now() / 1000; return [now - 7 * 86400, now]; }
            return lo === hi ? [lo - 6 * 86400, hi + 86400] : [lo, hi];
          } },
          y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.15)]; } }
        },
        axes: [{}, { values: function (u, vals) { return vals.map(bytes); }, size: 80 }],
        series: [{ label: "Date" },
                 { label: "Encrypted", stroke: "#1a7f37", width: 2, points: { show: true }, value: function (u, v) { return v === null ? "-" : bytes(v); } },
                 { label: "Quarantined", stroke: "#cf222e", width: 2, dash: [6, 4], points: { show: true }, value: function (u, v) { return v === null ? "-" : bytes(v); } }]
      }, data, host);
      window.modelshieldChart = chart;
    } else {
      chart.setData(data);
    }
  }

  function renderAttempts(page) {
    fillTable("attempts-table", page.attempts.map(function (a) {
      return [time(a.at), outcome(a.outcome, a.outcome_words), el("span", a.principal || "-", { "class": "principal" }),
              a.artifact_id || "-", a.approver || "-", a.request_id || "-"];
    }), "no attempts match");
    var pager = document.querySelector(".pager");
    pager.replaceChildren();
    if (page.next_cursor) {
      var older = link("/?" + query(Object.assign({}, state.filters, { cursor: page.next_cursor })) + "#attempts", "Older attempts");
      older.id = "attempts-older";
      older.addEventListener("click", function (event) {
        event.preventDefault();
        state.cursor = page.next_cursor;
        loadAttempts();
      });
      pager.appendChild(older);
    }
  }

  function renderQuarantine(page) {
    fillTable("quarantine-table", page.quarantine.map(function (q) {
      return [q.artifact_id, el("code", q.version_id), el("code", (q.sha256 || "-").slice(0, 16), { title: q.sha256 || "" }),
              q.group || "-", q.failing_rules.map(function (r) { return r.rule + " " + r.status; }).join(", ") || "-",
              String(q.updated_at || "").slice(0, 19).replace("T", " "),
              link("/verdict.json?" + query({ artifact: q.artifact_id, version: q.version_id }), "verdict JSON")];
    }), "nothing quarantined");
  }

  function getJSON(path) {
    return fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { throw new Error(path + ": HTTP " + r.status); }
      return r.json();
    });
  }
  function loadAttempts() {
    var q = query(Object.assign({}, state.filters, { cursor: state.cursor }));
    return getJSON("/attempts.json" + (q ? "?" + q : "")).then(renderAttempts);
  }
  function setStatus(text, failing) {
    if (failing !== state.failing) {
      state.failing = failing;
      document.getElementById("refresh-status").textContent = text;
    }
  }
  function refresh() {
    return Promise.all([getJSON("/metrics.json"), loadAttempts(), getJSON("/quarantine.json")])
      .then(function (results) {
        renderTiles(results[0]);
        renderTables(results[0]);
        renderChart(results[0].capacity_history);
        renderQuarantine(results[2]);
        state.refreshes += 1;
        body.setAttribute("data-refreshes", String(state.refreshes));
        setStatus("", false);
      })
      .catch(function (err) { setStatus("Refresh failed (" + err.message + "); retrying.", true); })
      .then(function () { window.setTimeout(refresh, seconds * 1000); });
  }

  document.getElementById("attempts-filter").addEventListener("submit", function (event) {
    event.preventDefault();
    var form = event.target;
    state.filters = { outcome: form.elements.outcome.value, principal: form.elements.principal.value.trim(),
                      artifact: form.elements.artifact.value.trim() };
    state.cursor = "";
    var q = query(state.filters);
    window.history.replaceState(null, "", "/" + (q ? "?" + q : "") + "#attempts");
    loadAttempts().then(function () { body.setAttribute("data-filtered", q); });
  });

  refresh();
})();
