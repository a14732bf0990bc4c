% ok = s["ready"]
<p class="summary {{"good" if ok else "bad"}}">
% if not s["board"]["ok"]:
  No board: {{s["board"]["error"]}}
% elif ok:
  All {{len(s["executives"])}} executives run.
% else:
  Not running: {{", ".join(s["not_ready"])}}
% end
</p>

% if any(h["name"] != s["hostname"] for h in s["hosts"]):
<section id="hosts">
<h2>Hosts</h2>
<div class="scroll">
<table>
<thead><tr><th>host</th><th>seen</th><th>executives</th><th>load</th><th>CPU</th><th>disk free</th></tr></thead>
<tbody>
% for h in s["hosts"]:
%   health, down = h["health"], [ex for ex in h["executives"] if ex["state"] != "running"]
<tr class="host {{"down" if h["silent"] else ""}}" data-name="{{h["name"]}}">
  <td><b>{{h["name"]}}</b>
  % for ex in down:
    <br><small class="bad">{{ex["name"]}}: {{ex["state"]}}{{": " + ex["last_exit"]["reason"] if ex["last_exit"] else ""}}</small>
  % end
  </td>
  <td><span class="state {{"silent" if h["silent"] else "running"}}">{{"silent" if h["silent"] else "fresh"}}</span>
    <br><small class="muted" title="last seen">{{time.strftime("%H:%M:%S", time.localtime(h["last_seen"]))}}, {{duration(h["age"])}} ago</small></td>
  <td>{{len(h["executives"]) - len(down)}}/{{len(h["executives"])}} running</td>
  <td>{{"%.2f" % health["load"][0] if "load" in health else "–"}}</td>
  <td>{{"%.1f °C" % health["cpu_temperature"] if "cpu_temperature" in health else "–"}}</td>
  <td>{{size(health["disk"]["free_bytes"]) if "disk" in health else "–"}}</td>
</tr>
% end
</tbody>
</table>
</div>
</section>
% end

<section id="executives">
<h2>Executives</h2>
<div class="scroll">
<table>
<thead><tr><th>name</th><th>state</th><th>pid</th><th>up</th><th title="restarts">rst</th><th title="heartbeat age">beat</th><th title="requests / errors">req/err</th></tr></thead>
<tbody>
% for ex in s["executives"]:
<tr class="ex {{"" if ex["ready"] else "down"}}" data-name="{{ex["name"]}}">
  <td><b>{{ex["name"]}}</b>
  % if ex["last_exit"]:
    <br><small class="muted" title="last exit">{{ex["last_exit"]["reason"]}}, {{duration(s["time"] - ex["last_exit"]["at"])}} ago</small>
  % end
  </td>
  <td><span class="state {{ex["state"]}}">{{ex["state"]}}</span></td>
  <td>{{ex["pid"] or "–"}}</td>
  <td>{{duration(ex["uptime"])}}</td>
  <td>{{ex["restarts"]}}</td>
  <td>{{duration(ex["heartbeat_age"])}}</td>
  <td>{{ex["requests"]}}/<span class="{{"bad" if ex["errors"] else ""}}">{{ex["errors"]}}</span></td>
</tr>
% end
</tbody>
</table>
</div>
</section>

<section id="devices">
<h2>Devices</h2>
% if not s["devices"]:
<p class="muted">No device values yet.</p>
% else:
<table>
<tbody>
% for dev in s["devices"]:
<tr class="device {{"stale" if dev["stale"] else ""}}" data-name="{{dev["name"]}}">
  <td>{{dev["name"]}}<br><small class="muted">{{duration(dev["age"])}} ago{{" · stale" if dev["stale"] else ""}}</small></td>
  <td class="value">{{reading(dev["value"])}}&nbsp;{{dev["unit"]}}</td>
  <td><button type="button" class="plot" data-device="{{dev["name"]}}" aria-label="plot of {{dev["name"]}}">{{!sparkline(dev["history"]) or "plot"}}</button></td>
% if actions and dev.get("oid") in SWITCHES:
  <td><button type="button" class="toggle" data-device="{{dev["name"]}}" aria-pressed="{{"true" if dev["value"] else "false"}}">{{"on" if dev["value"] else "off"}}</button></td>
