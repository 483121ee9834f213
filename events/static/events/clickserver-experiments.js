  // --- experiments (docs/experiments.md "In the browser"), served only to shops running some --
  // notifications/experiments/assignment.py line for line, with a synchronous SHA-256.
  var SK = [], SH = [], VISIT = '_cs_visitor', shown = {};
  // SHA-256's constants: the first 32 fraction bits of the square and cube roots of the primes.
  for (var p = 2, k = 0; k < 64; p++) {
    for (var f = 2; f * f <= p && p % f; f++);
    if (f * f > p) {
      if (k < 8) SH[k] = Math.pow(p, 1 / 2) * 4294967296 | 0;
      SK[k++] = Math.pow(p, 1 / 3) * 4294967296 | 0;
    }
  }
  function ror(x, n) { return x >>> n | x << 32 - n; }
  // A uniform number in [0, 1): the first 52 bits of SHA-256(UTF-8 text) over 2^52, exact.
  function bucket(text) {
    var b = Array.from(new TextEncoder().encode(text)), n = b.length * 8, h = SH.slice(), w = [];
    b.push(128);
    while (b.length % 64 !== 56) b.push(0);
    b.push(0, 0, 0, 0, n >>> 24, n >>> 16 & 255, n >>> 8 & 255, n & 255);
    for (var i = 0; i < b.length; i += 64) {
      var a = h.slice();
      for (var j = 0; j < 64; j++) {
        var x = w[j - 15], y = w[j - 2], e = a[4], c = a[0];
        w[j] = j < 16 ? b[i + 4 * j] << 24 | b[i + 4 * j + 1] << 16 | b[i + 4 * j + 2] << 8 |
          b[i + 4 * j + 3] : w[j - 16] + (ror(x, 7) ^ ror(x, 18) ^ x >>> 3) + w[j - 7] +
          (ror(y, 17) ^ ror(y, 19) ^ y >>> 10) | 0;
        var t = a[7] + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + (e & a[5] ^ ~e & a[6]) + SK[j] + w[j];
        a = [t + (ror(c, 2) ^ ror(c, 13) ^ ror(c, 22)) + (c & a[1] ^ c & a[2] ^ a[1] & a[2]) | 0]
          .concat(a);
        a[4] = a[4] + t | 0;
        a.length = 8;
      }
      for (j = 0; j < 8; j++) h[j] = h[j] + a[j] | 0;
    }
    return ((h[0] >>> 0) * 1048576 + (h[1] >>> 12)) / 4503599627370496;
  }

  // New or returning: whether this tab's visit began with an anonymous id already stored. Kept
  // for the tab's later pages once tracking is allowed (consent withdrawn erases it).
  var visitor = getCookie(AID) || getLS(AID) ? 'returning' : 'new';
  try { visitor = w.sessionStorage.getItem(VISIT) || visitor; } catch (e) { /* blocked */ }
  function keepVisitor() {
    try { w.sessionStorage.setItem(VISIT, visitor); } catch (e) { /* this page's answer */ }
  }
  if (enabled()) keepVisitor();
  // The server's device classes (events/sessionize.py), from the user agent.
  function device() {
    var ua = nav.userAgent.toLowerCase();
    return /ipad|tablet|kindle|silk\/|playbook|nexus [79]|sm-t/.test(ua) ||
      /android/.test(ua) && ua.indexOf('mobile') < 0 ? 'tablet' :
      /mobile|iphone|ipod|android|windows phone|blackberry|kaios/.test(ua) ? 'mobile' : 'desktop';
  }

  decide = function (key, expose) {
    var x = (cfg.experiments || []).filter(function (e) { return e.key === key; })[0];
    if (!x || !enabled()) return null;
    keepVisitor();
    var t = x.targeting, uid = getLS(UID), unit = uid ? 'user:' + uid : 'anon:' + anonymousId();
    if (t.device && t.device.indexOf(device()) < 0) return null;
    if (t.source && t.source.indexOf(String(utm().source || '').toLowerCase()) < 0) return null;
    if (t.visitor && t.visitor !== visitor) return null;
    if (x.holdout > 0 && bucket('holdout:' + unit) < x.holdout) return null;
    var b = bucket(key + ':' + x.phase + ':' + unit), v = x.variants, sum = 0, i;
    for (i = 0; i < v.length - 1; i++) {
      sum += v[i][1];
      if (b < sum) break;
    }
    // Shown on this page: one exposure per page view and experiment.
    if (expose && shown[key] !== loc.href) {
      shown[key] = loc.href;
      track('experiment_exposure', { experiment: key, variant: v[i][0], phase: x.phase });
    }
    return v[i][0];
  };
