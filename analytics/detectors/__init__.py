"""Anomaly detectors: pure functions over plain pandas series and frames (no database).

`seasonal` (traffic and business series), `orders` (purchase outliers and high-value orders),
`bots` (hyperactive users and bots), `health` (tracking health). Each returns dataclass findings
with observed, expected, band, severity and a plain-language explanation; storing, alerting and
scheduling them is the caller's job. docs/anomalies.md has the formulas and measured figures.
"""
