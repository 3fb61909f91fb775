"""Hostile checkpoints: a checkpoint is data and never chooses code to run (issue 7, item 1).

Each case is generated here, at test time, and goes through the library (``load_model``) and the command
line (``eml explain --model CKPT``): a one-line error with exit status 2, and no side effect.
"""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from eml_core import ModelError, load_model, model_from_spec, save_model
from eml_core.models import CHECKPOINT_FORMAT, check_checkpoint
from tests.conftest import tiny_model
from tests.hostile.harness import record, run_cli

TINY = "tests.conftest:tiny"


@pytest.fixture
def untrusting(monkeypatch):
    """No factory is trusted unless a test passes it explicitly."""
    monkeypatch.delenv("EML_TRUSTED_FACTORIES", raising=False)


def _payload(model=None, **config_overrides) -> dict:
    model = model or tiny_model("gap_fc")
    return {"format": CHECKPOINT_FORMAT, "config": {**model.config, **config_overrides},
            "preprocessing": model.preprocessing.to_dict(), "stride": model.stride,
            "state_dict": model.state_dict(), "extra": {}}


def _save(path, payload) -> str:
    torch.save(payload, path)
    return str(path)


class _Shell:
    """A pickle that runs a shell command when unpickled (what `weights_only=True` must refuse)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _cases(tmp_path) -> dict[str, str]:
    marker = tmp_path / "PWNED"
    cases = {}
    cases["factory os:system with a shell command"] = _save(
        tmp_path / "system.pt",
        _payload(kind="factory", factory="os:system", factory_kwargs={"command": f"touch {marker}"}))
    cases["factory subprocess:getoutput"] = _save(
        tmp_path / "getoutput.pt", _payload(kind="factory", factory="subprocess:getoutput",
                                            factory_kwargs={"cmd": f"touch {marker}"}))
    cases["factory builtins:exec"] = _save(tmp_path / "exec.pt", _payload(kind="factory", factory="builtins:exec"))
    cases["factory as a list"] = _save(tmp_path / "list.pt", _payload(kind="factory", factory=["os", "system"]))
    buffer = io.BytesIO()
    pickle.dump({"format": CHECKPOINT_FORMAT, "config": _Shell(marker)}, buffer)
    (tmp_path / "reduce.pt").write_bytes(buffer.getvalue())
    cases["pickle with a __reduce__ payload (legacy format)"] = str(tmp_path / "reduce.pt")
    zipped = tmp_path / "reduce_zip.pt"
    torch.save({"format": CHECKPOINT_FORMAT}, zipped)
    with zipfile.ZipFile(zipped, "a") as archive:  # a zip checkpoint whose data.pkl is hostile
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
    rebuilt = io.BytesIO()
    with zipfile.ZipFile(zipped) as source, zipfile.ZipFile(rebuilt, "w") as target:
        for entry in source.namelist():
            target.writestr(entry, buffer.getvalue() if entry == name else source.read(entry))
    zipped.write_bytes(rebuilt.getvalue())
    cases["zip checkpoint with a hostile data.pkl"] = str(zipped)
    (tmp_path / "empty.pt").write_bytes(b"")
    cases["zero-byte file"] = str(tmp_path / "empty.pt")
    (tmp_path / "garbage.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    cases["random bytes"] = str(tmp_path / "garbage.pt")
    good = save_model(tiny_model("gap_fc"), tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    cases["truncated zip"] = str(tmp_path / "truncated.pt")
    (tmp_path / "folder.pt").mkdir()
    cases["a folder named like a checkpoint"] = str(tmp_path / "folder.pt")
    cases["not an eml checkpoint"] = _save(tmp_path / "plain.pt", {"weights": torch.zeros(2)})
    cases["config is a string"] = _save(tmp_path / "config_str.pt", {**_payload(), "config": "builtin"})
    cases["state_dict is a list"] = _save(tmp_path / "state_list.pt", {**_payload(), "state_dict": [1, 2]})
    cases["unknown model kind"] = _save(tmp_path / "kind.pt", _payload(kind="remote"))
    builtin = {"kind": "builtin", "backbone": "mobilenet_v2", "head": "gap_fc", "input_size": [64, 64], "seed": 0}
    cases["embedding_dim of 10**12"] = _save(tmp_path / "huge_dim.pt",
                                             {**_payload(), "config": {**builtin, "embedding_dim": 10**12}})
    cases["input_size of a million pixels a side"] = _save(
        tmp_path / "huge_input.pt", {**_payload(), "config": {**builtin, "embedding_dim": 8, "input_size": [10**6, 4]}})
    cases["unknown backbone"] = _save(tmp_path / "backbone.pt",
                                      {**_payload(),
                                       "config": {**builtin, "backbone": "os.system", "embedding_dim": 8}})
    cases["preprocessing with an unknown key"] = _save(
        tmp_path / "prep_key.pt", {**_payload(), "preprocessing": {"input_size": [24, 32], "exec": "rm -rf /"}})
    cases["preprocessing with a NaN std"] = _save(
        tmp_path / "prep_nan.pt", {**_payload(), "preprocessing": {"input_size": [24, 32], "std": [float("nan")] * 3}})
    cases["negative stride"] = _save(tmp_path / "stride.pt", {**_payload(), "stride": -4})
    bad = _payload()
    bad["state_dict"] = {k: torch.zeros(1) for k in bad["state_dict"]}
    cases["weights of the wrong shapes"] = _save(tmp_path / "shapes.pt", bad)
    nan = tiny_model("gap_fc")
    with torch.no_grad():
        nan.head[2].weight.fill_(float("inf"))
    cases["infinite weights"] = _save(tmp_path / "inf.pt", _payload(nan))
    return cases


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_hostile_checkpoints_are_refused_by_the_library_and_the_cli(tmp_path, untrusting):
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(image)
    cases = _cases(tmp_path)
    assert len(cases) >= 20
    for case, path in cases.items():
        with pytest.raises(ModelError) as refused:
            load_model(path)
        assert path in str(refused.value) and "\n" not in str(refused.value), case
        record("load_model", case, "clean_error")
        run_cli(["explain", str(image), str(image), "--model", path, "--out", str(tmp_path / "out")],
                entry_point="eml explain --model CHECKPOINT", case=case)
    assert not (tmp_path / "PWNED").exists(), "a checkpoint ran a command"


def test_a_factory_checkpoint_loads_only_with_the_callers_factory(tmp_path, untrusting, monkeypatch, capsys):
    path = save_model(model_from_spec(TINY), tmp_path / "tiny.pt")
    with pytest.raises(ModelError, match=r"names the model factory 'tests.conftest:tiny'; a file never chooses code"):
        load_model(path)
    with pytest.raises(ModelError, match="saved from factory 'tests.conftest:tiny', not 'tests.conftest:other'"):
        load_model(path, factory="tests.conftest:other")
    assert load_model(path, factory=TINY).config["factory"] == TINY
    check_checkpoint(path, factory=TINY)
    monkeypatch.setenv("EML_TRUSTED_FACTORIES", f"pkg.mod:x,{TINY}")
    assert load_model(path).config["factory"] == TINY  # listed by the user: trusted


def test_trusted_factory_still_gets_only_plain_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("EML_TRUSTED_FACTORIES", TINY)
    path = _save(tmp_path / "nested.pt", _payload(kind="factory", factory=TINY, factory_kwargs={"head": {"x": 1}}))
    with pytest.raises(ModelError, match=r"factory_kwargs \['head'\] are not plain numbers"):
        load_model(path)
    odd = _save(tmp_path / "odd.pt", _payload(kind="factory", factory=TINY, factory_kwargs={"colour": "red"}))
    with pytest.raises(ModelError, match=r"cannot call it with \['colour'\]"):
        load_model(odd)


def test_cli_model_factory_option_trusts_exactly_that_factory(tmp_path, untrusting, capsys):
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(image)
    path = str(save_model(model_from_spec(TINY), tmp_path / "tiny.pt"))
    argv = ["explain", str(image), str(image), "--model", path, "--out", str(tmp_path / "out")]
    result = run_cli(argv, entry_point="eml explain --model CHECKPOINT",
                     case="factory checkpoint without --model-factory")
    assert "--model-factory tests.conftest:tiny" in result.err
    from flows.cli import main

    assert main([*argv, "--model-factory", TINY]) == 0, capsys.readouterr().err


def test_a_results_manifest_cannot_name_a_factory_to_run(tmp_path, untrusting):
    """A study build reads the model spec from a run's manifest: a file, so an untrusted factory is refused."""
    with pytest.raises(ModelError, match=r"manifest.json: model spec: names the model factory 'os:getcwd'"):
        model_from_spec("os:getcwd", from_file=str(tmp_path / "manifest.json"))
