"""Inserting many rows through the database driver's ``executemany`` with the statement
compiled once per table and column set. SQLAlchemy's own executemany builds and converts
every row's parameters generically, which was a twentieth of deciding a batch of claims;
here each column's converter (SQLAlchemy's own, for the dialect) runs once per distinct
value: the rows of a batch share their tenant, timestamps and most dates."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Table, insert

Converter = Callable[[Any], Any] | None


Plan = tuple[str, tuple[str, ...], tuple[Converter, ...]]  # statement, its columns in order, their converters


@functools.lru_cache(maxsize=256)
def _plan(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> Plan | None:
    """None where a column left out has a Python-side default: SQLAlchemy's path fills it in."""
    if any(c.default is not None and c.key not in columns and not c.primary_key for c in table.c):
        return None
    compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
    order = tuple(compiled.positiontup or ()) if dialect.positional else columns
    converters = tuple(table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in order)
    return str(compiled), order, converters


def insert_many(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """``INSERT`` every row (a mapping of column name to value, as for SQLAlchemy's
    ``connection.execute(insert(table), rows)``, which gives the same stored values)."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    for columns, group in groups.items():
        plan = _plan(connection.dialect, table, columns)
        if plan is None:
            connection.execute(insert(table), list(group))
            continue
        sql, order, converters = plan
        take = operator.itemgetter(*order)  # the row's values in statement order, in C
        converting: list[tuple[int, Callable[[Any], Any], dict[Any, Any]]] = [
            (index, convert, {}) for index, convert in enumerate(converters) if convert is not None]
        values: list[list[Any]] = []
        for row in group:
            converted = list(take(row)) if len(order) > 1 else [take(row)]
            for index, convert, memo in converting:
                value = converted[index]
                if value is None:
                    continue
                try:
                    converted[index] = memo[value]
                except KeyError:
                    converted[index] = memo[value] = convert(value)
                except TypeError:  # not hashable (a JSON document): converted every time
                    converted[index] = convert(value)
            values.append(converted)
        if connection.dialect.positional:
            connection.exec_driver_sql(sql, [tuple(v) for v in values])
        else:
            connection.exec_driver_sql(sql, [dict(zip(order, v, strict=True)) for v in values])
