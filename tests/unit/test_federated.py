"""Federated training: the silo and server functions called directly, with hand-built messages.

No Flower runtime and no Ray: ``InProcessGrid`` hands each message to the real ClientApp in this
process, with one persistent ``Context`` per silo, so the Message API route, the SecAgg+ route and
dropouts run in seconds.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from cadasg_dist.config import CADASGConfig
from cadasg_dist.context.cache import CacheStats
from cadasg_dist.errors import ConfigError, InvalidDataError
from cadasg_dist.federation.client import STATE_KEY, handle_train
from cadasg_dist.federation.config import FederatedConfig, load_configs, parse_failure
from cadasg_dist.federation.plan import FederationPlan, build_plan, conform, encode_silo, federated_calibration
from cadasg_dist.federation.records import (
    CACHE_FIELDS,
    cache_record,
    check_payload,
    expected_shapes,
    model_arrays,
    record_cache,
    secagg_pack,
    secagg_unpack,
    secagg_weight,
    summed_noise,
)
from cadasg_dist.federation.server import FedAvgWithCache, ServerSettings, initial_weights, run_server, server_step
from cadasg_dist.federation.silo import SiloTrainer, add_proximal_term
from cadasg_dist.model.networks import CADASGNetworks
from cadasg_dist.privacy.ledger import PrivacyLedger
from cadasg_dist.train.step import TrainState

SILOS = ("s1", "s2", "s3")


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """What the Flower runtime sets in a ServerApp process before messages can be created."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def declared(cfg: CADASGConfig, **privacy) -> CADASGConfig:
    """The tiny config with the text categories declared (a federated run reads no raw statistic)."""
    raw = cfg.to_dict()
    raw["data"]["columns"] = {"group": {"categories": ["a", "b", "rare"]}, "label": {"categories": ["no", "yes"]},
                              "site": {"kind": "identifier"}}
    raw["privacy"].update(privacy)
    return CADASGConfig.from_dict(raw)


@pytest.fixture(scope="module")
def silo_table(mixed_table):
    """Three non-IID silos: s1 mostly 'a', s2 mostly 'b', s3 holds every 'rare' row and only those."""
    rng = np.random.default_rng(1)
    df = mixed_table.copy()
    major = np.where(df["group"] == "a", "s1", "s2")
    minor = np.where(df["group"] == "a", "s2", "s1")
    df["site"] = np.where(df["group"] == "rare", "s3", np.where(rng.random(len(df)) < 0.8, major, minor))
    return df


@pytest.fixture(scope="module")
def table_path(silo_table, tmp_path_factory):
    path = tmp_path_factory.mktemp("fed") / "table.parquet"
    silo_table.to_parquet(path)
    return path


FED = FederatedConfig(rounds=2, local_epochs=1, schema_epsilon=10.0, round_timeout=30.0, secagg=False)


@pytest.fixture(scope="module")
def plan(silo_table, tiny_config):
    return build_plan(silo_table, declared(tiny_config), FED)


@pytest.fixture(scope="module")
def private_plan(silo_table, tiny_config):
    return build_plan(silo_table, declared(tiny_config, epsilon=20.0), FED)


def sources(path):
    return [{"name": s, "kind": "column", "path": str(path), "column": "site", "value": s} for s in SILOS]


def train_message(plan, fed, path, weights, node=1, phase="train", rnd=1):
    config = ConfigRecord({"phase": phase, "server-round": rnd, "plan": plan.to_json(), "federated": fed.to_json(),
                           "sources": json.dumps(sources(path))})
    return Message(RecordDict({"arrays": ArrayRecord(weights), "config": config}), dst_node_id=node,
                   message_type=MessageType.TRAIN)


def silo_context(index):
    return Context(run_id=1, node_id=index + 1, node_config={"partition-id": index}, state=RecordDict(), run_config={})


# --- config and plan ------------------------------------------------------------------------------

