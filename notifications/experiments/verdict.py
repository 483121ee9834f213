"""The plain-language verdict of a results document: pure, one sentence or two.

"Variant B raised conversion by 1.8 pp (95 % CI 0.6–3.0); keep collecting for 3 more days to
reach the planned power." Proportions (conversion, add-to-cart, bounce) speak in percentage points
of the absolute difference, every other metric in per cent of the relative uplift.
"""

from typing import Any

from notifications.experiments.analysis import LOWER_IS_BETTER, PROPORTIONS


def _effect_text(kind: str, row: dict[str, Any], level: int) -> str | None:
    """ "by 1.8 pp (95 % CI 0.6–3.0)" for the arm's effect; None when it has no interval."""
    if kind in PROPORTIONS:
        interval, scale, unit = row.get("absolute"), 100, " pp"
    else:
        interval, scale, unit = row.get("relative"), 100, " %"
    if interval is None:
        return None
    estimate, low, high = (interval[k] * scale for k in ("estimate", "ci_low", "ci_high"))
    return f"by {abs(estimate):.1f}{unit} ({level} % CI {low:.1f}–{high:.1f})"


def _arm_label(arm: dict[str, Any]) -> str:
    return f"Variant {arm['name'] or arm['variant']}"


def arm_named(result: dict[str, Any]) -> dict[str, Any] | None:
    """The treatment arm the verdict speaks of: the smallest p-value on the primary metric;
    None while no treatment arm has one (too few units)."""
    primary = result.get("primary_metric")
    compared = [
        arm
        for arm in result.get("arms", [])
        if not arm["is_control"] and arm["metrics"].get(primary, {}).get("p_value") is not None
    ]
    return min(compared, key=lambda arm: arm["metrics"][primary]["p_value"], default=None)


def verdict_write(result: dict[str, Any]) -> str:
    """One sentence on the primary metric, then the SRM alarm or the power still to reach.

    A result that collects no more units (`is_collecting` false: stopped, or an ended phase) says
    what was found, without "yet" and without asking to keep collecting.
    """
    collecting = result.get("is_collecting", True)
    arms = result["arms"]
    if not arms or sum(arm["units"] for arm in arms) == 0:
        return "No exposed units yet." if collecting else "No units were exposed."
    kind = result["primary_metric"].split(":")[0]
    primary = result["primary_metric"]
    label = result["metrics"][0]["label"]
    level = round(100 * (1 - result["alpha"]))
    best = arm_named(result)
    if best is None:
        sentence = f"Too few units to compare {label} yet."
    else:
        row = best["metrics"][primary]
        text = _effect_text(kind, row, level)
        if row["is_significant"] and text:
            rose = row["absolute"]["estimate"] > 0
            verb = "raised" if rose else "lowered"
            sentence = f"{_arm_label(best)} {verb} {label} {text}"
            if rose == (kind in LOWER_IS_BETTER):
                sentence += " (worse)"
        else:
            sentence = (
                f"No variant differs significantly from control on {label} yet"
                if collecting
                else f"No variant differed significantly from control on {label}"
            )
            if text:
                sign = "+" if row["absolute"]["estimate"] >= 0 else "−"
                sentence += f" ({_arm_label(best)}: {sign}{text[3:]})"
    parts = [sentence]
    srm = result.get("srm")
    if srm and srm["is_mismatch"]:
        parts.append(
            f"sample ratio mismatch (p = {srm['p_value']:.2g}): the split is not what the "
            "weights ask for, so do not trust these numbers until the cause is found"
        )
    power = result.get("power")
    if not collecting:
        if power and power["days_remaining"]:
            parts.append("it stopped before reaching the planned power")
    elif power and power["days_remaining"]:
        days = power["days_remaining"]
        parts.append(
            f"keep collecting for {days} more day{'s' if days != 1 else ''} to reach the "
            "planned power"
        )
    elif power and power["days_remaining"] is None:
        parts.append("no traffic yet to reach the planned power")
    return "; ".join(parts) + "."
