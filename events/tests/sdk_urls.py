"""Shop pages with Segment's analytics.js and RudderStack's JS SDK, for the official-SDK tests.

The bundle is the unmodified `@segment/analytics-next` standalone build from node_modules, served
at the path Segment's CDN uses, so the SDK reads the write key from its own script URL as it
does on a real shop. Everything else the SDK asks for is clickserver's own URLs.
"""

from pathlib import Path

from csp.decorators import csp_exempt
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.urls import path

from clickserver.urls import urlpatterns as app_urlpatterns

NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"
BUNDLE_DIR = NODE_MODULES / "@segment/analytics-next/dist/umd"
# The npm package's "bundled" build: the plugins (XhrQueue, StorageEncryption, ...) are in it, so
# it loads none from RudderStack's CDN; an ES module with no imports of its own.
RUDDER_BUNDLE = NODE_MODULES / "@rudderstack/analytics-js/dist/npm/modern/bundled/esm/index.mjs"

# The official snippet's stub (a queue of calls made before the bundle arrives), with the two
# edits Segment documents for a self-hosted or proxied analytics.js: the script's host, and
# `_cdn`, where the bundle fetches its settings and its lazily loaded chunks.
PAGE = """<!doctype html><html><head><title>SDK shop</title><link rel="icon" href="data:,"><script>
!function(){var i="analytics",analytics=window[i]=window[i]||[];if(!analytics.initialize){
analytics.invoked=!0;analytics.methods=["trackSubmit","trackClick","trackLink","trackForm",
"pageview","identify","reset","group","track","ready","alias","debug","page","screen","once",
"off","on","addSourceMiddleware","addIntegrationMiddleware","setAnonymousId",
"addDestinationMiddleware","register"];analytics.factory=function(e){return function(){
var t=Array.prototype.slice.call(arguments);t.unshift(e);analytics.push(t);return analytics}};
for(var n=0;n<analytics.methods.length;n++){var key=analytics.methods[n];
analytics[key]=analytics.factory(key)}analytics.load=function(key,n){
var t=document.createElement("script");t.type="text/javascript";t.async=!0;
t.src=location.origin+"/analytics.js/v1/"+key+"/analytics.min.js";
var r=document.getElementsByTagName("script")[0];r.parentNode.insertBefore(t,r);
analytics._loadOptions=n};analytics._writeKey="%(write_key)s";
analytics._cdn=location.origin;analytics.SNIPPET_VERSION="5.2.0";
analytics.load("%(write_key)s");analytics.page();}}();
</script></head><body><h1>SDK shop</h1></body></html>"""


# What RudderStack's loading snippet does, written out: `window.rudderanalytics` is an array
# that buffers [method, ...args] (`load` included) until the SDK replaces it, and the SDK's
# script, <sdkBaseUrl>/v3/modern/rsa.min.js, carries data-rsa-write-key. Only the URLs are ours.
RUDDER_PAGE = """<!doctype html><html><head><title>SDK shop</title><link rel="icon" href="data:,">
<script>
(function () {
  var buffer = (window.rudderanalytics = []);
  ["setDefaultInstanceKey", "load", "ready", "page", "track", "identify", "alias", "group",
   "reset", "setAnonymousId", "startSession", "endSession", "consent", "addCustomIntegration"
  ].forEach(function (method) {
    buffer[method] = function () {
      var args = Array.prototype.slice.call(arguments);
      if (Array.isArray(window.rudderanalytics)) buffer.push([method].concat(args));
      else window.rudderanalytics[method].apply(window.rudderanalytics, args);
    };
  });
  var script = document.createElement("script");
  script.src = "%(sdk_base_url)s/v3/modern/rsa.min.js";
  script.async = true;
  script.setAttribute("data-rsa-write-key", "%(write_key)s");
  document.head.appendChild(script);
  buffer.load("%(write_key)s", "%(clickserver)s", {configUrl: "%(clickserver)s"});
  buffer.page("Home", {category: "landing"});
})();
</script></head><body><h1>SDK shop</h1></body></html>"""

# What stands at the CDN's rsa.min.js. That file (the CDN build) is not in the npm package; it is
# the same SDK compiled to a script that constructs the singleton on load, which picks up the
# snippet's buffered calls, `load` included. This does the same with the npm bundled build.
RUDDER_LOADER = """import(new URL("rsa.bundled.mjs", document.currentScript.src).href)
.then(function (sdk) { new sdk.RudderAnalytics(); });"""


# A shop's pages come from the shop, not from clickserver: our dashboard's CSP is not theirs (the
# official loading snippets are inline scripts).
@csp_exempt()
def rudder_shop_page(request: HttpRequest, write_key: str) -> HttpResponse:
    return HttpResponse(
        RUDDER_PAGE
        % {
            "write_key": write_key,
            "sdk_base_url": request.GET["sdk"],
            "clickserver": request.GET["clickserver"],
        }
    )


@csp_exempt()
def shop_page(request: HttpRequest, write_key: str) -> HttpResponse:
    return HttpResponse(PAGE % {"write_key": write_key})


def bundle(request: HttpRequest, name: str) -> FileResponse:
    file = BUNDLE_DIR / name
    if file.parent != BUNDLE_DIR or not file.is_file():
        raise Http404(name)
    return FileResponse(file.open("rb"), content_type="application/javascript")


urlpatterns = [
    *app_urlpatterns,
    path("shop/<str:write_key>/", shop_page),
    path(
        "analytics.js/v1/<str:write_key>/analytics.min.js",
        lambda request, write_key: bundle(request, "standalone.js"),
    ),
    path("analytics-next/bundles/<str:name>", bundle),
    path("rudder-shop/<str:write_key>/", rudder_shop_page),
    path(
        "v3/modern/rsa.min.js",
        lambda request: HttpResponse(RUDDER_LOADER, content_type="application/javascript"),
    ),
    path(
        "v3/modern/rsa.bundled.mjs",
        lambda request: FileResponse(
            RUDDER_BUNDLE.open("rb"), content_type="application/javascript"
        ),
    ),
]
