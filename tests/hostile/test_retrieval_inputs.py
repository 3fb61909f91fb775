"""Hostile input to `eml retrieve`, `eml index build` and `eml evaluate retrieval`: every case is one line naming
the option or file, exit status 2, before any flow (or Prefect server) starts."""

from __future__ import annotations

import json
import shutil

import pytest

from eml_core.gallery_index import build_index
from eml_core.models import model_from_spec, save_model
from tests.conftest import tiny
from tests.hostile.harness import run_cli

TINY = "tests.conftest:tiny"


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_synthetic, tiny_synthetic_root):
    folder = tmp_path_factory.mktemp("retrieval-inputs")
    build_index(folder / "index", model_from_spec(TINY), tiny_synthetic.items, tiny_synthetic.root, model_spec=TINY)
    image = tiny_synthetic.items[0].path  # a few hundred pixels each way
    text = folder / "notes.png"
    text.write_text("not an image")
    no_image_column = folder / "no_image.csv"
    no_image_column.write_text("picture,x0,y0,x1,y1\na.png,0,0,5,5\n")
    no_region = folder / "no_region.csv"
    no_region.write_text("image,label\na.png,1\n")
    binary = folder / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    empty_folder = folder / "empty"
    empty_folder.mkdir()
    damaged_header = folder / "damaged_header"
    damaged_header.mkdir()
    (damaged_header / "index.json").write_text(json.dumps({"format": "something else"}))
    flipped = folder / "flipped"
    shutil.copytree(folder / "index", flipped)
    part = sorted((flipped / "parts").glob("*.npy"))[0]
    data = bytearray(part.read_bytes())
    data[-3] ^= 0xFF
    part.write_bytes(bytes(data))
    untrusted = folder / "untrusted"
    shutil.copytree(folder / "index", untrusted)
    header = json.loads((untrusted / "index.json").read_text())
    header["model"]["spec"] = "os.path:join"  # a file naming code to run
    (untrusted / "index.json").write_text(json.dumps(header))
    other = folder / "other.pt"
    save_model(tiny(seed=1), other)
    existing_file = folder / "a_file.txt"
    existing_file.write_text("x")
    return {"index": str(folder / "index"), "image": image, "text": str(text), "no_image": str(no_image_column),
            "no_region": str(no_region), "binary": str(binary), "empty": str(empty_folder),
            "damaged_header": str(damaged_header), "flipped": str(flipped), "untrusted": str(untrusted),
            "other": str(other), "file": str(existing_file), "out": str(folder / "out"),
            "dataset": f"cub:{tiny_synthetic_root}"}


def _retrieve(f, *extra, index=None):
    return ["retrieve", "--index", index or f["index"], "--out", f["out"], *extra]


