"""Realistic storefront journeys for demos and load: pure generation, no I/O.

A catalogue of readable products with prices and categories, funnel drop-offs, traffic that
peaks in the afternoon and evening of the shop's timezone (and a little at weekends), customers
who come back over the following weeks and buy again, visits that land on a product page from an
ad, abandoned carts, and optional anomalies (a traffic spike, an outsized order, a hyperactive
bot). Events come out in the ingestion API's format with historical timestamps; the sender posts
them with `sent_at` so the server keeps those times.
"""

import bisect
import heapq
import random
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

# category: (product lines, variants, lowest price, highest price); a product is "line, variant".
CATEGORIES = {
    "Mugs": (
        ("Stoneware Mug", "Enamel Camping Mug", "Porcelain Cup & Saucer", "Double-Walled Glass"),
        ("Sage", "Charcoal", "Cream", "Ocean Blue"),
        9,
        24,
    ),
    "Tea": (
        ("Darjeeling First Flush", "Assam Breakfast", "Sencha Green", "Jasmine Pearls",
         "Earl Grey Blue Flower", "Rooibos Vanilla", "Chamomile Blossom", "Tieguanyin Oolong"),
        ("50 g tin", "100 g pouch"),
        6,
        18,
    ),
    "Kettles": (
        ("Gooseneck Kettle", "Stovetop Whistling Kettle", "Variable-Temperature Kettle"),
        ("Matte Black", "Brushed Steel", "Copper"),
        35,
        120,
    ),
    "Teapots": (
        ("Cast-Iron Tetsubin", "Glass Teapot with Infuser", "Brown Betty Teapot",
         "Yixing Clay Pot"),
        ("0.6 l", "1 l"),
        25,
        90,
    ),
    "Gift sets": (
        ("Afternoon Tea Gift Box", "Green Tea Discovery Set", "Tea Lover's Hamper",
         "Matcha Starter Kit"),
        ("Classic", "Deluxe"),
        30,
        75,
    ),
    "Accessories": (
        ("Mesh Tea Infuser", "Bamboo Tea Scoop", "Tea Cosy", "Sand Timer"),
        ("Standard", "Large"),
        4,
        15,
    ),
}  # fmt: skip
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
# Local hour of the shop: quiet at night, busy in the afternoon, busiest in the evening.
HOUR_WEIGHTS = [0.8, 0.5, 0.3, 0.2, 0.2, 0.3, 0.6, 1.2, 2, 2.6, 3, 3.3, 3.8, 4, 4.2, 4.4, 4.6,
                5, 5.6, 6.3, 6.6, 5.6, 3.8, 1.8]  # fmt: skip
WEEKDAY_WEIGHTS = [1.0, 0.95, 0.95, 1.0, 1.05, 1.25, 1.2]
# A visitor comes back after this many days on average (exponential), at least RETURN_MIN_DAYS
# later, with the first probability after a visit without a purchase, the second after one.
RETURN_MEAN_DAYS = 8.0
RETURN_MIN_DAYS = 0.5
RETURN_PROBABILITY = (0.35, 0.55)
LANDING_ON_PRODUCT = 0.35  # ads and search results open a product page, not the home page


@dataclass(frozen=True, slots=True)
class SimulatedUnit:
    """What an experiment's assignment may look at in a simulated visit."""

    anonymous_id: str
    user_id: str
    source: str  # the visit's utm_source, "" without one
    user_agent: str
    is_returning: bool


@dataclass(frozen=True, slots=True)
class SimulatedExperiment:
    """An experiment the simulated shoppers go through, as plain data and a function.

    Events knows no experiment and no assignment rule, so the caller passes them in (the
    notifications command `simulate_experiment` passes the real assignment). A visit in
    `[start, end)` that `assign` gives a variant sees it on its landing page: an
    `experiment_exposure` event follows the landing page, and the visit's chance of buying is
    multiplied by `1 + lifts[variant]` (0.2: +20 %; the true effect on conversion).
    """

    key: str
    phase: int
    assign: Callable[[SimulatedUnit], str | None]
    lifts: Mapping[str, float] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None

    def variant_for(self, unit: SimulatedUnit, at: datetime) -> str | None:
        if (self.start and at < self.start) or (self.end and at >= self.end):
            return None
        return self.assign(unit)


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    category: str
    price: Decimal


