/*! clickserver tracking snippet. Served at /snippet/<write_key>.js, configured for one shop.
 * Events are queued in localStorage (bounded), sent in batches, retried with backoff, and
 * de-duplicated by the server through event_id, so going offline loses nothing and a resend
 * stores nothing twice. See docs/tracking.md. */
(function (w, d, cfg) {
  'use strict';
  if (w.clickserver && w.clickserver.loaded) return;
  var endpoint = cfg.endpoint || '/events/';
  var writeKey = cfg.writeKey || '';
  var BATCH = cfg.batchSize || 20; // flush as soon as this many events wait
  var INTERVAL = cfg.flushInterval || 3000; // ms; otherwise flush this often
  var MAX_QUEUE = 1000; // oldest events are dropped beyond this, so storage stays bounded
  var MAX_SEND = 50; // events a request carries: beacons and keepalive fetches cap at 64 KB
  var AID = '_cs_aid', UID = '_cs_uid', QUEUE = '_cs_queue', CONSENT = '_cs_consent';
  // When this browser last tracked a purchase: no sale notification after it (notifications).
  var BOUGHT = '_cs_bought';
  var ORDERS = '_cs_orders', CART = '_cs_cart', UTM = '_cs_utm';
  var ATTR = '_clickserver_anonymous_id'; // Shopify cart attribute, read by the order webhook
  var nav = navigator, loc = w.location;
  var memory = []; // queue used when localStorage is unavailable
  var timer = 0, failures = 0, sending = false, lastUrl = '';
  // A batch the server answers 5xx for SERVER_TRIES times in a row is halved (sendSize), down to
  // the one event that fails alone, which is dropped with a console warning: one poison event
  // must not hold the queue behind it for ever. Network errors and 429 are retried for ever.
  var SERVER_TRIES = 3;
  var sendSize = MAX_SEND, serverErrors = 0;
  var decide = null; // (key, expose) → variant; set by the experiments part when it is served

  var dnt = nav.doNotTrack === '1' || nav.doNotTrack === 'yes' || w.doNotTrack === '1' ||
    nav.msDoNotTrack === '1';

  function getLS(key) {
    try { return w.localStorage.getItem(key); } catch (e) { return null; }
  }
  function setLS(key, value) {
    try {
      if (value === null) w.localStorage.removeItem(key);
      else w.localStorage.setItem(key, value);
      return true;
    } catch (e) { return false; }
  }
  function getCookie(name) {
    var m = d.cookie.match(new RegExp('(?:^|; )' + name + '=([^;]*)'));
    return m ? decodeURIComponent(m[1]) : '';
  }
  function setCookie(name, value, days) {
    var secure = loc.protocol === 'https:' ? '; Secure' : '';
    d.cookie = name + '=' + encodeURIComponent(value) + '; Max-Age=' + days * 86400 +
      '; Path=/; SameSite=Lax' + secure;
  }
  function parse(text, fallback) {
    try { return text ? JSON.parse(text) : fallback; } catch (e) { return fallback; }
  }

  function consented() {
    return !cfg.consentRequired || getLS(CONSENT) === '1' || getCookie(CONSENT) === '1';
  }
  function enabled() { return !dnt && consented(); }

  function uuid() {
    var c = w.crypto;
    if (c && c.randomUUID) return c.randomUUID();
    var b = c.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    var h = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); });
    return h.slice(0, 4).join('') + '-' + h.slice(4, 6).join('') + '-' + h.slice(6, 8).join('') +
      '-' + h.slice(8, 10).join('') + '-' + h.slice(10).join('');
  }

  // The anonymous id lives in a first-party cookie (one year) mirrored in localStorage, so
  // either surviving restores it.
  function anonymousId() {
    var id = getCookie(AID) || getLS(AID);
    if (!id) id = uuid();
    setCookie(AID, id, 365);
    setLS(AID, id);
    return id;
  }

  function loadQueue() { return parse(getLS(QUEUE), null) || memory; }
  function saveQueue(q) {
    if (q.length > MAX_QUEUE) q = q.slice(q.length - MAX_QUEUE);
    memory = q;
    // A send finishing after consent was withdrawn must not write the queue back.
    if (enabled()) setLS(QUEUE, JSON.stringify(q));
  }

  function utm() {
    var params = new URLSearchParams(loc.search), found = {}, any = false;
    ['source', 'medium', 'campaign', 'term', 'content'].forEach(function (k) {
      var v = params.get('utm_' + k);
      if (v) { found[k] = v; any = true; }
    });
    // A visit's campaign stays with the visit's later pages (per tab).
    try {
      if (any) w.sessionStorage.setItem(UTM, JSON.stringify(found));
      else found = parse(w.sessionStorage.getItem(UTM), {});
    } catch (e) { /* storage blocked: this page's UTM only */ }
    return found;
  }

  function track(type, properties, extra) {
    if (!enabled()) return;
    if (type === 'purchase') setLS(BOUGHT, String(Date.now()));
    var s = w.screen || {};
    var event = {
      event_id: uuid(),
      type: type,
      anonymous_id: anonymousId(),
      user_id: getLS(UID) || undefined,
      timestamp: new Date().toISOString(),
      url: loc.href,
      referrer: lastUrl || d.referrer,
      title: d.title,
      utm: utm(),
      properties: Object.assign({
        screen: s.width + 'x' + s.height,
        viewport: w.innerWidth + 'x' + w.innerHeight,
        language: nav.language
      }, properties || {}),
      context: { user_agent: nav.userAgent }
    };
    Object.assign(event, extra || {});
    var q = loadQueue();
    q.push(event);
    saveQueue(q);
    if (q.length >= BATCH) flush();
    else schedule(INTERVAL);
  }

  function schedule(ms) {
    if (!timer) timer = setTimeout(function () { timer = 0; flush(); }, ms);
  }

  function body(events) {
    // text/plain with the key in the body: a CORS "simple request" (no preflight), and the
    // same shape sendBeacon must use since it cannot set headers.
    return JSON.stringify({ write_key: writeKey, sent_at: new Date().toISOString(), batch: events });
  }

  function flush() {
    if (sending || !enabled()) return;
    var q = loadQueue();
    if (!q.length) return;
    var batch = q.slice(0, sendSize);
    var text = body(batch);
    sending = true;
    origFetch(endpoint, {
      method: 'POST', body: text, keepalive: text.length < 60000, credentials: 'omit',
      headers: { 'Content-Type': 'text/plain' }
    }).then(function (r) {
      // 4xx other than 429 will never succeed: drop the batch (the server kept rejected
      // events for inspection). 5xx and 429 are retried.
      if (r.ok || (r.status >= 400 && r.status < 500 && r.status !== 429)) return true;
      if (r.status >= 500) serverErrors++;
      throw new Error('status ' + r.status);
    }).then(function () {
      sending = false;
      failures = 0;
      serverErrors = 0;
      removeSent(batch);
    }, function () {
      sending = false;
      failures++;
      if (serverErrors >= SERVER_TRIES) {
        serverErrors = 0;
        failures = 0;
        if (batch.length > 1) {
          // Smaller batches stay until the poison is found, so the search is a bisection.
          sendSize = Math.ceil(batch.length / 2);
        } else {
          w.console && console.warn('clickserver: dropped event ' + batch[0].type + ' after ' +
            SERVER_TRIES + ' server errors');
          sendSize = MAX_SEND;
          removeSent(batch);
          return;
        }
      }
      var delay = Math.min(60000, 1000 * Math.pow(2, failures)) * (0.5 + Math.random() / 2);
      clearTimeout(timer);
      timer = 0;
      schedule(delay);
    });
  }

  function removeSent(batch) {
    var sent = {};
    batch.forEach(function (e) { sent[e.event_id] = 1; });
    var rest = loadQueue().filter(function (e) { return !sent[e.event_id]; });
    saveQueue(rest);
    if (rest.length) schedule(0);
  }

  // On pagehide the queue goes out by sendBeacon, but stays queued: a beacon's delivery is
  // unknowable, and a resend from the next page is harmless (same event_id).
  function beacon() {
    var q = loadQueue();
    if (!q.length || !enabled() || !nav.sendBeacon || nav.onLine === false) return;
    try {
      nav.sendBeacon(endpoint, new Blob([body(q.slice(0, MAX_SEND))], { type: 'text/plain' }));
    } catch (e) { /* the queue is still there */ }
  }

  // --- automatic events -------------------------------------------------------------------

  function num(v) {
    var n = parseFloat(v);
    return isNaN(n) ? undefined : n;
  }
  function productFrom(el) {
    var a = function (n) { return el.getAttribute('data-cs-' + n) || undefined; };
    return {
      id: a('add-to-cart') || a('product'), name: a('name'), category: a('category'),
      price: num(a('price')), quantity: num(a('quantity'))
    };
  }

  function jsonLdProduct() {
    var nodes = d.querySelectorAll('script[type="application/ld+json"]');
    for (var i = 0; i < nodes.length; i++) {
      var data = parse(nodes[i].textContent, null);
      var list = [].concat(data || []);
      if (data && data['@graph']) list = list.concat(data['@graph']);
      for (var j = 0; j < list.length; j++) {
        var p = list[j];
        if (p && [].concat(p['@type']).indexOf('Product') >= 0) {
          var offer = [].concat(p.offers || [])[0] || {};
          return {
            id: String(p.sku || p.productID || p['@id'] || p.name),
            name: p.name,
            category: p.category,
            price: num(offer.price || offer.lowPrice)
          };
        }
      }
    }
    return null;
  }

  function pageView() {
    if (loc.href === lastUrl) return;
    track('page_view');
    lastUrl = loc.href;
    var el = d.querySelector('[data-cs-product]');
    var product = el ? productFrom(el) : jsonLdProduct();
    if (product) track('product_view', null, { product: product });
    purchase();
    cartAttribute();
  }

  // A confirmation page: an element with data-cs-order (plus data-cs-revenue and
  // data-cs-currency), or Shopify's thank-you page object.
  function purchase() {
    var el = d.querySelector('[data-cs-order]');
    var sc = w.Shopify && w.Shopify.checkout;
    var order = el ? {
      id: el.getAttribute('data-cs-order'),
      revenue: num(el.getAttribute('data-cs-revenue')),
      currency: el.getAttribute('data-cs-currency') || undefined
    } : sc && sc.order_id ? {
      id: String(sc.order_id), revenue: num(sc.total_price), currency: sc.currency
    } : null;
    if (!order || !order.id || !enabled()) return;
    // Reloading the confirmation page must not record a second purchase.
    var done = parse(getLS(ORDERS), []);
    if (done.indexOf(order.id) >= 0) return;
    var extra = { order: order };
    // Same id as the order webhook's purchase event, so Shopify orders count once.
    if (!el) extra.event_id = 'shopify-order-' + order.id;
    track('purchase', null, extra);
    setLS(ORDERS, JSON.stringify(done.concat(order.id).slice(-20)));
  }

  // On Shopify, put the anonymous id into the cart's attributes; Shopify copies them into
  // the order's note_attributes, which joins the order webhook to this browser.
  function cartAttribute() {
    if (!w.Shopify || !enabled()) return;
    var aid = anonymousId(), mark = aid + '|' + getCookie('cart');
    if (getLS(CART) === mark) return;
    var attributes = {};
    attributes[ATTR] = aid;
    origFetch('/cart/update.js', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ attributes: attributes })
    }).then(function (r) { if (r.ok) setLS(CART, aid + '|' + getCookie('cart')); }, function () {});
  }

  var CART_ADD = /\/cart\/add(\.js)?(\?|$)/;
  function cartAdded(responseText, requestBody) {
    var data = parse(responseText, null), items = data && (data.items || [data]);
    if (!items || !items[0] || !(items[0].variant_id || items[0].id)) {
      // /cart/add (form post) answers HTML: use what was asked for.
      var form = parse(requestBody, null);
      if (!form) {
        try { form = Object.fromEntries(new URLSearchParams(requestBody)); } catch (e) { form = {}; }
      }
      items = form.items || [form];
    }
    items.forEach(function (i) {
      track('add_to_cart', null, {
        product: {
          id: String(i.product_id || i.variant_id || i.id || ''),
          name: i.product_title || i.title,
          price: i.price != null && data ? i.price / 100 : num(i.price),
          quantity: num(i.quantity) || 1
        }
      });
    });
    cartAttribute();
  }
  function bodyText(b) {
    if (typeof b === 'string') return b;
    if (b instanceof URLSearchParams) return b.toString();
    if (w.FormData && b instanceof FormData) return new URLSearchParams(b).toString();
    return '';
  }

  var origFetch = w.fetch.bind(w);
  w.fetch = function (input, init) {
    var url = typeof input === 'string' ? input : (input && input.url) || '';
    var p = origFetch.apply(w, arguments);
    if (CART_ADD.test(url)) {
      var sent = bodyText(init && init.body);
      p.then(function (r) {
        if (r.ok) r.clone().text().then(function (t) { cartAdded(t, sent); }, function () {});
      }, function () {});
    }
    return p;
  };
  var xhr = XMLHttpRequest.prototype, open = xhr.open, send = xhr.send;
  xhr.open = function (method, url) {
    this._csCart = CART_ADD.test(String(url));
    return open.apply(this, arguments);
  };
  xhr.send = function (b) {
    var req = this;
    if (req._csCart) {
      req.addEventListener('load', function () {
        if (req.status >= 200 && req.status < 300) {
          cartAdded(req.responseType && req.responseType !== 'text' ? '' : req.responseText,
            bodyText(b));
        }
      });
    }
    return send.apply(this, arguments);
  };

  d.addEventListener('click', function (e) {
    var t = e.target && e.target.closest && e.target.closest(
      '[data-cs-add-to-cart],[data-cs-checkout],[name="checkout"],a[href$="/checkout"]');
    if (!t) return;
    if (t.hasAttribute('data-cs-add-to-cart')) {
      var container = t.closest('[data-cs-product]');
      var product = Object.assign({}, container ? productFrom(container) : {});
      var own = productFrom(t);
      Object.keys(own).forEach(function (k) { if (own[k] !== undefined) product[k] = own[k]; });
      product.quantity = product.quantity || 1;
      track('add_to_cart', null, { product: product });
    } else {
      track('checkout_started');
    }
  }, true);

  // SPA navigation: wrap history so pushState/replaceState count as page views.
  ['pushState', 'replaceState'].forEach(function (name) {
    var orig = history[name];
    history[name] = function () {
      var result = orig.apply(this, arguments);
      setTimeout(pageView, 0);
      return result;
    };
  });
  w.addEventListener('popstate', pageView);
  w.addEventListener('pagehide', beacon);
  d.addEventListener('visibilitychange', function () { if (d.visibilityState === 'hidden') beacon(); });
  w.addEventListener('online', function () { failures = 0; clearTimeout(timer); timer = 0; flush(); });

