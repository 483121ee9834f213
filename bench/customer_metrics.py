"""Backtest of the customer predictions and the revenue forecast on UCI Online Retail.

    python bench/customer_metrics.py [CSV] [--cutoff 2011-09-10] [--holdout-days 90]
        [--purchase-days 30]

Customers: orders are invoices with a CustomerID (lines summed; credit notes, InvoiceNo 'C...',
are negative orders netted against revenue). Every model sees only orders before `--cutoff`
(exclusive: the default fits on orders up to 2011-09-09) and predicts, for each customer with
an order by then, purchase days and net revenue in the next `--holdout-days` and the chance of
buying in the next `--purchase-days`:
- btyd: BG/NBD (days) x Gamma-Gamma x the shop's net share of order value;
- gbm: HistGradientBoosting on RFM features, trained on earlier origins (rfm_model.py);
- baseline: each customer's last 90 days repeated.
Scores: MAE, Spearman and normalised Gini against the actual holdout (orders and revenue), and
ROC-AUC of the purchase score. Forecast: daily net revenue and orders (all invoices, with or
without CustomerID) 28 days ahead from weekly rolling origins, MAPE and 80/95 % coverage on
open days, against seasonal naive; origins 2011-03-04..05-27 ("early": where the interval
method was chosen) and 2011-06-03..11-11 ("late"; the default window of 84 days was set before
either was run), and "all" (both). "model" is the forecast as shipped; "model_plain" the same
regression with its plain prediction intervals (no level-shift term: the method before).
Prints a table, then one JSON line.
"""

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from segments.predictions import btyd
from segments.predictions.evaluation import ranking_auc, value_scores
from segments.predictions.forecast import (
    daily_series,
    forecast_backtest,
    seasonal_naive_forecast,
    series_forecast,
)
from segments.predictions.rfm_model import (
    baseline_predict,
    rfm_features,
    rfm_model_fit,
    rfm_model_predict,
)
from segments.predictions.summary import (
    DAY,
    holdout_summarize,
    orders_net_share,
    orders_summarize,
)

DEFAULT_CSV = (
    Path(os.environ.get("CLICKSERVER_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data"))
    / "online_retail/online_retail.csv.gz"
)
# Lower is better for MAE, higher for every other score.
LOWER_IS_BETTER = {"mae"}
ORIGINS = {
    "early": pd.date_range("2011-03-04", "2011-05-27", freq="7D"),
    "late": pd.date_range("2011-06-03", "2011-11-11", freq="7D"),
}
ORIGINS["all"] = ORIGINS["early"].append(ORIGINS["late"])


def invoices_load(path: Path) -> pd.DataFrame:
    """One row per invoice: customer_id (NaN when anonymous), ordered_at, value (net of lines).

    'A' invoices are bad-debt adjustments, not orders; they are left out.
    """
    lines = pd.read_csv(
        path,
        dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": "float64"},
        parse_dates=["InvoiceDate"],
    )
    lines = lines[lines["InvoiceNo"].str[0].str.match(r"[0-9C]")]
    lines = lines.assign(line_value=lines["Quantity"] * lines["UnitPrice"])
    return lines.groupby("InvoiceNo", as_index=False).agg(
        customer_id=("CustomerID", "first"),
        ordered_at=("InvoiceDate", "min"),
        value=("line_value", "sum"),
    )


def btyd_predict(orders: pd.DataFrame, *, cutoff, holdout_days: int, purchase_days: int):
    summary = orders_summarize(orders, cutoff=cutoff, unit_days=1.0)
    x, t_x, big_t = summary["frequency"], summary["recency"], summary["T"]
    purchases = btyd.bgnbd_fit(x, t_x, big_t)
    repeat = summary[(x > 0) & (summary["monetary"] > 0)]
    spend = btyd.gamma_gamma_fit(repeat["frequency"], repeat["monetary"])
    share = orders_net_share(orders, cutoff=cutoff)
    expected_orders = btyd.bgnbd_expected_purchases(purchases, holdout_days, x, t_x, big_t)
    revenue = btyd.clv_expected(
        purchases, spend, x, t_x, big_t, summary["monetary"], horizon=holdout_days
    )
    predictions = pd.DataFrame(
        {
            "expected_orders": expected_orders,
            "expected_revenue": revenue * share,
            "purchase_probability": btyd.bgnbd_purchase_probability(
                purchases, purchase_days, x, t_x, big_t
            ),
        },
        index=summary.index,
    )
    fitted = {"bgnbd": purchases, "gamma_gamma": spend, "net_share": share}
    return predictions, fitted


