"""Shared fixtures: tiny hand-built models and the location of the real sample data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from eml_core import EmbeddingModel, Preprocessing, build_head

# Prefect, offline on 2 cores: set before Prefect is imported
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from prefect.logging.configuration import setup_logging  # noqa: E402

# Prefect configures logging lazily, at the first flow run. Do it now, at collection, so its console
# handlers bind to the session's streams rather than to one test's capsys buffer (closed after that test).
setup_logging()

# EML_SHARED_DATA points elsewhere, e.g. from a git worktree whose parent folder has no shared/ beside it
SHARED_DATA = Path(os.environ.get("EML_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data; skip (outside CI) or fail (in CI) when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the shared sample data {path} is missing")
        pytest.skip(f"shared sample data {path} is absent (it lives in ../shared beside the project)")
    return path


def randomise_batchnorm(module: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator))
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=generator))
            m.bias.data.copy_(torch.randn(n, generator=generator))


class TinyBackbone(nn.Sequential):
    """Two strided convolutions: stride 4, 6 channels (a real conv net in miniature)."""

    def __init__(self):
        super().__init__(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU())


def tiny_model(head_kind: str, input_size: tuple[int, int] = (24, 32), seed: int = 0,
               embedding_dim: int = 5) -> EmbeddingModel:
    """A seeded tiny model with the given head; flatten heads are sized for ``input_size``."""
    torch.manual_seed(seed)
    backbone = TinyBackbone()
    feature_size = ((input_size[0] + 3) // 4, (input_size[1] + 3) // 4)
    dim = None if head_kind in ("gap", "gmp", "gap_bn") else embedding_dim
    head = build_head(head_kind, 6, dim, feature_size=feature_size, hidden_dim=7)
    randomise_batchnorm(head, torch.Generator().manual_seed(seed + 1))
    model = EmbeddingModel(backbone, head, Preprocessing(input_size=input_size, mean=(0.5,) * 3, std=(0.25,) * 3),
                           stride=4, config={"kind": "factory", "factory": "tests.conftest:tiny"})
    return model.eval()


def tiny(head: str = "gap_fc", height: int = 24, width: int = 32, seed: int = 0) -> EmbeddingModel:
    """Factory used through the `package.module:factory` model spec in CLI tests."""
    return tiny_model(head, (height, width), seed)


def tiny_crossview_model(seed: int = 0, panorama_size: tuple[int, int] = (32, 176),
                         aerial_size: tuple[int, int] = (64, 64), embedding_dim: int = 5):
    """A seeded two-branch model: two tiny backbones (unshared), GAP, one shared Linear (the paper's layout)."""
    from eml_core.crossview_model import CrossViewModel, crossview_head

    torch.manual_seed(seed)
    shared = nn.Linear(6, embedding_dim)
    branches = [EmbeddingModel(TinyBackbone(), crossview_head(shared), Preprocessing(input_size=size), stride=4)
                for size in (panorama_size, aerial_size)]
    return CrossViewModel(*branches, config={"kind": "crossview", "source": "factory",
                                             "factory": "tests.conftest:tiny_crossview_factory"}).eval()


def tiny_crossview_factory(seed: int = 0, embedding_dim: int = 5):
    """Factory used through the `package.module:factory` cross-view model spec."""
    return tiny_crossview_model(seed, embedding_dim=embedding_dim)


@pytest.fixture(scope="session")
def tiny_crossview():
    return tiny_crossview_model()


@pytest.fixture(scope="session")
def tiny_crossview_root(tmp_path_factory):
    """A few embedded cross-view pairs (small images), generated once per session."""
    from eml_core.crossview_data import CrossViewSyntheticConfig, generate_crossview_dataset

    config = CrossViewSyntheticConfig(train_pairs=4, val_pairs=2, aerial_size=96, panorama_size=(32, 176))
    return generate_crossview_dataset(tmp_path_factory.mktemp("crossview"), config)


@pytest.fixture(scope="session")
def tiny_crossview_dataset(tiny_crossview_root):
    from eml_core.crossview_data import load_cvusa

    return load_cvusa(tiny_crossview_root)


@pytest.fixture(scope="session")
def cpu_threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_synthetic_root(tmp_path_factory):
    """A small embedded-default dataset (4 classes x 4 images), generated once per session. Under the default
    ``classes`` split rule classes 1-2 train and 3-4 evaluate (8 images each)."""
    from eml_core.synthetic import SyntheticConfig, generate_synthetic_dataset

    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic"),
                                      SyntheticConfig(classes=4, images_per_class=4))


@pytest.fixture(scope="session")
def tiny_synthetic(tiny_synthetic_root):
    from eml_core.datasets import load_cub

    return load_cub(tiny_synthetic_root)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1 (a free port), stopped at the end of the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_DEFAULT_REGION")}
    os.environ.update({"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def pytest_terminal_summary(terminalreporter):
    """Counts of the hostile-input and fault suites by entry point (issue 7), when any ran."""
    from tests.hostile import harness

    if harness.records():
        terminalreporter.write_line(harness.write_report())


# The tiny test factory is trusted the way a user trusts their own code (EML_TRUSTED_FACTORIES): results
# manifests and checkpoints written by the tests name it. Tests of the refusal path unset it.
os.environ.setdefault("EML_TRUSTED_FACTORIES", "tests.conftest:tiny")


def pytest_sessionfinish(session, exitstatus):
    """Stop the temporary Prefect servers flows started in this process while the output is still open: Prefect
    stops them at exit, when pytest has closed the stream its log handler writes to (a "Logging error" traceback
    after the summary)."""
    try:
        from prefect.server.api.server import SubprocessASGIServer
    except ImportError:
        return
    for server in list(SubprocessASGIServer._instances.values()):  # Prefect's own registry of running servers
        server.stop()