def test_federated_config_validates_and_parses(tmp_path):
    with pytest.raises(ConfigError, match="federated.rounds"):
        FederatedConfig(rounds=0)
    with pytest.raises(ConfigError, match="unknown config key 'federated.round'"):
        FederatedConfig.from_dict({"round": 3})
    with pytest.raises(ConfigError, match="SILO:ROUND"):
        FederatedConfig(inject_failure="1:raise")
    with pytest.raises(ConfigError, match="federated.server_lr must be a finite number > 0, got 0"):
        FederatedConfig(server_lr=0)
    with pytest.raises(ConfigError, match="federated.local_lr_scale must be a finite number > 0, got -1"):
        FederatedConfig(local_lr_scale=-1)
    assert parse_failure("2:3:hang") == (2, 3, "hang")
    path = tmp_path / "c.yaml"
    path.write_text("target: label\nfederated: {rounds: 3, strategy: fedprox, secagg: false}\n")
    cfg, fed = load_configs(path)
    assert cfg.target == "label" and (fed.rounds, fed.strategy, fed.secagg) == (3, "fedprox", False)
    assert FederatedConfig.from_json(fed.to_json()) == fed


def test_a_private_plan_turns_the_class_and_context_calibrations_on(plan, private_plan):
    """A federated model's class and context structure suffers from the silos' noisier DP-SGD, so
    "auto" means on at any epsilon in a private federated run; the histograms are in the plan."""
    model = private_plan.config.model
    assert (model.calibrate_classes, model.calibrate_contexts) == ("on", "on")
    assert private_plan.transformer.class_marginals and private_plan.transformer.context_marginals
    names = {m.name for m in private_plan.preprocessing}
    assert {"preprocess/class_marginals", "preprocess/context_marginals"} <= names
    # explicit switches are kept; a non-private plan keeps "auto" (off without DP)
    off = federated_calibration(private_plan.config.replace(**{"model.calibrate_classes": "off",
                                                               "model.calibrate_contexts": "auto"}))
    assert (off.model.calibrate_classes, off.model.calibrate_contexts) == ("off", "on")
    assert plan.config.model.calibrate_classes == "auto" and not plan.config.class_calibration


def test_only_a_private_plan_merges_a_thin_target_class(silo_table, tiny_config):
    df = silo_table.copy()
    df.loc[df.index[:12], "label"] = "rare"
    raw = declared(tiny_config).to_dict()
    raw["data"]["columns"]["label"] = {"categories": ["no", "rare", "yes"]}
    cfg = CADASGConfig.from_dict(raw)
    private = build_plan(df, cfg.replace(**{"privacy.epsilon": 4.0}), FED)
    assert list(private.dims.class_groups) in ([0, 0, 1], [0, 1, 1]) and private.dims.strata == 2
    assert FederationPlan.from_json(private.to_json()).dims == private.dims  # the groups travel in the dims
    exact = build_plan(df, cfg, FED)  # the schema is released privately, but the silos train without DP
    assert exact.dims.class_groups is None and exact.dims.strata == 3


def test_plan_round_trips_and_charges_preprocessing(plan, private_plan):
    again = FederationPlan.from_json(plan.to_json())
    assert again.dims == plan.dims and again.extractor.domain == plan.extractor.domain
    assert plan.silo_ledger().private is False and plan.schema_ledger["private"] is True
    ledger = private_plan.silo_ledger()
    assert [m.name for m in ledger.mechanisms] == [m.name for m in private_plan.preprocessing]
    assert ledger.delta == private_plan.config.privacy.delta and 0 < ledger.epsilon() < 20.0


def test_conform_clips_and_drops(plan, silo_table):
    df = silo_table.head(20).copy()
    df.loc[0, "score"] = 1e9
    df.loc[1, "group"] = None  # no missing slot for a declared category set without missing rows
    out, keep = conform(df, plan.schema)
    assert len(out) == 19 and 1 not in keep
    assert out["score"].max() <= plan.schema["score"].max


# --- what a silo sends ----------------------------------------------------------------------------

