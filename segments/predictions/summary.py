"""From an order table to the per-customer summary the customer models read.

The order table has one row per order (never per line item): a customer id, the instant it was
placed, and its value. A negative value is a refund or cancellation: it lowers revenue but is
not a purchase; a zero value is a purchase. Windows are half-open, `[start, cutoff)`.

Definitions (those of Fader, Hardie & Lee and of `lifetimes`, so the published CDNOW summary is
reproduced exactly, see tests):
- time is counted in whole days: every purchase on a day is one purchase occasion at the start
  of that day (the models are continuous-time Poisson processes; several orders on one day are
  one shopping trip, often a split basket, and would otherwise read as an extreme buying rate);
- `frequency` x: purchase days after the first one (repeat purchases);
- `recency` t_x: last purchase day minus first purchase day; `T`: the last day of the window
  minus the first purchase day (a first purchase on the window's last day has T = 0);
- `monetary`: the mean value of the repeat purchase days (each day's orders summed;
  the first purchase is left out, as the Gamma-Gamma fits do), 0 without repeats;
- `revenue`: all values in the window, refunds and cancellations netted.
Durations are divided by `unit_days` (1 for days, 7 for weeks).
"""

import numpy as np
import pandas as pd

DAY = pd.Timedelta(days=1)
SUMMARY_COLUMNS = ["frequency", "recency", "T", "monetary", "revenue", "first_at", "last_at"]


def orders_validate(orders: pd.DataFrame) -> pd.DataFrame:
    """The columns `customer_id`, `ordered_at` (datetime64), `value` (float), nothing else."""
    missing = {"customer_id", "ordered_at", "value"} - set(orders.columns)
    if missing:
        raise ValueError(f"orders: missing columns {sorted(missing)}")
    frame = orders[["customer_id", "ordered_at", "value"]].copy()
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"])
    frame["value"] = frame["value"].astype(float)
    return frame


def _purchase_days(orders: pd.DataFrame) -> pd.DataFrame:
    """One row per customer and day with at least one order (value >= 0): the day's value.

    A zero-value order (a free sample, a full discount) is still a purchase; CDNOW has some.
    """
    bought = orders[orders["value"] >= 0]
    days = bought.assign(day=bought["ordered_at"].dt.floor("D"))
    return days.groupby(["customer_id", "day"], as_index=False, sort=True)["value"].sum()


def orders_summarize(
    orders: pd.DataFrame, *, cutoff: pd.Timestamp, unit_days: float = 1.0
) -> pd.DataFrame:
    """Per-customer frequency, recency, T, monetary and revenue for orders before `cutoff`.

    Index: customer_id; one row per customer with an order (value >= 0) before the cutoff.
    `first_at` and `last_at` are the first and last purchase days.
    """
    frame = orders_validate(orders)
    frame = frame[frame["ordered_at"] < cutoff]
    days = _purchase_days(frame)
    if days.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS, index=pd.Index([], name="customer_id"))
    # The observation ends at the start of the window's last day (see the module docstring).
    last_day = (pd.Timestamp(cutoff) - pd.Timedelta(microseconds=1)).floor("D")
    grouped = days.groupby("customer_id", sort=True)
    first = grouped["day"].min()
    last = grouped["day"].max()
    count = grouped["day"].size()
    first_value = grouped["value"].first()
    total_value = grouped["value"].sum()
    repeat = count - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        monetary = np.where(repeat > 0, (total_value - first_value) / repeat, 0.0)
    revenue = frame.groupby("customer_id")["value"].sum().reindex(first.index, fill_value=0.0)
    summary = pd.DataFrame(
        {
            "frequency": repeat.astype(int),
            "recency": (last - first) / DAY / unit_days,
            "T": (last_day - first) / DAY / unit_days,
            "monetary": monetary,
            "revenue": revenue,
            "first_at": first,
            "last_at": last,
        }
    )
    summary.index.name = "customer_id"
    return summary


def holdout_summarize(
    orders: pd.DataFrame, *, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame:
    """Per-customer purchase days (`orders`) and net `revenue` in `[start, end)`.

    Purchase days, not invoices, so the actual count is the quantity BG/NBD predicts.
    """
    frame = orders_validate(orders)
    frame = frame[(frame["ordered_at"] >= start) & (frame["ordered_at"] < end)]
    days = _purchase_days(frame).groupby("customer_id")["day"].size()
    revenue = frame.groupby("customer_id")["value"].sum()
    result = pd.DataFrame({"orders": days, "revenue": revenue}).fillna(0.0)
    result["orders"] = result["orders"].astype(int)
    result.index.name = "customer_id"
    return result


def orders_net_share(orders: pd.DataFrame, *, cutoff: pd.Timestamp) -> float:
    """Net revenue / order value before `cutoff`: the share of spend that is not refunded.

    Gamma-Gamma models the value of purchases (refunds are not purchases); multiplying its
    expected spend by this share turns it into the expected net revenue that a shop reports.
    """
    frame = orders_validate(orders)
    frame = frame[frame["ordered_at"] < cutoff]
    gross = frame.loc[frame["value"] >= 0, "value"].sum()
    if gross <= 0:
        return 1.0
    return float(np.clip(frame["value"].sum() / gross, 0.0, 1.0))
