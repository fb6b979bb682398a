#!/usr/bin/env python
"""SDV baselines (GaussianCopula, CTGAN, TVAE) and arbitrary command generators, cached.

Run with the bench virtualenv (see bench/README.md)::

    .venv-bench/bin/python bench/baselines.py --tables all \
        --models gaussian_copula,ctgan,tvae --seed 0 --cache bench/.cache

For each (table, model, seed) it fits the model with SDV's DEFAULT settings on the shared
80/20 train split (bench/splits.py), samples len(train) rows and writes::

    {cache}/{table}/{model}/seed{seed}/synthetic.parquet
    {cache}/{table}/{model}/seed{seed}/meta.json

meta.json holds fit_seconds, sample_seconds (time to sample 100,000 rows, measured
separately), sample_rows_per_second, versions, epochs, torch threads, a UTC timestamp, and on
failure status="error" with the traceback. A (table, model, seed) whose cache is complete
(meta.json status "ok" + synthetic.parquet) is skipped unless --force; failed ones are retried.

Other modes:
  --epochs-probe K   fit CTGAN for K epochs only and print JSON with ctgan_seconds_per_epoch
                     (time of the epoch loop / K, preprocessing excluded) and rows, so a
                     benchmark can measure CTGAN's speed in the same run as its own and
                     extrapolate to 300 epochs. Nothing is cached.
  --command TEMPLATE --name NAME
                     any generator as a shell command; {train} (input CSV), {out} (output
                     CSV to write), and optionally {rows} and {seed} are substituted
                     (paths shell-quoted). Cached like a model called NAME.

Progress goes to stderr; stdout carries only the probe's JSON. Importing this module has no
side effects and does not import SDV/torch (they are imported lazily).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from bench.splits import TABLES, load_table, resolve_tables, split  # noqa: E402

SDV_MODELS = ("gaussian_copula", "ctgan", "tvae")
DEFAULT_CACHE = _REPO / "bench" / ".cache"
TIMING_ROWS = 100_000
DEFAULT_EPOCHS = 300  # SDV's default for CTGAN and TVAE; recorded, not passed


def log(msg: str) -> None:
    ts = _dt.datetime.now().strftime("%H:%M:%S")
    print(f"[baselines {ts}] {msg}", file=sys.stderr, flush=True)


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def cache_dir(cache: str | os.PathLike, table: str, model: str, seed: int) -> Path:
    return Path(cache) / table / model / f"seed{seed}"


def is_cached(cache: str | os.PathLike, table: str, model: str, seed: int) -> bool:
    d = cache_dir(cache, table, model, seed)
    meta = d / "meta.json"
    if not (meta.exists() and (d / "synthetic.parquet").exists()):
        return False
    try:
        return json.loads(meta.read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def load_cached(cache: str | os.PathLike, table: str, model: str, seed: int):
    """(synthetic DataFrame, meta dict) of a completed cache entry (needs pyarrow)."""
    import pandas as pd

    d = cache_dir(cache, table, model, seed)
    meta = json.loads((d / "meta.json").read_text())
    if meta.get("status") != "ok":
        raise RuntimeError(f"{d}: cached run failed: {meta.get('error')}")
    return pd.read_parquet(d / "synthetic.parquet"), meta


# --------------------------------------------------------------------------- environment


def limit_threads(n: int) -> None:
    """Cap BLAS/OpenMP/torch threads. Call before torch/numpy do any work."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = str(n)  # for child processes / libraries not loaded yet
    try:  # numpy (imported by bench.splits) has already started its BLAS pool
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only allowed before any inter-op work
        torch.set_num_interop_threads(n)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("sdv", "ctgan", "rdt", "copulas", "torch", "pandas", "numpy", "sklearn"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - missing/odd module is just not reported
            pass
    return out


def torch_threads() -> int | None:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    import numpy as np

    np.random.seed(seed)
    with contextlib.suppress(ImportError):
        import torch

        torch.manual_seed(seed)


@contextlib.contextmanager
def epoch_timer():
    """Time the epoch loops of ctgan's CTGAN/TVAE by wrapping the tqdm they iterate over.

    Yields a list that receives one perf_counter stamp before the first epoch and one after
    each epoch. If ctgan's internals change the list stays empty (callers fall back).
    """
    stamps: list[float] = []
    patched = []
    try:
        import ctgan.synthesizers.ctgan as m_ctgan
        import ctgan.synthesizers.tvae as m_tvae
    except ImportError:
        yield stamps
        return

    class _Timed:
        def __init__(self, bar):
            self._bar = bar

        def __iter__(self):
            stamps.append(time.perf_counter())
            for item in self._bar:
                yield item
                stamps.append(time.perf_counter())

        def __getattr__(self, name):
            return getattr(self._bar, name)

    for mod in (m_ctgan, m_tvae):
        orig = getattr(mod, "tqdm", None)
        if orig is None:
            continue

        def make(orig=orig):
            def wrapped(*a, **k):
                return _Timed(orig(*a, **k))

            return wrapped

        mod.tqdm = make()
        patched.append((mod, orig))
    try:
        yield stamps
    finally:
        for mod, orig in patched:
            mod.tqdm = orig


# --------------------------------------------------------------------------- SDV models


def detect_metadata(df, table: str):
    import warnings

    from sdv.metadata import Metadata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Metadata.detect_from_dataframes({table: df})


def make_synthesizer(model: str, metadata, epochs: int | None = None):
    """SDV synthesizer with default settings (epochs only overridden for the probe)."""
    from sdv import single_table as st

    if model == "gaussian_copula":
        return st.GaussianCopulaSynthesizer(metadata)
    kw = {} if epochs is None else {"epochs": epochs}
    if model == "ctgan":
        return st.CTGANSynthesizer(metadata, **kw)
    if model == "tvae":
        return st.TVAESynthesizer(metadata, **kw)
    raise ValueError(f"unknown SDV model {model!r}; known: {', '.join(SDV_MODELS)}")


def model_epochs(synth) -> int | None:
    for attr in ("epochs", "_epochs"):
        v = getattr(synth, attr, None)
        if isinstance(v, int):
            return v
    params = getattr(synth, "get_parameters", lambda: {})()
    return params.get("epochs") if isinstance(params, dict) else None


def _sdv_major() -> int:
    import sdv

    return int(str(sdv.__version__).split(".")[0])


def sdv_fit(synth, table: str, df) -> None:
    """fit() across SDV APIs: 2.x takes {table_name: df}, 1.x a DataFrame."""
    synth.fit({table: df} if _sdv_major() >= 2 else df)


def sdv_sample(synth, num_rows: int):
    """sample() across SDV APIs: 2.x returns {table_name: df}, 1.x a DataFrame."""
    out = synth.sample(num_rows=num_rows)
    if isinstance(out, dict):
        (out,) = out.values()
    return out


def _loop_seconds(stamps: list[float]) -> float | None:
    return stamps[-1] - stamps[0] if len(stamps) >= 2 else None


def write_entry(d: Path, meta: dict, synthetic=None) -> None:
    """Write synthetic.parquet then meta.json, each atomically (tmp file + rename)."""
    d.mkdir(parents=True, exist_ok=True)
    if synthetic is not None:
        tmp = d / f".synthetic.{os.getpid()}.parquet.tmp"
        synthetic.to_parquet(tmp, index=False)
        os.replace(tmp, d / "synthetic.parquet")
    else:
        with contextlib.suppress(FileNotFoundError):
            (d / "synthetic.parquet").unlink()
    tmp = d / f".meta.{os.getpid()}.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    os.replace(tmp, d / "meta.json")


def base_meta(table: str, model: str, seed: int, train, threads: int) -> dict:
    return {
        "table": table,
        "model": model,
        "seed": seed,
        "status": "running",
        "n_train": int(len(train)),
        "train_columns": list(map(str, train.columns)),
        "timestamp_utc": utc_now(),
        "torch_threads": torch_threads(),
        "threads_requested": threads,
        "versions": versions(),
    }


def run_sdv(table: str, model: str, seed: int, cache: Path, threads: int) -> dict:
    df, _spec = load_table(table)
    train, _test = split(df, seed=seed)
    d = cache_dir(cache, table, model, seed)
    meta = base_meta(table, model, seed, train, threads)
    meta["sdv_version"] = meta["versions"].get("sdv")
    synthetic = None
    try:
        metadata = detect_metadata(train, table)
        meta["sdv_metadata"] = metadata.to_dict()
        synth = make_synthesizer(model, metadata)
        meta["epochs"] = model_epochs(synth) if model != "gaussian_copula" else None
        seed_everything(seed)
        log(f"{table}/{model}/seed{seed}: fit on {len(train)} rows (epochs={meta['epochs']})")
        with epoch_timer() as stamps:
            t0 = time.perf_counter()
            sdv_fit(synth, table, train)
            meta["fit_seconds"] = time.perf_counter() - t0
        loop = _loop_seconds(stamps)
        if loop is not None and meta["epochs"]:
            meta["epoch_loop_seconds"] = loop
            meta["seconds_per_epoch"] = loop / meta["epochs"]
        log(f"{table}/{model}/seed{seed}: fit {meta['fit_seconds']:.1f}s")

        seed_everything(seed)
        t0 = time.perf_counter()
        synthetic = sdv_sample(synth, len(train))
        meta["sample_train_rows_seconds"] = time.perf_counter() - t0
        meta["n_synthetic"] = int(len(synthetic))

        t0 = time.perf_counter()
        big = sdv_sample(synth, TIMING_ROWS)
        dt = time.perf_counter() - t0
        meta["sample_timing_rows"] = int(len(big))
        meta["sample_seconds"] = dt
        meta["sample_rows_per_second"] = len(big) / dt if dt > 0 else None
        del big
        meta["synthetic_dtypes"] = {str(c): str(t) for c, t in synthetic.dtypes.items()}
        meta["status"] = "ok"
        log(
            f"{table}/{model}/seed{seed}: ok, sampled {len(synthetic)} rows; "
            f"{TIMING_ROWS} rows in {dt:.2f}s"
        )
    except Exception as exc:  # noqa: BLE001 - one failing model must not stop the run
        meta["status"] = "error"
        meta["error"] = f"{type(exc).__name__}: {exc}"
        meta["traceback"] = traceback.format_exc()
        synthetic = None
        log(f"{table}/{model}/seed{seed}: FAILED {meta['error']}")
    meta["finished_utc"] = utc_now()
    write_entry(d, meta, synthetic)
    return meta


# --------------------------------------------------------------------------- command models


def substitute(template: str, **values: str) -> str:
    """Replace {key} tokens only (other braces in the template are left alone)."""
    out = template
    for k, v in values.items():
        out = out.replace("{" + k + "}", v)
    return out


def run_command(table: str, name: str, template: str, seed: int, cache: Path, threads: int,
                timeout: float | None = None, derived: dict[str, tuple[str, object]] | None = None) -> dict:
    """Fit and sample with an external command. ``derived`` (name -> (source, value)): columns left
    out of the table the command sees and computed from their source on its output, as CA-DASG
    does with a column declared derived."""
    import pandas as pd

    from cadasg_dist.data.schema import DerivedColumn

    df, _spec = load_table(table)
    train, _test = split(df, seed=seed)
    derived = {k: DerivedColumn(name=k, of=of, equals=eq, dtype=str(train[k].dtype))
               for k, (of, eq) in (derived or {}).items()}
    d = cache_dir(cache, table, name, seed)
    meta = base_meta(table, name, seed, train, threads)
    meta["command_template"] = template
    synthetic = None
    with tempfile.TemporaryDirectory(prefix=f"cmd-{table}-") as tmp:
        tin, tout = Path(tmp) / "train.csv", Path(tmp) / "synthetic.csv"
        train.drop(columns=list(derived)).to_csv(tin, index=False)
        cmd = substitute(template, train=shlex.quote(str(tin)), out=shlex.quote(str(tout)),
                         rows=str(len(train)), seed=str(seed))
        meta["command"] = cmd
        log(f"{table}/{name}/seed{seed}: $ {cmd}")
        try:
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
            meta["fit_seconds"] = time.perf_counter() - t0  # fit + sample, whole command
            meta["returncode"] = proc.returncode
            meta["stdout_tail"] = proc.stdout[-4000:]
            meta["stderr_tail"] = proc.stderr[-4000:]
            if proc.returncode != 0:
                raise RuntimeError(f"command exited {proc.returncode}: {proc.stderr[-500:]}")
            if not tout.exists():
                raise FileNotFoundError(f"command wrote no {{out}} file ({tout})")
            synthetic = pd.read_csv(tout)
            if derived:
                for column in derived.values():
                    synthetic[column.name] = column.compute(synthetic[column.of])
                synthetic = synthetic[[c for c in train.columns if c in synthetic.columns]]
                meta["derived_columns"] = sorted(derived)
            meta["n_synthetic"] = int(len(synthetic))
            if len(synthetic) != len(train):
                meta["warning"] = f"expected {len(train)} rows, got {len(synthetic)}"
            missing = [c for c in train.columns if c not in synthetic.columns]
            if missing:
                meta["missing_columns"] = missing
            meta["synthetic_dtypes"] = {str(c): str(t) for c, t in synthetic.dtypes.items()}
            meta["sample_seconds"] = None  # not separable for an opaque command
            meta["status"] = "ok"
            log(f"{table}/{name}/seed{seed}: ok in {meta['fit_seconds']:.1f}s, {len(synthetic)} rows")
        except Exception as exc:  # noqa: BLE001
            meta["status"] = "error"
            meta["error"] = f"{type(exc).__name__}: {exc}"
            meta["traceback"] = traceback.format_exc()
            synthetic = None
            log(f"{table}/{name}/seed{seed}: FAILED {meta['error']}")
    meta["finished_utc"] = utc_now()
    write_entry(d, meta, synthetic)
    return meta


# --------------------------------------------------------------------------- epochs probe

PROBE_SAMPLE_ROWS = 100_000


def epochs_probe(table: str, epochs: int, seed: int) -> dict:
    """Fit CTGAN (defaults except epochs) for `epochs` epochs; time the epoch loop."""
    df, _spec = load_table(table)
    train, _test = split(df, seed=seed)
    metadata = detect_metadata(train, table)
    synth = make_synthesizer("ctgan", metadata, epochs=epochs)
    seed_everything(seed)
    log(f"probe {table}: CTGAN {epochs} epochs on {len(train)} rows")
    with epoch_timer() as stamps:
        t0 = time.perf_counter()
        sdv_fit(synth, table, train)
        total = time.perf_counter() - t0
    loop = _loop_seconds(stamps)
    exact = loop is not None
    if not exact:
        loop = total  # fallback: includes preprocessing, overestimates per-epoch time
    spe = loop / epochs
    overhead = total - loop
    # Sampling speed does not depend on how long CTGAN trained: measure it here, in the same run.
    t0 = time.perf_counter()
    sampled = sdv_sample(synth, PROBE_SAMPLE_ROWS)
    sample_seconds = time.perf_counter() - t0
    return {
        "ctgan_sample_rows_per_second": len(sampled) / sample_seconds if sample_seconds > 0 else None,
        "table": table,
        "ctgan_seconds_per_epoch": spe,
        "rows": int(len(train)),
        "epochs": epochs,
        "fit_seconds": total,
        "overhead_seconds": overhead,
        "epoch_timing_exact": exact,
        "extrapolated_fit_seconds_300_epochs": overhead + DEFAULT_EPOCHS * spe,
        "torch_threads": torch_threads(),
        "sdv_version": versions().get("sdv"),
        "timestamp_utc": utc_now(),
    }


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", default="all", help="comma list or 'all' (order: {})".format(",".join(TABLES)))
    p.add_argument("--models", default=",".join(SDV_MODELS), help="comma list of {}".format(",".join(SDV_MODELS)))
    p.add_argument("--seed", type=int, nargs="+", default=[0], help="one or more split/model seeds")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="cache root (default bench/.cache)")
    p.add_argument("--force", action="store_true", help="refit even if the cache is complete")
    p.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (default 1)")
    p.add_argument("--epochs-probe", type=int, metavar="K", help="only time K CTGAN epochs; JSON to stdout")
    p.add_argument("--command", metavar="TEMPLATE", help="shell command with {train} {out} [{rows} {seed}]")
    p.add_argument("--name", help="model name for --command (cache folder)")
    p.add_argument("--timeout", type=float, default=None, help="seconds limit for --command")
    return p