def test_client_reply_holds_only_parameters_and_cache_statistics(plan, table_path, silo_table):
    weights = initial_weights(plan)
    reply = handle_train(train_message(plan, FED, table_path, weights), silo_context(0))
    content = reply.content
    nets = CADASGNetworks(plan.dims, plan.config.model)
    shapes = expected_shapes(nets, plan.dims.contexts * plan.dims.strata)
    check_payload(content, shapes)  # every array is a parameter or a statistic of its expected shape
    assert set(content.array_records) == {"arrays", "cache"}
    assert set(content["arrays"]) == {n for n, _ in nets.named_parameters()}
    assert set(content["cache"]) == set(CACHE_FIELDS)
    n_rows = int((silo_table["site"] == "s1").sum())
    assert content["metrics"]["num-examples"] == n_rows
    assert all(n_rows not in arr.shape for rec in content.array_records.values() for arr in rec.values())
    assert set(content.config_records) == {"silo"} and content["silo"]["name"] == "s1"
    assert not any(isinstance(v, bytes) for v in content["silo"].values())
    with pytest.raises(InvalidDataError, match="not an expected parameter"):
        check_payload(RecordDict({"arrays": ArrayRecord({"rows": torch.zeros(n_rows, 3)})}), shapes)


def test_silo_ledger_persists_across_rounds(private_plan, table_path):
    ctx = silo_context(1)
    weights = initial_weights(private_plan)
    first = handle_train(train_message(private_plan, FED, table_path, weights, rnd=1), ctx)
    ledger1 = json.loads(ctx.state.config_records[STATE_KEY]["ledger"])
    second = handle_train(train_message(private_plan, FED, table_path, weights, rnd=2), ctx)
    ledger2 = json.loads(ctx.state.config_records[STATE_KEY]["ledger"])
    steps = lambda lg: sum(m["steps"] for m in lg["mechanisms"] if m["name"].startswith("train_step"))  # noqa: E731
    s1, s2 = first.content["metrics"]["steps"], second.content["metrics"]["steps"]
    assert steps(ledger1) == s1 and steps(ledger2) == s1 + s2  # one ledger for the run, not one per round
    assert 0 < first.content["metrics"]["epsilon"] < second.content["metrics"]["epsilon"] <= 20.0
    final = handle_train(train_message(private_plan, FED, table_path, weights, phase="final-cache", rnd=3), ctx)
    ledger = json.loads(final.content["silo"]["ledger"])
    assert ledger["mechanisms"][-1]["name"] == "cache/final" and "arrays" not in final.content.array_records
    again = handle_train(train_message(private_plan, FED, table_path, weights, phase="final-cache", rnd=3), ctx)
    assert json.loads(again.content["silo"]["ledger"]) == ledger  # asked twice: the same release, no new cost
    # the final release reports its noise variance (public), which the server sums over silos
    assert "cache-noise-var-n" not in second.content["metrics"]
    noise = summed_noise([dict(final.content["metrics"]), dict(again.content["metrics"])])
    assert float(noise[0]) > 0 and torch.equal(noise, 2 * summed_noise([dict(final.content["metrics"])]))
    assert float(summed_noise([{}]).abs().sum()) == 0  # a silo that did not report counts as exact


def test_silos_train_at_the_scaled_learning_rates(plan, private_plan, silo_table):
    fed = FED.replace(local_lr_scale=3.0)
    for p in (plan, private_plan):
        trainer = SiloTrainer(p, fed, encode_silo(p, silo_table), index=0)
        t = p.config.train
        assert trainer.state.opt_generator.param_groups[0]["lr"] == pytest.approx(3 * t.lr_generator)
        assert trainer.state.opt_critic.param_groups[0]["lr"] == pytest.approx(3 * t.lr_critic)
    plain = SiloTrainer(private_plan, FED.replace(local_lr_scale=1.0), encode_silo(private_plan, silo_table), index=0)
    # the same released count (as a restored silo has it): the plan then depends on nothing else
    scaled = SiloTrainer(private_plan, fed, encode_silo(private_plan, silo_table), index=0,
                         ledger=PrivacyLedger.from_json(plain.ledger.to_json()), count=plain.count)
    assert scaled.budget == plain.budget  # the privacy plan does not depend on the learning rates


# --- aggregation and cache merge ------------------------------------------------------------------

def _reply(to: Message, arrays: dict[str, torch.Tensor], stats: CacheStats, n: int) -> Message:
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "cache": cache_record(stats),
                               "metrics": MetricRecord({"num-examples": n}), "silo": ConfigRecord({"name": str(n)})}),
                   reply_to=to)


