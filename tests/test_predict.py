"""fedpeft-predict and fedpeft-evaluate on an exported tiny model."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import model_input
from PIL import Image
from runs import CLASS_NAMES, make_run

from fedpeft.tools.export import load
from fedpeft.tools.export.writer import export_run
from fedpeft.tools.inference.classify import Classifier
from fedpeft.tools.inference.evaluate import evaluate_folder
from fedpeft.tools.inference.evaluate import main as evaluate_main
from fedpeft.tools.inference.predict import main as predict_main
from fedpeft.tools.inference.predict import predict


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A head-only tiny model exported from a run, classes ``CLASS_NAMES``."""
    root = tmp_path_factory.mktemp("export")
    make_run(root / "run", "head")
    export_run(root / "run", root / "model")
    return root / "model"


def _image(path: Path, seed: int, size: tuple[int, int] = (32, 32), mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


# -- predict ---------------------------------------------------------------------------


def test_predict_reads_every_image_and_names_the_files_it_cannot(model_dir, tmp_path, caplog):
    # Prepare: two images, one nested, a greyscale one, a corrupt PNG and a text file
    folder = tmp_path / "images"
    _image(folder / "a.png", 0)
    _image(folder / "sub" / "b.jpg", 1, size=(48, 40))
    _image(folder / "c.png", 2, size=(20, 20), mode="L")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "notes.txt").write_text("not an image")
    # Execute
    with caplog.at_level(logging.WARNING):
        table, skipped, k = predict(model_dir, [folder], top_k=2)
    # Assert
    assert [Path(r[0]).name for r in table] == ["a.png", "c.png", "b.jpg"]
    assert k == 2 and all(r[1] in CLASS_NAMES and len(r) == 7 for r in table)
    assert sorted(p.name for p in skipped) == ["broken.png", "notes.txt"]
    assert "broken.png: unreadable image" in caplog.text
    assert "notes.txt: not an image file" in caplog.text


def test_predicted_probabilities_are_the_models_on_the_runs_preprocessing(model_dir, tmp_path):
    # Prepare: an RGB image at the model's size, standardised as in the run
    path = _image(tmp_path / "x.png", 3)
    pixels = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)[None]
    model = load(model_dir)
    with torch.no_grad():
        expected = model(model_input(model, pixels)).softmax(1)[0]
    # Execute
    table, _, _ = predict(model_dir, [path], top_k=3)
    # Assert
    row = table[0]
    by_name = {row[3 + 2 * i]: float(row[4 + 2 * i]) for i in range(3)}
    want = dict(zip(CLASS_NAMES, expected.tolist(), strict=True))
    assert by_name == pytest.approx(want, abs=1e-5)
    assert row[1] == CLASS_NAMES[int(expected.argmax())]


def test_the_predict_cli_writes_a_csv(model_dir, tmp_path):
    # Prepare
    _image(tmp_path / "in" / "a.png", 4)
    out = tmp_path / "preds.csv"
    # Execute
    code = predict_main([str(model_dir), str(tmp_path / "in"), "--out", str(out), "--top-k", "9"])
    rows = list(csv.reader(out.open()))
    # Assert
    assert code == 0
    assert rows[0] == ["path", "prediction", "probability", "class_1", "probability_1",
                       "class_2", "probability_2", "class_3", "probability_3"]  # fmt: skip
    assert len(rows) == 2 and rows[1][0].endswith("a.png")


def test_the_predict_cli_fails_when_no_image_is_readable(model_dir, tmp_path):
    # Prepare
    (tmp_path / "notes.txt").write_text("x")
    # Execute / Assert
    assert predict_main([str(model_dir), str(tmp_path / "notes.txt")]) == 1
    assert predict_main([str(model_dir), str(tmp_path / "absent.png")]) == 2


# -- evaluate --------------------------------------------------------------------------


def test_evaluate_gives_the_accuracy_of_a_labelled_folder(model_dir, tmp_path):
    # Prepare: two images filed under the class the model predicts, one under another
    classifier = Classifier.open(model_dir)
    images = [_image(tmp_path / "raw" / f"{i}.png", 10 + i) for i in range(3)]
    predicted = classifier.probabilities([Image.open(p) for p in images]).argmax(1).tolist()
    labels = [predicted[0], predicted[1], (predicted[2] + 1) % 3]
    data = tmp_path / "data"
    for path, label in zip(images, labels, strict=True):
        folder = data / CLASS_NAMES[label].replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        path.rename(folder / path.name)
    # Execute
    result = evaluate_folder(model_dir, data)
    # Assert
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.num_images == 3 and result.confusion.sum() == 3
    assert sum(count for _, count in result.per_class.values()) == 3


def test_the_evaluate_cli_prints_accuracy_and_writes_the_confusion_png(model_dir, tmp_path,
                                                                       capsys):  # fmt: skip
    # Prepare
    _image(tmp_path / "data" / "dog" / "a.png", 20)
    _image(tmp_path / "data" / "T-shirt_top" / "b.png", 21)
    png = tmp_path / "cm.png"
    # Execute
    code = evaluate_main([str(model_dir), "--data", str(tmp_path / "data"),
                          "--confusion", str(png)])  # fmt: skip
    # Assert
    out = capsys.readouterr().out
    assert code == 0
    assert "accuracy" in out and "T-shirt/top" in out and "dog" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_without_class_folders_is_an_error_naming_it(model_dir, tmp_path):
    # Prepare
    _image(tmp_path / "flat" / "a.png", 30)
    # Execute / Assert
    with pytest.raises(ValueError, match="no class folders") as err:
        evaluate_folder(model_dir, tmp_path / "flat")
    assert str(tmp_path / "flat") in str(err.value)


def test_a_class_folder_the_model_does_not_know_is_an_error_naming_it(model_dir, tmp_path,
                                                                      caplog):  # fmt: skip
    # Prepare
    _image(tmp_path / "data" / "cat" / "a.png", 31)
    _image(tmp_path / "data" / "zebra" / "b.png", 32)
    # Execute
    with pytest.raises(ValueError, match="zebra"):
        evaluate_folder(model_dir, tmp_path / "data")
    with caplog.at_level(logging.ERROR):
        code = evaluate_main([str(model_dir), "--data", str(tmp_path / "data")])
    # Assert
    assert code == 2 and "zebra" in caplog.text
