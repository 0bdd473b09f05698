"""The config is checked before any work: every mistake names its key."""

from pathlib import Path

import pytest
import yaml

from helpers import changed
from safecompress.config import ConfigError, check_config, load_yaml, schema

DEFAULT = yaml.safe_load((Path(__file__).parent.parent / "config" / "config.yaml").read_text())


def test_default_config_is_valid():
    check_config(DEFAULT)


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("epochz", 3, "Additional properties"),
        ("train.epochs", -1, "train.epochs"),
        ("train.epochs", "ten", "train.epochs"),
        ("densities", [0.0], "densities.0"),
        ("densities", [1.5], "densities.0"),
        ("densities", [], "densities"),
        ("methods", ["prune_everything"], "methods.0"),
        ("model.arch", "transformer9000", "model.arch"),
        ("evaluation.attacks", ["telepathy"], "evaluation.attacks.0"),
        ("evaluation.bootstrap", 10, "evaluation.bootstrap"),
        ("shadow.n_models", 1, "lira needs at least 2"),
        ("safecompress.lambda", -0.5, "safecompress.lambda"),
        ("safecompress.strategies", [], "safecompress.strategies"),
        ("safecompress.strategies", [{"scale": 1.0, "growth": "magic"}], "growth"),
        ("sparse.growth", "magic", "sparse.growth"),
        ("shadow.n_models", 0, "shadow.n_models"),
        ("datasets", ["mnist"], "data.mnist"),
        ("data.digits.split.reference", 0.5, "data.digits.split"),
        ("data.digits.source", "ftp", "data.digits.source"),
        ("evaluation.roc_density", 0.3, "evaluation.roc_density"),
        ("train", KeyError, "train"),
        ("ablation.n_candidates", [9], "ablation.n_candidates"),
        ("ablation.lambdas", [-1.0], "ablation.lambdas.0"),
        ("train.augment", "mixup", "train.augment"),
        ("train.workers", -1, "train.workers"),
    ],
)
def test_bad_config_names_the_key(path, value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        check_config(changed(DEFAULT, path, value))
    assert "\n" not in str(caught.value)


def test_unreadable_config_file(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("datasets: [digits\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def test_image_augmentation_of_data_that_are_not_images_is_refused():
    paper = load_yaml(Path(__file__).parent.parent / "config" / "paper.yaml")
    check_config(paper)  # crop_flip globally, text sets with their own train section
    with pytest.raises(ConfigError, match=r"config key train\.augment: crop_flip .* data\.imdb"):
        check_config(changed(paper, "data.imdb.train", KeyError))
    check_config(changed(DEFAULT, "train.augment", "crop_flip"))  # digits are 8x8 images
    wine = changed(changed(DEFAULT, "data.digits.name", "wine"), "train.augment", "crop_flip")
    with pytest.raises(ConfigError, match=r"train\.augment: crop_flip .* data\.digits is not"):
        check_config(wine)


def schema_enums(node, path=""):
    """(path, values) of every `enum` in the schema."""
    if isinstance(node, dict):
        if "enum" in node:
            yield path, node["enum"]
        for key, value in node.items():
            yield from schema_enums(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from schema_enums(value, f"{path}/{i}")


def test_every_schema_enum_is_a_python_constant():
    """The names the code dispatches on are the one source; the schema must list exactly them."""
    from safecompress import (
        adversarial,
        attacks,
        batches,
        models,
        pools,
        safety,
        sparse,
        specs,
        splits,
    )

    data = "/properties/data/additionalProperties"
    expected = {
        "/$defs/growth": sparse.TRAINING_GROWTH,
        "/$defs/candidate_growth": tuple(sparse.GROWTH_CRITERIA),
        "/$defs/strategies/items/properties/prune": tuple(sparse.PRUNE_CRITERIA),
        "/$defs/strategies/items/properties/init": sparse.GROWTH_INITS,
        "/$defs/strategies/items/properties/budget": sparse.BUDGETS,
        "/properties/methods/items": specs.METHODS,
        f"{data}/properties/source": pools.SOURCES,
        f"{data}/allOf/0/then/properties/name": pools.SKLEARN_DATASETS,
        f"{data}/allOf/1/then/properties/name": tuple(pools.IMAGE_FOLDERS),
        "/properties/model/properties/arch": models.ARCHITECTURES,
        "/properties/train/properties/augment": batches.AUGMENTATIONS,
        "/properties/sparse/properties/distribution": sparse.DISTRIBUTIONS,
        "/properties/safecompress/properties/safety_score": tuple(safety.SAFETY_SCORES),
        "/$defs/attack": tuple(attacks.ATTACKS),
        "/properties/adversarial/properties/attackers/items": adversarial.ATTACKERS,
    }
    found = dict(schema_enums(schema()))
    assert found.keys() == expected.keys()
    for path, values in found.items():
        assert sorted(values) == sorted(expected[path]), path
    assert specs.NETWORK_ATTACKS == attacks.NETWORK_ATTACKS == tuple(attacks.FIT_ADVERSARY)
    split = schema()["properties"]["data"]["additionalProperties"]["properties"]["split"]
    assert tuple(split["properties"]) == splits.SPLIT_SETS == tuple(split["required"])


def test_cross_key_checks_run_at_start():
    config = changed(DEFAULT, "evaluation.attacks", ["loss"])
    with pytest.raises(ConfigError, match="evaluation.tradeoff_attack: 'loss'|tradeoff_attack"):
        check_config(changed(config, "evaluation.tradeoff_attack", "nn"))