def _stats(value: float, cells=3, d=2, lat=1) -> CacheStats:
    s = CacheStats.zeros(cells, d, lat)
    return CacheStats(*(getattr(s, f) + value for f in CACHE_FIELDS))


def test_fedavg_weights_by_rows_and_sums_caches():
    out = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=1, message_type=MessageType.TRAIN)
    replies = [_reply(out, {"w": torch.full((2,), 1.0)}, _stats(1.0), 100),
               _reply(out, {"w": torch.full((2,), 4.0)}, _stats(2.0), 300),
               Message(Error(code=0, reason="silo crashed"), reply_to=out)]
    strategy = FedAvgWithCache(min_train_nodes=2, min_available_nodes=2, fraction_evaluate=0.0)
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), [3.25, 3.25])  # (1*100 + 4*300) / 400
    merged = strategy.merged_cache
    for f in CACHE_FIELDS:  # the exact sum, not a mean
        np.testing.assert_allclose(getattr(merged, f).numpy(), 3.0)
    assert record_cache(cache_record(merged)).n.dtype == torch.float64


def test_secagg_packing_recovers_mean_and_sum():
    """Apply secaggplus_mod's arithmetic (weight, quantize, sum, dequantize) to packed vectors."""
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    from cadasg_dist.federation.config import SECAGG_QUANTIZATION

    fed, cache = FederatedConfig(secagg_max_weight=1000.0), CADASGConfig().resolved().cache
    rng = np.random.default_rng(0)
    silos = []
    for i in range(3):
        stats = _stats(7.0 + i)
        stats.sxx += torch.from_numpy(rng.normal(size=tuple(stats.sxx.shape)) * 50)  # noisy, both signs
        silos.append((100 * (i + 1), [rng.normal(size=(3, 2)), rng.normal(size=4)], stats))
    total_q, acc = 0, None
    for n, weights, stats in silos:
        packed = secagg_pack(weights, stats, n, fed, cache)
        w = secagg_weight(n, fed)
        q = quantize([a * w for a in packed], fed.secagg_clip, SECAGG_QUANTIZATION)
        acc = q if acc is None else [a + b for a, b in zip(acc, q)]
        total_q += w
    deq = dequantize(acc, fed.secagg_clip, SECAGG_QUANTIZATION)
    average = [(a - (len(silos) - 1) * fed.secagg_clip) / total_q for a in deq]
    mean, summed = secagg_unpack(average, 2, [n for n, _, _ in silos], fed, cache)
    rows = sum(n for n, _, _ in silos)
    for k in range(2):
        expect = sum(n * ws[k] for n, ws, _ in silos) / rows
        np.testing.assert_allclose(mean[k], expect, atol=1e-4)
    for f in CACHE_FIELDS:
        expect = sum(getattr(s, f).numpy() for _, _, s in silos)
        np.testing.assert_allclose(getattr(summed, f).numpy(), expect, rtol=1e-4, atol=0.5)


def test_secagg_pack_refuses_values_it_would_clip():
    cache = CADASGConfig().resolved().cache
    with pytest.raises(InvalidDataError, match="clipping range"):
        secagg_pack([np.full(3, 50.0)], None, 1000, FederatedConfig(secagg_max_weight=1000.0), cache)


def test_proximal_term_pulls_towards_global(plan):
    state = TrainState.create(plan.dims, plan.config)
    hooks = add_proximal_term(state, mu=0.5)
    p = next(state.nets.decoder.parameters())
    with torch.no_grad():
        p.add_(1.0)  # moved away from the anchor
    p.grad = torch.zeros_like(p)
    state.opt_generator.step()
    for h in hooks:
        h.remove()
    assert state.opt_generator.state[p]["exp_avg"].mean() > 0  # the step saw grad = 0.5 * (w - w_global) > 0


# --- whole runs through an in-process grid ---------------------------------------------------------

