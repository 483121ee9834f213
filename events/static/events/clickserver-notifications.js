  // --- notifications (docs/campaigns.md), served only to shops running an on-site campaign ---
  (function (N) {
    var SEEN = '_cs_seen', box, props;
    function seen(id) { return (' ' + (getLS(SEEN) || '') + ' ').indexOf(' ' + id + ' ') >= 0; }
    function el(tag, text) { var e = d.createElement(tag); e.textContent = text || ''; return e; }
    // Whether the toast's rectangle overlaps an element it must never cover (the checkout button).
    function covers() {
      var r = box.getBoundingClientRect(), all = d.querySelectorAll(w.clickserverToastAvoid || N.avoid);
      for (var i = 0; i < all.length; i++) {
        var o = all[i].getBoundingClientRect();
        if (r.left < o.right && o.left < r.right && r.top < o.bottom && o.top < r.bottom) return true;
      }
      return false;
    }
    function dismiss() {
      if (!box) return;
      box.remove();
      box = null;
      track('notification_dismissed', props);
    }
    function show(a) {
      var n = a.notification, x = a.exposure;
      setLS(SEEN, ((getLS(SEEN) || '') + ' ' + a.decision).slice(-300));
      // The exposure, holdout included: the experiment counts who was targeted, shown or not.
      track('experiment_exposure', { experiment: x.experiment, variant: x.variant, phase: x.phase });
      if (!n) return;
      props = { campaign: a.campaign, decision: a.decision, variant: x.variant };
      track('notification_shown', props);
      box = el('div');
      box.setAttribute('role', 'status');
      box.setAttribute('aria-live', 'polite');
      box.style.cssText = 'position:fixed;z-index:2147483647;right:16px;bottom:16px;max-width:' +
        '320px;padding:12px 40px 12px 12px;background:#fff;color:#111;border:1px solid #555;' +
        'border-radius:6px;font:14px/1.4 sans-serif;box-shadow:0 2px 8px rgba(0,0,0,.3)';
      var close = el('button', '\u00d7'), link = el('a', n.cta_text || n.title);
      close.type = 'button';
      close.setAttribute('aria-label', 'Dismiss');
      close.style.cssText = 'position:absolute;top:6px;right:6px;border:0;background:none;' +
        'font-size:20px;cursor:pointer';
      // Shop text is set as text only; a link goes only to the web (never javascript:).
      if (/^(https?:\/\/|\/(?!\/))/i.test(n.cta_url)) link.href = n.cta_url;
      link.onclick = function () { track('notification_clicked', props); flush(); };
      close.onclick = dismiss;
      [el('strong', n.title), el('p', n.body), link, close].forEach(function (c) {
        box.appendChild(c);
      });
      d.body.appendChild(box);
      if (covers()) { box.style.bottom = ''; box.style.top = '16px'; }
      if (covers()) { box.style.right = ''; box.style.left = '16px'; }
    }
    function poll() {
      // Never after a purchase in this browser within the live half hour (the server may not
      // have processed it yet); both arms alike, so the experiment stays fair.
      if (Date.now() - Number(getLS(BOUGHT) || 0) < 18e5) return;
      if (box || !enabled() || d.hidden || !d.body) return;
      var q = '/notifications/pending/?anonymous_id=' + encodeURIComponent(anonymousId()) +
        '&consent=' + (getLS(CONSENT) === '1' || getCookie(CONSENT) === '1' ? 1 : 0);
      fetch(new URL(q, new URL(endpoint, loc.href)).href,
        { headers: { 'X-Write-Key': writeKey }, credentials: 'omit' })
        .then(function (r) { return r.ok ? r.json() : {}; })
        .then(function (a) { if (a.exposure && !box && !seen(a.decision)) show(a); })
        .catch(function () { /* the next poll tries again */ });
    }
    d.addEventListener('keydown', function (e) { if (e.key === 'Escape') dismiss(); });
    setInterval(poll, N.poll);
    if (d.readyState === 'loading') d.addEventListener('DOMContentLoaded', poll);
    else poll();
  })(cfg.notifications);