@dataclass(slots=True)
class Visitor:
    anonymous_id: str
    user_id: str = ""
    purchases: int = 0
    visits: int = 0


@dataclass(order=True, slots=True)
class _Return:
    at: datetime
    order: int
    visitor: Visitor = field(compare=False)


def catalogue(rng: random.Random, size: int = 48) -> list[Product]:
    """`size` products, round-robin over the categories, each a distinct "line, variant"."""
    names = {
        category: [f"{line}, {variant}" for line in lines for variant in variants]
        for category, (lines, variants, _, _) in CATEGORIES.items()
    }
    for options in names.values():
        rng.shuffle(options)
    products = []
    categories = list(CATEGORIES)
    for i in range(size):
        category = categories[i % len(categories)]
        _, _, low, high = CATEGORIES[category]
        options = names[category]
        name = options[(i // len(categories)) % len(options)]
        price = Decimal(str(round(rng.uniform(low, high), 2)))
        products.append(Product(f"p{i + 1:03d}", name, category, price))
    return products


class Simulator:
    def __init__(
        self,
        *,
        shop_domain: str,
        seed: int = 7,
        timezone: str = "UTC",
        experiment: SimulatedExperiment | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.experiment = experiment
        self.domain = shop_domain
        self.zone = ZoneInfo(timezone)
        self.products = catalogue(self.rng)
        self.visitors: list[Visitor] = []  # everyone seen, for live visits that come back
        self._returns: list[_Return] = []  # heap of scheduled return visits
        self._order = 0

    def visit_times(self, *, visits: int, start: datetime, end: datetime) -> list[datetime]:
        """`visits` start times in `[start, end)`, by weekday and hour of the shop's timezone."""
        rng = self.rng
        first = start.astimezone(self.zone).date()
        days = (end.astimezone(self.zone).date() - first).days + 1
        times: list[datetime] = []
        while len(times) < visits:
            day = first + timedelta(days=rng.randrange(days))
            if rng.random() >= WEEKDAY_WEIGHTS[day.weekday()] / max(WEEKDAY_WEIGHTS):
                continue
            hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
            local = datetime(day.year, day.month, day.day, hour, tzinfo=self.zone)
            at = (local + timedelta(seconds=rng.randrange(3600))).astimezone(UTC)
            if start <= at < end:
                times.append(at)
        return sorted(times)

    def hourly_share(self, at: datetime) -> float:
        """This hour's traffic over an average hour's, in the shop's timezone (mean 1)."""
        local = at.astimezone(self.zone)
        hour = HOUR_WEIGHTS[local.hour] / (sum(HOUR_WEIGHTS) / 24)
        weekday = WEEKDAY_WEIGHTS[local.weekday()] / (sum(WEEKDAY_WEIGHTS) / 7)
        return hour * weekday

    def visitor_for(self, at: datetime, *, returning_share: float | None = None) -> Visitor:
        """Who starts a visit at `at`: someone whose return is due, else a new visitor.

        With `returning_share` (live traffic, whose returns were scheduled by another process)
        a known visitor is picked at random that often instead.
        """
        if self._returns and self._returns[0].at <= at:
            return heapq.heappop(self._returns).visitor
        if returning_share is not None and self.visitors and self.rng.random() < returning_share:
            return self.rng.choice(self.visitors)
        visitor = Visitor(anonymous_id=str(uuid.UUID(int=self.rng.getrandbits(128))))
        self.visitors.append(visitor)
        return visitor

    def _schedule_return(self, visitor: Visitor, after: datetime) -> None:
        rng = self.rng
        if rng.random() >= RETURN_PROBABILITY[1 if visitor.purchases else 0]:
            return
        days = max(RETURN_MIN_DAYS, rng.expovariate(1 / RETURN_MEAN_DAYS))
        self._order += 1
        heapq.heappush(self._returns, _Return(after + timedelta(days=days), self._order, visitor))

    def _url(self, path: str, source: tuple[str, str]) -> str:
        url = f"https://{self.domain}{path}"
        if source[0]:
            url += f"?utm_source={source[0]}&utm_medium={source[1]}&utm_campaign=autumn"
        return url

    def journey(
        self, at: datetime, *, bot: bool = False, visitor: Visitor | None = None
    ) -> list[dict]:
        """One visit: landing, browsing, maybe a cart, a checkout and a purchase.

        Without `visitor`, whoever `visitor_for(at)` picks. Someone who bought before is more
        likely to buy again.
        """
        visit = self.visit_start(at, bot=bot, visitor=visitor)
        self.visit_end(visit)
        return visit.events

    def visit_start(
        self, at: datetime, *, bot: bool = False, visitor: Visitor | None = None
    ) -> "Visit":
        """The first half of `journey`: the landing page and the product views.

        `visit_end` decides whether the visit buys. A caller that shows the shopper something
        between the two (the campaign simulator: a notification) passes its effect there.
        """
        rng = self.rng
        visitor = visitor or self.visitor_for(at)
        source = rng.choices(SOURCES, weights=SOURCE_WEIGHTS)[0]
        context = {
            "user_agent": "python-requests/2.32 (bot)" if bot else rng.choice(USER_AGENTS),
            "country": rng.choices(COUNTRIES, weights=COUNTRY_WEIGHTS)[0],
        }
        visit = Visit(self, visitor, bot=bot, source=source, context=context, clock=at)
        self._browse(visit)
        return visit

    def visit_end(self, visit: "Visit", *, lift: float | None = None) -> None:
        """The second half of `journey`: maybe a cart, a checkout and a purchase.

        The chance to add to the cart (and so to buy: the later steps do not depend on it) is
        multiplied by `1 + lift`, capped at 1; without `lift`, the experiment's for the visit's
        variant (none without an experiment).
        """
        loyal = visit.is_loyal
        buying = (0.45 if loyal else 0.3) * (1 + (self._lift(visit) if lift is None else lift))
        visit.visitor.visits += 1
        if not (visit.bot or not visit.viewed or self.rng.random() > buying):
            self._buy(visit, loyal=loyal)
        self._schedule_return(visit.visitor, visit.clock)

    def _browse(self, visit: "Visit") -> None:
        rng = self.rng
        favourite = rng.choice(self.products)
        if not visit.bot and visit.source[0] and rng.random() < LANDING_ON_PRODUCT:
            visit.view(favourite)
        else:
            visit.emit("page_view", "/", title="Home")
        self._expose(visit)
        views = (
            400 if visit.bot else rng.choices([0, 1, 2, 3, 4, 6], weights=[25, 30, 20, 12, 8, 5])[0]
        )
        for _ in range(views):
            visit.view(favourite if rng.random() < 0.3 else rng.choice(self.products))

    def _expose(self, visit: "Visit") -> None:
        """The landing page shows the visit's variant, if the experiment assigns it one."""
        experiment = self.experiment
        if experiment is None or visit.bot:
            return
        unit = SimulatedUnit(
            anonymous_id=visit.visitor.anonymous_id,
            user_id=visit.visitor.user_id,
            source=visit.source[0],
            user_agent=visit.context["user_agent"],
            is_returning=visit.visitor.visits > 0,
        )
        visit.variant = experiment.variant_for(unit, visit.clock)
        if visit.variant is not None:
            properties = {"experiment": experiment.key, "variant": visit.variant,
                          "phase": experiment.phase}  # fmt: skip
            landing = urlsplit(visit.events[0]["url"]).path
            visit.emit("experiment_exposure", landing, properties=properties)

    def _lift(self, visit: "Visit") -> float:
        if self.experiment is None or visit.variant is None:
            return 0.0
        return self.experiment.lifts.get(visit.variant, 0.0)

    def _buy(self, visit: "Visit", *, loyal: bool) -> None:
        """The last product viewed into the cart, then maybe a checkout and a purchase."""
        rng = self.rng
        cart = visit.viewed[-1]
        quantity = rng.choices([1, 2, 3], weights=[75, 20, 5])[0]
        line = {"id": cart.id, "name": cart.name, "category": cart.category,
                "price": str(cart.price), "quantity": quantity}  # fmt: skip
        visit.emit("add_to_cart", f"/products/{cart.id}", product=dict(line))
        if rng.random() > (0.75 if loyal else 0.6):
            return
        visit.emit("checkout_started", "/checkout")
        if rng.random() > 0.7:
            return
        if not visit.visitor.user_id:
            visit.visitor.user_id = f"customer-{rng.randrange(10**6):06d}"
            visit.emit("identify", "/checkout", properties={"traits": {"plan": "customer"}})
        visit.emit(
            "purchase",
            "/checkout/thank-you",
            order={"id": f"#{rng.randrange(10**8)}", "revenue": str(cart.price * quantity),
                   "currency": "USD"},
            product=dict(line),
        )  # fmt: skip
        visit.visitor.purchases += 1

    def history(self, *, visitors: int, days: int, end: datetime) -> Iterator[list[dict]]:
        """`visitors` visits over the `days` days before `end`, oldest first.

        Each visit is a new visitor unless someone's return is due: returns are scheduled days
        or weeks after a visit, so a share of the visits are people coming back.
        """
        start = end - timedelta(days=days)
        for at in self.visit_times(visits=visitors, start=start, end=end):
            yield self.journey(at)

    def anomalies(self, *, end: datetime) -> Iterator[list[dict]]:
        """A traffic spike an hour ago, an outsized order and a hyperactive bot."""
        spike_at = end - timedelta(hours=1)
        for _ in range(300):
            at = spike_at + timedelta(seconds=self.rng.randrange(3600))
            yield self.journey(at, visitor=self._newcomer())[:1]
        order = self.journey(end - timedelta(minutes=30), visitor=self._newcomer())
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
        # 400 views a few seconds apart, ending by `end`: history never runs into the future.
        bot = self.journey(end - timedelta(minutes=45), bot=True, visitor=self._newcomer())
        yield [event for event in bot if datetime.fromisoformat(event["timestamp"]) < end]

    def _newcomer(self) -> Visitor:
        # Anomalies are one-off visitors: not in `visitors`, so live traffic never picks them.
        return Visitor(anonymous_id=str(uuid.UUID(int=self.rng.getrandbits(128))))


class Visit:
    """One visit's events as they are emitted: its clock, source, context and products viewed.

    `emit` appends an event at the visit's clock and moves the clock on by a reading pause.
    """

    def __init__(
        self,
        simulator: Simulator,
        visitor: Visitor,
        *,
        bot: bool,
        source: tuple[str, str],
        context: dict,
        clock: datetime,
    ) -> None:
        self.simulator, self.visitor, self.bot = simulator, visitor, bot
        self.source, self.context, self.clock = source, context, clock
        self.events: list[dict] = []
        self.viewed: list[Product] = []
        self.variant: str | None = None
        # Someone who bought before is more likely to buy again (as of the visit's start).
        self.is_loyal = visitor.purchases > 0

    def emit(self, event_type: str, path: str, **extra: object) -> None:
        simulator, rng = self.simulator, self.simulator.rng
        self.events.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "type": event_type,
                "anonymous_id": self.visitor.anonymous_id,
                "user_id": self.visitor.user_id,
                # Only the landing page carries the campaign's UTM tags.
                "url": simulator._url(path, self.source)
                if not self.events
                else f"https://{simulator.domain}{path}",
                "timestamp": self.clock.isoformat(),
                "referrer": "https://www.google.com/" if self.source[0] == "google" else "",
                "context": self.context,
                **extra,
            }
        )
        self.clock += timedelta(seconds=rng.randint(2, 8) if self.bot else rng.randint(8, 150))

    def emit_at(self, at: datetime, event_type: str, path: str, **extra: object) -> None:
        """An event at `at`, in time order among the visit's events; the clock stays where it
        is. For what happens on a page between two of the journey's events (a notification
        shown)."""
        clock = self.clock
        self.clock = at
        self.emit(event_type, path, **extra)
        self.clock = clock
        event = self.events.pop()
        times = [datetime.fromisoformat(e["timestamp"]) for e in self.events]
        self.events.insert(bisect.bisect_right(times, at), event)

    def view(self, product: Product) -> None:
        self.viewed.append(product)
        self.emit(
            "product_view",
            f"/products/{product.id}",
            title=product.name,
            product={"id": product.id, "name": product.name, "category": product.category,
                     "price": str(product.price)},
        )  # fmt: skip
