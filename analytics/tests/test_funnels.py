from analytics.funnel_levels import StepSpec, UnitEvent, funnel_summarize, unit_level

STEPS = [StepSpec("product_view"), StepSpec("add_to_cart"), StepSpec("purchase")]


def events(*items: tuple[float, str], properties: dict | None = None) -> list[UnitEvent]:
    return [(at, i, t, properties or {}) for i, (at, t) in enumerate(items)]


def test_ordered_funnel_allows_other_events_between_steps():
    unit = events((0, "product_view"), (5, "page_view"), (10, "add_to_cart"), (20, "purchase"))

    level = unit_level(unit, STEPS, window=None, strict=False)

    assert level.level == 3
    assert level.seconds_to_convert == 20


def test_strict_funnel_stops_at_an_event_between_steps():
    unit = events((0, "product_view"), (5, "page_view"), (10, "add_to_cart"), (20, "purchase"))

    level = unit_level(unit, STEPS, window=None, strict=True)

    assert level.level == 1


def test_strict_funnel_finds_a_later_consecutive_chain():
    unit = events(
        (0, "product_view"),
        (5, "page_view"),
        (6, "product_view"),
        (7, "add_to_cart"),
        (8, "purchase"),
    )

    level = unit_level(unit, STEPS, window=None, strict=True)

    assert level.level == 3
    assert level.seconds_to_convert == 2


def test_steps_out_of_order_do_not_count():
    unit = events((0, "add_to_cart"), (10, "product_view"), (20, "purchase"))

    assert unit_level(unit, STEPS, window=None, strict=False).level == 1


def test_window_limits_the_chain_from_its_first_step():
    unit = events((0, "product_view"), (50, "add_to_cart"), (120, "purchase"))

    assert unit_level(unit, STEPS, window=100, strict=False).level == 2
    assert unit_level(unit, STEPS, window=120, strict=False).level == 3


def test_deepest_chain_may_start_at_a_later_first_step():
    # From the first view the purchase falls outside the window; from the second it fits.
    unit = events((0, "product_view"), (90, "product_view"), (95, "add_to_cart"), (150, "purchase"))

    level = unit_level(unit, STEPS, window=100, strict=False)

    assert level.level == 3
    assert level.seconds_to_convert == 60


def test_equal_timestamps_satisfy_non_decreasing_order():
    unit: list[UnitEvent] = sorted([(5, 2, "product_view", {}), (5, 1, "add_to_cart", {})])

    assert unit_level(unit, STEPS[:2], window=0, strict=False).level == 2


def test_step_property_filters():
    steps = [StepSpec("product_view", (("category", "shoes"),)), StepSpec("purchase")]
    hats = events((0, "product_view"), (1, "purchase"), properties={"category": "hats"})
    shoes = events((0, "product_view"), (1, "purchase"), properties={"category": "shoes"})

    assert unit_level(hats, steps, window=None, strict=False).level == 0
    assert unit_level(shoes, steps, window=None, strict=False).level == 2


def test_chain_must_start_inside_the_period():
    unit = events((0, "product_view"), (10, "add_to_cart"), (20, "purchase"))

    level = unit_level(unit, STEPS, window=None, strict=False, start_from=5)

    assert level.level == 0


def test_summary_counts_conversion_and_drop_off():
    levels = [
        unit_level(events((0, "product_view")), STEPS, window=None, strict=False),
        unit_level(
            events((0, "product_view"), (1, "add_to_cart")), STEPS, window=None, strict=False
        ),
        unit_level(
            events((0, "product_view"), (1, "add_to_cart"), (4, "purchase")),
            STEPS,
            window=None,
            strict=False,
        ),
        unit_level(events((0, "page_view")), STEPS, window=None, strict=False),
    ]

    result = funnel_summarize(levels, STEPS)

    assert [(s.step, s.count, s.conversion, s.drop_off) for s in result.steps] == [
        ("product_view", 3, 1.0, 1),
        ("add_to_cart", 2, 0.666667, 1),
        ("purchase", 1, 0.333333, 1),
    ]
    assert result.median_seconds_to_convert == 4