CASES = {
    # (argv builder, text the one-line error must contain)
    "box outside the image": (lambda f: _retrieve(f, "--query", f["image"], "--box", "0,0,5000,20"),
                              "--box: box (0, 0, 5000, 20) is not inside the"),
    "box empty": (lambda f: _retrieve(f, "--query", f["image"], "--box", "10,10,5,5"), "--box: box 10,10,5,5 is empty"),
    "box of three numbers": (lambda f: _retrieve(f, "--query", f["image"], "--box", "1,2,3"), "expected X0,Y0,X1,Y1"),
    "box nan": (lambda f: _retrieve(f, "--query", f["image"], "--box", "nan,0,5,5"), "--box: expected finite"),
    "box negative": (lambda f: _retrieve(f, "--query", f["image"], "--box", "-4,0,5,5"), "negative coordinate"),
    "point negative": (lambda f: _retrieve(f, "--query", f["image"], "--point", "-1,5"), "--point"),
    "point outside the image": (lambda f: _retrieve(f, "--query", f["image"], "--point", "5000,5"),
                                "--point: point (5000, 5) is outside the"),
    "box and point": (lambda f: _retrieve(f, "--query", f["image"], "--point", "5,5", "--box", "0,0,5,5"),
                      "a box X0,Y0,X1,Y1 or a point X,Y (one of them)"),
    "query without a region": (lambda f: _retrieve(f, "--query", f["image"]), "give the query's region"),
    "query image missing": (lambda f: _retrieve(f, "--query", "missing.png", "--point", "1,1"),
                            "--query: missing.png: query image does not exist"),
    "query image is text": (lambda f: _retrieve(f, "--query", f["text"], "--point", "1,1"), "not a readable image"),
    "query is a folder": (lambda f: _retrieve(f, "--query", f["empty"], "--point", "1,1"), "is not a file"),
    "queries file missing": (lambda f: _retrieve(f, "--queries", "missing.csv"), "query file does not exist"),
    "queries without image column": (lambda f: _retrieve(f, "--queries", f["no_image"]), "no 'image' column"),
    "queries without region columns": (lambda f: _retrieve(f, "--queries", f["no_region"]), "no region columns"),
    "queries not UTF-8": (lambda f: _retrieve(f, "--queries", f["binary"]), "not UTF-8"),
    "queries and query": (lambda f: _retrieve(f, "--queries", f["no_region"], "--query", f["image"], "--point", "1,1"),
                          "give either a query file"),
    "queries with a box": (lambda f: _retrieve(f, "--queries", f["no_region"], "--box", "0,0,5,5"),
                           "belong to a single query image"),
    "neither queries nor query": (lambda f: _retrieve(f), "give either a query file"),
    "index missing": (lambda f: _retrieve(f, "--query", f["image"], "--point", "1,1", index="nowhere"),
                      "--index: nowhere: no such folder"),
    "index folder without index.json": (lambda f: _retrieve(f, "--query", f["image"], "--point", "1,1",
                                                            index=f["empty"]), "no gallery index here"),
    "index header of another format": (lambda f: _retrieve(f, "--query", f["image"], "--point", "1,1",
                                                           index=f["damaged_header"]), "not a gallery index"),
    "index part with a flipped byte": (lambda f: _retrieve(f, "--query", f["image"], "--point", "1,1",
                                                           index=f["flipped"]), "do not match the SHA-256"),
    "index naming an untrusted factory": (lambda f: _retrieve(f, "--query", f["image"], "--point", "1,1",
                                                              index=f["untrusted"]), "a file never chooses code"),
    "another model's index": (lambda f: _retrieve(f, "--query", f["image"], "--point", "1,1", "--model", f["other"]),
                              "the index was built with another model"),
    "box-only method for a point": (lambda f: _retrieve(f, "--query", f["image"], "--point", "1,1", "--method",
                                                        "partial,crop"), "--method: crop need a box region"),
    "unknown method": (lambda f: _retrieve(f, "--query", f["image"], "--point", "1,1", "--method", "foo"),
                       "--method: unknown method 'foo'"),
    "k 0": (lambda f: _retrieve(f, "--query", f["image"], "--point", "1,1", "--k", "0"), "--k"),
    "out is a file": (lambda f: ["retrieve", "--index", f["index"], "--out", f["file"], "--query", f["image"],
                                 "--point", "1,1"], "exists and is not a folder"),
    "root missing": (lambda f: _retrieve(f, "--query", f["image"], "--point", "1,1", "--root", "/no/such/root"),
                     "--root: /no/such/root: no such folder"),
    "device meta": (lambda f: _retrieve(f, "--query", f["image"], "--point", "1,1", "--device", "meta"), "--device"),
    "index build: unknown split": (lambda f: ["index", "build", "--gallery", f["dataset"], "--model", TINY, "--out",
                                              f["out"] + "/i", "--split", "validation"],
                                   "--split: 'validation' not a split of cub data"),
    "index build: another model's index": (lambda f: ["index", "build", "--gallery", f["dataset"], "--model",
                                                      f["other"], "--out", f["index"]],
                                           "the index was built with another model"),
    "index build: dot onto a cosine index": (lambda f: ["index", "build", "--gallery", f["dataset"], "--model", TINY,
                                                        "--out", f["index"], "--similarity", "dot"],
                                             "ranks by cosine similarity, not dot"),
    "index build: bad gallery spec": (lambda f: ["index", "build", "--gallery", "imagenet:/x", "--model", TINY,
                                                 "--out", f["out"] + "/i"], "dataset spec 'imagenet:/x'"),
    "index build: out is a file": (lambda f: ["index", "build", "--gallery", f["dataset"], "--model", TINY, "--out",
                                              f["file"]], "exists and is not a folder"),
    "index build: shard size 0": (lambda f: ["index", "build", "--gallery", f["dataset"], "--model", TINY, "--out",
                                             f["out"] + "/i", "--shard-size", "0"], "--shard-size"),
    "evaluate retrieval: market1501 without a dataset": (
        lambda f: ["evaluate", "retrieval", "--model", TINY, "--out", f["out"], "--benchmark", "market1501"],
        "--dataset: the market1501 benchmark needs"),
    "evaluate retrieval: unknown method": (
        lambda f: ["evaluate", "retrieval", "--model", TINY, "--out", f["out"], "--methods", "partial,best"],
        "--methods: unknown method 'best'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_retrieval_input_is_one_line_and_exit_2(files, case, monkeypatch):
    if case == "index naming an untrusted factory":
        monkeypatch.delenv("EML_TRUSTED_FACTORIES", raising=False)
    build, message = CASES[case]
    argv = build(files)
    result = run_cli(argv, entry_point=f"eml {' '.join(argv[:2]) if argv[0] == 'index' else argv[0]}", case=case)
    assert message in result.err, (case, result.err)
    assert "Traceback" not in result.err
