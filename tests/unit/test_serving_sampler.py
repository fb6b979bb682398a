"""Merged sampling passes give every request exactly the rows ``CADASG.sample`` gives it alone."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadasg_dist.serving import sampler
from cadasg_dist.serving.sampler import SampleJob, merge_is_exact, sample_many

CONTEXTS = [{}, {"group": "a"}, {"group": "b"}, {"group": "rare"}]


def alone(job: SampleJob) -> pd.DataFrame:
    return job.model.sample(job.n, context=job.context or None, seed=job.seed)


def test_merge_is_exact_for_the_library_as_it_is(tiny_model):
    assert merge_is_exact(tiny_model)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(1, 300), st.sampled_from(CONTEXTS), st.integers(0, 2**63 - 1)),
                min_size=1, max_size=8))
def test_each_request_gets_its_own_rows(tiny_model, requests):
    jobs = [SampleJob(tiny_model, n, ctx, seed) for n, ctx, seed in requests]
    for job, frame in zip(jobs, sample_many(jobs)):
        pd.testing.assert_frame_equal(frame, alone(job))


def test_passes_are_cut_at_max_rows_and_versions_kept_apart(tiny_model, mixed_table, tiny_config):
    from cadasg_dist.synthesizer import CADASG

    other = CADASG(tiny_config.replace(**{"train.seed": 3})).fit(mixed_table)
    jobs = [SampleJob(tiny_model, 40, {}, 1), SampleJob(other, 40, {}, 1), SampleJob(tiny_model, 70, {}, 2),
            SampleJob(other, 5, {"group": "a"}, 3, merge=False)]
    frames = sample_many(jobs, max_rows=100)
    for job, frame in zip(jobs, frames):
        pd.testing.assert_frame_equal(frame, alone(job))
    assert not frames[0].equals(frames[1])  # same seed, different version


def test_unreplayable_randomness_falls_back_to_sample(tiny_model, monkeypatch):
    decode = tiny_model.transformer.decode

    def decode_with_other_draws(features, rng):
        rng.normal()  # a library change the merged pass cannot replay
        return decode(features, rng)

    monkeypatch.setattr(tiny_model.transformer, "decode", decode_with_other_draws)
    jobs = [SampleJob(tiny_model, 20, {}, s) for s in range(3)]
    for job, frame in zip(jobs, sample_many(jobs)):
        pd.testing.assert_frame_equal(frame, alone(job))
    assert not merge_is_exact(tiny_model)


def test_a_pass_never_exceeds_one_library_chunk():
    assert sampler._SAMPLE_CHUNK >= 1_000


def test_bad_context_raises_what_sample_raises(tiny_model):
    from cadasg_dist.errors import ContextError

    with pytest.raises(ContextError, match="valid values"):
        sample_many([SampleJob(tiny_model, 5, {"group": "nope"}, 0)])


@pytest.mark.parametrize("n, chunk, context", [(1, 50, {}), (130, 50, {}), (150, 50, {"group": "a"}), (99, 200, {})])
def test_iter_sample_yields_sample_rows_one_chunk_at_a_time(tiny_model, n, chunk, context):
    frames = list(sampler.iter_sample(tiny_model, n, context=context or None, seed=5, chunk=chunk))
    assert [len(f) for f in frames] == [min(chunk, n - i) for i in range(0, n, chunk)]
    whole = tiny_model.sample(n, context=context or None, seed=5, chunk=chunk)
    pd.testing.assert_frame_equal(pd.concat(frames), whole)


def test_iter_sample_validates_before_the_first_row(tiny_model):
    from cadasg_dist.errors import ContextError, InvalidDataError

    with pytest.raises(InvalidDataError):
        sampler.iter_sample(tiny_model, 0)
    with pytest.raises(ContextError):
        sampler.iter_sample(tiny_model, 10, context={"group": "nowhere"})