class InProcessGrid:
    """Delivers messages to the real ClientApp in this process, one persistent Context per silo."""

    def __init__(self, n: int) -> None:
        from types import SimpleNamespace

        from federated.client_app import app

        self.app = app
        self.contexts = {100 + i: silo_context(i) for i in range(n)}
        self.run = SimpleNamespace(run_id=1)
        self.down = set()

    def get_node_ids(self):
        return [n for n in self.contexts if n not in self.down]

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for m in messages:
            if m.metadata.dst_node_id in self.down:
                continue  # times out: no reply at all
            try:  # a copy, as if serialised: SecAgg+ sends one content object to every node
                replies.append(self.app(copy.deepcopy(m), self.contexts[m.metadata.dst_node_id]))
            except Exception as exc:  # what the runtime turns an exception into
                replies.append(Message(Error(code=0, reason=repr(exc)), reply_to=m))
        return replies


def _run(plan, fed, path, tmp_path, grid=None):
    grid = grid or InProcessGrid(3)
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    out = tmp_path / "model"
    summary = run_server(grid, context, ServerSettings(plan=plan, fed=fed, num_silos=3, sources=sources(path), out=out))
    return summary, out


def test_run_survives_a_failing_silo_and_keeps_single_silo_contexts(plan, table_path, tmp_path, silo_table):
    from cadasg_dist.synthesizer import CADASG

    fed = FED.replace(inject_failure="1:2:raise", strategy="fedprox")
    summary, out = _run(plan, fed, table_path, tmp_path)
    rounds = summary["rounds"]
    assert [r["replied"] for r in rounds] == [3, 2, 3]
    assert rounds[1]["aggregated"] and "injected failure" in rounds[1]["failures"][0]
    assert all(r["bytes_up_per_client"] > 0 for r in rounds)
    model = CADASG.load(out)
    counts = model.cache.counts().numpy()
    rare = model.extractor.resolve({"group": "rare"})[0]
    assert counts[rare] == (silo_table["group"] == "rare").sum()  # non-private: the exact sum over silos
    rows = model.sample(50, context={"group": "rare"}, seed=1)
    assert len(rows) == 50 and set(rows["group"]) == {"rare"}
    assert set(model.meta["federated"]["silo_ledgers"]) == set(SILOS) and not model.ledger.private


def test_too_few_silos_stop_the_run_after_its_retries(plan, table_path, tmp_path):
    from cadasg_dist.federation.server import RunStopped

    fed = FED.replace(min_clients=3, max_dropouts=0, inject_failure="0:1:raise", rounds=1)
    with pytest.raises(RunStopped, match=r"round 1 \(train\) could not be aggregated in 2 attempt\(s\): 2 of 3"):
        _run(plan, fed, table_path, tmp_path, InProcessGrid(3))
    assert not (tmp_path / "model").exists()


def test_secagg_route_matches_plain_route(plan, table_path, tmp_path):
    """Non-private (seeded) runs, so the two routes differ only by SecAgg+'s quantization."""
    from cadasg_dist.synthesizer import CADASG

    fed = FED.replace(rounds=1, secagg=True, secagg_max_weight=1000.0)
    summary, out = _run(plan, fed, table_path, tmp_path)
    plain, plain_out = _run(plan, fed.replace(secagg=False), table_path, tmp_path / "plain")
    assert summary["secagg"] and not plain["secagg"]
    secure, clear = CADASG.load(out), CADASG.load(plain_out)
    for (name, a), (_, b) in zip(model_arrays(secure.nets).items(), model_arrays(clear.nets).items()):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=0, msg=name)  # only quantization differs
    torch.testing.assert_close(secure.cache.stats.n, clear.cache.stats.n, atol=0.05, rtol=0)
    torch.testing.assert_close(secure.cache.stats.sxx, clear.cache.stats.sxx, atol=0.5, rtol=1e-4)
    assert set(summary["silo_ledgers"]) == set(SILOS)
    assert summary["rounds"][0]["bytes_up_per_client"] > plain["rounds"][0]["bytes_up_per_client"]


def test_server_step_moves_the_global_model_by_server_lr_times_the_mean_update():
    old = OrderedDict(w=torch.tensor([1.0, -2.0]))
    mean = OrderedDict(w=torch.tensor([2.0, 0.0]))
    assert server_step(old, mean, 1.0) is mean  # plain FedAvg
    np.testing.assert_allclose(server_step(old, mean, 3.0)["w"].numpy(), [4.0, 4.0])  # old + 3 * (mean - old)


