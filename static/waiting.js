/* Flashgate waiting room: live updates via SSE, polling fallback. No deps, no innerHTML. */
(function () {
  'use strict';
  var root = document.getElementById('fg');
  if (!root || !window.fetch) return;
  var cfg = root.dataset;
  var T = {
    unknown: '—', etaUnknown: 'Not known yet', now: 'Starting now…',
    lost: 'Connection lost. Retrying…',
    lessMin: 'less than a minute', about: 'about ', min: ' minute', mins: ' minutes', hour: ' hour', hours: ' hours',
    day: ' day ', days: ' days ', number: 'You are number ', inLine: ' in line.', wait: ' Estimated wait: ',
    thanks: 'Thanks for telling us!', rated: 'You already rated your wait. Thanks!',
    rateFailed: 'Your rating could not be sent. Please try again.'
  };
  var QUEUE = { queueing: 1, paused: 1, queue_all: 1, draining: 1 };
  var es = null, pollTimer = 0, tickTimer = 0, started = false, done = false, failures = 0, lastPoll = 0;
  var skew = 0; // server clock minus local clock (ms), from the Date header
  // The ticket an event stream renewed last (each event's id): the cookie keeps the one the
  // stream opened with, so it goes with every request made after the stream.
  var token = '';
  var startsAt = Date.parse(cfg.startsAt || '') || 0;
  var spoken = '', spokenAt = Date.now(), baseTitle = document.title;

  function $(id) { return document.getElementById('fg-' + id); }
  function setText(id, v) { var el = $(id); if (el && el.textContent !== v) el.textContent = v; }
  function getText(id) { var el = $(id); return el ? el.textContent : ''; }
  function show(el, on) { if (el) el.hidden = !on; }
  function num(v) { return typeof v === 'number' && isFinite(v) ? v : null; }
  function fmtInt(v) { v = num(v); return v === null ? T.unknown : Math.round(v).toLocaleString(); }
  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function unit(n, one, many) { return n + (n === 1 ? one : many); }

  // ETA band, e.g. "less than a minute", "about 3 minutes", "3–5 minutes", "1–2 hours".
  function fmtEta(lo, hi, mid) {
    lo = num(lo); hi = num(hi); mid = num(mid);
    if (lo === null && hi === null) { if (mid === null) return T.etaUnknown; lo = hi = mid; }
    if (lo === null) lo = hi; else if (hi === null || hi < lo) hi = lo;
    if (hi < 60) return T.lessMin;
    var hours = hi >= 5400, d = hours ? 3600 : 60;
    var a = Math.max(1, Math.round(lo / d)), b = Math.max(a, Math.round(hi / d));
    var one = hours ? T.hour : T.min, many = hours ? T.hours : T.mins;
    return a === b ? T.about + unit(a, one, many) : a + '–' + b + many;
  }

  function fmtCountdown(ms) {
    var s = Math.ceil(ms / 1000), d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24,
        m = Math.floor(s / 60) % 60, out = (d || h) ? h + ':' + pad(m) : String(m);
    return (d ? unit(d, T.day, T.days) : '') + out + ':' + pad(s % 60);
  }

  function safeUrl(u, sameOrigin) {
    if (typeof u !== 'string' || !u) return '';
    try {
      var x = new URL(u, location.href);
      if (sameOrigin ? x.origin === location.origin : /^https?:$/.test(x.protocol)) return x.href;
    } catch (e) { /* not a URL */ }
    return '';
  }

  function announce(msg, now) {
    if (!msg || msg === spoken || (!now && Date.now() - spokenAt < 30000)) return;
    spoken = msg; spokenAt = Date.now(); setText('live', msg);
  }

  function showStart() {
    var el = $('starts');
    if (!el) return;
    show(el.parentNode, startsAt > 0);
    if (!startsAt) { el.textContent = ''; return; }
    el.dateTime = new Date(startsAt).toISOString();
    try { el.textContent = new Date(startsAt).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }); }
    catch (e) { el.textContent = new Date(startsAt).toLocaleString(); }
  }

  function tick() {
    clearTimeout(tickTimer);
    var on = cfg.state === 'prequeue' && startsAt > 0;
    show($('countdown-wrap'), on);
    if (!on) return;
    var ms = startsAt - (Date.now() + skew);
    setText('countdown', ms > 0 ? fmtCountdown(ms) : T.now);
    if (ms > 0) tickTimer = setTimeout(tick, (ms % 1000) || 1000);
  }

  function apply(s) {
    if (!s || typeof s !== 'object' || done) return;
    if (s.admitted === true) { admit(s.redirect); return; }
    var state = typeof s.state === 'string' && /^[a-z_]{1,32}$/.test(s.state) ? s.state : cfg.state;
    var changed = state !== cfg.state;
    cfg.state = state; // updates data-state, which drives the CSS
    if ('position' in s) setText('position', fmtInt(s.position));
    if ('ahead' in s) setText('ahead', fmtInt(s.ahead));
    if ('eta_seconds' in s || 'eta_low_seconds' in s || 'eta_high_seconds' in s) {
      setText('eta', fmtEta(s.eta_low_seconds, s.eta_high_seconds, s.eta_seconds));
    }
    var p = num(s.progress), bar = $('progress');
    if (p !== null && bar) {
      p = Math.round(Math.min(1, Math.max(0, p)) * 100);
      bar.value = p; bar.textContent = p + '%';
    }
    if ('message' in s) setText('message', typeof s.message === 'string' ? s.message : '');
    if ('starts_at' in s) {
      var t = typeof s.starts_at === 'string' ? Date.parse(s.starts_at) || 0 : 0;
      if (t !== startsAt) { startsAt = t; showStart(); }
    }
    if ('prequeue_count' in s) {
      var c = num(s.prequeue_count), cel = $('prequeue-count');
      setText('prequeue-count', c === null ? '' : fmtInt(c));
      if (cel) show(cel.parentNode, c !== null);
    }
    if (typeof s.seed_hash === 'string' && s.seed_hash) { setText('seed-hash', s.seed_hash); show($('fair'), true); }
    if (typeof s.seed === 'string' && s.seed) { setText('seed', s.seed); show($('seed-p'), true); }
    tick();

    var pos = num(s.position), note = root.querySelector('.n-' + state + ' h2');
    var msg = note ? note.textContent : '';
    if (QUEUE[state] && pos !== null) {
      msg += ' ' + T.number + fmtInt(pos) + T.inLine + T.wait + getText('eta') + '.';
      document.title = '#' + fmtInt(pos) + ' · ' + baseTitle;
    } else {
      document.title = baseTitle;
    }
    announce(msg, changed);
  }

  function parse(text) { try { return JSON.parse(text); } catch (e) { return null; } }

  function headers() {
    var h = { Accept: 'application/json' };
    if (token) h['X-Flashgate-Token'] = token;
    return h;
  }

  function admit(redirect) {
    if (done) return;
    done = true;
    if (es) es.close();
    clearTimeout(pollTimer);
    clearTimeout(tickTimer);
    var url = safeUrl(redirect, false) || safeUrl(cfg.returnTo, true) || '/';
    cfg.state = 'admitted';
    var go = $('go');
    if (go) go.href = url;
    var enter = function () { location.replace(url); };
    // The stream renewed the ticket in its events only: have the cookie renewed, then go in.
    if (!token || !cfg.statusUrl) return enter();
    fetch(cfg.statusUrl, { headers: headers(), credentials: 'same-origin', cache: 'no-store' })
      .then(enter, enter);
  }

  function offline(bad) {
    failures = bad ? failures + 1 : 0;
    setText('conn', failures >= 2 ? T.lost : '');
  }

  function schedule(ms) {
    clearTimeout(pollTimer);
    if (!done) pollTimer = setTimeout(poll, ms * (0.9 + Math.random() * 0.2));
  }

  function poll() {
    if (done || !cfg.statusUrl) return;
    clearTimeout(pollTimer);
    lastPoll = Date.now();
    var delay = 5000;
    fetch(cfg.statusUrl, { headers: headers(), credentials: 'same-origin', cache: 'no-store' })
      .then(function (res) {
        var date = Date.parse(res.headers.get('Date') || '');
        if (date) { var k = date + 500 - Date.now(); skew = Math.abs(k) > 2000 && Math.abs(k) < 864e5 ? k : 0; }
        if (!res.ok) {
          offline(true);
          var ra = parseInt(res.headers.get('Retry-After') || '', 10);
          delay = ra > 0 ? ra * 1000 : Math.min(30000, 2500 * Math.pow(2, failures));
          return null;
        }
        return res.text().then(function (body) {
          offline(false);
          var s = parse(body);
          if (s && typeof s === 'object') {
            var after = num(s.poll_after_ms);
            if (after !== null) delay = Math.max(1000, after);
            apply(s);
          }
        });
      })
      .catch(function () {
        offline(true);
        delay = Math.min(30000, 2500 * Math.pow(2, failures));
      })
      .then(function () { schedule(delay); });
  }

  function connect() {
    if (done) return;
    if (cfg.eventsUrl && window.EventSource) {
      try {
        var open = false;
        es = new EventSource(cfg.eventsUrl);
        es.onopen = function () { open = true; offline(false); };
        es.onmessage = function (e) { if (e.lastEventId) token = e.lastEventId; apply(parse(e.data)); };
        es.addEventListener('renew', function (e) { if (e.lastEventId) token = e.lastEventId; });
        es.onerror = function () {
          // The server ends a stream now and then: the browser reconnects by itself after the
          // stream's `retry`, sending the last renewed ticket as Last-Event-ID.
          if (open && es && es.readyState === EventSource.CONNECTING) { open = false; return; }
          // It could not (re)connect: poll instead, spread out so that a server restart
          // doesn't cause a stampede.
          if (es) { es.close(); es = null; }
          schedule(1000 + Math.random() * 4000);
        };
        return;
      } catch (e) { es = null; }
    }
    poll();
  }

  // <meta refresh> is for visitors without JS. Removing it doesn't cancel an
  // already-parsed refresh everywhere, but window.stop() does; its timer starts
  // only after the load event. Live updates start afterwards, since stop() would
  // abort them too. Don't wait more than 10 s for a slow logo.
  Array.prototype.forEach.call(document.querySelectorAll('meta[http-equiv]'), function (m) {
    if (m.httpEquiv.toLowerCase() === 'refresh') m.parentNode.removeChild(m);
  });
  function start() {
    if (started) return;
    started = true;
    try { window.stop(); } catch (e) { /* old browser */ }
    connect();
  }
  if (document.readyState === 'complete') start();
  else { window.addEventListener('load', start); setTimeout(start, 10000); }

  showStart();
  tick();
  if (!getText('seed-hash')) show($('fair'), false);
  var count = $('prequeue-count');
  if (count && !count.textContent) show(count.parentNode, false);

  // Feedback pulse: send the tapped rating with fetch and thank in place. Without JS the form
  // posts and its 303 comes back to #fg-thanks.
  var rate = $('rate');
  function sendRating(btn) {
    var url = safeUrl(rate.getAttribute('action'), true), buttons = rate.querySelectorAll('button');
    var busy = function (on) { Array.prototype.forEach.call(buttons, function (b) { b.disabled = on; }); };
    var status = $('rate-status');
    busy(true);
    fetch(url, {
      method: 'POST', credentials: 'same-origin', cache: 'no-store',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ rating: parseInt(btn.value, 10) })
    }).then(function (res) {
      if (!res.ok && res.status !== 429) throw new Error(String(res.status));
      rate.classList.add('done'); // hides the buttons
      setText('rate-status', res.ok ? T.thanks : T.rated);
      if (status) { status.tabIndex = -1; status.focus(); } // the focused button is gone
    }).catch(function () {
      busy(false);
      setText('rate-status', T.rateFailed);
    });
  }
  if (rate && safeUrl(rate.getAttribute('action'), true)) {
    Array.prototype.forEach.call(rate.querySelectorAll('button[name=rating]'), function (b) {
      b.addEventListener('click', function (e) { e.preventDefault(); sendRating(b); });
    });
  }

  function wake() { // catch up after the tab was hidden or offline (polling mode only)
    if (started && !done && !es && !document.hidden && Date.now() - lastPoll > 5000) poll();
  }
  document.addEventListener('visibilitychange', wake);
  window.addEventListener('online', wake);
  window.addEventListener('pageshow', function (e) { if (e.persisted) location.reload(); });
})();
