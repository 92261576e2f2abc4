/* Flashgate challenge page: solve the proof of work in Web Workers, post it, go back.
 * No deps, no innerHTML, no external requests. Strings to translate are in T. */
(function () {
  'use strict';
  var root = document.getElementById('fg-challenge');
  if (!root) return;
  var cfg = root.dataset;
  var T = {
    working: 'Working… ', checking: 'Checking the answer…', done: 'Done. Taking you to the shop…',
    tried: ' tried', noWorker: 'Your browser can’t run this check (Web Workers are unavailable). Please try another browser.',
    failed: 'The check didn’t work. Please try again.',
    offline: 'We couldn’t reach the shop. Retrying…', busy: 'The shop is very busy. Retrying…'
  };
  var RETRIES_KEY = 'fg-challenge-retries';
  var difficulty = Math.min(64, Math.max(0, parseInt(cfg.difficulty, 10) || 0));
  var expected = Math.pow(2, difficulty);
  var workers = [], counts = [], finished = false, lastShown = 0, lastSpoken = 0, posts = 0;

  function $(id) { return document.getElementById('fg-' + id); }
  function setText(id, v) { var el = $(id); if (el && el.textContent !== v) el.textContent = v; }
  // The visible status, and (for screen readers) the live region at most every 10 s unless
  // `now` is set.
  function say(msg, now) {
    setText('status', msg);
    if (now || Date.now() - lastSpoken > 10000) { lastSpoken = Date.now(); setText('live', msg); }
  }
  function store(fn) { try { return fn(window.sessionStorage); } catch (e) { return null; } }

  function safeUrl(u) {
    if (typeof u !== 'string' || !u) return '';
    try {
      var x = new URL(u, location.href);
      if (x.origin === location.origin) return x.href;
    } catch (e) { /* not a URL */ }
    return '';
  }

  function stop() {
    workers.forEach(function (w) { w.terminate(); });
    workers = [];
  }

  function fail(msg) {
    finished = true;
    stop();
    var bar = $('progress');
    if (bar) bar.value = 0;
    say('', true);
    setText('error', msg);
    var retry = $('retry');
    if (retry) { retry.href = safeUrl(cfg.returnTo) || '/'; retry.hidden = false; }
  }

  function fmt(n) {
    if (n >= 1e6) return (Math.round(n / 1e5) / 10).toLocaleString() + ' million';
    return Math.round(n).toLocaleString();
  }

  function progress() {
    if (finished || Date.now() - lastShown < 200) return;
    lastShown = Date.now();
    var total = 0;
    for (var i = 0; i < counts.length; i++) total += counts[i] || 0;
    // The chance of having found it by now: 1 - e^(-tries / expected). Never shows 100
    // before the answer is in.
    var pct = Math.min(99, Math.floor((1 - Math.exp(-total / expected)) * 100));
    var bar = $('progress');
    if (bar) { bar.value = pct; bar.textContent = pct + '%'; }
    say(T.working + pct + '% (' + fmt(total) + T.tried + ')');
  }

  // A fresh challenge: reload the page (the gate issues a new one), at most 3 times in a row.
  function again() {
    var n = store(function (s) { return parseInt(s.getItem(RETRIES_KEY) || '0', 10) || 0; }) || 0;
    if (n >= 3) {
      store(function (s) { s.removeItem(RETRIES_KEY); });
      fail(T.failed);
      return;
    }
    store(function (s) { s.setItem(RETRIES_KEY, String(n + 1)); });
    location.reload();
  }

  function submit(counter) {
    posts++;
    say(T.checking, true);
    var body = 'room=' + encodeURIComponent(cfg.room || '') +
      '&challenge=' + encodeURIComponent(cfg.challenge || '') +
      '&counter=' + encodeURIComponent(String(counter)) +
      '&return=' + encodeURIComponent(cfg.returnTo || '/');
    fetch(cfg.submitUrl, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
      credentials: 'same-origin',
      cache: 'no-store',
      body: body
    }).then(function (res) {
      return res.text().then(function (text) {
        var json = null;
        try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
        return { status: res.status, json: json, retryAfter: parseInt(res.headers.get('Retry-After') || '', 10) };
      });
    }).then(function (r) {
      var j = r.json && typeof r.json === 'object' ? r.json : {};
      if (j.ok === true) {
        store(function (s) { s.removeItem(RETRIES_KEY); });
        var bar = $('progress');
        if (bar) { bar.value = 100; bar.textContent = '100%'; }
        say(T.done, true);
        location.replace(safeUrl(j.redirect) || safeUrl(cfg.returnTo) || '/');
      } else if (j.retry === true) {
        again();
      } else if ((r.status === 429 || r.status >= 500) && posts < 5) {
        // Busy (or too many tries from this address): the same answer stays valid for a while.
        say(T.busy, true);
        var wait = r.retryAfter > 0 ? r.retryAfter * 1000 : 3000;
        setTimeout(function () { submit(counter); }, Math.min(30000, wait) * (0.8 + Math.random() * 0.4));
      } else {
        fail(T.failed);
      }
    }).catch(function () {
      if (posts >= 5) { fail(T.failed); return; }
      say(T.offline, true);
      setTimeout(function () { submit(counter); }, 3000 * posts);
    });
  }

  function found(counter) {
    if (finished) return;
    finished = true;
    stop();
    submit(counter);
  }

  function start() {
    if (!cfg.challenge || !cfg.workerUrl) return;
    if (!window.Worker || !window.fetch) { fail(T.noWorker); return; }
    var n = Math.max(1, Math.min(4, (navigator.hardwareConcurrency || 2) - 1));
    var broken = 0;
    for (var i = 0; i < n; i++) {
      (function (hi) {
        var w;
        try { w = new Worker(cfg.workerUrl); } catch (e) { broken++; return; }
        counts[hi] = 0;
        w.onmessage = function (e) {
          var m = e.data || {};
          if (m.type === 'progress') { counts[hi] = m.done; progress(); }
          else if (m.type === 'found' && typeof m.counter === 'number') { counts[hi] = m.done; found(m.counter); }
        };
        w.onerror = function () {
          broken++;
          if (broken >= n && !finished) fail(T.noWorker);
        };
        w.postMessage({ challenge: cfg.challenge, difficulty: difficulty, hi: hi });
        workers.push(w);
      })(i);
    }
    if (broken >= n) fail(T.noWorker);
    else say(T.working + '0%', true);
  }

  window.addEventListener('pageshow', function (e) { if (e.persisted) location.reload(); });
  start();
})();
