"""Hostile image files through the faithfulness and sanity entry points: each is one errors row, the rest go on."""

from __future__ import annotations

from eml_core.faithfulness import ImagePair, evaluate_faithfulness, evaluate_point_faithfulness
from eml_core.sanity import evaluate_sanity
from tests.conftest import tiny_model
from tests.hostile.harness import record
from tests.hostile.images import hostile_images, random_rgb

ENTRY_POINTS = {
    "evaluate_faithfulness": lambda model, pairs: evaluate_faithfulness(
        model, pairs, removals="mean", steps=(0.0, 1.0), references=()),
    "evaluate_point_faithfulness": lambda model, pairs: evaluate_point_faithfulness(model, pairs, removal="mean"),
    "evaluate_sanity": lambda model, pairs: evaluate_sanity(model, pairs, methods=("decomposition",),
                                                            layers=["head.2"]),
}


def test_every_hostile_image_is_an_errors_row_naming_it_and_the_good_pair_is_evaluated(tmp_path):
    cases = hostile_images(tmp_path / "images")
    good = str(random_rgb(tmp_path / "partner.png"))
    model = tiny_model("gap_fc")
    pairs = [ImagePair("good", good, good)]
    pairs += [ImagePair(f"case{n}", str(path), good) for n, (path, _) in enumerate(cases.values())]
    for entry_point, run in ENTRY_POINTS.items():
        rows, errors = run(model, pairs)
        evaluated = {row["pair_id"] for row in rows}
        reported = {error.item: error for error in errors}
        assert "good" in evaluated, entry_point
        for n, (case, (path, expectation)) in enumerate(cases.items()):
            pair_id = f"case{n}"
            assert (pair_id in evaluated) != (pair_id in reported), (entry_point, case)
            if pair_id in reported:
                assert expectation in ("error", "ok_or_error"), (entry_point, case, reported[pair_id].problem)
                assert str(path) in reported[pair_id].problem and "\n" not in reported[pair_id].problem
                record(entry_point, case, "errors_row")
            else:
                assert expectation in ("ok", "ok_or_error"), (entry_point, case)
                record(entry_point, case, "handled")
