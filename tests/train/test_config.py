"""Bad configs name the key and what is wrong."""
import pytest

from tumbler.train.config import TrainConfigError, build_config, load_config


def test_unknown_key_is_named_with_its_section():
    with pytest.raises(TrainConfigError, match=r"optim\.lrr: unknown key"):
        build_config({"optim": {"lrr": 1e-5}})


def test_bad_value_names_key_and_problem():
    with pytest.raises(TrainConfigError, match=r"rollout\.group_size: Input should be greater than or equal to 1"):
        build_config({"rollout": {"group_size": 0}})


def test_set_overrides_parse_yaml_values():
    cfg = build_config({}, ["optim.lr=2e-5", "env.hosted=false", "env.kwargs={low: 1, high: 4}"])
    assert cfg.optim.lr == 2e-5 and cfg.env.hosted is False and cfg.env.kwargs == {"low": 1, "high": 4}
    with pytest.raises(TrainConfigError, match="expected key=value"):
        build_config({}, ["optim.lr"])
    with pytest.raises(TrainConfigError, match=r"steps: Input should be a valid integer"):
        build_config({}, ["steps=many"])


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: tiny\nbogus: 1\n")
    with pytest.raises(TrainConfigError, match=rf"{path}: bogus: unknown key"):
        load_config(path)
    with pytest.raises(TrainConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_examples_validate():
    from pathlib import Path
    examples = sorted(Path(__file__).parents[2].joinpath("examples/train").glob("*.yaml"))
    assert examples
    for path in examples:
        load_config(path)


def test_every_field_is_documented():
    from tumbler.train.config import TrainConfig

    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no docstring"
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation)
    walk(TrainConfig)


def test_the_docs_config_reference_is_the_configs_own():
    """docs/TRAINER.md's table is reference_markdown(): a new or changed key shows up there."""
    from pathlib import Path
    from tumbler.train.config import reference_markdown
    page = (Path(__file__).resolve().parents[2] / "docs" / "TRAINER.md").read_text()
    begin, end = "<!-- config-reference:begin -->\n", "<!-- config-reference:end -->"
    assert page[page.index(begin) + len(begin):page.index(end)] == reference_markdown(), \
        "regenerate the table: .venv/bin/python scripts/config-reference.py"
