"""MovieLens loaders for both public formats, mapping ratings to viewing events.

* ``ml-100k``: ``u.data`` (user, item, rating, timestamp; tab separated), ``u.item`` (pipe
  separated, latin-1, 19 genre flags), ``u.genre``.
* ``ml-latest`` / ``ml-latest-small`` / ``ml-25m``: ``ratings.csv`` (``userId,movieId,rating,
  timestamp``) and ``movies.csv`` (``movieId,title,genres`` with ``|``-separated genres).

A rating becomes a viewing event with completion 1.0, that rating (half stars rounded up) and its
timestamp. The files are never copied into the project: pass the folder you downloaded.
"""

from __future__ import annotations

import csv
import re
import uuid
from pathlib import Path

import numpy as np

from sona_jax.data.schema import Catalogue, Dataset, DatasetError, EventLog

_YEAR = re.compile(r"\((\d{4})\)\s*$")


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    return path


def _year_from_title(title: str) -> float:
    match = _YEAR.search(title)
    return float(match.group(1)) if match else float("nan")


def _build_dataset(name, raw_items, titles, years, genre_names, genre_rows, ratings) -> Dataset:
    """Index users/items densely; ratings is a list of (user, item, rating, ts) raw tuples."""
    item_index = {raw: i for i, raw in enumerate(raw_items)}
    users_raw = np.array([r[0] for r in ratings], dtype=np.int64)
    items_raw = [r[1] for r in ratings]
    missing = {raw for raw in items_raw if raw not in item_index}
    if missing:
        raise DatasetError(
            f"{name}: ratings name {len(missing)} items absent from the catalogue, "
            f"e.g. {sorted(missing)[:3]}"
        )
    user_ids, user_idx = np.unique(users_raw, return_inverse=True)
    n_items = len(raw_items)
    catalogue = Catalogue(
        item_ids=np.array([_stable_uuid(f"{name}:item:{raw}") for raw in raw_items]),
        titles=np.array(titles, dtype=object),
        genre_names=tuple(genre_names),
        genres=np.asarray(genre_rows, np.float32).reshape(n_items, len(genre_names)),
        duration_minutes=np.full(n_items, np.nan, np.float32),
        release_year=np.asarray(years, np.float32),
    )
    events = EventLog.build(
        user=user_idx,
        item=np.array([item_index[raw] for raw in items_raw], np.int32),
        timestamp=np.array([r[3] for r in ratings], np.float64),
        completion=np.ones(len(ratings), np.float32),
        rating=np.array([r[2] for r in ratings], np.float32),
    )
    return Dataset(
        name=name,
        catalogue=catalogue,
        user_ids=np.array([_stable_uuid(f"{name}:user:{u}") for u in user_ids]),
        events=events,
    )


def load_ml100k(path: str | Path) -> Dataset:
    """Load MovieLens 100K from the folder holding u.data, u.item and u.genre."""
    path = Path(path)
    genre_file = _require(path / "u.genre")
    genre_names: list[str] = []
    for line_no, line in enumerate(genre_file.read_text(encoding="latin-1").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 2 or not parts[1].strip().isdigit():
            raise DatasetError(f"{genre_file}:{line_no}: expected 'name|index', got {line!r}")
        genre_names.append(parts[0])

    item_file = _require(path / "u.item")
    raw_items, titles, years, genre_rows = [], [], [], []
    for line_no, line in enumerate(item_file.read_text(encoding="latin-1").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        flags = parts[5:]
        if len(parts) < 6 or len(flags) != len(genre_names) or not parts[0].isdigit():
            raise DatasetError(
                f"{item_file}:{line_no}: expected id|title|date|video|url and "
                f"{len(genre_names)} genre flags, got {len(parts)} fields"
            )
        try:
            genre_rows.append([int(flag) for flag in flags])
        except ValueError:
            raise DatasetError(f"{item_file}:{line_no}: genre flags must be 0 or 1") from None
        raw_items.append(int(parts[0]))
        titles.append(parts[1])
        date = parts[2].strip()
        years.append(
            float(date[-4:])
            if len(date) >= 4 and date[-4:].isdigit()
            else _year_from_title(parts[1])
        )

    data_file = _require(path / "u.data")
    ratings = []
    with data_file.open(encoding="latin-1") as handle:
        for line_no, line in enumerate(handle, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                user, item, rating, ts = (int(p) for p in parts)
            except ValueError:
                raise DatasetError(
                    f"{data_file}:{line_no}: expected 4 integers "
                    f"'user item rating timestamp', got {line.strip()!r}"
                ) from None
            if not 1 <= rating <= 5:
                raise DatasetError(f"{data_file}:{line_no}: rating {rating} outside 1..5")
            ratings.append((user, item, rating, ts))
    if not ratings:
        raise DatasetError(f"{data_file}: no ratings")
    return _build_dataset("ml-100k", raw_items, titles, years, genre_names, genre_rows, ratings)


def load_ml_latest(path: str | Path) -> Dataset:
    """Load a MovieLens ``ml-latest*`` / ``ml-25m`` folder (ratings.csv, movies.csv)."""
    path = Path(path)
    movie_file = _require(path / "movies.csv")
    raw_items, titles, years, genre_lists = [], [], [], []
    with movie_file.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["movieId", "title", "genres"]:
            raise DatasetError(
                f"{movie_file}:1: expected header movieId,title,genres, got {header}"
            )
        for row in reader:
            line_no = reader.line_num
            if len(row) != 3 or not row[0].isdigit():
                raise DatasetError(f"{movie_file}:{line_no}: expected movieId,title,genres")
            raw_items.append(int(row[0]))
            titles.append(row[1])
            years.append(_year_from_title(row[1]))
            genre_lists.append([] if row[2] == "(no genres listed)" else row[2].split("|"))
    genre_names = sorted({g for genres in genre_lists for g in genres})
    column = {g: j for j, g in enumerate(genre_names)}
    genre_rows = np.zeros((len(raw_items), len(genre_names)), np.float32)
    for i, genres in enumerate(genre_lists):
        genre_rows[i, [column[g] for g in genres]] = 1.0

    rating_file = _require(path / "ratings.csv")
    ratings = []
    with rating_file.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["userId", "movieId", "rating", "timestamp"]:
            raise DatasetError(
                f"{rating_file}:1: expected header userId,movieId,rating,timestamp, got {header}"
            )
        for row in reader:
            try:
                user, item, stars, ts = int(row[0]), int(row[1]), float(row[2]), int(row[3])
                if len(row) != 4:
                    raise ValueError
            except (ValueError, IndexError):
                raise DatasetError(
                    f"{rating_file}:{reader.line_num}: expected "
                    f"userId,movieId,rating,timestamp, got {row}"
                ) from None
            if not 0.5 <= stars <= 5.0:
                raise DatasetError(
                    f"{rating_file}:{reader.line_num}: rating {stars} outside 0.5..5"
                )
            ratings.append((user, item, int(np.clip(np.ceil(stars), 1, 5)), ts))
    if not ratings:
        raise DatasetError(f"{rating_file}: no ratings")
    return _build_dataset("ml-latest", raw_items, titles, years, genre_names, genre_rows, ratings)


def _stable_uuid(key: str) -> str:
    """A deterministic UUID for a MovieLens id, so the API's UUID fields can name it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://grouplens.org/datasets/movielens/{key}"))
