import math

import pytest

from cadasg_dist.config import CADASGConfig
from cadasg_dist.errors import ConfigError


def test_defaults_round_trip_through_plain_data():
    cfg = CADASGConfig()
    again = CADASGConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert cfg.to_dict()["privacy"]["epsilon"] == "inf"
    assert math.isinf(again.privacy.epsilon) and not again.private


def test_unknown_key_is_refused_with_the_known_keys():
    with pytest.raises(ConfigError, match="unknown config key 'train.epochz'.*epochs"):
        CADASGConfig.from_dict({"train": {"epochz": 3}})


def test_values_are_coerced_and_checked():
    cfg = CADASGConfig.from_dict({"train": {"epochs": "7"}, "context": {"columns": "year,female"},
                                  "loss": {"adaptive": "false"}})
    assert cfg.train.epochs == 7 and cfg.context.columns == ("year", "female") and cfg.loss.adaptive is False
    with pytest.raises(ConfigError, match="train.epochs must be a int"):
        CADASGConfig.from_dict({"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="ema_alpha must be in"):
        CADASGConfig.from_dict({"cache": {"ema_alpha": 0.5}})
    with pytest.raises(ConfigError, match="epsilon must be > 0"):
        CADASGConfig.from_dict({"privacy": {"epsilon": 0}})


def test_replace_by_dotted_key_and_yaml(tmp_path):
    cfg = CADASGConfig().replace(**{"train.epochs": 3, "privacy.epsilon": 2.0})
    assert cfg.train.epochs == 3 and cfg.private
    with pytest.raises(ConfigError, match="unknown config key"):
        cfg.replace(**{"train.nope": 1})
    path = tmp_path / "run.yaml"
    path.write_text("target: y\ncontext:\n  columns: [a, b]\n  bands:\n    age: [0, 40, 120]\n")
    loaded = CADASGConfig.from_yaml(path)
    assert loaded.target == "y" and loaded.context.bands["age"] == (0.0, 40.0, 120.0)
    with pytest.raises(ConfigError, match="not found"):
        CADASGConfig.from_yaml(tmp_path / "missing.yaml")


def test_shipped_yaml_configs_parse():
    from pathlib import Path

    import yaml

    from cadasg_dist.federation.config import load_configs

    root = Path(__file__).resolve().parents[2]
    for path in sorted([*(root / "configs").glob("*.yaml"), *(root / "federated").glob("*.yaml")]):
        if "federated" in yaml.safe_load(path.read_text()):  # engine config plus a federated: section
            load_configs(path)
        else:
            CADASGConfig.from_yaml(path)


def test_replace_can_add_keys_to_mapping_fields():
    cfg = CADASGConfig().replace(**{"data.columns.id.kind": "identifier", "context.bands.age": [0, 40, 100]})
    assert cfg.data.columns["id"].kind == "identifier"
    assert cfg.context.bands["age"] == (0.0, 40.0, 100.0)
    for bad in ("train.epochs.x", "data.nope.x"):
        with pytest.raises(ConfigError, match="unknown config key"):
            CADASGConfig().replace(**{bad: 1})


def test_parse_overrides_reads_yaml_values_and_refuses_items_without_equals():
    from cadasg_dist.config import parse_overrides

    items = ["train.epochs=5", "model.hidden=[64, 64]", " target = whi", "data.n_quantiles=a: b: c"]
    assert parse_overrides(items) == {
        "train.epochs": 5, "model.hidden": [64, 64], "target": "whi", "data.n_quantiles": "a: b: c"}
    with pytest.raises(ConfigError, match="--federated-set expects KEY=VALUE, got 'rounds'"):
        parse_overrides(["rounds"], "--federated-set")


def test_class_calibration_is_on_for_small_private_budgets_and_switches_like_a_bool():
    private = CADASGConfig().replace(**{"privacy.epsilon": 3.0})
    assert private.model.calibrate_classes == "auto" and private.class_calibration
    assert not private.replace(**{"privacy.epsilon": 8.0}).class_calibration
    assert not CADASGConfig().class_calibration  # non-private: auto is off
    assert CADASGConfig().replace(**{"model.calibrate_classes": True}).class_calibration
    assert CADASGConfig.from_dict({"model": {"calibrate_classes": "true"}}).model.calibrate_classes == "on"
    assert not private.replace(**{"model.calibrate_classes": False}).class_calibration
    assert not private.replace(**{"model.calibrate_marginals": "off"}).class_calibration
    with pytest.raises(ConfigError, match="calibrate_classes must be one of"):
        CADASGConfig.from_dict({"model": {"calibrate_classes": "sometimes"}})


def test_flag_names_map_to_dotted_keys_through_one_table():
    from cadasg_dist.config import flag_overrides

    values = {"epsilon": 3.0, "context": "year, female", "seed": None, "rounds": 4, "secagg": False, "out": "m"}
    assert flag_overrides(values) == {"privacy.epsilon": 3.0, "context.columns": ["year", "female"],
                                      "federated.rounds": 4, "federated.secagg": False}
    assert flag_overrides({"context": ""}) == {}  # an empty column list keeps the config's


def test_federated_keys_go_to_the_federation_and_the_rest_to_the_engine(tmp_path):
    from cadasg_dist.federation.config import load_configs

    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 2}\nfederated: {rounds: 3, local_epochs: 4}\n")
    cfg, fed = load_configs(path, {"train.seed": 7, "federated.rounds": 9})
    assert (cfg.train.epochs, cfg.train.seed, fed.rounds, fed.local_epochs) == (2, 7, 9, 4)
    with pytest.raises(ConfigError, match="unknown config key 'federated.nope'"):
        load_configs(None, {"federated.nope": 1})


def test_a_key_moved_to_the_section_that_reads_it_still_loads_from_the_old_place():
    old = CADASGConfig().to_dict()
    old["model"]["merge_class_sds"] = 3.0  # where configs and artifacts before the move kept it
    del old["privacy"]["merge_class_sds"]
    cfg = CADASGConfig.from_dict(old)
    assert cfg.privacy.merge_class_sds == 3.0 and "merge_class_sds" not in cfg.to_dict()["model"]
    with pytest.raises(ConfigError, match="model"):
        CADASGConfig().replace(**{"model.merge_class_sds": 1.0})  # new code writes the new place only


# --- the defaults that depend on privacy: resolved in one place, a set value wins -------------

def _profile_values(cfg: CADASGConfig) -> dict:
    from cadasg_dist.config import profiles

    plain = cfg.to_dict()
    out = {}
    for key in profiles.AUTO_KEYS:
        section, name = key.split(".")
        value = plain[section][name]
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def test_auto_keys_resolve_to_the_profile_of_the_run_privacy():
    from cadasg_dist.config import profiles

    plain = CADASGConfig()
    assert set(_profile_values(plain).values()) == {None}  # auto until resolved
    assert _profile_values(plain.resolved()) == profiles.NON_PRIVATE
    private = plain.replace(**{"privacy.epsilon": 1.0}).resolved()
    assert _profile_values(private) == profiles.PRIVATE
    assert (private.model.latent_dim, private.train.batch_size, private.cache.clip_x) == (16, 1000, 5.0)
    # automatic epochs: the step rule without privacy, a fixed count in a private run whatever the size
    assert plain.resolved(3000).train.epochs == 300 and plain.resolved(500_000).train.epochs == 20
    assert {private.resolved(n).train.epochs for n in (300, 3000, 500_000)} == {profiles.PRIVATE_EPOCHS}
    assert private.resolved_epochs(3000) == profiles.PRIVATE_EPOCHS
    assert private.resolved(3000).resolved(9) == private.resolved(3000)  # resolving twice changes nothing


def test_a_value_set_in_python_wins_even_when_it_equals_the_other_profile():
    from cadasg_dist.config import CacheConfig, ModelConfig, PrivacyConfig, TrainConfig

    cfg = CADASGConfig(model=ModelConfig(latent_dim=32), cache=CacheConfig(clip_x=8.0),
                       train=TrainConfig(batch_size=500, epochs=300), privacy=PrivacyConfig(epsilon=1.0)).resolved(3000)
    assert (cfg.model.latent_dim, cfg.cache.clip_x, cfg.train.batch_size, cfg.train.epochs) == (32, 8.0, 500, 300)
    assert cfg.model.utility_hidden == (64,) and cfg.cache.clip_z == 5.0  # the keys left unset follow the profile
    plain = CADASGConfig(model=ModelConfig(latent_dim=16)).resolved()
    assert plain.model.latent_dim == 16 and plain.train.batch_size == 500


def test_a_value_set_in_yaml_or_by_set_wins_and_null_means_auto(tmp_path):
    from cadasg_dist.config import parse_overrides

    path = tmp_path / "run.yaml"
    path.write_text("privacy: {epsilon: 1}\nmodel: {latent_dim: 32, utility_hidden: null}\ntrain: {batch_size: 500}\n")
    cfg = CADASGConfig.from_yaml(path)
    assert cfg.model.latent_dim == 32 and cfg.model.utility_hidden is None
    done = cfg.resolved()
    assert (done.model.latent_dim, done.train.batch_size, done.model.utility_hidden) == (32, 500, (64,))
    over = parse_overrides(["cache.ema_alpha=0.95", "model.latent_dim=null", "train.epochs=7"])
    done = cfg.replace(**over).resolved(3000)
    assert (done.cache.ema_alpha, done.model.latent_dim, done.train.epochs) == (0.95, 16, 7)
    assert CADASGConfig.from_dict(done.to_dict()) == done  # resolved values survive plain data


def test_resolution_does_not_pass_over_bad_values():
    with pytest.raises(ConfigError, match="train.batch_size must be >= 2"):
        CADASGConfig.from_dict({"train": {"batch_size": 1}})
    with pytest.raises(ConfigError, match="model.latent_dim must be >= 1"):
        CADASGConfig.from_dict({"model": {"latent_dim": 0}})
    with pytest.raises(ConfigError, match="privacy.unreleased_bounds must be one of"):
        CADASGConfig.from_dict({"privacy": {"unreleased_bounds": "ignore"}})


def test_old_configs_with_concrete_values_load_unchanged():
    old = {"model": {"latent_dim": 32, "utility_hidden": [128]}, "cache": {"ema_alpha": 0.95, "clip_x": 8.0,
           "clip_z": 8.0}, "train": {"epochs": 40, "batch_size": 500}, "privacy": {"epsilon": 3.0}}
    cfg = CADASGConfig.from_dict(old)
    assert cfg.resolved(3000) == cfg  # nothing left to resolve: a private run keeps them
