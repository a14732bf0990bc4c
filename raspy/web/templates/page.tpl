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
<main id="status" data-refresh="{{refresh}}">
% include("fragment.tpl")
</main>
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
