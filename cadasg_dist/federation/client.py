"""The silo's message handler, as plain functions over Flower records (``federation.apps.build_client_app``
only wires them to a ``ClientApp``).

A train message carries the global model and a config: the phase ("train" or "final-cache"), the
round, the public plan and federated settings, and (in the simulation only) where each silo's
rows are. The reply carries the silo's model parameters and its noisy cache statistics, its
aggregation weight (in a private run its noisy count, ``federation.accounting``; else its row
count), a few metrics and its ledger so far (public: it is what the guarantee rests on). Two formats:
the Message API one (records "arrays", "cache", "metrics", "silo") and, under SecAgg+, the legacy
FitIns/FitRes one that Flower's ``secaggplus_mod`` masks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from cadasg_dist.data.io import read_table
from cadasg_dist.errors import InvalidDataError
from cadasg_dist.federation.config import FederatedConfig, parse_failure
from cadasg_dist.federation.plan import FederationPlan, SiloData, encode_silo
from cadasg_dist.federation.records import cache_record, noise_metrics, secagg_pack
from cadasg_dist.federation.silo import SiloTrainer
from cadasg_dist.privacy import entropy

log = logging.getLogger(__name__)

STATE_KEY = "cadasg.silo"  # context.state config record: the silo's ledger and trainer state
LEGACY_INS = "fitins.config"
PHASES = ("train", "final-cache")


@dataclass(frozen=True)
class RoundJob:
    phase: str
    round: int
    plan: FederationPlan
    plan_digest: str
    fed: FederatedConfig
    sources: list[dict[str, Any]] | None  # simulation only: where silo i's rows are
    proximal_mu: float

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RoundJob:
        phase = str(config.get("phase", "train"))
        if phase not in PHASES:
            raise InvalidDataError(f"unknown federated phase {phase!r}; expected one of {PHASES}")
        plan_json = str(config["plan"])
        sources = config.get("sources")
        return cls(phase=phase, round=int(config.get("server-round", config.get("round", 0))),
                   plan=_plan(plan_json), plan_digest=hashlib.sha256(plan_json.encode()).hexdigest()[:16],
                   fed=FederatedConfig.from_json(str(config["federated"])),
                   sources=json.loads(str(sources)) if sources else None,
                   proximal_mu=float(config.get("proximal-mu", 0.0)))


_PLANS: dict[str, FederationPlan] = {}
_SILOS: dict[tuple[str, str], SiloData] = {}


def _plan(text: str) -> FederationPlan:
    key = hashlib.sha256(text.encode()).hexdigest()
    if key not in _PLANS:
        _PLANS.clear()
        _PLANS[key] = FederationPlan.from_json(text)
    return _PLANS[key]


def silo_identity(job: RoundJob, node_config: dict[str, Any]) -> tuple[int, str, dict[str, Any]]:
    """(index, name, source) of this silo. A deployed SuperNode names its own rows in its node
    config (``data-path``, ``silo-name``); in the simulation the message lists every silo's source
    and ``partition-id`` picks this one."""
    index = int(node_config.get("partition-id", 0))
    if "data-path" in node_config:
        path = str(node_config["data-path"])
        return index, str(node_config.get("silo-name", Path(path).stem)), {"kind": "file", "path": path}
    if not job.sources:
        raise InvalidDataError("this SuperNode has no data: start it with --node-config \"data-path='FILE'\"")
    if index >= len(job.sources):
        raise InvalidDataError(f"partition-id {index} but only {len(job.sources)} silos are defined")
    source = job.sources[index]
    return index, str(source["name"]), source


def load_silo_frame(source: dict[str, Any]) -> pd.DataFrame:
    """This silo's rows: its own file, or (simulation) its rows of a table split by a column,
    matched by value. It may hold none: ``encode_silo`` refuses that in a non-private run only."""
    from cadasg_dist.federation.simulation import silo_rows

    df = read_table(source["path"], allow_empty=source["kind"] == "file")  # a declared silo may hold no row
    if source["kind"] == "column":
        df = df[silo_rows(df[source["column"]], [source["value"]])].reset_index(drop=True)
    return df


def encode_seed(job: RoundJob, context: Context) -> int:
    """The seed of the silo's encoding (rows kept per unit, tie spreading): drawn once and kept in
    the silo's state, so every round (possibly a fresh process) trains on the same encoded rows;
    secret (OS entropy) in a private run."""
    saved = context.state.config_records.get(STATE_KEY)
    if saved is not None:
        return int(saved["encode-seed"])
    return entropy.secret_seed(62) if job.plan.config.private else job.plan.config.train.seed


def silo_data(job: RoundJob, source: dict[str, Any], seed: int) -> SiloData:
    key = (job.plan_digest, json.dumps(source, sort_keys=True), seed)
    if key not in _SILOS:  # a simulation actor serves several silos over a run: keep each encoded once
        _SILOS[key] = encode_silo(job.plan, load_silo_frame(source), seed)
    return _SILOS[key]


def open_trainer(job: RoundJob, context: Context, index: int, data: SiloData) -> SiloTrainer:
    saved = context.state.config_records.get(STATE_KEY)
    if saved is None:
        return SiloTrainer(job.plan, job.fed, data, index=index)
    return SiloTrainer.restore(job.plan, job.fed, data, index=index, ledger_json=str(saved["ledger"]),
                               blob=bytes(saved["trainer"]))


def save_trainer(trainer: SiloTrainer, context: Context, seed: int) -> None:
    ledger, blob = trainer.snapshot()
    context.state.config_records[STATE_KEY] = ConfigRecord({"ledger": ledger, "trainer": blob, "encode-seed": seed})


def maybe_fail(job: RoundJob, index: int) -> None:
    if job.fed.inject_failure is None or job.phase != "train":
        return
    silo, rnd, kind = parse_failure(job.fed.inject_failure)
    if silo == index and rnd == job.round:
        if kind == "raise":
            raise RuntimeError(f"injected failure: silo {index} fails in round {rnd}")
        time.sleep(job.fed.round_timeout + 5.0)


def run_job(job: RoundJob, context: Context, arrays: dict[str, torch.Tensor]) -> tuple[Any, ...]:
    """Do the round's work; returns (trainer, silo name, report or None, cache statistics)."""
    index, name, source = silo_identity(job, context.node_config)
    maybe_fail(job, index)
    seed = encode_seed(job, context)
    data = silo_data(job, source, seed)
    trainer = open_trainer(job, context, index, data)
    if job.phase == "train":
        report = trainer.train_round(arrays, job.proximal_mu)
        stats = trainer.cache.stats
    else:
        report, stats = None, trainer.final_release(arrays)
    save_trainer(trainer, context, seed)
    return trainer, name, report, stats


