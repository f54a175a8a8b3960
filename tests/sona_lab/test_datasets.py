"""Loaders on the real ML-100K (when present) and on small files written here."""

import numpy as np
import pytest

from sona_jax.data import DatasetError, generate_synthetic
from sona_lab.datasets import load_dataset
from sona_lab.movielens import load_ml100k, load_ml_latest


def test_ml100k_real(ml100k_path):
    data = load_ml100k(ml100k_path)
    assert (data.n_users, data.n_items, len(data.events)) == (943, 1682, 100_000)
    assert data.catalogue.genres.shape == (1682, 19)
    assert data.catalogue.titles[0] == "Toy Story (1995)"
    assert data.catalogue.release_year[0] == 1995
    assert set(np.unique(data.events.rating)) == {1, 2, 3, 4, 5}
    assert np.all(data.events.completion == 1.0)
    assert data.events.timestamp.min() > 8e8


def _write_ml100k(folder, data_lines, item_lines=None):
    folder.mkdir(exist_ok=True)
    (folder / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\n\n")
    items = item_lines or [
        "1|Film A (1990)|01-Jan-1990||http://x|0|1|0",
        "2|Film B (1991)|01-Jan-1991||http://x|0|0|1",
    ]
    (folder / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    (folder / "u.data").write_text("\n".join(data_lines) + "\n")
    return folder


def test_ml100k_small_written(tmp_path):
    folder = _write_ml100k(
        tmp_path / "ml", ["7\t1\t5\t881250949", "7\t2\t3\t881250950", "9\t2\t1\t881250951"]
    )
    data = load_ml100k(folder)
    assert data.n_users == 2 and data.n_items == 2
    assert list(data.events.item) == [0, 1, 1]
    assert list(data.events.rating) == [5, 3, 1]
    assert data.catalogue.genre_names == ("unknown", "Action", "Comedy")
    assert list(data.catalogue.genres[0]) == [0, 1, 0]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("7\t1\tfive\t881250949", r"u\.data:2: expected 4 integers"),
        ("7\t1\t9\t881250949", r"u\.data:2: rating 9 outside"),
        ("7\t1", r"u\.data:2: expected 4 integers"),
    ],
)
def test_ml100k_malformed_data_names_file_and_line(tmp_path, bad_line, message):
    folder = _write_ml100k(tmp_path / "ml", ["7\t1\t5\t881250949", bad_line])
    with pytest.raises(DatasetError, match=message):
        load_ml100k(folder)


def test_ml100k_malformed_item_and_missing_file(tmp_path):
    folder = _write_ml100k(
        tmp_path / "ml",
        ["7\t1\t5\t881250949"],
        item_lines=["1|Film A|01-Jan-1990||http://x|0|1|0", "2|broken"],
    )
    with pytest.raises(DatasetError, match=r"u\.item:2"):
        load_ml100k(folder)
    (folder / "u.item").unlink()
    with pytest.raises(DatasetError, match=r"u\.item: file not found"):
        load_ml100k(folder)
    folder = _write_ml100k(tmp_path / "ml2", ["7\t99\t5\t881250949"])
    with pytest.raises(DatasetError, match="absent from the catalogue"):
        load_ml100k(folder)


def _write_latest(folder, ratings, movies=None):
    folder.mkdir(exist_ok=True)
    (folder / "movies.csv").write_text(
        movies
        or (
            'movieId,title,genres\n1,"Heat, The (1995)",Action|Crime\n'
            "5,Nothing (2001),(no genres listed)\n"
        )
    )
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + ratings)
    return folder


def test_ml_latest_small_written(tmp_path):
    data = load_ml_latest(_write_latest(tmp_path / "ml", "1,1,4.5,964982703\n2,5,0.5,964982224\n"))
    assert data.n_items == 2 and data.n_users == 2
    assert data.catalogue.titles[0] == "Heat, The (1995)"
    assert data.catalogue.genre_names == ("Action", "Crime")
    assert list(data.catalogue.genres[1]) == [0, 0]
    assert list(data.events.rating) == [5, 1]  # half stars round up
    assert data.catalogue.release_year[1] == 2001


def test_ml_latest_malformed(tmp_path):
    folder = _write_latest(tmp_path / "ml", "1,1,4.5,964982703\n1,abc,3,1\n")
    with pytest.raises(DatasetError, match=r"ratings\.csv:3"):
        load_ml_latest(folder)
    folder = _write_latest(tmp_path / "ml2", "1,1,4.5\n")
    with pytest.raises(DatasetError, match=r"ratings\.csv:2"):
        load_ml_latest(folder)
    folder = _write_latest(tmp_path / "ml3", "1,1,4,1\n", movies="id,name\n1,x\n")
    with pytest.raises(DatasetError, match=r"movies\.csv:1: expected header"):
        load_ml_latest(folder)
    with pytest.raises(DatasetError, match="--path is required"):
        load_dataset("ml-latest")


def test_synthetic_is_seeded_and_complete():
    a = generate_synthetic(n_users=50, n_items=80, seed=3)
    b = generate_synthetic(n_users=50, n_items=80, seed=3)
    c = generate_synthetic(n_users=50, n_items=80, seed=4)
    assert np.array_equal(a.events.item, b.events.item)
    assert np.array_equal(a.user_ids, b.user_ids)
    assert not np.array_equal(a.events.item[:50], c.events.item[:50])
    cat = a.catalogue
    assert cat.moods.shape[0] == 80 and np.all(cat.duration_minutes > 0)
    assert (cat.series >= 0).any() and cat.genres.sum(1).min() >= 1
    ev = a.events
    assert np.all((ev.completion >= 0) & (ev.completion <= 1))
    assert set(np.unique(ev.rating)) <= {0, 1, 2, 3, 4, 5}
    assert np.all(ev.device >= 0) and np.all(ev.time_of_day >= 0)
    assert np.bincount(ev.user).min() >= 3


def test_synthetic_plants_device_effect():
    data = generate_synthetic(n_users=400, n_items=600, seed=0)
    duration = data.catalogue.duration_minutes[data.events.item]
    on_tv = duration[data.events.device == 0].mean()
    on_mobile = duration[data.events.device == 1].mean()
    assert on_tv > on_mobile + 10
