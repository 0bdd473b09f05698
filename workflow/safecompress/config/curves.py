"""Defenses as curves (config key `curves`): each value swept of one key a method reads is one
more model of that method, a curve point, at every density and replicate, with its own matched
references. The one place that names a point (its `variant` in every table, its method
wildcard in the workflow's paths), applies its change and orders a curve's points.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from safecompress.config.methods import METHOD_SECTIONS, REGISTRY
from safecompress.config.settings import ConfigError, check_section
from safecompress.config.specs import keys

# The method wildcard of a curve point: CURVE + "<method>/<variant>".
CURVE = "curve/"
# The variant of a method's own settings: the point every curve of the method passes through.
DEFAULT_VARIANT = "default"


@dataclass(frozen=True)
class CurvePoint:
    """One model setting of a method's curve: `section.key` set to `value`."""

    method: str
    section: str
    key: str
    value: Any

    @property
    def variant(self) -> str:
        """Its name in the tables' `variant` column, e.g. noise_multiplier_0.02."""
        return f"{self.key}_{self.value}"

    @property
    def wildcard(self) -> str:
        """Its method wildcard: results/<dataset>/split<k>/curve/<method>/<variant>/..."""
        return f"{CURVE}{self.method}/{self.variant}"

    def sections(self, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Every method section of `config` (`sparse`, `dpsgd`, ...), this point's changed."""
        sections = {name: dict(config[name]) for name in METHOD_SECTIONS}
        sections[self.section][self.key] = self.value
        return sections


def curve_points(config: dict[str, Any]) -> list[CurvePoint]:
    """Every point of `config["curves"]` in the config's order, checked (ConfigError naming
    the key): the method is one of `methods`, it reads the swept key, each value passes the
    schema of its section and differs from the method's own setting (its default point)."""
    points = []
    for method, sweeps in (config["curves"] or {}).items():
        swept: set[str] = set()
        if method not in config["methods"]:
            raise ConfigError(
                f"config key curves.{method}: {method!r} is not one of methods "
                f"{config['methods']}; add it there or remove its curve"
            )
        reads = REGISTRY[method].sections
        for path, values in sweeps.items():
            section, _, key = path.partition(".")
            where = f"config key curves.{method}.{path}"
            if section not in reads or key not in keys(reads[section]):
                readable = ", ".join(f"{s}.{k}" for s, spec in reads.items() for k in keys(spec))
                raise ConfigError(f"{where}: {method} does not read {path}; it reads {readable}")
            if key in swept:  # its points would be named as the other key's
                raise ConfigError(f"{where}: {method} has another curve of a key named {key}")
            swept.add(key)
            for value in values:
                if value == own_setting(config, method, path):
                    raise ConfigError(
                        f"{where}: {value!r} is {method}'s own setting (its default point, "
                        "on every curve already); leave it out"
                    )
                point = CurvePoint(method, section, key, value)
                try:
                    check_section(section, point.sections(config)[section])
                except ConfigError as err:
                    raise ConfigError(f"{where}: {str(err).partition(': ')[2]}") from None
                points.append(point)
    return points


def own_setting(config: dict[str, Any], method: str, path: str) -> Any:
    """The value of `section.key` that `method` runs with: the config's, else its spec's default."""
    section, _, key = path.partition(".")
    if key in config[section]:
        return config[section][key]
    spec = REGISTRY[method].sections[section]
    return next(f.default for f in dataclasses.fields(spec) if f.metadata.get("key", f.name) == key)


def curve_lines(points: list[CurvePoint], config: dict[str, Any]) -> dict[str, list[list[str]]]:
    """Per method, one line per swept key: the variants of its points and DEFAULT_VARIANT (the
    method's own setting) in order of the key's value, as the frontier figure joins them."""
    lines: dict[str, dict[str, list[tuple[Any, str]]]] = {}
    for point in points:
        default = own_setting(config, point.method, f"{point.section}.{point.key}")
        line = lines.setdefault(point.method, {}).setdefault(
            point.key, [(default, DEFAULT_VARIANT)]
        )
        line.append((point.value, point.variant))
    return {
        method: [
            [variant for _, variant in sorted(line, key=_strength)] for line in by_key.values()
        ]
        for method, by_key in lines.items()
    }


def _strength(item: tuple[Any, str]) -> tuple[bool, Any]:
    """Numbers (and booleans) in numeric order, names in alphabetical order."""
    return isinstance(item[0], str), item[0]
