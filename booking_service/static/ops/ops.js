// Operator dashboard: polls /api/v1/ops/stats and /api/v1/ops/locks and draws small SVG charts.
// No dependencies, no external requests. The token comes from the URL fragment (never sent to
// the server) or the sign-in form, and lives in sessionStorage for this tab only.
(function () {
  "use strict";

  var POLL_MS = 2000;
  var WINDOW_MS = 60000; // percentile window and chart span
  var HISTORY = 90; // samples kept per chart (3 minutes at 2 s)
  var TOKEN_KEY = "booking-ops-token";
  var SVG_NS = "http://www.w3.org/2000/svg";
  var H = 170; // matches the CSS height of .chart svg
  var PAD = { left: 56, right: 12, top: 10, bottom: 24 };

  var RESULTS = [
    ["created", "created", "#1f9d63"],
    ["event_full", "event full", "#e08a1e"],
    ["already_booked", "already booked", "#8e6ad8"],
    ["rejected", "rejected", "#98a2b3"],
    ["lock_timeout", "lock timeout", "#d64545"],
    ["unavailable", "unavailable", "#7a2e2e"],
  ];
  var PERCENTILES = [
    ["p50", "p50", "#3b6fd8"],
    ["p95", "p95", "#e08a1e"],
    ["p99", "p99", "#d64545"],
  ];

  var token = null;
  var timer = null;
  var stats = []; // {t, instance, data}
  var series = {
    wait: { t: [], p50: [], p95: [], p99: [] },
    hold: { t: [], p50: [], p95: [], p99: [] },
    acq: { t: [], acquired: [], timeout: [] },
  };
  var lastBookingRates = {};

  function $(id) {
    return document.getElementById(id);
  }

  // --- token -------------------------------------------------------------------------------

  function readToken() {
    var match = /(?:^#|&)token=([^&]+)/.exec(window.location.hash || "");
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      // Keep the token out of the address bar, bookmarks and screen shares.
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function askForToken(message) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    if (timer) clearTimeout(timer);
    $("token-panel").hidden = false;
    $("dashboard").hidden = true;
    $("forget-token").hidden = true;
    $("token-error").hidden = !message;
    $("token-error").textContent = message || "";
    setStatus("auth", message ? "Not signed in" : "Sign in to start");
  }

  function start(newToken) {
    token = newToken;
    $("token-panel").hidden = true;
    $("dashboard").hidden = false;
    $("forget-token").hidden = false;
    poll();
  }

  // --- data --------------------------------------------------------------------------------

  function fetchJson(path) {
    return fetch(path, {
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
    }).then(function (response) {
      if (response.status === 401 || response.status === 403) {
        var error = new Error(response.status === 401 ? "The token was refused." : "This token is not an admin's.");
        error.auth = true;
        throw error;
      }
      if (!response.ok) throw new Error(path + " answered " + response.status);
      return response.json();
    });
  }

  function poll() {
    if (!token) return;
    Promise.allSettled([fetchJson("/api/v1/ops/stats"), fetchJson("/api/v1/ops/locks")]).then(
      function (results) {
        var failed = results.filter(function (r) { return r.status === "rejected"; });
        var auth = failed.filter(function (r) { return r.reason && r.reason.auth; });
        if (auth.length) {
          askForToken(auth[0].reason.message);
          return;
        }
        if (results[0].status === "fulfilled") onStats(results[0].value);
        if (results[1].status === "fulfilled") onLocks(results[1].value);
        if (failed.length) {
          setStatus("error", failed[0].reason.message || "Request failed");
        } else {
          setStatus("ok", "Updated " + new Date().toLocaleTimeString());
        }
        timer = setTimeout(poll, POLL_MS);
      }
    );
  }

  function setStatus(state, text) {
    var el = $("status");
    el.dataset.state = state;
    el.textContent = text;
  }

  // --- percentiles and rates -----------------------------------------------------------

  // Same estimate as PromQL histogram_quantile (and services/ops.quantile_from_buckets).
  function quantile(q, buckets, total) {
    if (!total) return null;
    var rank = q * total;
    var lowerBound = 0;
    var lowerCount = 0;
    for (var i = 0; i < buckets.length; i++) {
      var bound = buckets[i][0];
      var count = buckets[i][1];
      if (count >= rank && count > lowerCount) {
        return lowerBound + (bound - lowerBound) * ((rank - lowerCount) / (count - lowerCount));
      }
      lowerBound = bound;
      lowerCount = count;
    }
    return lowerBound; // in the +Inf bucket: the highest finite bound
  }

  // Percentiles of the observations made since ``base`` (null: since the workers started).
  function windowed(current, base) {
    var buckets = current.buckets.map(function (pair, i) {
      return [pair[0], pair[1] - (base ? base.buckets[i][1] : 0)];
    });
    var count = current.count - (base ? base.count : 0);
    if (count <= 0 || buckets.some(function (b) { return b[1] < 0; })) {
      return { count: Math.max(count, 0), p50: null, p95: null, p99: null };
    }
    return {
      count: count,
      p50: quantile(0.5, buckets, count),
      p95: quantile(0.95, buckets, count),
      p99: quantile(0.99, buckets, count),
    };
  }

  function push(target, t, values) {
    target.t.push(t);
    Object.keys(values).forEach(function (key) { target[key].push(values[key]); });
    if (target.t.length > HISTORY) {
      Object.keys(target).forEach(function (key) { target[key].shift(); });
    }
  }

  function onStats(data) {
    var now = Date.now();
    // Deltas only against samples of the same instance: behind a load balancer successive
    // polls may reach different instances, each with its own worker metrics.
    var same = stats.filter(function (s) { return s.instance === data.instance; });
    var previous = same.length ? same[same.length - 1] : null;
    var base = null;
    for (var i = 0; i < same.length; i++) {
      if (now - same[i].t <= WINDOW_MS) { base = same[i]; break; }
    }
    if (!base && previous) base = previous;
    stats.push({ t: now, instance: data.instance, data: data });
    stats = stats.filter(function (s) { return now - s.t <= WINDOW_MS * 3; });

    var wait = windowed(data.lock_wait, base && base.data.lock_wait);
    var hold = windowed(data.lock_hold, base && base.data.lock_hold);
    push(series.wait, now, { p50: ms(wait.p50), p95: ms(wait.p95), p99: ms(wait.p99) });
    push(series.hold, now, { p50: ms(hold.p50), p95: ms(hold.p95), p99: ms(hold.p99) });

    var acq = data.lock_acquisitions;
    var rates = { acquired: null, timeout: null };
    if (previous) {
      var seconds = Math.max((now - previous.t) / 1000, 0.001);
      rates.acquired = rate(acq.acquired, previous.data.lock_acquisitions.acquired, seconds);
      rates.timeout = rate(acq.timeout, previous.data.lock_acquisitions.timeout, seconds);
      RESULTS.forEach(function (r) {
        lastBookingRates[r[0]] = rate(data.bookings[r[0]], previous.data.bookings[r[0]], seconds);
      });
    }
    push(series.acq, now, rates);

    var windowNote = base ? "last " + Math.round((now - base.t) / 1000) + " s" : "since start";
    renderTile("lock-wait", wait, data.lock_wait, windowNote);
    renderTile("lock-hold", hold, data.lock_hold, windowNote);
    $("tile-acquisitions").textContent = rates.acquired === null ? "–" : fmtRate(rates.acquired);
    $("tile-acquisitions-note").textContent = "total " + fmtInt(acq.acquired);
    $("tile-waiters").textContent = fmtInt(data.lock_waiters);
    $("tile-timeouts").textContent = fmtInt(acq.timeout);
    $("tile-lost").textContent = fmtInt(data.lock_lost);

    lineChart($("chart-lock-wait"), series.wait, PERCENTILES, fmtMs);
    lineChart($("chart-lock-hold"), series.hold, PERCENTILES, fmtMs);
    lineChart(
      $("chart-acquisitions"),
      series.acq,
      [["acquired", "acquired / s", "#3b6fd8"], ["timeout", "timeouts / s", "#d64545"]],
      fmtRate
    );
    bookingBars(data.bookings);
    upcomingTable(data.upcoming || []);
    queuesTable(data.queues || []);
  }

  function rate(now, before, seconds) {
    var delta = now - before;
    return delta < 0 ? now / seconds : delta / seconds; // a restarted worker resets counters
  }

  function ms(seconds) {
    return seconds === null || seconds === undefined ? null : seconds * 1000;
  }

  // Recent percentiles when there were observations in the window; otherwise the totals
  // since the workers started, labelled as such.
  function renderTile(name, recent, cumulative, note) {
    var el = $("tile-" + name);
    var noteEl = $("tile-" + name + "-note");
    if (recent.p50 !== null) {
      el.textContent = fmtTriple(recent.p50, recent.p95, recent.p99);
      noteEl.textContent = note + " · " + fmtInt(recent.count) + " observations";
    } else if (cumulative.count) {
      el.textContent = fmtTriple(cumulative.p50, cumulative.p95, cumulative.p99);
      noteEl.textContent = "since start (" + fmtInt(cumulative.count) + ") · idle " + note;
    } else {
      el.textContent = "–";
      noteEl.textContent = "no observations yet";
    }
    el.parentNode.dataset.window = recent.p50 !== null ? "recent" : "since-start";
  }

  function fmtTriple(a, b, c) {
    var top = Math.max(a, b, c);
    var scale = top >= 1 ? 1 : 1000;
    var unit = top >= 1 ? " s" : " ms";
    return [a, b, c].map(function (v) {
      var x = v * scale;
      return x >= 100 ? Math.round(x).toString() : x >= 10 ? x.toFixed(1) : x.toFixed(2);
    }).join(" / ") + unit;
  }

  // --- charts ------------------------------------------------------------------------------

  function svgEl(name, attrs, text) {
    var el = document.createElementNS(SVG_NS, name);
    Object.keys(attrs).forEach(function (key) { el.setAttribute(key, attrs[key]); });
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    var exponent = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (value <= steps[i] * exponent) return steps[i] * exponent;
    }
    return 10 * exponent;
  }

  function lineChart(figure, data, defs, format) {
    var svg = figure.querySelector("svg");
    var legend = figure.querySelector(".legend");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    legend.textContent = "";
    // Draw in CSS pixels so that text and strokes are never stretched.
    var W = Math.max(Math.round(svg.getBoundingClientRect().width), 200);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);

    // The span grows with the history, from 20 s up to 90 s, so a young page is not empty.
    var end = data.t.length ? data.t[data.t.length - 1] : Date.now();
    var first = data.t.length ? data.t[0] : end;
    var startT = end - Math.min(WINDOW_MS * 1.5, Math.max(20000, end - first));
    var max = 0;
    var points = 0;
    defs.forEach(function (def) {
      data[def[0]].forEach(function (v, i) {
        if (v !== null && data.t[i] >= startT) {
          max = Math.max(max, v);
          points++;
        }
      });
    });
    max = niceMax(max);
    var plotW = W - PAD.left - PAD.right;
    var plotH = H - PAD.top - PAD.bottom;
    function x(t) { return PAD.left + ((t - startT) / (end - startT)) * plotW; }
    function y(v) { return PAD.top + plotH - (v / max) * plotH; }

    for (var g = 0; g <= 4; g++) {
      var gv = (max * g) / 4;
      svg.appendChild(svgEl("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y(gv), y2: y(gv) }));
      svg.appendChild(svgEl("text", { class: "axis-label", x: PAD.left - 6, y: y(gv) + 4, "text-anchor": "end" }, format(gv)));
    }
    [[startT, "start"], [end, "end"]].forEach(function (tick) {
      var label = tick[1] === "end" ? "now" : "−" + Math.round((end - startT) / 1000) + " s";
      svg.appendChild(svgEl("text", {
        class: "axis-label", x: x(tick[0]), y: H - 6, "text-anchor": tick[1] === "end" ? "end" : "start",
      }, label));
    });

    defs.forEach(function (def) {
      var key = def[0];
      var color = def[2];
      var path = "";
      var pen = false;
      var lastIndex = -1;
      data[key].forEach(function (v, i) {
        if (v === null || data.t[i] < startT) { pen = false; return; }
        path += (pen ? "L" : "M") + x(data.t[i]).toFixed(1) + " " + y(v).toFixed(1);
        pen = true;
        var prev = i > 0 ? data[key][i - 1] : null;
        var next = i + 1 < data[key].length ? data[key][i + 1] : null;
        if (prev === null && next === null) {
          // An isolated sample has no segment; draw it as a dot so it is visible.
          svg.appendChild(svgEl("circle", { cx: x(data.t[i]), cy: y(v), r: 3, fill: color }));
        }
        lastIndex = i;
      });
      if (path) svg.appendChild(svgEl("path", { class: "series", d: path, stroke: color, "data-series": key }));
      var label = document.createElement("span");
      label.style.setProperty("--swatch", color);
      var latest = lastIndex >= 0 ? data[key][lastIndex] : null;
      label.textContent = def[1] + (latest === null ? "" : " " + format(latest));
      legend.appendChild(label);
    });
    if (!points) {
      svg.appendChild(svgEl("text", { class: "idle", x: W / 2, y: H / 2, "text-anchor": "middle" }, "no observations yet"));
    }
    figure.dataset.points = String(points);
  }

  function bookingBars(bookings) {
    var container = $("booking-bars");
    var max = 0;
    RESULTS.forEach(function (r) { max = Math.max(max, bookings[r[0]] || 0); });
    container.textContent = "";
    var nonZero = 0;
    RESULTS.forEach(function (r) {
      var value = bookings[r[0]] || 0;
      if (value > 0) nonZero++;
      var row = document.createElement("div");
      row.className = "bar-row";
      row.dataset.result = r[0];
      row.dataset.value = String(value);
      var label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = r[1];
      var track = document.createElement("div");
      track.className = "bar-track";
      var fill = document.createElement("div");
      fill.className = "bar-fill";
      fill.style.width = (max ? (100 * value) / max : 0).toFixed(1) + "%";
      fill.style.background = r[2];
      track.appendChild(fill);
      var number = document.createElement("span");
      number.className = "bar-value";
      number.textContent = fmtInt(value);
      var perSecond = document.createElement("span");
      perSecond.className = "muted";
      var rateValue = lastBookingRates[r[0]];
      perSecond.textContent = rateValue === undefined || rateValue === null ? "" : fmtRate(rateValue) + "/s";
      number.appendChild(perSecond);
      row.appendChild(label);
      row.appendChild(track);
      row.appendChild(number);
      container.appendChild(row);
    });
    $("chart-bookings").dataset.points = String(nonZero);
  }

  // --- tables ------------------------------------------------------------------------------

  function cell(row, text, className) {
    var td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function onLocks(data) {
    var body = document.querySelector("#hot-events tbody");
    body.textContent = "";
    data.events.forEach(function (e) {
      var row = document.createElement("tr");
      row.dataset.eventId = String(e.event_id);
      row.dataset.held = String(e.held);
      row.dataset.acquired = String(e.acquired);
      row.dataset.requests = String(e.requests);
      row.dataset.waiters = String(e.waiters);
      row.dataset.timeouts = String(e.timeouts);
      var title = cell(row, "", "title");
      var id = document.createElement("span");
      id.className = "id";
      id.textContent = "#" + e.event_id;
      title.appendChild(id);
      title.appendChild(document.createTextNode(e.title === null ? "(unknown)" : e.title));
      title.title = e.title || "";
      var lockCell = cell(row, "");
      var pill = document.createElement("span");
      pill.className = "pill" + (e.held ? " held" : "");
      pill.textContent = e.held ? "held" : "free";
      lockCell.appendChild(pill);
      cell(row, e.held ? (e.holder_instance !== null ? e.holder_instance + " · pid " + e.holder_pid : e.holder) : "–");
      cell(row, e.held_for_ms === null ? "–" : fmtMs(e.held_for_ms), "num");
      cell(row, e.lease_left_ms === null ? "–" : fmtMs(e.lease_left_ms), "num");
      cell(row, fmtInt(e.waiters), "num" + (e.waiters > 0 ? " hot" : ""));
      cell(row, e.seats_held === null ? "–" : fmtInt(e.seats_held), "num");
      cell(row, e.waitlist_length === null ? "–" : fmtInt(e.waitlist_length), "num" + (e.waitlist_length > 0 ? " hot" : ""));
      cell(row, fmtInt(e.acquired), "num");
      cell(row, fmtInt(e.requests), "num");
      cell(row, fmtInt(e.timeouts), "num" + (e.timeouts > 0 ? " hot" : ""));
      cell(row, fmtInt(e.lost), "num" + (e.lost > 0 ? " hot" : ""));
      cell(row, e.avg_hold_ms === null ? "–" : fmtMs(e.avg_hold_ms), "num");
      cell(row, e.last_activity ? ago(e.last_activity, data.generated_at) : "–", "num");
      body.appendChild(row);
    });
    $("hot-events").dataset.rows = String(data.events.length);
    $("hot-events-empty").hidden = data.events.length > 0;
    $("hot-events-note").textContent =
      "locks held now or busy in the last " + Math.round(data.window_seconds / 60) +
      " min, hottest first" + (data.titles_available ? "" : " · titles unavailable (database)");
  }

  function upcomingTable(rows) {
    var body = document.querySelector("#upcoming tbody");
    body.textContent = "";
    rows.forEach(function (e) {
      var row = document.createElement("tr");
      row.dataset.eventId = String(e.event_id);
      row.dataset.utilisation = String(e.utilisation);
      var title = cell(row, "", "title");
      var id = document.createElement("span");
      id.className = "id";
      id.textContent = "#" + e.event_id;
      title.appendChild(id);
      title.appendChild(document.createTextNode(e.title));
      cell(row, new Date(e.start_time).toLocaleString());
      cell(row, fmtInt(e.booked_count) + " / " + fmtInt(e.capacity), "num");
      cell(row, fmtInt(e.seats_held), "num");
      cell(row, fmtInt(e.waitlist_length), "num" + (e.waitlist_length > 0 ? " hot" : ""));
      var util = cell(row, "");
      var wrap = document.createElement("div");
      wrap.className = "util";
      var track = document.createElement("div");
      track.className = "util-track";
      var fill = document.createElement("div");
      fill.className = "util-fill" + (e.utilisation >= 1 ? " full" : e.utilisation >= 0.9 ? " high" : "");
      fill.style.width = Math.min(100, e.utilisation * 100).toFixed(1) + "%";
      track.appendChild(fill);
      var text = document.createElement("span");
      text.className = "util-text";
      text.textContent = Math.round(e.utilisation * 100) + "%";
      wrap.appendChild(track);
      wrap.appendChild(text);
      util.appendChild(wrap);
      body.appendChild(row);
    });
    $("upcoming").dataset.rows = String(rows.length);
    $("upcoming-empty").hidden = rows.length > 0;
  }

  function queuesTable(rows) {
    var body = document.querySelector("#queues tbody");
    body.textContent = "";
    rows.forEach(function (q) {
      var row = document.createElement("tr");
      row.dataset.eventId = String(q.event_id);
      cell(row, "#" + q.event_id, "title");
      cell(row, fmtInt(q.depth), "num");
      cell(row, fmtInt(q.admitted_per_minute), "num");
      cell(row, fmtInt(q.active), "num");
      cell(row, q.eta_seconds === null ? "–" : Math.round(q.eta_seconds / 60) + " min", "num");
      body.appendChild(row);
    });
    $("queues").dataset.rows = String(rows.length);
    $("queues-empty").hidden = rows.length > 0;
  }

  // --- formatting ------------------------------------------------------------------------

  function fmtMs(value) {
    if (value === null || value === undefined || isNaN(value)) return "–";
    if (value === 0) return "0";
    if (value < 1) return value.toFixed(2) + " ms";
    if (value < 100) return value.toFixed(1) + " ms";
    if (value < 1000) return Math.round(value) + " ms";
    return (value / 1000).toFixed(2) + " s";
  }

  function fmtRate(value) {
    if (value === null || value === undefined) return "–";
    if (value === 0) return "0";
    return value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : Math.round(value).toString();
  }

  function fmtInt(value) {
    return (value || 0).toLocaleString("en-US");
  }

  function ago(iso, reference) {
    var seconds = Math.max(0, (new Date(reference) - new Date(iso)) / 1000);
    if (seconds < 1) return "now";
    if (seconds < 90) return Math.round(seconds) + " s ago";
    return Math.round(seconds / 60) + " min ago";
  }

  // --- start -------------------------------------------------------------------------------

  $("token-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var value = $("token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    start(value);
  });
  $("forget-token").addEventListener("click", function () { askForToken(""); });

  var initial = readToken();
  if (initial) start(initial);
  else askForToken("");
})();
