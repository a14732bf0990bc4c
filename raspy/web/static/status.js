// The page's own script: refetch the content every few seconds, act on devices and scenarios,
// and draw a device's history. Nothing is fetched from anywhere but this page's server.
(function () {
  "use strict";
  var main = document.getElementById("status");
  var note = document.getElementById("updated");
  var message = document.getElementById("message");
  var every = (parseFloat(main.getAttribute("data-refresh")) || 5) * 1000;
  var KEY = "raspy.token";  // the token lives in this browser's localStorage: never a cookie, never a URL
  var busy = 0;             // actions waiting for their answer: the content is not replaced meanwhile
  var timer = null;

  function token() {
    try { return window.localStorage.getItem(KEY) || ""; } catch (e) { return ""; }
  }

  function say(text, bad) {
    message.textContent = text;
    message.className = bad ? "bad" : "muted";
  }

  function refresh() {
    clearTimeout(timer);
    var editing = main.contains(document.activeElement) && document.activeElement.tagName === "INPUT";
    if (busy || editing) { timer = setTimeout(refresh, every); return; }
    fetch("fragment", {cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
      .then(function (html) {
        if (busy) { return; }
        main.innerHTML = html;
        note.textContent = "as of " + new Date().toLocaleTimeString();
        note.className = "muted live";
      })
      .catch(function (err) { note.textContent = "offline (" + err.message + "), retrying"; note.className = "bad"; })
      .then(function () { timer = setTimeout(refresh, every); });
  }
  timer = setTimeout(refresh, every);

  // -- actions: each shows what the house answers, never what was asked -------------

  function post(path, body) {
    return fetch(path, {
      method: "POST", cache: "no-store", body: JSON.stringify(body || {}),
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token()}
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) { throw new Error(data.error || "HTTP " + r.status); }
        return data;
      });
    });
  }

  function act(control, path, body, show) {
    busy += 1;
    control.disabled = true;
    control.classList.add("pending");
    say("…");
    return post(path, body)
      .then(function (answer) { show(answer); say("done: " + control.getAttribute("data-device") || ""); })
      .catch(function (err) { say(err.message, true); })
      .then(function () {
        busy -= 1;
        control.disabled = false;
        control.classList.remove("pending");
        refresh();
      });
  }

  function devicePath(name) { return "api/devices/" + encodeURIComponent(name) + "/set"; }

  function showSwitch(button, on) {
    button.setAttribute("aria-pressed", on ? "true" : "false");
    button.textContent = on ? "on" : "off";
  }

  main.addEventListener("click", function (ev) {
    var toggle = ev.target.closest("button.toggle");
    if (toggle) {
      var wanted = toggle.getAttribute("aria-pressed") !== "true";
      act(toggle, devicePath(toggle.getAttribute("data-device")), {value: wanted},
          function (reading) { showSwitch(toggle, reading.value === true); });
      return;
    }
    var active = ev.target.closest("button.active");
    if (active) {
      var name = active.getAttribute("data-scenario");
      var verb = active.getAttribute("aria-pressed") === "true" ? "disable" : "enable";
      act(active, "api/scenarios/" + encodeURIComponent(name) + "/" + verb, {}, function (state) {
        active.setAttribute("aria-pressed", state.active ? "true" : "false");
        active.textContent = state.active ? "enabled" : "disabled";
      });
      return;
    }
    var plot = ev.target.closest("button.plot");
    if (plot) { openPlot(plot.getAttribute("data-device"), "24h"); }
  });

  main.addEventListener("change", function (ev) {
    var dimmer = ev.target.closest("input.dimmer");
    if (dimmer) {
      act(dimmer, devicePath(dimmer.getAttribute("data-device")), {value: parseFloat(dimmer.value)},
          function (reading) { dimmer.value = reading.value; });
    }
  });

  main.addEventListener("submit", function (ev) {
    var form = ev.target.closest("form.marks");
    if (!form) { return; }
    ev.preventDefault();
    var low = form.elements.low, high = form.elements.high;
    var button = form.querySelector("button");
    act(button, "api/scenarios/" + encodeURIComponent(form.getAttribute("data-scenario")) + "/params",
        {params: {low: parseFloat(low.value), high: parseFloat(high.value)}},
        function (definition) {
          var params = (definition.conf || {}).params || {};
          low.value = params.low;
          high.value = params.high;
        });
  });

  var tokenForm = document.getElementById("token-form");
  if (tokenForm) {
    var field = document.getElementById("token");
    var state = document.getElementById("token-state");
    state.textContent = token() ? "kept" : "none kept";
    tokenForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      try { window.localStorage.setItem(KEY, field.value); } catch (e) { say("this browser keeps nothing", true); }
      field.value = "";
      state.textContent = token() ? "kept" : "none kept";
    });
  }

  // -- the plot: time on x, value on y, drawn here as SVG ----------------------------

  var SVG = "http://www.w3.org/2000/svg";
  var box = document.getElementById("plot");
  var area = document.getElementById("plot-area");
  var title = document.getElementById("plot-title");
  var shown = null;

  function node(name, attrs, text) {
    var el = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    if (text !== undefined) { el.textContent = text; }
    return el;
  }

  function label(t, span) {
    var d = new Date(t * 1000);
    if (span <= 2 * 86400) { return d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"}); }
    return d.toLocaleDateString([], {month: "short", day: "numeric"});
  }

  function draw(data) {
    var W = Math.max(300, Math.min(900, area.clientWidth || 640)), H = 260, L = 52, R = 10, T = 10, B = 30;
    var pts = data.points;
    var svg = node("svg", {viewBox: "0 0 " + W + " " + H, "class": "plot", role: "img",
                           "aria-label": "history of " + data.device});
    if (!pts.length) {
      svg.appendChild(node("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, "no readings in this range"));
      return svg;
    }
    var t0 = data.from, t1 = data.to, lo = Infinity, hi = -Infinity;
    pts.forEach(function (p) {
      lo = Math.min(lo, p.length > 2 ? p[2] : p[1]);
      hi = Math.max(hi, p.length > 2 ? p[3] : p[1]);
    });
    if (hi === lo) { hi += 1; lo -= 1; }
    function x(t) { return (L + (t - t0) / (t1 - t0) * (W - L - R)).toFixed(1); }
    function y(v) { return (T + (hi - v) / (hi - lo) * (H - T - B)).toFixed(1); }
    svg.appendChild(node("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, "class": "axis"}));
    svg.appendChild(node("line", {x1: L, y1: T, x2: L, y2: H - B, "class": "axis"}));
    for (var i = 0; i <= 4; i++) {
      var v = lo + (hi - lo) * i / 4, yy = y(v);
      svg.appendChild(node("line", {x1: L, y1: yy, x2: W - R, y2: yy, "class": "grid"}));
      svg.appendChild(node("text", {x: L - 4, y: yy, "text-anchor": "end", "dominant-baseline": "middle"},
                           String(Math.round(v * 100) / 100)));
      var t = t0 + (t1 - t0) * i / 4;
      if (W < 500 && i % 2) { continue; }  // a phone has room for three times
      svg.appendChild(node("text", {x: x(t), y: H - B + 16, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle"},
                           label(t, t1 - t0)));
    }
    if (data.unit) { svg.appendChild(node("text", {x: L + 4, y: T + 12, "class": "unit"}, data.unit)); }
    if (pts[0].length > 2) {  // consolidated: the band from min to max, under the mean
      var band = pts.map(function (p) { return x(p[0]) + "," + y(p[3]); })
        .concat(pts.slice().reverse().map(function (p) { return x(p[0]) + "," + y(p[2]); }));
      svg.appendChild(node("polygon", {points: band.join(" "), "class": "band"}));
    }
    svg.appendChild(node("polyline", {points: pts.map(function (p) { return x(p[0]) + "," + y(p[1]); }).join(" "),
                                      "class": "line"}));
    return svg;
  }

  function openPlot(device, range) {
    shown = device;
    box.hidden = false;
    title.textContent = device + " · " + range;
    area.textContent = "…";
    fetch("api/history?device=" + encodeURIComponent(device) + "&range=" + range + "&points=600", {cache: "no-store"})
      .then(function (r) { return r.json().then(function (d) { if (!r.ok) { throw new Error(d.error || "HTTP " + r.status); } return d; }); })
      .then(function (data) { area.textContent = ""; area.appendChild(draw(data)); })
      .catch(function (err) { area.textContent = "no history: " + err.message; });
    box.scrollIntoView({block: "nearest"});
  }

  box.addEventListener("click", function (ev) {
    var range = ev.target.getAttribute("data-range");
    if (range && shown) { openPlot(shown, range); }
    if (ev.target.id === "plot-close") { box.hidden = true; shown = null; }
  });
})();
