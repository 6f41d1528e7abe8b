/* The report page: draws a profiler report (or the progress of a run under way) with Vega-Lite.
 *
 * One renderer for the file `report.html` and the sidecar's live page `GET /`: the page data is either
 * the view profiler.record.html builds from a finished report ({report, plot}) or, on the live page
 * while a run is under way, GET /report's progress document ({status: "running", progress}).
 * No network: everything it needs is inlined in the page, and the live page only asks its own origin.
 */
(function () {
  "use strict";

  var PHASE_COLORS = { starting: "#9e9e9e", before: "#6a8caf", accuracy: "#9c7bb5", load: "#d9822b", after: "#4f9d69" };
  var STATUS_CLASS = { pass: "pass", fail: "fail", inconclusive: "inconclusive", skipped: "skipped" };
  var Q_LABELS = [["p50", "p50"], ["p90", "p90"], ["p99", "p99"], ["p999", "p99.9"]];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  function num(value, digits) {
    if (value === null || value === undefined || (typeof value === "number" && !isFinite(value))) { return "-"; }
    if (typeof value !== "number") { return String(value); }
    if (Number.isInteger(value)) { return value.toLocaleString("en-US"); }
    return Number(value.toPrecision(digits || 4)).toString();
  }

  function mib(bytes) { return bytes === null || bytes === undefined ? null : bytes / 1048576; }

  /* The page data as one shape: a finished report's view, or a pseudo-report made of the live progress. */
  function normalise(doc) {
    if (doc && doc.report) { return doc; }
    var p = (doc && doc.progress) || {};
    var report = {
      run: { id: p.run_id || "-", status: doc && doc.status || "idle", phase: p.phase, started_at: p.started_at,
             phases: {} },
      target: p.target || {}, stages: p.stages || [], objective: p.objective || {}, capacity: {},
      resources: { series: p.series || [] }, accuracy: {}, verdict: null,
      live: { phase: p.phase, current_stage: p.current_stage, stages_done: p.stages_done,
              stages_total: p.stages_total, requests_done: p.requests_done, error: doc && doc.error }
    };
    var cpu = [];
    var series = report.resources.series;
    for (var i = 1; i < series.length; i++) {
      var a = series[i - 1], b = series[i];
      if (a.cpu_s !== null && b.cpu_s !== null && b.t_s > a.t_s) {
        cpu.push({ t: b.t_s, cores: (b.cpu_s - a.cpu_s) / (b.t_s - a.t_s) });
      }
    }
    return { report: report, plot: { spectra: [], cpu: cpu, memory_fit: null, predecessor: null } };
  }

  function measured(report) { return (report.stages || []).filter(function (s) { return !s.warmup; }); }

  /* --- the charts (Vega-Lite specs) -------------------------------------------------------------- */

  var BASE = { width: "container", height: 260, autosize: { type: "fit-x", contains: "padding" },
               config: { font: "system-ui, sans-serif", view: { stroke: "#ddd" }, axis: { labelFontSize: 11 } } };

  function spec(extra) { return Object.assign({ $schema: "https://vega.github.io/schema/vega-lite/v6.json" }, BASE, extra); }

  function latencyVsRate(view) {
    var report = view.report, rows = [];
    function add(stages, run) {
      stages.forEach(function (s) {
        Q_LABELS.forEach(function (q) {
          var v = (s.latency_ms || {})[q[0]];
          if (v !== null && v !== undefined && v > 0) { rows.push({ rate: s.offered_rps, ms: v, q: q[1], run: run }); }
        });
      });
    }
    add(measured(report), "this run");
    var pred = view.plot.predecessor;
    if (pred) { add(pred.stages || [], "predecessor " + pred.id); }
    if (!rows.length) { return null; }
    var layers = [{
      mark: { type: "line", point: true },
      encoding: {
        x: { field: "rate", type: "quantitative", title: "offered rate (requests/s)" },
        y: { field: "ms", type: "quantitative", title: "latency (ms)", scale: { type: "log" } },
        color: { field: "q", type: "nominal", title: "percentile", sort: ["p50", "p90", "p99", "p99.9"] },
        strokeDash: { field: "run", type: "nominal", title: "run" },
        order: { field: "rate", type: "quantitative" },
        tooltip: [{ field: "run" }, { field: "q" }, { field: "rate" }, { field: "ms", format: ".3f" }]
      },
      data: { values: rows }
    }];
    var objective = report.objective || {};
    if (objective.latency_ms) {
      layers.push({ data: { values: [{ y: objective.latency_ms, label: "objective p" + num(objective.percentile) + " ≤ " + num(objective.latency_ms) + " ms" }] },
                    layer: [{ mark: { type: "rule", color: "#c0392b", strokeDash: [6, 3] }, encoding: { y: { field: "y", type: "quantitative" } } },
                            { mark: { type: "text", align: "left", dx: 4, dy: -6, color: "#c0392b" },
                              encoding: { y: { field: "y", type: "quantitative" }, x: { datum: 0 }, text: { field: "label" } } }] });
    }
    var capacity = (report.capacity || {}).max_sustained_rps;
    if (capacity) {
      layers.push({ data: { values: [{ x: capacity, label: "capacity " + num(capacity) + " rps" + ((report.capacity || {}).lower_bound ? " (a lower bound)" : "") }] },
                    layer: [{ mark: { type: "rule", color: "#2c7a3f", strokeWidth: 2 }, encoding: { x: { field: "x", type: "quantitative" } } },
                            { mark: { type: "text", align: "right", dx: -4, baseline: "top", y: 4, color: "#2c7a3f" },
                              encoding: { x: { field: "x", type: "quantitative" }, text: { field: "label" } } }] });
    }
    return spec({ layer: layers });
  }

  function achievedVsOffered(view) {
    var rows = measured(view.report).filter(function (s) { return s.achieved_rps !== null && s.achieved_rps !== undefined; })
      .map(function (s) { return { offered: s.offered_rps, achieved: s.achieved_rps, stage: s.name, errors: s.errors }; });
    if (!rows.length) { return null; }
    var top = Math.max.apply(null, rows.map(function (r) { return Math.max(r.offered, r.achieved); }));
    return spec({ layer: [
      { data: { values: [{ x: 0, y: 0 }, { x: top, y: top }] }, mark: { type: "line", color: "#aaa", strokeDash: [4, 4] },
        encoding: { x: { field: "x", type: "quantitative" }, y: { field: "y", type: "quantitative" } } },
      { data: { values: rows }, mark: { type: "line", point: true, color: "#1f77b4" },
        encoding: { x: { field: "offered", type: "quantitative", title: "offered rate (requests/s)" },
                    y: { field: "achieved", type: "quantitative", title: "achieved rate (answers/s)" },
                    order: { field: "offered", type: "quantitative" },
                    tooltip: [{ field: "stage" }, { field: "offered" }, { field: "achieved", format: ".1f" }, { field: "errors" }] } }
    ] });
  }

  function spectrum(view) {
    var rows = [];
    (view.plot.spectra || []).forEach(function (s) {
      s.points.forEach(function (p) { rows.push({ stage: s.label, x: p[0], ms: p[1] }); });
    });
    if (!rows.length) { return null; }
    return spec({ data: { values: rows }, mark: { type: "line", interpolate: "step-after" },
      encoding: {
        x: { field: "x", type: "quantitative", scale: { type: "log" }, title: "percentile (1/(1-q), log scale)",
             axis: { labelExpr: "datum.value < 1.5 ? '0%' : format(100 - 100 / datum.value, '.4~f') + '%'", values: [1, 10, 100, 1000, 10000, 100000] } },
        y: { field: "ms", type: "quantitative", title: "latency (ms)" },
        color: { field: "stage", type: "nominal", title: "stage", sort: null },
        tooltip: [{ field: "stage" }, { field: "ms", format: ".3f" }]
      } });
  }

  function overTime(view) {
    var rows = [], t = 0;
    (view.report.stages || []).forEach(function (s) {
      var d = s.duration_s || 0, windows = s.windows || [];
      if (windows.length) {
        windows.forEach(function (w, i) {
          var at = t + (i + 0.5) * d / windows.length;
          rows.push({ t: at, panel: "throughput (answers/s)", series: "achieved", value: w.rps, stage: s.name });
          rows.push({ t: at, panel: "throughput (answers/s)", series: "offered", value: s.offered_rps, stage: s.name });
          if (w.latency_ms !== null) { rows.push({ t: at, panel: "latency (ms)", series: "window p" + num((view.report.objective || {}).percentile), value: w.latency_ms, stage: s.name }); }
        });
      } else {
        [t, t + d].forEach(function (at) {
          rows.push({ t: at, panel: "throughput (answers/s)", series: "offered", value: s.offered_rps, stage: s.name });
          if (s.achieved_rps !== null && s.achieved_rps !== undefined) { rows.push({ t: at, panel: "throughput (answers/s)", series: "achieved", value: s.achieved_rps, stage: s.name }); }
          ["p50", "p99"].forEach(function (q) {
            var v = (s.latency_ms || {})[q];
            if (v !== null && v !== undefined) { rows.push({ t: at, panel: "latency (ms)", series: q, value: v, stage: s.name }); }
          });
        });
      }
      t += d;
    });
    if (!rows.length) { return null; }
    function panel(name) {
      return { height: 150, width: 430, transform: [{ filter: { field: "panel", equal: name } }], mark: { type: "line", point: true },
               encoding: { x: { field: "t", type: "quantitative", title: "seconds into the load" },
                           y: { field: "value", type: "quantitative", title: name },
                           color: { field: "series", type: "nominal", title: null },
                           tooltip: [{ field: "stage" }, { field: "series" }, { field: "value", format: ".3f" }] } };
    }
    var s = spec({ data: { values: rows }, vconcat: [panel("latency (ms)"), panel("throughput (answers/s)")],
                   resolve: { scale: { color: "independent" } } });
    delete s.height;
    delete s.width;
    s.autosize = { type: "pad" };
    return s;
  }

  function memory(view) {
    var series = (view.report.resources || {}).series || [];
    var rows = series.filter(function (p) { return p.memory_bytes !== null && p.memory_bytes !== undefined; })
      .map(function (p) { return { t: p.t_s, mib: mib(p.memory_bytes), phase: p.phase, requests: p.requests, run: "this run" }; });
    if (!rows.length) { return null; }
    var layers = [{ data: { values: rows }, mark: { type: "line", point: { size: 18 }, interpolate: "linear" },
      encoding: { x: { field: "t", type: "quantitative", title: "seconds since the run began" },
                  y: { field: "mib", type: "quantitative", title: "model memory (MiB)", scale: { zero: false } },
                  color: { field: "phase", type: "nominal", title: "phase",
                           scale: { domain: Object.keys(PHASE_COLORS), range: Object.keys(PHASE_COLORS).map(function (k) { return PHASE_COLORS[k]; }) } },
                  detail: { field: "run" },
                  tooltip: [{ field: "phase" }, { field: "t", format: ".1f" }, { field: "mib", format: ".2f" }, { field: "requests" }] } }];
    var pred = view.plot.predecessor;
    if (pred && pred.series && pred.series.length) {
      layers.unshift({ data: { values: pred.series.map(function (p) { return { t: p[0], mib: mib(p[1]) }; }) },
        mark: { type: "line", color: "#888", strokeDash: [5, 3] },
        encoding: { x: { field: "t", type: "quantitative" }, y: { field: "mib", type: "quantitative" } } });
    }
    var fit = view.plot.memory_fit;
    if (fit && fit.points && fit.points.length) {
      var fitRows = fit.points.map(function (p) { return { t: p[0], fit: mib(p[1]), low: mib(p[2]), high: mib(p[3]) }; });
      layers.push({ data: { values: fitRows }, layer: [
        { mark: { type: "area", opacity: 0.18, color: "#c0392b" },
          encoding: { x: { field: "t", type: "quantitative" }, y: { field: "low", type: "quantitative" }, y2: { field: "high" } } },
        { mark: { type: "line", color: "#c0392b", strokeWidth: 2 },
          encoding: { x: { field: "t", type: "quantitative" }, y: { field: "fit", type: "quantitative" } } }] });
    }
    if (fit && fit.cut_t !== null && fit.cut_t !== undefined) {
      layers.push({ data: { values: [{ x: fit.cut_t, label: "warm-up cut" }] }, layer: [
        { mark: { type: "rule", color: "#555", strokeDash: [2, 2] }, encoding: { x: { field: "x", type: "quantitative" } } },
        { mark: { type: "text", align: "left", dx: 3, baseline: "top", y: 4, color: "#555" },
          encoding: { x: { field: "x", type: "quantitative" }, text: { field: "label" } } }] });
    }
    return spec({ layer: layers });
  }

  function cpu(view) {
    var rows = (view.plot.cpu || []).filter(function (p) { return isFinite(p.cores); });
    if (!rows.length) { return null; }
    return spec({ data: { values: rows }, mark: { type: "area", line: true, opacity: 0.35, color: "#6a8caf" },
      encoding: { x: { field: "t", type: "quantitative", title: "seconds since the run began" },
                  y: { field: "cores", type: "quantitative", title: "model CPU (cores)" },
                  tooltip: [{ field: "t", format: ".1f" }, { field: "cores", format: ".3f" }] } });
  }

  function perClass(view) {
    var perClassData = (view.report.accuracy || {}).per_class || {}, rows = [];
    Object.keys(perClassData).forEach(function (cls) {
      ["precision", "recall", "f1"].forEach(function (m) {
        var v = perClassData[cls][m];
        if (v !== null && v !== undefined) { rows.push({ cls: cls, metric: m, value: v }); }
      });
    });
    if (!rows.length) { return null; }
    return spec({ data: { values: rows }, mark: "bar",
      encoding: { x: { field: "cls", type: "nominal", title: "class", sort: null }, xOffset: { field: "metric", sort: ["precision", "recall", "f1"] },
                  y: { field: "value", type: "quantitative", title: "score", scale: { domain: [0, 1] } },
                  color: { field: "metric", type: "nominal", sort: ["precision", "recall", "f1"] },
                  tooltip: [{ field: "cls" }, { field: "metric" }, { field: "value", format: ".4f" }] } });
  }

  function confusion(view) {
    var c = (view.report.accuracy || {}).confusion;
    if (!c || !c.labels || !c.labels.length) { return null; }
    var rows = [];
    c.matrix.forEach(function (row, i) {
      row.forEach(function (n, j) { rows.push({ truth: String(c.labels[i]), predicted: String(c.labels[j]), n: n }); });
    });
    var order = c.labels.map(String);
    var size = Math.min(360, 32 * order.length + 60);
    var s = spec({ data: { values: rows }, width: size, height: size, encoding: {
        x: { field: "predicted", type: "nominal", sort: order, title: "predicted" },
        y: { field: "truth", type: "nominal", sort: order, title: "true label" } },
      layer: [{ mark: "rect", encoding: { color: { field: "n", type: "quantitative", title: "samples", scale: { type: "symlog", scheme: "blues" } } } },
              { mark: { type: "text", fontSize: 10 }, encoding: { text: { field: "n" },
                color: { condition: { test: "datum.n > 0 && datum.truth === datum.predicted", value: "white" }, value: "#333" } } }] });
    s.autosize = { type: "pad" };
    return s;
  }

  function classDeltas(view) {
    var pred = view.plot.predecessor, now = (view.report.accuracy || {}).per_class || {};
    if (!pred || !pred.per_class) { return null; }
    var rows = [];
    Object.keys(now).forEach(function (cls) {
      var before = pred.per_class[cls];
      if (!before) { return; }
      ["precision", "recall", "f1"].forEach(function (m) {
        if (now[cls][m] !== null && before[m] !== null && before[m] !== undefined) {
          rows.push({ cls: cls, metric: m, delta: now[cls][m] - before[m] });
        }
      });
    });
    if (!rows.length) { return null; }
    // Bars for the change, a tick on each so "no change at all" still shows; the axis spans at least ±0.02.
    var enc = { x: { field: "cls", type: "nominal", title: "class", sort: null }, xOffset: { field: "metric", sort: ["precision", "recall", "f1"] },
                y: { field: "delta", type: "quantitative", title: "this run − predecessor", axis: { format: "+.3f" } },
                tooltip: [{ field: "cls" }, { field: "metric" }, { field: "delta", format: "+.4f" }] };
    return spec({ data: { values: rows }, encoding: enc, layer: [
      { mark: "bar", encoding: { color: { condition: { test: "datum.delta < 0", value: "#c0392b" }, value: "#2c7a3f" },
                                 y: { field: "delta", type: "quantitative", scale: { domain: { unionWith: [-0.02, 0.02] } } } } },
      { mark: { type: "tick", thickness: 2 }, encoding: { color: { field: "metric", type: "nominal", sort: ["precision", "recall", "f1"] } } }] });
  }

  var CHARTS = [
    ["latency-vs-rate", "Latency against offered rate", "Percentiles of latency from the intended send time, per stage; the objective and the highest sustained rate marked. Dashed: the predecessor.", latencyVsRate],
    ["achieved-vs-offered", "Achieved against offered rate", "Answers per second against the rate offered; on the grey diagonal the model kept up.", achievedVsOffered],
    ["spectrum", "Latency spectrum per stage (the nines)", "HDR percentile spectrum: latency against 1/(1−q) on a log scale, so p99, p99.9 and the tail are spread out.", spectrum],
    ["over-time", "Latency and throughput over time", "Per measurement window where the run had windows (capacity search), else per stage.", overTime],
    ["memory", "Model memory over time", "The model's memory by phase; red: the leak trend over the load window and its band; dashed grey: the predecessor.", memory],
    ["cpu", "Model CPU over time", "Cores busy, from the process tree's CPU seconds between readings.", cpu],
    ["per-class", "Per-class precision, recall and F1", "From the accuracy pass over the hold-out set.", perClass],
    ["confusion", "Confusion matrix", "Rows: true labels; columns: predictions.", confusion],
    ["class-deltas", "Per-class change against the predecessor", "This run minus the predecessor; red is worse.", classDeltas]
  ];

  /* --- the tables ----------------------------------------------------------------------------------- */

  function verdictSection(report) {
    var v = report.verdict;
    if (!v) { return null; }
    var rows = (v.checks || []).map(function (c) {
      var status = c.status + (c.required === false ? " (optional)" : "");
      var pred = c.predecessor === null || c.predecessor === undefined ? "-" : (typeof c.predecessor === "object" ? num(c.predecessor.value) : num(c.predecessor));
      return el("tr", { "class": STATUS_CLASS[c.status] || "" }, [
        el("td", {}, [c.metric]), el("td", { "class": "status" }, [status.toUpperCase()]), el("td", {}, [num(c.value)]),
        el("td", {}, [c.bound === null || c.bound === undefined ? "-" : String(c.bound)]), el("td", {}, [pred]),
        el("td", { "class": "reason" }, [c.reason || ""])]);
    });
    var head = el("tr", {}, ["check", "status", "value", "bound", "predecessor", "reason"].map(function (h) { return el("th", {}, [h]); }));
    return el("section", { id: "verdict" }, [
      el("h2", { "class": "verdict " + (STATUS_CLASS[v.status] || "") }, ["Verdict: " + String(v.status).toUpperCase()]),
      el("p", {}, [v.reason || ""]),
      el("table", { "class": "checks" }, [el("thead", {}, [head]), el("tbody", {}, rows)])]);
  }

  function contextSection(view) {
    var r = view.report, t = r.target || {}, run = r.run || {}, ds = r.dataset || {}, load = r.load || {};
    var ctx = r.context || {};
    var host = [run.host, ctx.host_cpu_model, ctx.host_cores ? ctx.host_cores + " cores" : null]
      .filter(function (x) { return x; }).join(", ");
    var pairs = [
      ["run", run.id], ["status", run.status], ["started", run.started_at], ["finished", run.finished_at],
      ["duration", run.duration_s === undefined || run.duration_s === null ? null : num(run.duration_s) + " s"],
      ["target", t.url], ["model", t.model + (t.version ? " v" + t.version : "")], ["protocol", t.protocol],
      ["client", ctx.client || load.client], ["arrival", load.arrival], ["plan", ctx.plan],
      ["hold-out", ds.path ? ds.path + " (" + num(ds.samples) + " samples)" : null],
      ["hold-out sha256", ds.sha256], ["profiler", r.profiler_version], ["host", host || null],
      ["predecessor", view.plot.predecessor ? view.plot.predecessor.id : (r.predecessor ? r.predecessor.id : "none")]
    ].filter(function (p) { return p[1] !== null && p[1] !== undefined && p[1] !== "undefined"; });
    return el("section", { id: "context" }, [el("h2", {}, ["Context"]),
      el("table", { "class": "context" }, [el("tbody", {}, pairs.map(function (p) { return el("tr", {}, [el("th", {}, [p[0]]), el("td", {}, [String(p[1])])]); }))])]);
  }

  function liveSection(report) {
    var live = report.live;
    if (!live) { return null; }
    var text = "Run " + report.run.id + ": " + report.run.status + " — phase " + (live.phase || "-") +
      (live.current_stage ? ", stage " + live.current_stage : "") + ", stages " + num(live.stages_done) + "/" + num(live.stages_total) +
      ", " + num(live.requests_done) + " requests" + (live.error ? " — error: " + live.error : "");
    return el("p", { id: "live", "class": "live" }, [text]);
  }

  function summarySection(report) {
    var acc = report.accuracy || {}, res = report.resources || {}, mem = res.memory || {}, cap = report.capacity || {};
    var items = [];
    if (cap.max_sustained_rps !== undefined) { items.push("capacity " + num(cap.max_sustained_rps) + " rps" + (cap.lower_bound ? " (lower bound)" : "")); }
    if (acc.accuracy !== undefined) { items.push("accuracy " + num(acc.accuracy) + ", F1 macro " + num(acc.f1_macro)); }
    if (acc.consistency) { items.push("consistency under load: " + num(acc.consistency.inconsistent) + " of " + num(acc.consistency.compared) + " answers differed from the reference"); }
    if (mem.peak_bytes) { items.push("memory peak " + num(mib(mem.peak_bytes)) + " MiB, steady " + num(mib(mem.steady_bytes)) + " MiB"); }
    if (res.leak) { items.push("leak test: " + res.leak.status + (res.leak.reason ? " — " + res.leak.reason : "")); }
    if (!items.length) { return null; }
    return el("ul", { "class": "summary" }, items.map(function (i) { return el("li", {}, [i]); }));
  }

  /* --- drawing --------------------------------------------------------------------------------------- */

  var views = {};

  /* Draw a chart into its figure: rendered off-screen first and swapped in whole, so a refresh never flickers. */
  function draw(figure, key, vlSpec) {
    var holder = figure.querySelector(".plot");
    var fresh = el("div", { "class": "vega" }, []);
    var compiled = vegaLite.compile(vlSpec).spec;
    var chartView = new vega.View(vega.parse(compiled), { renderer: "svg", container: fresh, hover: true });
    return chartView.runAsync().then(function () {
      holder.replaceChildren(fresh);
      if (views[key]) { views[key].finalize(); }
      views[key] = chartView;
      figure.setAttribute("data-rendered", "true");
    }).catch(function (err) {
      holder.replaceChildren(el("p", { "class": "problem" }, ["this chart could not be drawn: " + err]));
      figure.setAttribute("data-rendered", "error");
      throw err;
    });
  }

  /* Put (or replace, or remove) one section: the live line, the verdict and the summary above the charts,
     the context below them. */
  function section(root, id, node) {
    var old = root.querySelector("#" + id);
    if (node) { node.id = id; }
    if (old && node) { old.replaceWith(node); } else if (old) { old.remove(); } else if (node && id === "context") {
      root.appendChild(node);
    } else if (node) { root.insertBefore(node, document.getElementById("charts")); }
  }

  function render(doc) {
    var view = normalise(doc);
    var report = view.report;
    var root = document.getElementById("report");
    var title = "Profile of " + ((report.target || {}).model || "a model") + " — run " + ((report.run || {}).id || "-");
    document.title = title;
    document.getElementById("title").textContent = title;
    section(root, "live", liveSection(report));
    section(root, "verdict", verdictSection(report));
    section(root, "summary", summarySection(report));
    var grid = document.getElementById("charts");
    var jobs = [];
    CHARTS.forEach(function (chart) {
      var vlSpec = chart[3](view);
      var figure = grid.querySelector('figure[data-chart="' + chart[0] + '"]');
      if (!vlSpec) {
        if (figure) { figure.remove(); }
        return;
      }
      if (!figure) {
        figure = el("figure", { "class": "chart", "data-chart": chart[0] }, [
          el("h3", {}, [chart[1]]), el("div", { "class": "plot" }, []), el("figcaption", {}, [chart[2]])]);
        grid.appendChild(figure);
      }
      if (chart[0] === "memory" && view.plot.memory_fit && view.plot.memory_fit.caption) {
        figure.querySelector("figcaption").textContent = chart[2] + " " + view.plot.memory_fit.caption;
      }
      jobs.push(draw(figure, chart[0], vlSpec));
    });
    section(root, "context", contextSection(view));
    return Promise.allSettled(jobs).then(function (results) {
      var failed = results.filter(function (r) { return r.status === "rejected"; }).length;
      document.body.setAttribute("data-charts", String(jobs.length - failed));
      document.body.setAttribute("data-state", failed ? "error" : "ready");
    });
  }

  /* The live page: poll /report (progress while a run is under way), and the finished run's view once. */
  function live(intervalMs) {
    var shown = null;
    function tick() {
      fetch("report", { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (doc) {
        if (doc.run && doc.run.id) {
          if (shown === "done:" + doc.run.id) { return null; }
          return fetch("report?format=view", { cache: "no-store" }).then(function (r) { return r.json(); }).then(function (v) {
            shown = "done:" + doc.run.id;
            return render(v);
          });
        }
        shown = null;
        return render(doc);
      }).catch(function (err) {
        section(document.getElementById("report"), "live", el("p", { "class": "live problem" }, ["cannot reach the sidecar: " + err]));
      }).finally(function () { setTimeout(tick, intervalMs); });
    }
    tick();
  }

  window.profilerReport = { render: render, live: live };
  var data = JSON.parse(document.getElementById("profiler-data").textContent);
  var first = render(data.page);
  if (data.live_interval_ms) { first.finally(function () { setTimeout(function () { live(data.live_interval_ms); }, data.live_interval_ms); }); }
})();
