import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Every test runs torch on one thread (as CI's 2-core machine wants; see DEVELOPERS.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """A ShapeScenes data root with train (48), val (16), test (16) and compositional (8) at 64 px."""
    from xlxmert.data.shapes.generate import generate_split

    root = tmp_path_factory.mktemp("shapes")
    for split, n in (("train", 48), ("val", 16), ("test", 16), ("compositional", 8)):
        generate_split(root, split, n, size=64, seed=0, progress=False)
    return root