def customers_backtest(orders: pd.DataFrame, args) -> dict:
    cutoff = pd.Timestamp(args.cutoff)
    known = orders_summarize(orders, cutoff=cutoff).index
    actual = holdout_summarize(orders, start=cutoff, end=cutoff + args.holdout_days * DAY)
    actual = actual.reindex(known, fill_value=0)
    soon = holdout_summarize(orders, start=cutoff, end=cutoff + args.purchase_days * DAY)
    bought = soon["orders"].reindex(known, fill_value=0) > 0

    started = time.perf_counter()
    btyd_predictions, fitted = btyd_predict(
        orders, cutoff=cutoff, holdout_days=args.holdout_days, purchase_days=args.purchase_days
    )
    btyd_seconds = time.perf_counter() - started
    started = time.perf_counter()
    gbm = rfm_model_fit(
        orders, cutoff=cutoff, horizon_days=args.holdout_days, purchase_days=args.purchase_days
    )
    gbm_predictions = rfm_model_predict(gbm, rfm_features(orders, cutoff=cutoff))
    gbm_seconds = time.perf_counter() - started
    models = {
        "btyd": btyd_predictions,
        "gbm": gbm_predictions,
        "baseline": baseline_predict(orders, cutoff=cutoff, lookback_days=args.holdout_days),
    }
    scores: dict[str, dict[str, float]] = {}
    for name, predicted in models.items():
        predicted = predicted.reindex(known)
        row = {}
        for target in ("orders", "revenue"):
            figures = value_scores(actual[target], predicted[f"expected_{target}"])
            row |= {f"{target}_{k}": getattr(figures, k) for k in ("mae", "spearman", "gini")}
        row["purchase_auc"] = ranking_auc(bought, predicted["purchase_probability"])
        row[f"total_{args.holdout_days}d_revenue"] = float(predicted["expected_revenue"].sum())
        scores[name] = row
    b, g = fitted["bgnbd"], fitted["gamma_gamma"]
    return {
        "customers": len(known),
        "holdout_buyers": int((actual["orders"] > 0).sum()),
        "actual_revenue": float(actual["revenue"].sum()),
        "bgnbd": {"r": b.r, "alpha": b.alpha, "a": b.a, "b": b.b, "ll": b.log_likelihood},
        "gamma_gamma": {"p": g.p, "q": g.q, "v": g.v, "customers": g.customer_count},
        "net_share": fitted["net_share"],
        "gbm_training_rows": gbm.training_rows,
        "fit_seconds": {"btyd": btyd_seconds, "gbm": gbm_seconds},
        "scores": scores,
    }


def forecast_runs(invoices: pd.DataFrame) -> dict:
    start = invoices["ordered_at"].min().floor("D")
    # The last day of the file is partial (it stops at midday): leave it out.
    end = invoices["ordered_at"].max().floor("D")
    daily = daily_series(invoices, start=start, end=end)
    methods = {
        "model": partial(series_forecast, activity=daily["orders"]),
        "model_plain": partial(series_forecast, activity=daily["orders"], level_shift=False),
        "seasonal_naive": seasonal_naive_forecast,
    }
    figures = {}
    for span, origins in ORIGINS.items():
        for target in ("revenue", "orders"):
            for name, method in methods.items():
                result = forecast_backtest(
                    daily[target], origins=list(origins), method=method, activity=daily["orders"]
                )
                figures[f"{span}/{target}/{name}"] = {
                    "mape": result.mape,
                    "coverage_80": result.coverage_80,
                    "coverage_95": result.coverage_95,
                    "points": result.points,
                }
    return figures


def _winner(scores: dict, metric: str, candidates: list[str]) -> str:
    pick = min if metric.split("_")[-1] in LOWER_IS_BETTER else max
    return pick(candidates, key=lambda name: scores[name][metric])


def report_print(customers: dict, forecasts: dict) -> dict:
    scores = customers["scores"]
    metrics = [m for m in scores["btyd"] if not m.startswith("total_")]
    print(f"customers {customers['customers']}, holdout buyers {customers['holdout_buyers']}")
    print(f"{'metric':<18}{'btyd':>12}{'gbm':>12}{'baseline':>12}  best  beats baseline")
    winners = {}
    for metric in metrics:
        best = _winner(scores, metric, ["btyd", "gbm"])
        versus = _winner(scores, metric, [best, "baseline"])
        winners[metric] = {"best": best, "beats_baseline": versus == best}
        cells = "".join(f"{scores[n][metric]:>12.4f}" for n in ("btyd", "gbm", "baseline"))
        print(f"{metric:<18}{cells}  {best:<5} {'yes' if versus == best else 'no'}")
    print(f"{'forecast':<30}{'MAPE':>8}{'cov80':>8}{'cov95':>8}{'days':>6}")
    for key, row in forecasts.items():
        print(
            f"{key:<30}{row['mape']:>8.3f}{row['coverage_80']:>8.3f}"
            f"{row['coverage_95']:>8.3f}{row['points']:>6}"
        )
    return winners


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--cutoff", default="2011-09-10")
    parser.add_argument("--holdout-days", type=int, default=90)
    parser.add_argument("--purchase-days", type=int, default=30)
    args = parser.parse_args()
    if not args.csv.is_file():
        sys.exit(f"UCI Online Retail not found at {args.csv}")

    invoices = invoices_load(args.csv)
    orders = invoices.dropna(subset=["customer_id"]).astype({"customer_id": "int64"})
    customers = customers_backtest(orders, args)
    forecasts = forecast_runs(invoices)
    winners = report_print(customers, forecasts)
    print(json.dumps({**customers, "winners": winners, "forecast": forecasts}, default=float))


if __name__ == "__main__":
    main()