def main(argv: list[str] | None = None) -> int:
    import warnings

    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message=".*save_to_json.*")
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    limit_threads(args.threads)  # before any torch work
    tables = resolve_tables(args.tables)
    cache = Path(args.cache)

    if args.epochs_probe is not None:
        if args.epochs_probe < 1:
            raise SystemExit("--epochs-probe must be >= 1")
        results = [epochs_probe(t, args.epochs_probe, args.seed[0]) for t in tables]
        for r in results:  # one JSON object per line (a single line for a single table)
            print(json.dumps(r), flush=True)
        return 0

    if args.command:
        if not args.name:
            raise SystemExit("--command needs --name")
        if "{train}" not in args.command or "{out}" not in args.command:
            raise SystemExit("--command template must contain {train} and {out}")
        jobs = [(t, args.name, s) for t in tables for s in args.seed]
    else:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        bad = [m for m in models if m not in SDV_MODELS]
        if bad:
            raise SystemExit(f"unknown model(s) {bad}; known: {', '.join(SDV_MODELS)} (or use --command)")
        jobs = [(t, m, s) for t in tables for s in args.seed for m in models]

    failed = 0
    t_all = time.perf_counter()
    for i, (table, model, seed) in enumerate(jobs, 1):
        tag = f"[{i}/{len(jobs)}] {table}/{model}/seed{seed}"
        if not args.force and is_cached(cache, table, model, seed):
            log(f"{tag}: cached, skip")
            continue
        log(f"{tag}: start")
        if args.command:
            meta = run_command(table, model, args.command, seed, cache, args.threads, args.timeout)
        else:
            meta = run_sdv(table, model, seed, cache, args.threads)
        failed += meta["status"] != "ok"
    log(f"done: {len(jobs)} jobs, {failed} failed, {time.perf_counter() - t_all:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
