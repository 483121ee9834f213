"""Realistic storefront journeys for demos and load: pure generation, no I/O.

A catalogue with prices and categories, funnel drop-offs, hour-of-day and weekday seasonality,
returning and identified customers, abandoned carts, and optional anomalies (a traffic spike, an
outsized order, a hyperactive bot). Events come out in the ingestion API's format with historical
timestamps; the sender posts them with `sent_at` so the server keeps those times.
"""

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

# category: (singular product noun, lowest price, highest price)
CATEGORIES = {
    "Mugs": ("Mug", 9, 24),
    "Tea": ("Loose-leaf tea", 6, 18),
    "Kettles": ("Kettle", 35, 120),
    "Teapots": ("Teapot", 25, 90),
    "Gift sets": ("Gift set", 30, 75),
    "Accessories": ("Tea strainer", 4, 15),
}
SOURCES = [("google", "cpc"), ("newsletter", "email"), ("instagram", "social"), ("", "")]
SOURCE_WEIGHTS = [0.35, 0.15, 0.2, 0.3]
COUNTRIES = ["US", "GB", "DE", "FR", "CA", "AU", "NL", "SE"]
COUNTRY_WEIGHTS = [0.4, 0.15, 0.1, 0.08, 0.08, 0.07, 0.06, 0.06]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Mobile Safari/537.36",
]
# Shoppers browse most in the evening and least at night; weekends a little more.
HOUR_WEIGHTS = [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 3.5, 3.8, 4, 4.5, 4, 3.8, 3.8, 4, 4.5,
                5, 6, 6.5, 5.5, 4, 2]  # fmt: skip
WEEKDAY_WEIGHTS = [1.0, 0.95, 0.95, 1.0, 1.05, 1.25, 1.2]


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    category: str
    price: Decimal


def catalogue(rng: random.Random, size: int = 48) -> list[Product]:
    products = []
    names = list(CATEGORIES)
    for i in range(size):
        category = names[i % len(names)]
        noun, low, high = CATEGORIES[category]
        price = Decimal(str(round(rng.uniform(low, high), 2)))
        products.append(Product(f"p{i + 1:03d}", f"{noun} no. {i + 1}", category, price))
    return products


class Simulator:
    def __init__(self, *, shop_domain: str, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.domain = shop_domain
        self.products = catalogue(self.rng)
        self.returning: list[tuple[str, str]] = []  # (anonymous_id, user_id or "")

    def _start_time(self, start: datetime, days: int) -> datetime:
        rng = self.rng
        while True:
            day = start + timedelta(days=rng.randrange(days))
            if rng.random() < WEEKDAY_WEIGHTS[day.weekday()] / max(WEEKDAY_WEIGHTS):
                break
        hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
        return day.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60))

    def _url(self, path: str, source: tuple[str, str]) -> str:
        url = f"https://{self.domain}{path}"
        if source[0]:
            url += f"?utm_source={source[0]}&utm_medium={source[1]}&utm_campaign=autumn"
        return url

    def journey(self, at: datetime, *, bot: bool = False) -> list[dict]:
        """One visit: landing, browsing, maybe a cart, a checkout and a purchase."""
        rng = self.rng
        if self.returning and rng.random() < 0.3:
            anonymous_id, user_id = rng.choice(self.returning)
        else:
            anonymous_id, user_id = str(uuid.UUID(int=rng.getrandbits(128))), ""
        source = rng.choices(SOURCES, weights=SOURCE_WEIGHTS)[0]
        context = {
            "user_agent": "python-requests/2.32 (bot)" if bot else rng.choice(USER_AGENTS),
            "country": rng.choices(COUNTRIES, weights=COUNTRY_WEIGHTS)[0],
        }
        events: list[dict] = []
        clock = at

        def emit(event_type: str, path: str, **extra) -> None:
            nonlocal clock
            events.append(
                {
                    "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "type": event_type,
                    "anonymous_id": anonymous_id,
                    "user_id": user_id,
                    "timestamp": clock.isoformat(),
                    "url": self._url(path, source)
                    if not events
                    else f"https://{self.domain}{path}",
                    "referrer": "https://www.google.com/" if source[0] == "google" else "",
                    "context": context,
                    **extra,
                }
            )
            clock += timedelta(seconds=rng.randint(2, 8) if bot else rng.randint(8, 150))

        emit("page_view", "/", title="Home")
        views = 400 if bot else rng.choices([0, 1, 2, 3, 4, 6], weights=[25, 30, 20, 12, 8, 5])[0]
        favourite = rng.choice(self.products)
        viewed: list[Product] = []
        for _ in range(views):
            product = favourite if rng.random() < 0.3 else rng.choice(self.products)
            viewed.append(product)
            emit(
                "product_view",
                f"/products/{product.id}",
                title=product.name,
                product={"id": product.id, "name": product.name, "category": product.category,
                         "price": str(product.price)},
            )  # fmt: skip
        if bot or not viewed or rng.random() > 0.32:
            self._remember(anonymous_id, user_id)
            return events
        cart = viewed[-1]
        quantity = rng.choices([1, 2, 3], weights=[75, 20, 5])[0]
        emit(
            "add_to_cart",
            f"/products/{cart.id}",
            product={"id": cart.id, "name": cart.name, "category": cart.category,
                     "price": str(cart.price), "quantity": quantity},
        )  # fmt: skip
        if rng.random() > 0.62:
            self._remember(anonymous_id, user_id)
            return events
        emit("checkout_started", "/checkout")
        if rng.random() > 0.7:
            self._remember(anonymous_id, user_id)
            return events
        if not user_id:
            user_id = f"customer-{rng.randrange(10**6):06d}"
            emit("identify", "/checkout", properties={"traits": {"plan": "customer"}})
            events[-1]["user_id"] = user_id
        emit(
            "purchase",
            "/checkout/thank-you",
            order={"id": f"#{rng.randrange(10**8)}", "revenue": str(cart.price * quantity),
                   "currency": "USD"},
            product={"id": cart.id, "name": cart.name, "category": cart.category,
                     "price": str(cart.price), "quantity": quantity},
        )  # fmt: skip
        self._remember(anonymous_id, user_id)
        return events

    def _remember(self, anonymous_id: str, user_id: str) -> None:
        if len(self.returning) < 5000:
            self.returning.append((anonymous_id, user_id))

    def history(self, *, visitors: int, days: int, end: datetime) -> Iterator[list[dict]]:
        start = (end - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
        for _ in range(visitors):
            at = self._start_time(start, days)
            if at < end:
                yield self.journey(at)

    def anomalies(self, *, end: datetime) -> Iterator[list[dict]]:
        """A traffic spike an hour ago, an outsized order and a hyperactive bot."""
        spike_at = end - timedelta(hours=1)
        for _ in range(300):
            yield self.journey(spike_at + timedelta(seconds=self.rng.randrange(3600)))[:1]
        order = self.journey(end - timedelta(minutes=30))
        order.append(
            {
                **order[0],
                "event_id": str(uuid.UUID(int=self.rng.getrandbits(128))),
                "type": "purchase",
                "user_id": "customer-whale",
                "order": {"id": f"#whale-{self.rng.randrange(10**6)}", "revenue": "9850.00"},
            }
        )
        yield order
        yield self.journey(end - timedelta(minutes=20), bot=True)
