/*
 * Resilience Reporting dashboard (vanilla JavaScript, no build step).
 *
 * The page holds no data: everything shown is read from the aggregator's
 * HTTPS API with the viewer's own credentials, so the API's access rules
 * are the only ones (a nation sees the alliance aggregates and its own
 * row, staff see everything).
 *
 * Signing in: a bearer token is kept in sessionStorage only (gone when the
 * tab closes, never in localStorage or a cookie). A link may carry it as
 * "#token=..." (for kiosks and the headless test): the token is moved to
 * sessionStorage and the fragment is removed from the address bar and the
 * history at once. Without a token, GET /v1/me tells whether the browser's
 * client certificate already identifies the viewer.
 *
 * Errors are written into #errors (never only to the console), so a wall
 * screen shows that its picture is out of date, and tests can read them.
 */
(function () {
  "use strict";

  var TOKEN_KEY = "resilience.token";
  var REFRESH_MS = 30000;             // summary, map, lists
  var TREND_REFRESH_MS = 5 * 60000;   // sparklines (one history request per indicator)
  var TREND_SPAN_MS = 7 * 24 * 3600000;
  var TREND_STEP = "6h";
  var REQUIREMENTS = ["BR1", "BR2", "BR3", "BR4", "BR5", "BR6", "BR7", "X"];
  var REQUIREMENT_NAMES = {
    BR1: "Continuity of government",
    BR2: "Energy",
    BR3: "Movement of people",
    BR4: "Food and water",
    BR5: "Mass casualties and health",
    BR6: "Civil communications",
    BR7: "Transport",
    X: "Cross-cutting"
  };
  var LETTER = { green: "G", amber: "A", red: "R", no_data: "\u2013" };

  var state = { token: null, me: null, timer: null, trendTimer: null, trends: {} };

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === "className") { e.className = attrs[k]; }
        else if (k.indexOf("data-") === 0) { e.setAttribute(k, attrs[k]); }
        else { e[k] = attrs[k]; }
      });
    }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }

  function svg(tag, attrs) {
    var e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    return e;
  }

  function report(message) {
    var p = el("p", null, new Date().toISOString().slice(11, 19) + " " + message);
    var box = $("errors");
    box.appendChild(p);
    while (box.childNodes.length > 5) { box.removeChild(box.firstChild); }
  }

  function clearErrors() { $("errors").textContent = ""; }

  window.addEventListener("error", function (ev) { report("script error: " + ev.message); });
  window.addEventListener("unhandledrejection", function (ev) {
    report("error: " + (ev.reason && ev.reason.message ? ev.reason.message : ev.reason));
  });

  /* ---- API ------------------------------------------------------------ */

  function ApiError(status, body) {
    this.status = status;
    this.message = "HTTP " + status + (body && body.detail ? ": " + body.detail : "");
  }

  function api(path) {
    var headers = { Accept: "application/json" };
    if (state.token) { headers.Authorization = "Bearer " + state.token; }
    return fetch(path, { headers: headers, credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        return r.json().catch(function () { return null; }).then(function (body) {
          if (!r.ok) { throw new ApiError(r.status, body); }
          return body;
        });
      });
  }

  /* ---- sign-in -------------------------------------------------------- */

  function takeTokenFromFragment() {
    var m = /(?:^#|&)token=([^&]+)/.exec(window.location.hash || "");
    if (!m) { return; }
    try { sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1])); } catch (e) { /* private mode */ }
    // Out of the address bar and the history before anything else runs.
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }

  function showSignIn(message) {
    $("main").hidden = true;
    $("signin").hidden = false;
    $("signout").hidden = true;
    $("signin-message").textContent = message || "";
    document.body.setAttribute("data-state", "signin");
  }

  function signOut() {
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* ignore */ }
    state.token = null;
    state.me = null;
    stopTimers();
    showSignIn("Signed out.");
  }

  function stopTimers() {
    if (state.timer) { clearInterval(state.timer); state.timer = null; }
    if (state.trendTimer) { clearInterval(state.trendTimer); state.trendTimer = null; }
  }

  function start() {
    try {
      var stored = sessionStorage.getItem(TOKEN_KEY);
      if (stored) { state.token = stored; }
    } catch (e) { /* storage disabled: keep the token typed in this page, if any */ }
    api("/v1/me").then(function (me) {
      if (me.role === "partner") {
        showSignIn("Partner credentials have no dashboard: partners receive signed releases.");
        return;
      }
      state.me = me;
      $("who").textContent = me.role === "nation" ? "nation " + me.nation : "staff";
      $("who").setAttribute("data-role", me.role);
      $("signin").hidden = true;
      $("main").hidden = false;
      $("signout").hidden = me.via === "certificate";
      refresh();
      refreshTrends();
      stopTimers();
      state.timer = setInterval(refresh, REFRESH_MS);
      state.trendTimer = setInterval(refreshTrends, TREND_REFRESH_MS);
    }).catch(function (e) {
      if (e instanceof ApiError && e.status === 401) {
        if (state.token) {
          try { sessionStorage.removeItem(TOKEN_KEY); } catch (x) { /* ignore */ }
          state.token = null;
          showSignIn("That token was not accepted.");
        } else {
          showSignIn("");
        }
        return;
      }
      report("cannot reach the aggregator: " + e.message);
    });
  }

  /* ---- rendering ------------------------------------------------------ */

  function ageText(ms) {
    if (!ms) { return "never"; }
    var s = Math.max(0, (Date.now() - ms) / 1000);
    if (s < 90) { return Math.round(s) + " s ago"; }
    if (s < 5400) { return Math.round(s / 60) + " min ago"; }
    if (s < 129600) { return Math.round(s / 3600) + " h ago"; }
    return Math.round(s / 86400) + " d ago";
  }

  function freshness(ms) {
    if (!ms) { return "old"; }
    var age = Date.now() - ms;
    return age < 3600000 ? "fresh" : age < 86400000 ? "aging" : "old";
  }

  function fmt(v) {
    if (v === null || v === undefined) { return "\u2013"; }
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 0.01)) { return v.toExponential(2); }
    return (Math.round(v * 100) / 100).toString();
  }

  /* Nation codes in the map: every nation for staff, one's own for a nation. */
  function mapNations(summary) {
    var first = summary.requirements[0];
    return Object.keys(first ? first.nations : {}).sort();
  }

  function renderHeatmap(summary, fresh) {
    var table = $("heatmap");
    table.textContent = "";
    var head = el("tr");
    head.appendChild(el("th", null, "Nation"));
    REQUIREMENTS.forEach(function (r) {
      head.appendChild(el("th", { title: REQUIREMENT_NAMES[r] }, r));
    });
    head.appendChild(el("th", null, "Last report"));
    var thead = el("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    var byId = {};
    summary.requirements.forEach(function (r) { byId[r.id] = r; });
    var tbody = el("tbody");
    mapNations(summary).forEach(function (code) {
      var tr = el("tr", { "data-nation": code });
      if (state.me && state.me.nation === code) { tr.className = "own"; }
      tr.appendChild(el("th", null, code));
      REQUIREMENTS.forEach(function (rid) {
        var status = byId[rid] ? byId[rid].nations[code] : "no_data";
        var td = el("td", {
          className: "cell status-" + status,
          title: code + " " + rid + " (" + REQUIREMENT_NAMES[rid] + "): " + status.replace("_", " "),
          "data-nation": code,
          "data-requirement": rid,
          "data-status": status
        }, LETTER[status] || "?");
        tr.appendChild(td);
      });
      var last = fresh[code];
      var td = el("td", { className: "fresh-cell", "data-freshness": freshness(last) });
      td.appendChild(el("span", { className: "dot " + freshness(last) }));
      td.appendChild(document.createTextNode(ageText(last)));
      tr.appendChild(td);
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
  }

  function renderAttention(summary) {
    var counts = {};
    summary.indicators.forEach(function (ind) {
      (ind.stale || []).forEach(function (c) {
        counts[c] = counts[c] || { stale: 0, missing: 0 };
        counts[c].stale++;
      });
      (ind.missing || []).forEach(function (c) {
        counts[c] = counts[c] || { stale: 0, missing: 0 };
        counts[c].missing++;
      });
    });
    var list = $("attention");
    list.textContent = "";
    var codes = Object.keys(counts).sort(function (a, b) {
      var d = (counts[b].stale + counts[b].missing) - (counts[a].stale + counts[a].missing);
      return d !== 0 ? d : (a < b ? -1 : 1);
    });
    if (codes.length === 0) {
      list.appendChild(el("li", { className: "none" }, "Every nation has current values for every indicator."));
      return;
    }
    var total = summary.indicators.length;
    codes.forEach(function (c) {
      var n = counts[c];
      var li = el("li", { "data-nation": c, "data-stale": n.stale, "data-missing": n.missing });
      li.appendChild(el("span", { className: "code" }, c));
      var parts = [];
      if (n.missing) { parts.push(n.missing === total ? "nothing reported" : n.missing + " missing"); }
      if (n.stale) { parts.push(n.stale + " stale"); }
      li.appendChild(document.createTextNode(parts.join(", ")));
      list.appendChild(li);
    });
  }

  function statusBar(st, total) {
    var w = 96;
    var s = svg("svg", { viewBox: "0 0 " + w + " 10", width: w, height: 10, class: "statusbar" });
    var x = 0;
    ["green", "amber", "red"].forEach(function (k) {
      var width = total > 0 ? (st[k] / total) * w : 0;
      if (width > 0) {
        s.appendChild(svg("rect", { x: x, y: 0, width: width, height: 10, class: "fill-" + k }));
      }
      x += width;
    });
    s.appendChild(svg("rect", { x: x, y: 0, width: Math.max(0, w - x), height: 10, class: "fill-none" }));
    return s;
  }

  function renderIndicators(summary) {
    var table = $("indicators");
    table.textContent = "";
    var head = el("tr");
    ["Indicator", "Req.", "Alliance value", "Method", "Reporting", "Stale", "Missing", "Status", "Trend"]
      .forEach(function (h) { head.appendChild(el("th", null, h)); });
    var thead = el("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    var tbody = el("tbody");
    summary.indicators.forEach(function (ind) {
      var tr = el("tr", { "data-indicator": ind.id });
      tr.appendChild(el("td", { title: ind.direction.replace(/_/g, " ") }, ind.id));
      tr.appendChild(el("td", null, ind.requirement));
      tr.appendChild(el("td", { className: "num" }, fmt(ind.value) + " " + ind.unit));
      tr.appendChild(el("td", null, ind.method));
      tr.appendChild(el("td", { className: "num" }, ind.nations_reporting));
      tr.appendChild(el("td", { className: "num" }, ind.nations_stale));
      tr.appendChild(el("td", { className: "num" }, ind.nations_missing));
      var st = el("td", { title: ind.status.green + " green, " + ind.status.amber + " amber, " + ind.status.red + " red" });
      st.appendChild(statusBar(ind.status, ind.nations_reporting));
      tr.appendChild(st);
      var trend = el("td", { className: "trend", "data-indicator": ind.id });
      if (state.trends[ind.id]) { trend.appendChild(sparkline(state.trends[ind.id])); }
      tr.appendChild(trend);
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
  }

  function sparkline(history) {
    var w = 120, h = 24, pad = 2;
    var pts = history.points.filter(function (p) { return p.value !== null; });
    var s = svg("svg", { viewBox: "0 0 " + w + " " + h, class: "spark", "data-points": pts.length });
    if (pts.length === 0) { return s; }
    var t0 = history.from_ms, t1 = Math.max(history.to_ms, t0 + 1);
    var lo = Math.min.apply(null, pts.map(function (p) { return p.value; }));
    var hi = Math.max.apply(null, pts.map(function (p) { return p.value; }));
    if (hi === lo) { hi = lo + 1; lo = lo - 1; }
    var coords = pts.map(function (p) {
      var x = pad + (p.at_ms - t0) / (t1 - t0) * (w - 2 * pad);
      var y = h - pad - (p.value - lo) / (hi - lo) * (h - 2 * pad);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    s.appendChild(svg("line", { x1: 0, y1: h - 1, x2: w, y2: h - 1 }));
    s.appendChild(svg("polyline", { points: coords.join(" ") }));
    var title = svg("title", {});
    title.textContent = "last 7 days: " + fmt(pts[0].value) + " \u2192 " + fmt(pts[pts.length - 1].value);
    s.appendChild(title);
    return s;
  }

  function placeTrend(id) {
    var cells = document.querySelectorAll("td.trend");
    for (var i = 0; i < cells.length; i++) {
      if (cells[i].getAttribute("data-indicator") === id) {
        cells[i].textContent = "";
        cells[i].appendChild(sparkline(state.trends[id]));
      }
    }
  }

  /* ---- refresh -------------------------------------------------------- */

  function freshnessMap(summary) {
    if (state.me.role === "staff") {
      return api("/v1/nations").then(function (doc) {
        var m = {};
        doc.nations.forEach(function (n) { m[n.nation] = n.last_report_ms; });
        return m;
      });
    }
    // A nation: the newest of its own observations.
    return api("/v1/nations/" + encodeURIComponent(state.me.nation)).then(function (doc) {
      var newest = 0;
      doc.indicators.forEach(function (i) { if (i.observed_at_ms && i.observed_at_ms > newest) { newest = i.observed_at_ms; } });
      var m = {};
      m[state.me.nation] = newest;
      return m;
    });
  }

  function refresh() {
    return api("/v1/summary").then(function (summary) {
      return freshnessMap(summary).then(function (fresh) {
        renderHeatmap(summary, fresh);
        renderAttention(summary);
        renderIndicators(summary);
        state.indicatorIds = summary.indicators.map(function (i) { return i.id; });
        $("updated").textContent = "as of " + summary.at.slice(0, 19).replace("T", " ") + " UTC";
        clearErrors();
        document.body.setAttribute("data-state", "ready");
      });
    }).catch(function (e) {
      if (e instanceof ApiError && e.status === 401) { signOut(); return; }
      report("refresh failed: " + e.message);
    });
  }

  /* One history request per indicator, four at a time. */
  function refreshTrends() {
    var ids = null;
    var wait = state.indicatorIds ? Promise.resolve() : api("/v1/summary").then(function (s) {
      state.indicatorIds = s.indicators.map(function (i) { return i.id; });
    });
    return wait.then(function () {
      ids = state.indicatorIds.slice();
      var to = Date.now();
      var from = to - TREND_SPAN_MS;
      function next() {
        var id = ids.shift();
        if (id === undefined) { return Promise.resolve(); }
        var path = "/v1/indicators/" + encodeURIComponent(id) + "/history?from=" + from +
          "&to=" + to + "&step=" + TREND_STEP;
        return api(path).then(function (h) {
          state.trends[id] = h;
          placeTrend(id);
        }).then(next);
      }
      return Promise.all([next(), next(), next(), next()]);
    }).catch(function (e) {
      report("trend update failed: " + e.message);
    });
  }

  /* ---- start ---------------------------------------------------------- */

  document.addEventListener("DOMContentLoaded", function () {
    takeTokenFromFragment();
    $("signin-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var t = $("token-input").value.trim();
      $("token-input").value = "";
      if (!t) { return; }
      try { sessionStorage.setItem(TOKEN_KEY, t); } catch (e) { state.token = t; }
      start();
    });
    $("signout").addEventListener("click", signOut);
    start();
  });
})();
