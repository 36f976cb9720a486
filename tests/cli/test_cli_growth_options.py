"""The CLI's growth and training options come from GrowthConfig's fields: one option per field,
typed by its annotation, defaulting to the field's default, described by the docstring."""

import argparse
import dataclasses
import json

import pytest

from topogrow import GrowthConfig
from topogrow.cli import main
from topogrow.cli import options as cli_options
from topogrow.cli.parser import build_parser


def _options(verb: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[verb]
    return {action.dest: action for action in sub._actions}


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_every_field_is_described_in_the_docstring():
    docs = cli_options.attribute_docs(GrowthConfig)
    missing = [f.name for f in dataclasses.fields(GrowthConfig) if not docs.get(f.name, "").strip()]
    assert missing == [], f"describe these fields in GrowthConfig's Attributes: section: {missing}"
    assert set(docs) <= {f.name for f in dataclasses.fields(GrowthConfig)}  # no stale descriptions


@pytest.mark.parametrize("verb", ["run", "compare"])
def test_every_field_has_an_option_with_help(verb):
    options = _options(verb)
    for field in dataclasses.fields(GrowthConfig):
        if verb == "compare" and field.name == "strategy":
            assert "strategy" not in options  # compare has --strategies
            continue
        if field.name in cli_options.PYTHON_ONLY_FIELDS:
            assert field.name not in options  # it matters only with a Python callable
            continue
        action = options[field.name]
        option = f"--{field.name.replace('_', '-')}"
        negative = [f"--no-{field.name.replace('_', '-')}"] if field.type == "bool" else []
        assert action.option_strings == [option, *negative]
        assert action.help and action.help.strip() != f"GrowthConfig.{field.name}"


@pytest.mark.parametrize("verb", ["run", "compare"])
def test_parsed_defaults_are_growth_config_defaults(verb):
    args = _parse([verb, "synthetic"])
    growth, _ = cli_options.configs(args)
    assert growth == GrowthConfig()
    assert dataclasses.asdict(growth) == dataclasses.asdict(GrowthConfig())


def test_options_are_typed_by_the_annotation():
    args = _parse(
        ["run", "synthetic", "--max-depth", "5", "--lr=0.02", "--neurons", "3", "--block", "gelu-mlp"]
        + ["--epsilons", "0.5,1,2", "--device", "cpu", "--min-delta", "0.01", "--td-batch-size", "64"]
    )
    growth, _ = cli_options.configs(args)
    assert (growth.max_depth, growth.lr, growth.neurons, growth.block) == (5, 0.02, 3, "gelu-mlp")
    assert growth.epsilons == (0.5, 1.0, 2.0) and growth.device == "cpu"
    assert (growth.min_delta, growth.td_batch_size) == (0.01, 64)
    assert isinstance(growth.max_depth, int) and isinstance(growth.lr, float)


@pytest.mark.parametrize(
    "annotation, value, expected",
    [
        ("int", "3", 3),
        ("float", "0.5", 0.5),
        ("str", "x", "x"),
        ("int | None", "4", 4),
        ("str | None", "cuda", "cuda"),
        ("float | None", "1e-3", 1e-3),
        ("tuple[float, ...]", "1,2.5", (1.0, 2.5)),
        ("tuple[int, ...]", "1, 2", (1, 2)),
        ("str | Callable[[Iterable[Tensor]], Optimizer]", "adamw", "adamw"),
        (int, "7", 7),
    ],
)
def test_option_kinds(annotation, value, expected):
    kind = cli_options.option_kind(annotation)
    assert kind["type"](value) == expected


@pytest.mark.parametrize("annotation", ["Callable[..., Optimizer]", "dict[str, float]", "Path | None"])
def test_types_the_command_line_cannot_spell_get_no_option(annotation):
    assert cli_options.option_kind(annotation) is None


def test_a_bool_field_is_a_flag_pair():
    parser = argparse.ArgumentParser()
    parser.add_argument("--flag", default=False, **cli_options.option_kind("bool"))
    assert parser.parse_args(["--flag"]).flag is True and parser.parse_args(["--no-flag"]).flag is False


def test_a_bad_list_is_one_argparse_line(capsys):
    with pytest.raises(SystemExit):
        _parse(["run", "synthetic", "--epsilons", "0.1,x"])
    err = capsys.readouterr().err
    assert "argument --epsilons: expected a comma-separated list of float, got '0.1,x'" in err


def test_attribute_docs_reads_the_google_section():
    class Example:
        """Title.

        Attributes:
            alpha: first line
                continued here.
            beta (int): typed ``beta``.

        Notes:
            gamma: not an attribute.
        """

    assert cli_options.attribute_docs(Example) == {"alpha": "first line continued here.", "beta": "typed ``beta``."}
    assert cli_options.attribute_docs(type("Bare", (), {})) == {}


def test_help_turns_field_names_into_options():
    options = _options("run")
    assert "--min-delta" in options["schedule"].help and "``" not in options["schedule"].help
    assert options["schedule"].choices == ["fixed", "plateau"]
    assert "gelu-mlp" in options["block"].help and "td-where" in options["strategy"].help


def test_line_search_is_a_choice(capsys):
    assert _options("run")["line_search"].choices == ["model", "grid"]
    assert cli_options.configs(_parse(["run", "synthetic", "--line-search", "grid"]))[0].line_search == "grid"
    assert cli_options.configs(_parse(["compare", "synthetic"]))[0].line_search == "model"
    with pytest.raises(SystemExit):
        _parse(["run", "synthetic", "--line-search", "gird"])
    assert "argument --line-search: invalid choice: 'gird' (choose from" in capsys.readouterr().err


def test_config_file_precedence_for_generated_options(tmp_path):
    """defaults < --config FILE < options written on the command line (in any spelling)."""
    config = tmp_path / "growth.json"
    config.write_text(json.dumps({"min_delta": 0.01, "td_batch_size": 32, "lr": 0.5, "epsilons": [0.1]}))
    args = _parse(["run", "synthetic", "--config", str(config), "--td-batch-size=16", "--lr", "0.25"])
    growth, _ = cli_options.configs(args)
    assert (growth.min_delta, growth.td_batch_size, growth.lr, growth.epsilons) == (0.01, 16, 0.25, (0.1,))
    args = _parse(["run", "synthetic", "--config", str(config), "--td-batch", "8"])  # an abbreviation counts too
    assert cli_options.configs(args)[0].td_batch_size == 8


def test_compare_overrides_one_strategys_config(tmp_path):
    args = ["compare", "synthetic", "--seeds", "1", "--strategies", "td,small-where", "--width", "6"]
    args += ["--max-depth", "2", "--epochs-per-stage", "1", "--final-epochs", "2", "--quiet", "--out", str(tmp_path)]
    assert main([*args, "--override", "td:line_search=grid,td_samples=all,rollback=false,epochs_per_stage=2"]) == 0
    payload = json.loads((tmp_path / "compare.json").read_text())
    assert payload["overrides"] == {
        "td": {"line_search": "grid", "td_samples": "all", "rollback": False, "epochs_per_stage": 2}
    }
    by = {r["strategy"]: r for r in payload["runs"]}
    assert by["td"]["history"]["stages"][0]["epoch"] == 2 and by["small-where"]["history"]["stages"][0]["epoch"] == 1


@pytest.mark.parametrize(
    "bad, message",
    [("td:lr", "STRATEGY:KEY=VALUE"), ("td:lrr=0.1", "did you mean 'lr'"), ("td:rollback=maybe", "true or false")],
)
def test_a_bad_override_is_a_one_line_error(bad, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "synthetic", "--strategies", "td", "--override", bad, "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