/*EXPERIMENTS*/
  // --- public API ---------------------------------------------------------------------------

  w.clickserver = {
    loaded: true,
    track: function (name, properties) { track(String(name), properties); },
    identify: function (userId, traits) {
      if (!enabled()) return;
      if (userId) setLS(UID, String(userId));
      track('identify', { traits: traits || {} }, { user_id: userId ? String(userId) : undefined });
    },
    // Logout: forget the user and start a new anonymous id.
    reset: function () {
      flush();
      setLS(UID, null);
      setLS(AID, null);
      setCookie(AID, '', -1);
    },
    consent: function (granted) {
      if (granted) {
        setLS(CONSENT, '1');
        setCookie(CONSENT, '1', 365);
        lastUrl = '';
        pageView();
      } else {
        // Withdrawn: erase everything this snippet stored in the browser.
        [AID, UID, QUEUE, CONSENT, ORDERS, CART].forEach(function (k) { setLS(k, null); });
        try { w.sessionStorage.removeItem('_cs_visitor'); } catch (e) { /* nothing kept */ }
        setCookie(AID, '', -1);
        setCookie(CONSENT, '', -1);
        memory = [];
      }
    },
    flush: flush,
    // The variant of experiment `key` this browser is shown, recorded as an exposure once per
    // page view; `assign` only answers. null: held out, not targeted, not running, no consent.
    variant: function (key) { return decide ? decide(String(key), true) : null; },
    assign: function (key) { return decide ? decide(String(key), false) : null; },
    anonymousId: function () { return enabled() ? anonymousId() : null; },
    // Storefront recommendations (docs/recommendations.md), resolving to a list of products.
    // The write key goes in a header, never the URL; the personal lists are asked for this
    // browser's own anonymous id, and for a logged-in customer only with the identity token
    // the shop's server issued for options.userId.
    recommendations: function (kind, options) {
      var o = options || {}, q = ['limit=' + (o.limit || 10)], h = { 'X-Write-Key': writeKey };
      if (!/^(crowd_favorites|featured_collection|pick_up_where_you_left_off)$/.test(kind)) {
        return Promise.reject(new Error('clickserver: unknown recommendations ' + kind));
      }
      if (kind !== 'crowd_favorites') {
        if (!enabled()) return Promise.resolve([]);
        q.push('anonymous_id=' + encodeURIComponent(anonymousId()));
        if (o.userId && o.identityToken) {
          q.push('user_id=' + encodeURIComponent(o.userId));
          h['X-Identity-Token'] = o.identityToken;
        }
      }
      var url = new URL('/api/' + kind + '/?' + q.join('&'), new URL(endpoint, loc.href));
      return fetch(url.href, { headers: h, credentials: 'omit' })
        .then(function (r) { return r.ok ? r.json() : { products: [] }; })
        .then(function (body) { return body.products; });
    }
  };

/*NOTIFICATIONS*/
  if (d.readyState === 'loading') d.addEventListener('DOMContentLoaded', pageView);
  else pageView();
  if (enabled()) schedule(0); // send what an earlier page left queued
})(window, document, /*CONFIG*/{});