def test_a_run_applies_the_server_step(plan, table_path, tmp_path):
    """Non-private (seeded) one-round runs: the silos return the same mean, the server steps 2x as far."""
    from cadasg_dist.synthesizer import CADASG

    fed = FED.replace(rounds=1, secagg=False)
    _, plain_out = _run(plan, fed, table_path, tmp_path / "plain")
    _, stepped_out = _run(plan, fed.replace(server_lr=2.0), table_path, tmp_path / "stepped")
    start = initial_weights(plan)
    plain, stepped = model_arrays(CADASG.load(plain_out).nets), model_arrays(CADASG.load(stepped_out).nets)
    for name, w0 in start.items():
        torch.testing.assert_close(stepped[name], w0 + 2.0 * (plain[name] - w0), atol=1e-5, rtol=1e-5, msg=name)


def test_plain_route_ignores_a_silo_that_never_answers(plan, table_path, tmp_path):
    grid = InProcessGrid(3)
    fed = FED.replace(rounds=1)
    orig = grid.send_and_receive

    def drop_node_101(messages, *, timeout=None):  # node 101 (silo s2) is listed but never replies
        messages = list(messages)
        grid.down.add(101)
        try:
            return orig(messages, timeout=timeout)
        finally:
            grid.down.discard(101)

    grid.send_and_receive = drop_node_101
    summary, _ = _run(plan, fed, table_path, tmp_path, grid)
    assert summary["rounds"][0]["replied"] == 2 and "no reply" in summary["rounds"][0]["failures"][0]
    assert summary["final_cache_silos"] == ["s1", "s3"]


def test_initial_weights_are_parameters_only(plan):
    weights = initial_weights(plan)
    assert isinstance(weights, OrderedDict) and "utility.input_mask" not in weights


# --- the command line ------------------------------------------------------------------------------

def test_cli_refuses_undeclared_categories_in_one_line(table_path, tmp_path, capsys):
    from cadasg_dist.cli.federated import main

    rc = main([str(table_path), "--silo-column", "site", "--target", "label", "--context", "group",
               "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[0].startswith("cadasg: error: ") and "declare" in err[0] and "group" in err[0]
    # one line, then the YAML block to paste (one line per column) and the hint to draft a codebook
    assert [line.split(":")[0] for line in err[1:-1]] == ["  group", "  label", "  site"] and "cadasg schema" in err[-1]


def test_cli_writes_the_public_plan(table_path, tmp_path, capsys):
    from cadasg_dist.cli.federated import main

    config = tmp_path / "c.yaml"
    config.write_text("target: label\ncontext: {columns: [group]}\ndata: {columns: {group: {categories: [a, b, rare]},"
                      " label: {categories: ['no', 'yes']}, site: {kind: identifier}}}\n"
                      "federated: {schema_epsilon: 10.0}\n")
    rc = main([str(table_path), "--silo-column", "site", "--config", str(config), "--write-plan",
               str(tmp_path / "plan.json")])
    assert rc == 0 and "3 silos" in capsys.readouterr().out
    plan = FederationPlan.from_json((tmp_path / "plan.json").read_text())
    assert plan.extractor.domain == [("a",), ("b",), ("rare",)]


def test_the_plan_resolves_the_profile_of_the_run_not_of_its_schema_release(silo_table, tiny_config):
    from cadasg_dist.config import profiles

    fed = FederatedConfig(rounds=1, local_epochs=1, schema_epsilon=10.0, round_timeout=30.0, secagg=False)
    auto = declared(tiny_config).replace(**{"model.latent_dim": None, "train.batch_size": None})
    # without privacy the schema is still released at schema_epsilon, but the run is not private
    plain = build_plan(silo_table, auto, fed).config
    assert (plain.model.latent_dim, plain.train.batch_size, plain.cache.clip_x) == (32, 500, 8.0)
    private = declared(auto, epsilon=20.0).replace(**{"model.latent_dim": 8})
    cfg = build_plan(silo_table, private, fed).config
    assert (cfg.model.latent_dim, cfg.train.batch_size) == (8, profiles.PRIVATE["train.batch_size"])
    assert (cfg.cache.clip_x, cfg.cache.ema_alpha) == (5.0, 0.99)
