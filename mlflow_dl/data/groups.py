"""Feature groups for multi-input models: which columns feed which named input.

A groups spec is `;`-separated groups of `,`-separated items, each a column name
or an fnmatch glob (`"mean *;worst *;* error"`), optionally named `name=items`;
or `auto` / `auto:N` for N contiguous blocks of the columns in their order.
Knows nothing of MLflow or Keras.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import replace

from mlflow_dl.data.split import Splits
from mlflow_dl.errors import ConfigError

AUTO_GROUPS = 3


def _input_name(items: list[str], taken: set[str], i: int) -> str:
    """A Keras-safe input name from a group's first item: 'mean *' -> 'mean', '* error' -> 'error'."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", items[0]).strip("_").lower() or f"group_{i}"
    if name[0].isdigit():
        name = f"g_{name}"
    base, n = name, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def _auto(text: str, columns: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    count = text.partition(":")[2].strip() or str(AUTO_GROUPS)
    if not count.isdigit() or not 2 <= int(count) <= len(columns):
        raise ConfigError(f"groups={text!r} is invalid; expected auto or auto:N with 2 <= N <= {len(columns)} "
                          f"(the number of feature columns)")
    n = int(count)
    bounds = [round(i * len(columns) / n) for i in range(n + 1)]
    return {f"block_{i}": tuple(columns[bounds[i]:bounds[i + 1]]) for i in range(n)}


def parse_groups(text: str, columns: tuple[str, ...] | list[str]) -> dict[str, tuple[str, ...]]:
    """Input name -> its columns (in the data's order). ConfigError naming the bad group otherwise.

    Every group must match at least one column and no column may be in two
    groups; columns matched by no group are left out of the model.
    """
    columns = tuple(map(str, columns))
    text = (text or "").strip()
    if text.lower().startswith("auto"):
        return _auto(text, columns)
    out: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for i, group in enumerate(text.split(";")):
        name, sep, body = group.partition("=")
        if not sep:
            name, body = "", group
        items = [item.strip() for item in body.split(",") if item.strip()]
        if not items:
            raise ConfigError(f"groups={text!r} has an empty group (number {i + 1}); expected column names or globs "
                              f"in each ';'-separated group, or auto")
        matched = []
        for item in items:
            hits = [c for c in columns if fnmatch.fnmatchcase(c, item)]
            if not hits:
                raise ConfigError(f"groups: {item!r} matches no column; columns are: {', '.join(columns[:8])}"
                                  f"{', ...' if len(columns) > 8 else ''}")
            matched += [c for c in hits if c not in matched]
        name = re.sub(r"[^0-9a-zA-Z_]+", "_", name.strip()) if name.strip() else _input_name(items, set(out), i)
        if name in out:
            raise ConfigError(f"groups: the input name {name!r} is used twice; expected one name per group")
        for column in matched:
            if column in owner:
                raise ConfigError(f"groups: column {column!r} is in two groups ({owner[column]!r} and {name!r}); "
                                  f"expected each column in one group at most")
            owner[column] = name
        out[name] = tuple(c for c in columns if c in matched)
    if len(out) < 2:
        raise ConfigError(f"groups={text!r} makes {len(out)} group; a multi-input model needs two or more "
                          f"(';' separates groups)")
    return out


def restrict(splits: Splits, groups: dict[str, tuple[str, ...]]) -> Splits:
    """Only the grouped columns (in the data's order), in the arrays and in the preprocessing.

    The single-input baseline and the multi-input model then see, and the served
    models ask for, the same columns.
    """
    prep = splits.preprocessing
    wanted = {c for cols in groups.values() for c in cols}
    keep = [i for i, c in enumerate(prep.columns) if c in wanted]
    names = [prep.columns[i] for i in keep]
    prep = replace(prep, columns=tuple(names), x_scale=tuple(prep.x_scale[i] for i in keep),
                   x_offset=tuple(prep.x_offset[i] for i in keep))
    return replace(splits, x_train=splits.x_train[:, keep], x_val=splits.x_val[:, keep],
                   x_test=splits.x_test[:, keep], preprocessing=prep, raw_test=splits.raw_test[names])


def group_splits(splits: Splits, groups: dict[str, tuple[str, ...]]) -> Splits:
    """The grouped columns as dicts of named inputs, and a preprocessing that routes raw rows to them."""
    splits = restrict(splits, groups)
    prep = replace(splits.preprocessing, groups={k: tuple(v) for k, v in groups.items()})
    index = {c: i for i, c in enumerate(prep.columns)}

    def split(x):
        return {name: x[:, [index[c] for c in cols]] for name, cols in groups.items()}

    return replace(splits, x_train=split(splits.x_train), x_val=split(splits.x_val), x_test=split(splits.x_test),
                   preprocessing=prep)
