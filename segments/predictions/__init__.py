"""Customer predictions as pure functions over pandas/numpy: no models, no database.

- `summary`: orders -> per-customer frequency / recency / T / monetary at a cut-off;
- `btyd`: BG/NBD and Gamma-Gamma likelihoods, fits, expectations and CLV;
- `rfm_model`: the gradient-boosted alternative on RFM features and the 90-day-spend baseline;
- `evaluation`: the backtest metrics (MAE, Spearman, normalised Gini, ROC-AUC);
- `forecast`: a shop's daily revenue and orders for the next 28 days with intervals.
docs/customers.md explains each prediction and the backtest figures.
"""
