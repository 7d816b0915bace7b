"""Other input kinds through /predict: words with one tag each, and images sent as pixel arrays. Each answers
what `kit predict` answers for the same rows (images: for the same image files)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from tests.serve.conftest import project, served, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tagger_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-tags")
    rng = random.Random(2)
    names, places, filler = ["Anna", "Bruno", "Chen"], ["Paris", "Lima", "Oslo"], "went to see the old town".split()
    with open(root / "ner.jsonl", "w", encoding="utf-8") as handle:
        for _ in range(120):
            words = [rng.choice(names)] + rng.sample(filler, 3) + [rng.choice(places)]
            tags = ["B-PER", "O", "O", "O", "B-LOC"]
            handle.write(json.dumps({"tokens": words, "tags": tags}) + "\n")
    config = (
        "task: token_classification\ndata:\n  train: ner.jsonl\n  batch_size: 16\nmodel:\n  sequence_length: 16\n"
        "  vocabulary_size: 100\ntrain:\n  epochs: 2\n  verbose: 0\n"
    )
    return train(project(root, config))


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("serve-images")
    rng = np.random.default_rng(0)
    for label, level in (("dark", 40), ("light", 210)):
        (root / "images" / label).mkdir(parents=True)
        for n in range(20):
            pixels = np.clip(rng.normal(level, 20, (12, 10, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / label / f"{n}.png")
    config = (
        "task: classification\ndata:\n  train: images\n  color_mode: rgb\n  image_size: [8, 8]\n  batch_size: 8\n"
        "  validation_fraction: 0.2\n  test_fraction: 0.2\ntrain:\n  epochs: 1\n  verbose: 0\n"
    )
    return train(project(root, config)), root / "images"


def kit_predict(run, path):
    from kit.inference import TrainedModel

    return list(TrainedModel(run).predict_rows(str(path)))


def test_words_with_tags_answer_as_kit_predict(tagger_run, tmp_path):
    rows = [{"tokens": ["Anna", "went", "to", "Oslo"]}, {"tokens": "Chen saw the old town of Lima"}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")

    async def test(app):
        good = (await app.post("/predict", {"rows": rows})).json()
        bad = await app.post("/predict", {"rows": [{"tokens": []}]})
        return good, bad

    good, bad = served(tagger_run, test)
    assert good["predictions"] == kit_predict(tagger_run, path)
    assert "entities" in good["predictions"][0]
    assert bad.status_code == 400 and "row 1: column 'tokens': no words: the list is empty" in bad.json()["error"]


def test_images_as_pixel_arrays_answer_as_kit_predict_on_the_files(image_run, tmp_path):
    from PIL import Image

    run, images = image_run
    files = [images / "dark" / "3.png", images / "light" / "7.png"]
    table = tmp_path / "images.csv"
    table.write_text("image\n" + "".join(f"{f}\n" for f in files), encoding="utf-8")
    pixels = [np.asarray(Image.open(f)).tolist() for f in files]
    odd = np.zeros((5, 7, 3), np.uint8).tolist()  # another size: run on its own, answered all the same

    async def test(app):
        rows = {"rows": [{"image": p} for p in pixels]}
        together = (await app.post("/predict", rows)).json()["predictions"]
        mixed = (await app.post("/predict", {"rows": [{"image": pixels[0]}, {"image": odd}]})).json()
        path = await app.post("/predict", {"rows": [{"image": str(files[0])}]})
        ragged = await app.post("/predict", {"rows": [{"image": [[1, 2], [3]]}]})
        return together, mixed, path, ragged

    together, mixed, path, ragged = served(run, test)
    expected = kit_predict(run, table)  # its lines are the CSV's (the header is line 1)
    assert [{**p, "line": 0} for p in together] == [{**p, "line": 0} for p in expected]
    assert "predictions" in mixed, mixed
    assert mixed["predictions"][0] == together[0] and len(mixed["predictions"]) == 2
    assert path.status_code == 400 and "not a file path" in path.json()["error"]
    assert ragged.status_code == 400 and "ragged" in ragged.json()["error"]
