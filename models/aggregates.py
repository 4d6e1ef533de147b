"""Aggregate SQL expressions that give the same, exact answer on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Date, cast, func, literal_column
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

# Every money column is Numeric(18, 8): USD to the hundred-millionth.
COST_SCALE = 8


class _CostUnits(TypeDecorator):
    """An integer count of 10**-COST_SCALE USD, read back as an exact Decimal with that scale."""

    impl = BigInteger
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        # PostgreSQL answers SUM(bigint) as an integral numeric, SQLite as an int.
        return None if value is None else Decimal(int(value)).scaleb(-COST_SCALE)


def exact_cost_sum(column: Any) -> ColumnElement[Decimal]:
    """SUM of a Numeric(18, 8) money column, exact on both back ends; 0 over no rows.

    SQLite keeps NUMERIC values as 8-byte floats and sums them as floats, so a naive SUM drifts
    (a large cost plus many tiny ones loses the tiny ones). Each value is first rounded to an
    integer count of 10**-8 USD, exact while one value stays below 2**53 units (about 90 million
    USD), and integers sum exactly. On PostgreSQL the rounding changes nothing.
    """
    units = cast(func.round(column * literal_column(str(10**COST_SCALE))), BigInteger)
    return func.coalesce(func.sum(units), 0, type_=_CostUnits())


class utc_date(FunctionElement):
    """The UTC calendar date of a ``UTCDateTime`` column, as a ``date``.

    PostgreSQL's date of a timestamptz depends on the connection's TimeZone setting, so the
    value is first moved to UTC; SQLite stores naive UTC text, whose ``date()`` is already UTC.
    The SQL is literal (no bound parameters), so the same expression can be grouped by.
    """

    type = Date()
    name = "utc_date"
    inherit_cache = True


@compiles(utc_date)
def _utc_date(element: utc_date, compiler: Any, **kw: Any) -> str:
    return f"CAST(({compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC') AS DATE)"


@compiles(utc_date, "sqlite")
def _utc_date_sqlite(element: utc_date, compiler: Any, **kw: Any) -> str:
    return f"date({compiler.process(element.clauses, **kw)})"
