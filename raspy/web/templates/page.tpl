<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{s["hostname"]}} · RasPy</title>
<link rel="stylesheet" href="static/status.css">
</head>
<body>
<header>
  <h1>{{s["hostname"]}}</h1>
  <span id="updated" class="muted">as of {{time.strftime("%H:%M:%S", time.localtime(s["time"]))}}</span>
</header>
% if actions:
<form id="token-form" class="token">
  <label>Token <input type="password" id="token" autocomplete="current-password" placeholder="kept in this browser"></label>
  <button type="submit">Keep</button>
  <span id="token-state" class="muted"></span>
</form>
% end
<p id="message" class="muted" role="status"></p>
<main id="status" data-refresh="{{refresh}}">
% include("fragment.tpl")
</main>
<section id="plot" hidden>
  <h2 id="plot-title">Plot</h2>
  <div class="ranges">
    <button type="button" data-range="24h">24 h</button>
    <button type="button" data-range="7d">7 days</button>
    <button type="button" data-range="1y">1 year</button>
    <button type="button" id="plot-close">Close</button>
  </div>
  <div id="plot-area"></div>
</section>
% if actions:
<section id="actions">
  <h2>Actions</h2>
  <form method="post" action="restart">
    <label>Executive
      <select name="name">
      % for ex in s["executives"]:
        <option>{{ex["name"]}}</option>
      % end
      </select>
    </label>
    <label>Token <input type="password" name="token" autocomplete="current-password" required></label>
    <button type="submit">Restart</button>
  </form>
</section>
% end
<script src="static/status.js"></script>
</body>
</html>