% elif actions and dev.get("oid") in DIMMERS and isinstance(dev["value"], (int, float)):
  <td><input type="range" class="dimmer" min="0" max="100" step="1" value="{{dev["value"]}}" data-device="{{dev["name"]}}" aria-label="level of {{dev["name"]}}"></td>
% end
</tr>
% end
</tbody>
</table>
% end
</section>

% if s["scenarios"]:
<section id="scenarios">
<h2>Scenarios</h2>
<table>
<tbody>
% for sc in s["scenarios"]:
%   params = sc["params"]
%   marks = all(isinstance(params.get(k), (int, float)) and not isinstance(params.get(k), bool) for k in ("low", "high"))
<tr class="scenario" data-name="{{sc["name"]}}">
  <td>{{sc["name"]}}<br><small class="muted">{{"running" if sc["running"] else "idle"}}</small></td>
  <td>
% if actions:
    <button type="button" class="active" data-scenario="{{sc["name"]}}" aria-pressed="{{"true" if sc["active"] else "false"}}">{{"enabled" if sc["active"] else "disabled"}}</button>
% else:
    {{"enabled" if sc["active"] else "disabled"}}
% end
  </td>
  <td>
% if marks and actions:
    <form class="marks" data-scenario="{{sc["name"]}}">
      <label>low <input type="number" name="low" step="0.1" value="{{params["low"]}}" required></label>
      <label>high <input type="number" name="high" step="0.1" value="{{params["high"]}}" required></label>
      <button type="submit">Set</button>
    </form>
% elif marks:
    {{reading(params["low"])}} – {{reading(params["high"])}}
% end
  </td>
</tr>
% end
</tbody>
</table>
</section>
% end

<section id="services">
<h2>Services</h2>
% broker = s["broker"]
% if not broker["up"]:
<p class="bad">Broker not answering{{": " + broker["error"] if broker["error"] else ""}}.
% if broker["age"] is not None:
 Last answer {{duration(broker["age"])}} ago.
% end
</p>
% end
% if not s["services"] and broker["up"]:
<p class="muted">No services registered with the broker.</p>
% elif s["services"]:
<table>
<thead><tr><th>service</th><th>workers</th><th>idle</th><th>queued</th></tr></thead>
<tbody>
% for svc in s["services"]:
<tr class="{{"" if svc["workers"] else "down"}}"><td>{{svc["name"]}}</td><td>{{svc["workers"]}}</td><td>{{svc["idle"]}}</td><td>{{svc["queued"]}}</td></tr>
% end
</tbody>
</table>
% end
</section>

% host = s["host"]
% if host:
<section id="host">
<h2>Host</h2>
<dl>
% if "cpu_temperature" in host:
  <dt>CPU</dt><dd class="{{"bad" if host["cpu_temperature"] >= 80 else ""}}">{{"%.1f" % host["cpu_temperature"]}} °C</dd>
% end
% if "throttled" in host:
%   flags = [name.replace("_", " ") for name, on in host["throttled"].items() if on is True]
  <dt>Power</dt><dd class="{{"bad" if flags else ""}}">{{", ".join(flags) if flags else "no under-voltage or throttling"}}</dd>
% elif "under_voltage" in host:
  <dt>Power</dt><dd class="{{"bad" if host["under_voltage"] else ""}}">{{"under-voltage" if host["under_voltage"] else "voltage fine"}}</dd>
% end
% if "disk" in host:
  <dt>Disk</dt><dd>{{size(host["disk"]["free_bytes"])}} free of {{size(host["disk"]["total_bytes"])}}</dd>
% end
% if "load" in host:
  <dt>Load</dt><dd>{{" ".join("%.2f" % x for x in host["load"])}}</dd>
% end
</dl>
</section>
% end

% if s["events"]:
<section id="events">
<h2>Events</h2>
<ul>
% for ev in s["events"]:
  <li><small class="muted">{{time.strftime("%H:%M:%S", time.localtime(ev["time"]))}}</small> {{ev["name"]}}: {{reading(ev["value"])}}</li>
% end
</ul>
</section>
% end
