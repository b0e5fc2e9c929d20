/* timewheel web view: live pages, the ring, the charts.  Plain JavaScript, no build step.
 *
 * Everything that comes from the store is put in the page with textContent or attribute
 * values, never as HTML.  Live pages poll the JSON API every data-refresh seconds.
 */
(function () {
  "use strict";

  var body = document.body;
  var ROOT = body.dataset.root;                 // the view's URL prefix, ending in "/"
  var REFRESH = Math.max(1, parseFloat(body.dataset.refresh) || 3) * 1000;
  // The server's clock minus ours: relative times are judged by the store's clock.
  var SKEW = parseFloat(body.dataset.now) - Date.now() / 1000;
  var SVG = "http://www.w3.org/2000/svg";

  function serverNow() { return Date.now() / 1000 + SKEW; }

  // -- formatting (the same rules as the CLI: timewheel/text.py) ------------------------------
  function span(seconds) {
    var s = Math.round(Math.abs(seconds));
    if (s < 60) return s + "s";
    var parts = [], units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
    for (var i = 0; i < units.length; i++) {
      var q = Math.floor(s / units[i][1]);
      s -= q * units[i][1];
      if (q || parts.length) parts.push(q + units[i][0]);
    }
    return parts.slice(0, 2).filter(function (p) { return p.charAt(0) !== "0"; }).join(" ");
  }
  function relative(when, now) {
    var d = when - now;
    if (Math.abs(d) < 0.5) return "now";
    return d > 0 ? "in " + span(d) : span(d) + " ago";
  }
  function seconds(x) {
    if (x === null || x === undefined) return "-";
    return Math.abs(x) < 60 ? x.toFixed(3) + "s" : span(x);
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function when(ts) {
    if (ts === null || ts === undefined) return "-";
    var d = new Date(ts * 1000);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function num(n) { return (n === null || n === undefined) ? "-" : Number(n).toLocaleString("en-US"); }
  // The horizon (the last tick whose tasks are ready to claim) as the time it reaches: tick
  // numbers (ten digits) mean nothing to a reader.
  function horizonText(horizon, current, tick) {
    var ahead = (horizon - current) * tick;
    return "ready through " + when((horizon + 1) * tick) +
      (ahead > 0 ? " (" + span(ahead) + " ahead)" : ahead < 0 ? " (" + span(-ahead) + " behind)" : "");
  }

  // Controls and text-reordering characters from the store shown as escapes, as the CLI
  // and the server-rendered pages do (timewheel/text.py clean()).
  var UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/g;
  function clean(s) {
    return String(s).replace(UNSAFE, function (c) {
      var n = c.charCodeAt(0);
      return n < 0x100 ? "\\x" + (n < 16 ? "0" : "") + n.toString(16) : "\\u" + ("000" + n.toString(16)).slice(-4);
    });
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = clean(text);
    return e;
  }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }
  // A task's page: the whole id one path segment (ids are free text: a "/" or ".." in one
  // must not lead elsewhere); "." and ".." cannot be a segment at all (as app.py's links).
  function taskHref(id) {
    return ROOT + (id === "." || id === ".." ? "task?id=" + encodeURIComponent(id) : "tasks/" + encodeURIComponent(id));
  }
  function taskLink(id) {
    return el("a", { href: taskHref(id), "class": "id" }, id);
  }
  function td(content, cls) {
    var c = el("td", cls ? { "class": cls } : null);
    if (content instanceof Node) c.appendChild(content); else c.textContent = clean(content);
    return c;
  }
  // A task name may wrap after its dots (reports.<wbr>monthly), never inside a part.
  function nameCell(name) {
    var c = el("td", { "class": "name" });
    clean(name).split(".").forEach(function (part, i) {
      if (i) { c.appendChild(document.createTextNode(".")); c.appendChild(document.createElement("wbr")); }
      c.appendChild(document.createTextNode(part));
    });
    return c;
  }
  function emptyRow(tbody, cols, text) {
    var tr = el("tr"); var c = el("td", { colspan: cols, "class": "empty" }, text);
    tr.appendChild(c); tbody.appendChild(tr);
  }
  function initial() {
    var node = document.getElementById("initial");
    return node ? JSON.parse(node.textContent) : null;
  }

  // -- the JSON API and polling ---------------------------------------------------------------
  function api(path) {
    return fetch(ROOT + "api/" + path, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().then(function (data) {
          if (!r.ok) throw new Error(data.error || r.statusText);
          return data;
        });
      });
  }
  function poll(fn) {
    var live = document.getElementById("live");
    function again() {
      fn().then(function () {
        if (live) { live.classList.remove("stale"); live.textContent = "live · " + new Date().toLocaleTimeString(); }
      }, function (err) {
        if (live) { live.classList.add("stale"); live.textContent = "not updating: " + err.message; }
      }).then(function () { setTimeout(again, REFRESH); });
    }
    setTimeout(again, REFRESH);
  }

  // -- every page: local times, relative times, countdowns, confirmations, select-all ---------
  function tickTimes() {
    var now = serverNow();
    document.querySelectorAll("time[data-ts]").forEach(function (t) {
      if (!t.dataset.done) { t.textContent = when(parseFloat(t.dataset.ts)); t.dataset.done = "1"; }
    });
    document.querySelectorAll("[data-rel]").forEach(function (t) { t.textContent = relative(parseFloat(t.dataset.rel), now); });
    document.querySelectorAll("[data-lease]").forEach(function (t) {
      var left = parseFloat(t.dataset.lease) - now;
      t.textContent = left > 0 ? seconds(left) : "expired " + span(-left) + " ago";
      t.classList.toggle("bad", left <= 0);
    });
    document.querySelectorAll("[data-since]").forEach(function (t) {
      var s = parseFloat(t.dataset.since);
      if (!isNaN(s)) t.textContent = seconds(now - s);
    });
  }
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("[data-confirm]");
    if (b && !window.confirm(b.dataset.confirm)) ev.preventDefault();
  });
  document.addEventListener("change", function (ev) {
    var all = ev.target.closest(".pick-all");
    if (!all) return;
    document.querySelectorAll('input[name="ids"][form="' + all.dataset.form + '"]').forEach(function (c) { c.checked = all.checked; });
  });

  // -- charts (uPlot, shipped in static/vendor) -----------------------------------------------
  var charts = [];
  function chart(node, series, data, opts) {
    if (!node || !window.uPlot) return null;
    opts = opts || {};
    var o = {
      width: Math.max(200, node.clientWidth), height: opts.height || 200,
      series: [{}].concat(series), legend: { show: true },
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max || 0, opts.ymin || 1) * 1.1]; } } },
      axes: [{ stroke: "#6b7285", grid: { stroke: "#eef0f5" } },
             { stroke: "#6b7285", grid: { stroke: "#eef0f5" }, size: 56 }],
      cursor: { drag: { x: false, y: false } },
    };
    var c = new window.uPlot(o, data, node);
    charts.push([c, node, o.height]);
    return c;
  }
  window.addEventListener("resize", function () {
    charts.forEach(function (c) { c[0].setSize({ width: Math.max(200, c[1].clientWidth), height: c[2] }); });
  });
  function bars(color) {
    return { stroke: color, fill: color + "cc", width: 1, paths: window.uPlot && window.uPlot.paths.bars({ size: [0.8, 40] }), points: { show: false } };
  }
  function line(color, label) {
    return { label: label, stroke: color, width: 2, spanGaps: false, points: { show: false } };
  }

  // -- Overview -------------------------------------------------------------------------------
  var STATUSES = ["pending", "running", "claimed", "succeeded", "failed", "cancelled", "misfired", "aborted",
                  "broken"];

  function overview() {
    var state = initial();
    var thr = null, lat = null;

    function facts(node, rows) {
      clear(node);
      rows.forEach(function (r) {
        node.appendChild(el("dt", null, r[0]));
        var dd = el("dd", r[2] ? { "class": r[2] } : null, r[1]);
        if (r[3]) dd.id = r[3];
        node.appendChild(dd);
      });
    }
    function render() {
      var ins = state.inspect, st = state.stats, now = ins.ticker.now;
      STATUSES.forEach(function (s) {
        var n = document.querySelector('[data-count="' + s + '"]');
        if (n) n.textContent = num(ins.counts[s] || 0);
      });
      var tk = ins.ticker;
      facts(document.getElementById("ticker"), [
        ["state", tk.ticking ? "ticking" : "NOT ticking", tk.ticking ? "ok" : "bad", "ticking"],
        ["leader", tk.leader || (tk.last_leader ? "none alive (last: " + tk.last_leader + ")" : "- (no process has ticked)"), null, "leader"],
        ["advanced", tk.advanced_at === null || tk.advanced_at === undefined ? "never" : relative(tk.advanced_at, now)],
        ["lag", span(tk.lag_seconds) + (tk.lag_ticks ? " (" + num(tk.lag_ticks) + " ticks)" : ""), tk.lag_seconds > 2 * ins.store.tick ? "bad" : null, "lag"],
        ["now", "slot " + (tk.current_tick % ins.store.slots) + " of " + num(ins.store.slots) + ", the tick of " + when(tk.current_tick * ins.store.tick), null, "now"],
        ["horizon", horizonText(tk.horizon, tk.current_tick, ins.store.tick), null, "horizon"],
        ["wheel", ins.store.slots + " slots × " + ins.store.tick + "s; " + num(ins.ring.occupied_cells) + " occupied cells in " + num(ins.ring.occupied_slots) + " slots"],
      ]);
      var l = st.lateness;
      facts(document.getElementById("lateness"), [
        ["runs", num(l.runs)], ["p50", seconds(l.p50)], ["p95", seconds(l.p95)], ["max", seconds(l.max)], ["mean", seconds(l.mean)],
      ]);
      var tb = clear(document.getElementById("next-due"));
      ins.next_due.forEach(function (d) {
        var tr = el("tr");
        tr.appendChild(td(taskLink(d.id)));
        tr.appendChild(nameCell(d.name));
        tr.appendChild(td(when(d.eta)));
        tr.appendChild(td(relative(d.eta, now), "rel"));
        tb.appendChild(tr);
      });
      if (!ins.next_due.length) emptyRow(tb, 4, "nothing pending");
      var bn = clear(document.getElementById("by-name"));
      Object.keys(ins.pending_by_name).forEach(function (name) {
        var tr = el("tr"); tr.appendChild(nameCell(name)); tr.appendChild(td(num(ins.pending_by_name[name]), "num"));
        bn.appendChild(tr);
      });
      if (!Object.keys(ins.pending_by_name).length) emptyRow(bn, 2, "nothing pending");
      // charts
      var b = state.series.buckets;
      var xs = b.map(function (x) { return x.start; });
      var tdata = [xs, b.map(function (x) { return x.succeeded; }), b.map(function (x) { return x.failed; }),
                   b.map(function (x) { return x.misfired; }), b.map(function (x) { return x.aborted; })];
      var ldata = [xs, b.map(function (x) { return x.lateness_p50; }), b.map(function (x) { return x.lateness_p95; }),
                   b.map(function (x) { return x.lateness_max; })];
      var note = document.getElementById("sampled");
      note.hidden = !state.series.sampled;
      if (state.series.sampled) note.textContent = "More runs finished in this hour than were read: the counts start at " +
        when(state.series.complete_since) + ".";
      if (!thr) {
        thr = chart(document.getElementById("chart-throughput"),
          [Object.assign(bars("#2f9e44"), { label: "succeeded" }), line("#e03131", "failed"), line("#f08c00", "misfired"),
           line("#868e96", "aborted")], tdata);
        lat = chart(document.getElementById("chart-lateness"),
          [line("#3b5bdb", "p50"), line("#7048e8", "p95"), line("#e8590c", "max")], ldata, { ymin: 0.01 });
      } else {
        thr.setData(tdata); lat.setData(ldata);
      }
    }
    render();
    poll(function () {
      return Promise.all([api("inspect?next=10"), api("stats"), api("series")]).then(function (r) {
        state = { inspect: r[0], stats: r[1], series: r[2] };
        SKEW = r[0].ticker.now - Date.now() / 1000;
        render();
      });
    });
  }

  // -- The wheel ------------------------------------------------------------------------------
  // Slot 0 at twelve o'clock, clockwise, like a clock face: with the default geometry
  // (3600 slots of 1 s) slot s is second s of every hour.
  var C = 340, R_OUT = 300, R_IN = 205, R_TURN_OUT = 196, R_TURN_IN = 178;

  function polar(r, frac) {
    var a = frac * 2 * Math.PI;
    return [C + r * Math.sin(a), C - r * Math.cos(a)];
  }
  function wedge(f0, f1, r0, r1) {
    var a = polar(r1, f0), b = polar(r1, f1), c = polar(r0, f1), d = polar(r0, f0);
    var large = (f1 - f0) > 0.5 ? 1 : 0;
    return "M" + a[0].toFixed(2) + " " + a[1].toFixed(2) + "A" + r1 + " " + r1 + " 0 " + large + " 1 " + b[0].toFixed(2) + " " + b[1].toFixed(2) +
      "L" + c[0].toFixed(2) + " " + c[1].toFixed(2) + "A" + r0 + " " + r0 + " 0 " + large + " 0 " + d[0].toFixed(2) + " " + d[1].toFixed(2) + "Z";
  }
  // light to dark blue, by log(1 + n) / log(1 + max): a slot of 1 task stays visible next to one of 10,000
  var STOPS = [[219, 228, 255], [116, 143, 252], [59, 91, 219], [28, 47, 128], [11, 19, 64]];
  var WARM = [[255, 224, 178], [255, 146, 43], [217, 72, 15], [134, 46, 10]];
  function shade(n, max, stops) {
    stops = stops || STOPS;
    var t = max > 0 ? Math.log(1 + n) / Math.log(1 + max) : 0;
    var x = t * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
    var c = stops[i].map(function (v, k) { return Math.round(v + (stops[i + 1][k] - v) * f); });
    return "rgb(" + c.join(",") + ")";
  }

  function wheelPage() {
    var data = initial();
    var ring = document.getElementById("ring");
    var sel = null, selCycle = null;
    var root = svg("svg", { viewBox: "0 0 " + (2 * C) + " " + (2 * C), id: "ring-svg" });
    var band = svg("path", { d: wedge(0, 0.99999, R_IN, R_OUT), "class": "band" });
    var turnBand = svg("path", { d: wedge(0, 0.99999, R_TURN_IN, R_TURN_OUT), "class": "band turn-band" });
    var slotsG = svg("g", { id: "slots" });
    var turnG = svg("g", { id: "turn" });
    var marks = svg("g");
    var hand = svg("line", { "class": "hand", id: "hand" });
    var handDot = svg("circle", { r: 7, "class": "hand-dot" });
    var selMark = svg("path", { "class": "sel", fill: "none", id: "selected" });
    var centreN = svg("text", { x: C, y: C - 6, "class": "centre-n", id: "centre-n" });
    var centreL = svg("text", { x: C, y: C + 20, "class": "centre-l", id: "centre-l" });
    var centreL2 = svg("text", { x: C, y: C + 40, "class": "centre-l", id: "centre-l2" });
    [band, turnBand, slotsG, turnG, marks, selMark, hand, handDot, centreN, centreL, centreL2].forEach(function (n) { root.appendChild(n); });
    ring.appendChild(root);

    function sectors() { return data.load.length; }
    function drawMarks() {
      clear(marks);
      var per = data.sector_slots, slots = data.slots, hourly = slots * data.tick === 3600;
      for (var i = 0; i < 60; i++) {
        var f = i / 60, major = i % 5 === 0;
        var p0 = polar(R_OUT + 2, f), p1 = polar(R_OUT + (major ? 14 : 7), f);
        marks.appendChild(svg("line", { x1: p0[0], y1: p0[1], x2: p1[0], y2: p1[1], "class": "minute" + (major ? " major" : "") }));
        if (major) {
          var q = polar(R_OUT + 27, f);
          var label = hourly ? ":" + pad(i) : String(Math.round(f * slots));
          marks.appendChild(svg("text", { x: q[0], y: q[1], "class": "label" }, label));
        }
      }
      void per;
    }
    // One wedge per occupied slot; its stroke (the fill colour) keeps a one-task slot visible
    // where the ring gives a slot less than a pixel.
    function drawBand(group, counts, r0, r1, stops, cls, title) {
      clear(group);
      var n = sectors(), max = 0;
      counts.forEach(function (v) { if (v > max) max = v; });
      var frag = document.createDocumentFragment();
      for (var i = 0; i < n; i++) {
        var v = counts[i];
        if (!v) continue;
        var colour = shade(v, max, stops);
        var p = svg("path", { d: wedge(i / n, (i + 1) / n, r0, r1), fill: colour, stroke: colour, "class": cls,
                              "data-slot": i * data.sector_slots, "data-count": v });
        p.appendChild(svg("title", {}, title(i, v)));
        frag.appendChild(p);
      }
      group.appendChild(frag);
      return max;
    }
    function drawSlots() {
      var max = drawBand(slotsG, data.load, R_IN, R_OUT, STOPS, "slot", function (i, v) {
        return slotName(i * data.sector_slots) + ": " + num(v) + " task(s) in " + data.cells[i] + " turn(s)";
      });
      slotsG.querySelectorAll(".slot").forEach(function (p) {
        p.dataset.cells = data.cells[parseInt(p.dataset.slot, 10) / data.sector_slots];
      });
      var maxTurn = drawBand(turnG, data.next_turn, R_TURN_IN, R_TURN_OUT, WARM, "turn", function (i, v) {
        return slotName(i * data.sector_slots) + ": " + num(v) + " task(s) in the coming turn";
      });
      var legend = clear(document.getElementById("legend"));
      var turns = data.revolutions + " revolution" + (data.revolutions > 1 ? "s" : "");
      if (max === 0) {
        legend.appendChild(el("span", { id: "legend-outer" }, "no task is due in the next " + turns));
      } else {
        legend.appendChild(el("span", { "class": "scale" }));
        legend.appendChild(el("span", { id: "legend-outer" }, "outer ring: " + (max === 1 ? "1 task" : "1 to " + num(max) + " tasks") +
          " per slot over the next " + turns));
        legend.appendChild(el("span", { "class": "scale warm" }));
        legend.appendChild(el("span", { id: "legend-inner" }, "inner ring: the coming turn (" +
          (maxTurn === 0 ? "empty" : "up to " + num(maxTurn)) + "), log scales"));
      }
      centreN.textContent = num(data.in_window);
      centreL.textContent = "due in the next " + span(data.revolutions * data.slots * data.tick);
      centreL2.textContent = num(data.overdue) + " overdue · " + num(data.later) + " later";
      drawFacts();
    }
    function slotName(s) {
      var secs = s * data.tick;
      var txt = "slot " + s;
      if (data.slots * data.tick === 3600) txt += " (:" + pad(Math.floor(secs / 60)) + ":" + pad(Math.floor(secs % 60)) + ")";
      return txt;
    }
    function currentTick() { return Math.floor(serverNow() / data.tick); }
    function drawHand() {
      var t = currentTick(), f = (t % data.slots) / data.slots;
      var a = polar(R_TURN_IN - 24, f), b = polar(R_OUT + 4, f);
      hand.setAttribute("x1", a[0]); hand.setAttribute("y1", a[1]);
      hand.setAttribute("x2", b[0]); hand.setAttribute("y2", b[1]);
      handDot.setAttribute("cx", b[0]); handDot.setAttribute("cy", b[1]);
      root.dataset.currentSlot = t % data.slots;
      hand.dataset.slot = t % data.slots;
    }
    function drawFacts() {
      var f = clear(document.getElementById("wheel-facts"));
      [["pending", num(data.pending)], ["overdue", num(data.overdue)], ["in window", num(data.in_window)],
       ["later", num(data.later)], ["current slot", data.current_slot], ["horizon", horizonText(data.horizon, data.current_tick, data.tick)]]
        .forEach(function (r) { f.appendChild(el("dt", null, r[0])); f.appendChild(el("dd", null, r[1])); });
      var turn = data.slots * data.tick, xs = [], ys = [];
      data.by_revolution.forEach(function (n, i) { xs.push(data.window.start * data.tick + i * turn); ys.push(n); });
      if (!revChart) revChart = chart(document.getElementById("chart-revolutions"), [Object.assign(bars("#3b5bdb"), { label: "tasks" })], [xs, ys]);
      else revChart.setData([xs, ys]);
    }
    var revChart = null;

    function select(slot, cycle) {
      sel = slot; selCycle = cycle === undefined ? null : cycle;
      var n = sectors(), i = Math.floor(slot / data.sector_slots);
      var half = Math.max(0.5 / n, 0.0012);          // at least ~1 degree wide, centred on the slot
      var mid = (i + 0.5) / n;
      selMark.setAttribute("d", wedge(mid - half, mid + half, R_TURN_IN - 8, R_OUT + 8));
      selMark.dataset.slot = slot;
      slotsG.querySelectorAll(".slot.selected").forEach(function (p) { p.classList.remove("selected"); });
      var p = slotsG.querySelector('[data-slot="' + (i * data.sector_slots) + '"]');
      if (p) p.classList.add("selected");
      document.getElementById("slot-title").textContent = slotName(slot).replace(/^slot /, "");
      document.getElementById("slot-hint").hidden = true;
      var q = "wheel/slots/" + slot + "?revolutions=" + data.revolutions + (selCycle === null ? "" : "&cycle=" + selCycle);
      return api(q).then(showSlot, function (err) {
        clear(document.getElementById("slot-body")).appendChild(el("p", { "class": "bad" }, err.message));
      });
    }
    function showSlot(s) {
      var box = clear(document.getElementById("slot-body"));
      box.dataset.slot = s.slot;
      var total = s.cells.reduce(function (a, c) { return a + c.count; }, 0);
      var thisTurn = Math.floor(s.current_tick / s.slots);
      box.appendChild(el("p", { id: "slot-summary" }, num(total) + " task(s) in " + s.cells.length + " of the next " + s.revolutions + " turn(s)"));
      if (s.cells.length) {
        var t = el("table", { "class": "list", id: "slot-cells" });
        var h = el("tr"); ["turn", "due", "", "tasks"].forEach(function (x) { h.appendChild(el("th", x === "tasks" ? { "class": "num" } : null, x)); });
        t.appendChild(el("thead")).appendChild(h);
        var tb = el("tbody"); t.appendChild(tb);
        s.cells.forEach(function (c) {
          var tr = el("tr", { "class": "cell" + (c.cycle === s.cycle ? " chosen" : ""), "data-cycle": c.cycle, tabindex: 0 });
          tr.appendChild(td(turnName(c.cycle - thisTurn))); tr.appendChild(td(when(c.due))); tr.appendChild(td(relative(c.due, s.now), "rel"));
          tr.appendChild(td(num(c.count), "num"));
          tr.addEventListener("click", function () { select(s.slot, c.cycle); });
          tr.addEventListener("keydown", function (ev) { if (ev.key === "Enter") select(s.slot, c.cycle); });
          tb.appendChild(tr);
        });
        box.appendChild(t);
      }
      if (s.cell) {
        box.appendChild(el("h3", { id: "cell-title" }, "Due " + when(s.cell.due) + " (" + relative(s.cell.due, s.now) + "), " +
          turnName(s.cycle - thisTurn)));
        var tt = el("table", { "class": "list", id: "slot-tasks" });
        var th = el("tr"); ["id", "name", "due"].forEach(function (x) { th.appendChild(el("th", null, x)); });
        tt.appendChild(el("thead")).appendChild(th);
        var tbody = el("tbody"); tt.appendChild(tbody);
        s.tasks.forEach(function (task) {
          var tr = el("tr", { "data-id": task.id });
          tr.appendChild(td(taskLink(task.id))); tr.appendChild(nameCell(task.name)); tr.appendChild(td(when(task.eta)));
          tbody.appendChild(tr);
        });
        if (!s.tasks.length) emptyRow(tbody, 3, "no pending task in this cycle");
        box.appendChild(tt);
        if (s.cell.count > s.tasks.length) box.appendChild(el("p", { "class": "note" }, "showing " + s.tasks.length + " of " + num(s.cell.count)));
      } else if (!s.cells.length) {
        box.appendChild(el("p", { "class": "hint" }, "This slot holds no task in this window."));
      }
    }
    // A turn of the ring counted from the current one (the wheel's cycle numbers are internal).
    function turnName(k) { return k <= 0 ? "this turn" : k === 1 ? "next turn" : "in " + k + " turns"; }
    function slotAt(ev) {
      var pt = root.createSVGPoint(); pt.x = ev.clientX; pt.y = ev.clientY;
      var p = pt.matrixTransform(root.getScreenCTM().inverse());
      var dx = p.x - C, dy = p.y - C, r = Math.sqrt(dx * dx + dy * dy);
      if (r < R_TURN_IN - 8 || r > R_OUT + 8) return null;
      var f = (Math.atan2(dx, -dy) / (2 * Math.PI) + 1) % 1;
      var i = Math.min(sectors() - 1, Math.floor(f * sectors()));
      // Snap to an occupied slot within about 4 px: a slot is thinner than a pointer.
      var reach = Math.ceil(sectors() * 4 / (2 * Math.PI * R_OUT));
      for (var d = 0; d <= reach; d++) {
        var a = (i + d) % sectors(), b = (i - d + sectors()) % sectors();
        if (data.load[a]) return a * data.sector_slots;
        if (data.load[b]) return b * data.sector_slots;
      }
      return i * data.sector_slots;
    }
    root.addEventListener("click", function (ev) {
      var target = ev.target.closest && ev.target.closest(".slot, .turn");
      var s = target ? parseInt(target.dataset.slot, 10) : slotAt(ev);
      if (s !== null) select(s);
    });
    root.setAttribute("tabindex", "0");
    root.addEventListener("keydown", function (ev) {
      if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
      var step = ev.key === "ArrowRight" ? data.sector_slots : -data.sector_slots;
      select(((sel === null ? data.current_slot : sel) + step + data.slots) % data.slots);
      ev.preventDefault();
    });
    document.getElementById("revolutions").addEventListener("change", function () {
      document.getElementById("window-form").submit();
    });

    drawMarks(); drawSlots(); drawHand();
    setInterval(drawHand, Math.max(250, data.tick * 1000 / 2));
    poll(function () {
      return api("wheel?revolutions=" + data.revolutions).then(function (d) {
        data = d; SKEW = d.now - Date.now() / 1000; drawSlots();
        if (sel !== null) return select(sel, selCycle === null ? undefined : selCycle);
      });
    });
  }

  // -- Timeline -------------------------------------------------------------------------------
  function timeline() {
    var d = initial();
    var xs = d.buckets.map(function (b) { return b.start; }), ys = d.buckets.map(function (b) { return b.count; });
    chart(document.getElementById("chart-timeline"), [Object.assign(bars("#3b5bdb"), { label: "tasks due" })], [xs, ys], { height: 300 });
  }

  tickTimes();
  setInterval(tickTimes, 1000);
  var page = body.dataset.page;
  if (page === "overview") overview();
  else if (page === "wheel") wheelPage();
  else if (page === "timeline") timeline();
})();