def _metrics(trainer: SiloTrainer, report: Any) -> dict[str, float]:
    """The reply's metrics: weight (noisy in a private run), epsilon, steps, losses. A private silo
    does not send its seconds: they grow with its rows (the residual timing channel of the round
    itself is documented in docs/guides/federated.md)."""
    private = trainer.ledger.private
    out = {"num-examples": trainer.weight, "epsilon": trainer.epsilon if private else -1.0}
    if trainer.final_done:  # the release's noise variance per block: public (σ's and clipping norms)
        out.update(noise_metrics(trainer.cache.noise_var))
    if report is not None:
        out.update({"steps": report.steps, "stopped": float(report.stopped)})
        if not private:
            out["seconds"] = report.seconds
        out.update({k: v for k, v in report.metrics.items() if np.isfinite(v)})
    return out


def handle_train(msg: Message, context: Context) -> Message:
    """The ClientApp's train handler, for both message formats."""
    if LEGACY_INS in msg.content.config_records:
        return _handle_legacy(msg, context)
    config = dict(msg.content["config"])
    job = RoundJob.from_config(config)
    arrays = msg.content["arrays"].to_torch_state_dict() if "arrays" in msg.content.array_records else {}
    trainer, name, report, stats = run_job(job, context, arrays)
    content = RecordDict({"cache": cache_record(stats), "metrics": MetricRecord(_metrics(trainer, report)),
                          "silo": ConfigRecord({"name": name, "ledger": trainer.ledger.to_json()})})
    if job.phase == "train":
        content["arrays"] = ArrayRecord(trainer.model_arrays())
    return Message(content, reply_to=msg)


def _handle_legacy(msg: Message, context: Context) -> Message:
    """Flower's legacy FitIns -> FitRes (the SecAgg+ route): one flat list of arrays."""
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    job = RoundJob.from_config(dict(ins.config))
    names = [n for n, _ in _parameter_names(job.plan)]
    flat = parameters_to_ndarrays(ins.parameters)
    arrays = OrderedDict((n, torch.from_numpy(np.asarray(a))) for n, a in zip(names, flat))
    trainer, name, report, stats = run_job(job, context, arrays)
    weights = [t.numpy() for t in trainer.model_arrays().values()] if job.phase == "train" else []
    packed = secagg_pack(weights, stats, trainer.weight, job.fed, job.plan.config.cache)
    metrics: dict[str, Any] = {k: v for k, v in _metrics(trainer, report).items() if k != "num-examples"}
    metrics["silo"] = name
    metrics["ledger"] = trainer.ledger.to_json()
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(packed), num_examples=trainer.weight,
                 metrics=metrics)
    return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)


def _parameter_names(plan: FederationPlan) -> list[tuple[str, tuple[int, ...]]]:
    from cadasg_dist.model.networks import CADASGNetworks

    nets = CADASGNetworks(plan.dims, plan.config.model)
    return [(n, tuple(p.shape)) for n, p in nets.named_parameters()]


def optional_secaggplus_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Flower's ``secaggplus_mod`` for SecAgg+ messages, a pass-through for the others (the plain
    Message API route), so one ClientApp serves both."""
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)
