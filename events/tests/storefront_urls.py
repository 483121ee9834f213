"""A tiny Shopify-like storefront, registered only by the browser tests (pytest.mark.urls)."""

import orjson
from csp.decorators import csp_exempt
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from clickserver.urls import urlpatterns as app_urlpatterns

# What the snippet wrote through /cart/update.js, for the test to read.
cart_attributes: dict[str, str] = {}

PRODUCT = (
    '<h1>Mug</h1><div data-cs-product="42" data-cs-name="Mug" data-cs-price="12.50"'
    ' data-cs-category="Kitchen"></div>'
    "<button id=\"add\" onclick=\"fetch('/cart/add.js', {method: 'POST',"
    " headers: {'Content-Type': 'application/json'},"
    ' body: JSON.stringify({id: 4201, quantity: 2})})">Add to cart</button>'
    "<button id=\"add-xhr\" onclick=\"var x = new XMLHttpRequest(); x.open('POST', '/cart/add.js');"
    " x.setRequestHeader('Content-Type', 'application/json');"
    ' x.send(JSON.stringify({id: 4201, quantity: 1}))">Add by XHR</button>'
    '<button id="add-button" data-cs-add-to-cart="42" data-cs-name="Mug" data-cs-quantity="3">'
    "Add (tagged)</button>"
)
PAGES = {
    "home": '<h1>Home</h1><a id="to-product" href="../product/">Mug</a>',
    "product": PRODUCT,
    "cart": '<h1>Cart</h1><a id="checkout" name="checkout" href="../thanks/">Check out</a>',
    "thanks": (
        "<h1>Thank you</h1><script>Shopify.checkout ="
        ' {order_id: 5001, total_price: "25.00", currency: "USD"};</script>'
    ),
    "jsonld": (
        '<script type="application/ld+json">{"@context": "https://schema.org",'
        ' "@type": "Product", "sku": "LD-1", "name": "Lamp", "category": "Home",'
        ' "offers": {"@type": "Offer", "price": "30.00", "priceCurrency": "USD"}}</script>'
    ),
    "order": '<div data-cs-order="A-77" data-cs-revenue="99.90" data-cs-currency="EUR"></div>',
}


# A shop's pages come from the shop, not from clickserver: our dashboard's CSP is not theirs (and
# these pages carry inline handlers, as themes do).
@csp_exempt()
def storefront_page(request: HttpRequest, write_key: str, page: str) -> HttpResponse:
    html = (
        f"<!doctype html><html><head><title>{page.title()} - Test shop</title>"
        "<script>window.Shopify = {shop: 'test.myshopify.com'};</script>"
        f'<script async src="/snippet/{write_key}.js"></script></head>'
        f"<body>{PAGES[page]}</body></html>"
    )
    response = HttpResponse(html)
    response.set_cookie("cart", "cart-token-1")
    return response


@csrf_exempt
def cart_add(request: HttpRequest) -> JsonResponse:
    body = orjson.loads(request.body)
    return JsonResponse(
        {
            "id": body["id"],
            "variant_id": body["id"],
            "product_id": 42,
            "product_title": "Mug",
            "price": 1250,
            "quantity": body["quantity"],
        }
    )


@csrf_exempt
def cart_update(request: HttpRequest) -> JsonResponse:
    cart_attributes.update(orjson.loads(request.body)["attributes"])
    return JsonResponse({"token": "cart-token-1", "attributes": cart_attributes})


urlpatterns = [
    *app_urlpatterns,
    path("store/<str:write_key>/<str:page>/", storefront_page),
    path("cart/add.js", cart_add),
    path("cart/update.js", cart_update),
]
