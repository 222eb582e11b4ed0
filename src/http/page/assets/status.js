// Live updates for the status page, no dependencies. Every second it asks
// the JSON API for what the page was rendered from (the counts by state,
// or one agent's state); when that changed, or every 30 s, it fetches the
// page again and swaps the live parts in place (focus and the filter form
// are kept). Relative times ("3m 20s ago") tick in between.
(function () {
  "use strict";
  var body = document.body;
  var poll = body.dataset.poll;
  var key = body.dataset.key;
  var live = document.getElementById("live");
  var base = Date.now();
  var swapped = Date.now();
  var busy = false;

  function span(s) {
    s = Math.abs(Math.round(s));
    var d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    s = s % 60;
    if (d) return d + "d" + (h ? " " + h + "h" : "");
    if (h) return h + "h" + (m ? " " + m + "m" : "");
    if (m) return m + "m" + (s ? " " + s + "s" : "");
    return s + "s";
  }

  function tick() {
    var gone = (Date.now() - base) / 1000;
    var els = document.querySelectorAll("[data-age]");
    for (var i = 0; i < els.length; i++) {
      var age = Number(els[i].dataset.age) + gone;
      els[i].textContent = age < 0 ? "in " + span(age) : span(age) + " ago";
    }
  }

  function say(text, paused) {
    if (!live) return;
    if (live.textContent !== text) live.textContent = text;
    live.classList.toggle("paused", !!paused);
  }

  function keyOf(j) {
    if (j.counts) {
      return ["healthy", "stale", "failing", "missing", "unknown"].map(function (s) {
        return j.counts[s] || 0;
      }).join(",");
    }
    return j.agent ? j.agent.state : "";
  }

  function swap() {
    return fetch(location.href, { cache: "no-store" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    }).then(function (text) {
      var doc = new DOMParser().parseFromString(text, "text/html");
      var parts = document.querySelectorAll("[data-live]");
      for (var i = 0; i < parts.length; i++) {
        var next = doc.getElementById(parts[i].id);
        if (next) parts[i].replaceWith(document.importNode(next, true));
      }
      key = doc.body.dataset.key;
      base = swapped = Date.now();
    });
  }

  function check() {
    if (!poll || busy || document.hidden) return;
    busy = true;
    fetch(poll, { cache: "no-store", headers: { accept: "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (j) {
      if (keyOf(j) !== key || Date.now() - swapped > 30000) return swap();
    }).then(function () {
      say("Live updates on", false);
    }).catch(function (e) {
      say("Live updates paused (" + e.message + ")", true);
    }).then(function () {
      busy = false;
    });
  }

  if (!poll) say("Live updates off", true);
  setInterval(tick, 1000);
  setInterval(check, 1000);
})();
