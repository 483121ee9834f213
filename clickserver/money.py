"""Money as the API writes it: a decimal string with two places ("12.50"), "0.00" for nothing."""

from decimal import Decimal


def money_format(value: Decimal | int | None) -> str:
    return f"{Decimal(value or 0):.2f}"
