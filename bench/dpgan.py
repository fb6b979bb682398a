"""A DP-SGD GAN baseline (the DP-GAN recipe of Xie et al. 2018 with Opacus): train CSV in, synthetic CSV out.

    .venv/bin/python bench/dpgan.py --epsilon 3 --delta 1e-5 --epochs 30 TRAIN.csv OUT.csv

The discriminator is trained with Opacus's DP-SGD (Poisson sampling, per-sample clipping at 1.0,
noise calibrated by Opacus's RDP accountant to (ε, δ) over ``--epochs``); the generator only ever
sees the discriminator, so it is post-processing. A discriminator step takes one forward pass over
the real batch and as many generated rows (the generated rows read no record; their clipped
gradients join the same noisy sum). Plain MLPs (128, 128), non-saturating loss, Adam.

Preprocessing is *not* private here: the schema and the quantile/one-hot encoding are fitted on the
training rows with CA-DASG's own ``DataTransformer`` (the same representation our model uses),
which favours this baseline over ours, whose bounds and categories are DP releases charged to ε.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cadasg_dist.data.schema import infer_schema  # noqa: E402
from cadasg_dist.data.transforms import DataTransformer  # noqa: E402
from cadasg_dist.model.networks import activate  # noqa: E402


def mlp(inp: int, out: int, hidden: int = 128) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                         nn.Linear(hidden, out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epsilon", type=float, required=True)
    ap.add_argument("--delta", type=float, required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("train")
    ap.add_argument("out")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from opacus import PrivacyEngine

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    df = pd.read_csv(args.train)
    transformer = DataTransformer(infer_schema(df)).fit(df)
    x = torch.from_numpy(transformer.encode(df, seed=args.seed)).float()
    spans, dim = transformer.spans, x.shape[1]
    gen, dis = mlp(args.latent, dim), mlp(dim, 1)
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(dis.parameters(), lr=2e-4, betas=(0.5, 0.9))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=args.batch_size)
    private = np.isfinite(args.epsilon)
    engine = PrivacyEngine(accountant="rdp")
    if private:
        dis, opt_d, loader = engine.make_private_with_epsilon(
            module=dis, optimizer=opt_d, data_loader=loader, target_epsilon=args.epsilon,
            target_delta=args.delta, epochs=args.epochs, max_grad_norm=1.0, poisson_sampling=True)
    bce = nn.BCEWithLogitsLoss()
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        for (real,) in loader:
            if len(real) == 0:
                continue
            fake = activate(gen(torch.randn(len(real), args.latent)), spans, tau=0.5).detach()
            opt_d.zero_grad(set_to_none=True)
            logits = dis(torch.cat([real, fake])).squeeze(1)
            labels = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
            bce(logits, labels).backward()
            opt_d.step()
            opt_g.zero_grad(set_to_none=True)
            if private:
                dis.disable_hooks()
            loss_g = bce(dis(activate(gen(torch.randn(len(real), args.latent)), spans, tau=0.5)).squeeze(1),
                         torch.ones(len(real)))
            loss_g.backward()
            opt_g.step()
            if private:
                dis.enable_hooks()
            opt_d.zero_grad(set_to_none=True)  # the generator's pass left gradients on the discriminator
    spent = engine.get_epsilon(args.delta) if private else float("inf")
    with torch.no_grad():
        probs = activate(gen(torch.randn(len(df), args.latent)), spans, tau=None).numpy()
    out = transformer.decode(probs, np.random.default_rng(args.seed))
    out[df.columns].to_csv(args.out, index=False)
    print(f"dpgan eps target {args.epsilon} spent {spent:.3f} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
