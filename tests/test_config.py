"""The config is checked before any work: every mistake names its key; its documentation
names every key and only paths that exist."""

import ast
import copy
import io
import re
import tokenize
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from helpers import SWEEPS, changed
from safecompress.config.curves import CURVE, curve_lines, curve_points
from safecompress.config.methods import METHODS
from safecompress.config.settings import (
    REFERENCE_KINDS,
    ConfigError,
    check_config,
    load_yaml,
    schema,
)

ROOT = Path(__file__).parent.parent
CONFIG = ROOT / "config"
DEFAULT = yaml.safe_load((CONFIG / "config.yaml").read_text())


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


def test_candidates_relaxed_under_relaxloss_are_refused():
    relaxed = [{"scale": 1.0, "growth": "gradient", "relax": 0.5}]
    config = changed(DEFAULT, "safecompress.strategies", relaxed)
    check_config(changed(config, "methods", ["safecompress"]))
    with pytest.raises(ConfigError, match=r"strategies\[\]\.relax: safecompress_relaxloss"):
        check_config(changed(config, "methods", ["safecompress", "safecompress_relaxloss"]))


def test_unreadable_config_file(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("datasets: [digits\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def test_curves_name_one_model_per_value_and_join_it_to_the_default_in_order():
    check_config(changed(DEFAULT, "curves", load_yaml(CONFIG / "evidence.yaml")["curves"]))
    evidence = changed(DEFAULT, "curves", SWEEPS)
    check_config(evidence)
    points = curve_points(evidence)
    assert [p.wildcard for p in points if p.method == "dpsgd"] == [
        f"{CURVE}dpsgd/noise_multiplier_{sigma}" for sigma in (0.005, 0.02, 0.3)
    ]
    assert {p.method for p in points} == {"dpsgd", "relaxloss", "advreg", "distill"}
    temperature = next(p for p in points if p.method == "distill")
    assert temperature.sections(evidence)["distill"] == {"temperature": 4.0, "alpha": 0.5}
    assert DEFAULT["distill"]["temperature"] == 1.0  # the config itself is left as it was
    lines = curve_lines(points, evidence)
    assert lines["dpsgd"] == [
        ["noise_multiplier_0.005", "noise_multiplier_0.02", "noise_multiplier_0.3", "default"]
    ]
    assert lines["advreg"] == [["default", "weight_0.3", "weight_1.0"]]
    assert curve_points(DEFAULT) == []


@pytest.mark.parametrize(
    "curves, message",
    [
        ({"dpsgd": {"dpsgd.noise_multiplier": [0.1, 0.1]}}, "curves.dpsgd.dpsgd.noise_multiplier"),
        ({"dpsgd": {"dpsgd.noise_multiplier": []}}, "curves.dpsgd.dpsgd.noise_multiplier"),
        ({"dpsgd": {"noise_multiplier": [0.1]}}, "curves.dpsgd"),
        ({"dpsgd": {"dpsgd.noise_multiplier": [[0.1]]}}, "curves.dpsgd.dpsgd.noise_multiplier.0"),
        ({"dpsgd": {"dpsgd.noise_multiplier": [-0.1]}}, r"noise_multiplier: -0.1 is less"),
        ({"dpsgd": {"dpsgd.noise_multiplier": ["big"]}}, r"noise_multiplier: 'big' is not of"),
        ({"dpsgd": {"dpsgd.noise_multiplier": [1.0]}}, r"1.0 is dpsgd's own setting"),
        ({"dpsgd": {"dpsgd.sigma": [0.1]}}, r"dpsgd does not read dpsgd.sigma; it reads"),
        ({"dpsgd": {"sparse.growth": ["random"]}}, r"dpsgd does not read sparse.growth"),
        ({"dpsgd": {"relaxloss.alpha": [0.2]}}, r"curves.dpsgd.relaxloss.alpha: dpsgd does"),
        ({"telepathy": {"dpsgd.noise_multiplier": [0.1]}}, r"'telepathy' is not one of methods"),
    ],
)
def test_bad_curves_name_the_key(curves, message):
    config = changed(DEFAULT, "curves", curves)
    with pytest.raises(ConfigError, match=message):
        check_config(config)
        curve_points(config)


def test_a_curve_of_a_method_not_run_is_refused():
    config = changed(
        changed(DEFAULT, "methods", ["dst"]), "curves", {"dpsgd": {"dpsgd.delta": [1e-6]}}
    )
    with pytest.raises(ConfigError, match=r"curves.dpsgd: 'dpsgd' is not one of methods \['dst'\]"):
        curve_points(config)


def test_image_augmentation_of_data_that_are_not_images_is_refused():
    paper = load_yaml(CONFIG / "paper.yaml")
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
    from safecompress.compression import adversarial, safety
    from safecompress.compression.safecompress import PROBE_MEMBERS
    from safecompress.config import specs
    from safecompress.data import batches, sources, splits
    from safecompress.privacy import attacks
    from safecompress.sparse import engine
    from safecompress.training import models

    data = "/properties/data/additionalProperties"
    expected = {
        "/$defs/growth": engine.TRAINING_GROWTH,
        "/$defs/candidate_growth": tuple(engine.GROWTH_CRITERIA),
        "/$defs/strategies/items/properties/prune": tuple(engine.PRUNE_CRITERIA),
        "/$defs/strategies/items/properties/init": engine.GROWTH_INITS,
        "/$defs/strategies/items/properties/budget": engine.BUDGETS,
        "/properties/methods/items": METHODS,
        f"{data}/properties/source": sources.SOURCES,
        f"{data}/allOf/0/then/properties/name": sources.SKLEARN_DATASETS,
        f"{data}/allOf/1/then/properties/name": tuple(sources.IMAGE_FOLDERS),
        "/properties/model/properties/arch": models.ARCHITECTURES,
        "/properties/train/properties/augment": batches.AUGMENTATIONS,
        "/properties/sparse/properties/distribution": engine.DISTRIBUTIONS,
        "/properties/safecompress/properties/safety_score": tuple(safety.SAFETY_SCORES),
        "/properties/safecompress/properties/probe_members": tuple(PROBE_MEMBERS),
        "/$defs/attack": tuple(attacks.ATTACKS),
        "/properties/adversarial/properties/attackers/items": adversarial.ATTACKERS,
        "/properties/evaluation/properties/references": REFERENCE_KINDS,
    }
    found = dict(schema_enums(schema()))
    assert found.keys() == expected.keys()
    for path, values in found.items():
        assert sorted(values) == sorted(expected[path]), path
    assert specs.NETWORK_ATTACKS == attacks.NETWORK_ATTACKS
    assert set(attacks.NETWORK_ATTACKS) < set(attacks.FIT_ADVERSARY)
    split = schema()["properties"]["data"]["additionalProperties"]["properties"]["split"]
    assert tuple(split["properties"]) == splits.SPLIT_SETS == tuple(split["required"])


def test_cross_key_checks_run_at_start():
    config = changed(DEFAULT, "evaluation.attacks", ["loss"])
    with pytest.raises(ConfigError, match="evaluation.tradeoff_attack: 'loss'|tradeoff_attack"):
        check_config(changed(config, "evaluation.tradeoff_attack", "nn"))


def schema_keys(node, path="", followed=None):
    """The full path of every key the schema allows, at every depth: `<name>` stands for a key
    of a map (`data.<name>.source`), `[]` for an item of a list
    (`safecompress.strategies[].scale`). A `$defs` reference is followed once (its keys are
    documented where it is first used); one to a top-level section (`data.<name>.model`) is
    not, that section being documented under its own name."""
    followed = set() if followed is None else followed
    ref = node.get("$ref")
    if ref is not None and not ref.startswith("#/properties/") and ref not in followed:
        followed.add(ref)
        target = schema()
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        yield from schema_keys(target, path, followed)
    for key, child in node.get("properties", {}).items():
        child_path = f"{path}.{key}" if path else key
        yield child_path
        yield from schema_keys(child, child_path, followed)
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_keys(node["additionalProperties"], f"{path}.<name>", followed)
    if isinstance(node.get("items"), dict):
        yield from schema_keys(node["items"], f"{path}[]", followed)
    for word in ("allOf", "anyOf", "oneOf"):
        for child in node.get(word, []):
            yield from schema_keys(child, path, followed)
    for word in ("if", "then", "else"):
        if word in node:
            yield from schema_keys(node[word], path, followed)


def readme_tables(header):
    """First cells, without backticks, of the rows of config/README.md's tables whose first
    column is `header`."""
    cells, inside = [], False
    for line in (CONFIG / "README.md").read_text().splitlines():
        row = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            inside = False
        elif row[0] == header:
            inside = True
        elif inside and not set(row[0]) <= set("-:"):
            cells.append(row[0].strip("`"))
    return cells


def test_readme_documents_every_config_key():
    """Each key is a row of a `key` table in config/README.md named by its full path (a
    section by a heading that starts with its name in backticks); no row names a key the
    schema does not have."""
    keys = set(schema_keys(schema()))
    rows = readme_tables("key")
    headings = {
        line.split("`")[1]
        for line in (CONFIG / "README.md").read_text().splitlines()
        if line.startswith("#") and "`" in line
    }
    undocumented = sorted(keys - set(rows) - headings)
    assert not undocumented, f"config/README.md does not document {undocumented}"
    unknown = sorted(set(rows) - keys)
    assert not unknown, f"config/README.md documents keys the schema lacks: {unknown}"
    assert len(rows) == len(set(rows)), "config/README.md documents a key twice"


def test_readme_documents_every_method():
    assert readme_tables("method") == list(METHODS)


# A path from the repository root, as the config's comments and the docstrings name them.
REPO_PATH = re.compile(
    r"(?<![\w/.-])(?:config|workflow|tests|scripts|benchmarks|docs|profiles|envs)/[\w./<>*-]*[\w/]"
)


def documentation():
    """(file, text) of the config files' comments, config/README.md, and the docstrings and
    comments of the package."""
    for path in sorted(CONFIG.glob("*.yaml")):
        yield path, "\n".join(re.findall(r"#.*", path.read_text()))
    yield CONFIG / "README.md", (CONFIG / "README.md").read_text()
    for path in sorted((ROOT / "workflow" / "safecompress").rglob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                yield path, ast.get_docstring(node) or ""
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                yield path, token.string


SETTING = ("datasets", "split_seeds", "seeds", "densities", "data", "model", "train", "shadow")


def test_clean_evidence_config_is_the_evidence_setting_without_canaries():
    evidence, clean = (
        load_yaml(CONFIG / f"{name}.yaml") for name in ("evidence", "evidence_clean")
    )
    assert {key: clean[key] for key in SETTING} == {key: evidence[key] for key in SETTING}
    assert (clean["sparse"], clean["safecompress"]) == (
        evidence["sparse"],
        evidence["safecompress"],
    )
    assert clean["evaluation"] == {**evidence["evaluation"], "canaries": 0}


def test_two_candidate_evidence_is_the_evidence_setting_with_the_default_candidates():
    """An overlay of config/evidence.yaml that changes the methods and candidates only, and
    switches off its curves and ablations."""
    two = load_yaml(CONFIG / "evidence_two_candidates.yaml")
    assert commands(CONFIG / "evidence_two_candidates.yaml") == [
        ["config/evidence.yaml", "config/evidence_two_candidates.yaml"]
    ]
    assert two["safecompress"] == {"strategies": DEFAULT["safecompress"]["strategies"]}
    assert set(two) == {"results", "methods", "safecompress", "curves", "ablation"}
    assert two["curves"] is None and two["ablation"] is None


def test_documentation_names_only_paths_that_exist():
    missing = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path, text in documentation()
        for name in REPO_PATH.findall(text)
        if "<" not in name and "*" not in name and not (ROOT / name).exists()
    )
    assert not missing, f"paths that do not exist: {missing}"
    links = re.findall(r"\]\((?!https?:|#)([^)#]+)", (CONFIG / "README.md").read_text())
    broken = [link for link in links if not (CONFIG / link).exists()]  # relative to config/
    assert links and not broken, f"config/README.md links to paths that do not exist: {broken}"


def commands(path: Path) -> list[list[str]]:
    """The config files each `snakemake ... --configfile ...` line of `path`'s header gives,
    in order (a line ending in a backslash goes on)."""
    header = re.sub(r"\\\n#\s*", " ", "\n".join(re.findall(r"#.*", path.read_text())))
    return [
        re.findall(r"config/[\w.]+\.yaml", line.split("--configfile", 1)[1])
        for line in header.splitlines()
        if "snakemake" in line and "--configfile" in line
    ]


@pytest.mark.parametrize("path", sorted(CONFIG.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_passes_the_check_as_its_header_runs_it(path):
    """A config given on top of others (config/evidence_clean_floor.yaml after
    config/evidence_clean.yaml) is checked merged, as snakemake merges it onto the default."""
    runs = commands(path) or [[f"config/{path.name}"]]
    for files in runs:
        assert f"config/{path.name}" in files
        config = copy.deepcopy(DEFAULT)
        for name in files:
            update_config(config, load_yaml(ROOT / name))
        check_config(config)
