"""Wire types for money, quantities and time.

Money and quantities travel as decimal *strings* and live as ``Decimal`` in code; a JSON number
(float or int) where a decimal belongs is refused, because a float has already lost the cents.
Times are timezone-aware and normalised to UTC; a naive time is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Context, Decimal, InvalidOperation, localcontext
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    PlainSerializer,
    WithJsonSchema,
)

MAX_DIGITS = 38  # what a NUMERIC(38, 18) column and any sane order size fit in
DECIMAL_PATTERN = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"
DECIMAL_TEXT = re.compile(DECIMAL_PATTERN)


def parse_decimal(value: Any) -> Decimal:
    """Accept a decimal string (or a ``Decimal`` built in code); refuse floats, ints and junk."""
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, str):
        if not DECIMAL_TEXT.match(value):  # what the OpenAPI says (no NaN, no 1_000)
            raise ValueError(f"{value[:40]!r} is not a decimal number")
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value[:40]!r} is not a decimal number") from None
    else:
        raise ValueError(
            f'must be a decimal string such as "0.25", not {type(value).__name__} '
            "(JSON numbers lose precision)"
        )
    if not number.is_finite():
        raise ValueError("must be a finite number")
    if len(number.as_tuple().digits) > MAX_DIGITS or abs(number.adjusted()) > MAX_DIGITS:
        raise ValueError(f"has more than {MAX_DIGITS} digits")
    return number


def format_decimal(value: Decimal) -> str:
    """Plain notation without trailing zeros, never exponent form: ``1E-8`` goes out as
    ``0.00000001``, ``-25.000000000000000000`` as ``-25``. The value is unchanged."""
    if value.is_zero():
        return "0"
    with localcontext(Context(prec=MAX_DIGITS * 2)):
        return format(value.normalize(), "f")


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


EARLIEST_YEAR, LATEST_YEAR = 1970, 2999
"""Times outside these years are refused on the wire: none is real market data, and inside them
adding or subtracting any duration the services use (at most years) cannot overflow."""


def _to_utc(value: datetime) -> datetime:
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(
            f"year {value.year} is outside {EARLIEST_YEAR}-{LATEST_YEAR}: not a real event time"
        )
    return value.astimezone(UTC)


Dec = Annotated[
    Decimal,
    BeforeValidator(parse_decimal),
    PlainSerializer(format_decimal, return_type=str, when_used="json"),
    # A string on the wire, never a JSON number (which is refused): say so in every schema.
    WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN, "examples": ["0.25"]}),
]
"""Any decimal amount: price, size, fee, P&L (may be negative)."""

NonNegativeDec = Annotated[Dec, AfterValidator(_non_negative)]
PositiveDec = Annotated[Dec, AfterValidator(_positive)]
UtcTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


def utc_now() -> datetime:
    """Wall-clock time, aware UTC. Only clocks passed into cores should call this."""
    return datetime.now(UTC)
