import os
import sys
from pathlib import Path

import pytest

# The package lives in workflow/, as in the Snakemake workflow template.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "workflow"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(items):
    """A workflow or SLURM test is a slow test: `-m "not slow"` leaves it out too."""
    for item in items:
        if item.get_closest_marker("workflow") or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A real Hugging Face checkpoint folder (config.json + model.safetensors), BERT-shaped
    but tiny, written as `save_pretrained` writes it."""
    import torch
    import transformers

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def one_thread():
    """Torch on one thread for the test, restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
